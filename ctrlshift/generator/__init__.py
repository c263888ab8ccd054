"""Latents -> images -> dataset on disk.

- :mod:`.shifts`: shift families (a registry) and intensity measures;
- :mod:`.samplers`: deterministic ODE solvers (EDM Heun, DDIM eta=0);
- :mod:`.decoders`: the Decoder contract and its backends (diffusers, edm, torch);
- :mod:`.writer`: the dataset format (shards, manifest, card, resume);
- :mod:`.job`: the generate job, spread over processes by accelerate.
"""

from .shifts import FAMILIES, create_family, draw_labels, draw_noise, list_families, sample_seed, slerp

__all__ = ["FAMILIES", "create_family", "draw_labels", "draw_noise", "list_families", "sample_seed", "slerp"]
