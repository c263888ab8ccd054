"""Latents -> images -> dataset on disk.

- :mod:`.shifts`: shift families (a registry) and intensity measures;
- :mod:`.samplers`: deterministic ODE solvers (EDM Heun, DDIM eta=0), a registry;
- :mod:`.decoders`: the Decoder contract and its backends (diffusers, edm, torch), a registry;
- :mod:`.spec`: the typed config of the generate job;
- :mod:`.job`: the generate job, spread over processes by accelerate.

The dataset format it writes is :mod:`ctrlshift.dataset`, shared with every reader.
"""

from .shifts import FAMILIES, ShiftFamily, create_family, draw_labels, draw_noise, list_families, sample_seed, slerp

__all__ = ["FAMILIES", "ShiftFamily", "create_family", "draw_labels", "draw_noise", "list_families", "sample_seed",
           "slerp"]
