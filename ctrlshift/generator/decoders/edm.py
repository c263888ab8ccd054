"""EDM networks (NVlabs/edm, Karras et al. 2022), decoded with EDM's Heun sampler (docs/methods.md 1).

The network is any module with EDM's ``net(x, sigma, class_labels)`` signature and its attributes
``img_resolution``, ``img_channels``, ``label_dim``, ``sigma_min``, ``sigma_max`` (and
``round_sigma``, called on every noise level as EDM's sampler does). Sources:

- a released EDM pickle (local path or URL, e.g. ``edm-cifar10-32x32-cond-vp.pkl``): read with an
  allow-list that never runs the code the pickle carries, and rebuilt as ctrlshift's own
  implementation of the EDM networks (:mod:`ctrlshift.generator.networks`); URLs are downloaded
  once to ``~/.cache/ctrlshift/edm`` (``CTRLSHIFT_CACHE``);
- a folder written by ``ctrlshift convert edm PKL --out DIR`` (``config.json`` +
  ``model.safetensors``): no pickle at all;
- an import string ``package.module:attr`` of a class or factory, called with
  ``decoder.options.kwargs`` and optionally loaded with ``decoder.options.state_dict``;
- a pickle unpickled by the EDM code itself, only if ``decoder.options.edm_checkout`` names a
  checkout of https://github.com/NVlabs/edm (this runs the pickle's code: trusted files only).
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ...config import meta
from ...errors import ConfigError
from ..samplers import create_sampler
from .base import DECODERS, Decoder, build_module, resolve_source

log = logging.getLogger(__name__)

EDM_ATTRS = ("img_resolution", "img_channels", "label_dim", "sigma_min", "sigma_max")


@dataclass
class EDMOptions:
    edm_checkout: str | None = field(default=None, metadata=meta(
        "optional: a checkout of NVlabs/edm to unpickle with EDM's own code (runs the pickle's code; "
        "without it ctrlshift reads the pickle safely with its own networks)"))
    pickle_key: str = field(default="ema", metadata=meta("entry of the pickle that holds the network"))
    kwargs: dict = field(default_factory=dict, metadata=meta("constructor arguments for an import-string source"))
    state_dict: str | None = field(default=None, metadata=meta("weights for an import-string source"))


def _is_edm_checkpoint(source: str) -> bool:
    """A released pickle (path or URL) or a ``ctrlshift convert`` folder, not an import string."""
    return source.endswith(".pkl") or source.startswith(("http://", "https://")) or Path(source).expanduser().is_dir()


def cache_dir() -> Path:
    return Path(os.environ.get("CTRLSHIFT_CACHE", "~/.cache/ctrlshift")).expanduser() / "edm"


def fetch(source: str) -> Path:
    """A local EDM pickle for ``source``: the file itself, or a URL downloaded once to the cache."""
    if not source.startswith(("http://", "https://")):
        path = Path(source).expanduser()
        if not path.is_file():
            raise ConfigError(f"decoder.source: EDM pickle {source!r} does not exist")
        return path
    from ...names import check_name

    name = source.rstrip("/").rsplit("/", 1)[-1]
    check_name(name, "decoder.source (the file name of the URL)")
    path = cache_dir() / name
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        log.info("downloading %s to %s", source, path)
        try:
            with urllib.request.urlopen(source, timeout=60) as r:
                data = r.read()
        except OSError as exc:
            raise ConfigError(f"decoder.source: could not download {source!r} ({exc}); check the URL and the "
                              f"network, or put the file at {path}") from None
        from ...files import atomic_write_bytes

        atomic_write_bytes(path, data)
    return path


def load_edm_network(source: str, key: str = "ema") -> torch.nn.Module:
    """ctrlshift's EDM network from a pickle path or URL, or a ``ctrlshift convert`` folder; no
    pickled code is run."""
    from ..networks.edm_pickle import is_converted, load_converted, load_edm_pickle_safely

    if Path(source).expanduser().is_dir():
        if not is_converted(Path(source).expanduser()):
            raise ConfigError(f"decoder.source: {source!r} is a folder without config.json and model.safetensors; "
                              "write one with `ctrlshift convert edm PKL --out DIR`")
        return load_converted(Path(source).expanduser())
    path = fetch(source)
    return load_edm_pickle_safely(path.read_bytes(), str(path), key)


def load_edm_pickle(source: str, checkout: str, key: str = "ema") -> torch.nn.Module:
    """Unpickle with the EDM checkout's own code (runs the pickle's code: trusted files only)."""
    root = Path(checkout).expanduser()
    if not (root / "dnnlib").is_dir() or not (root / "torch_utils").is_dir():
        raise ConfigError(f"decoder.options.edm_checkout: {str(root)!r} has no dnnlib/ and torch_utils/; "
                          "point it at a checkout of https://github.com/NVlabs/edm")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import dnnlib  # noqa: F401  (resolved from the checkout)

    log.warning("unpickling %s with the EDM code in %s: this runs the code the pickle carries", source, root)
    with open(fetch(source), "rb") as f:
        data = pickle.load(f)  # the user asked for EDM's own loader (decoder.options.edm_checkout)
    if key not in data:
        raise ConfigError(f"decoder.options.pickle_key: {key!r} is not in {source!r}; it holds {sorted(data)}")
    return data[key]


@DECODERS.register("edm")
class EDMDecoder(Decoder):
    """NVlabs EDM networks (.pkl read safely, converted folder, or import string), EDM Heun."""

    Options = EDMOptions

    def __init__(self, cfg, sampler, runtime):
        super().__init__(cfg, sampler, runtime)
        self.solver = create_sampler(sampler, "edm", cfg.backend)
        source = resolve_source(cfg.source)
        if _is_edm_checkpoint(source) and self.options.edm_checkout:
            net = load_edm_pickle(source, self.options.edm_checkout, self.options.pickle_key)
        elif _is_edm_checkpoint(source):
            net = load_edm_network(source, self.options.pickle_key)
        else:
            net = build_module(source, self.options.kwargs, self.options.state_dict)
        missing = [a for a in EDM_ATTRS if not hasattr(net, a)]
        if missing:
            raise ConfigError(f"decoder.source: {cfg.source!r} is not an EDM network; it lacks {missing}")
        self.raw_net = net.to(self.device).eval().requires_grad_(False)
        self.net = self.maybe_compile(self.raw_net)
        self.latent_shape = (int(net.img_channels), int(net.img_resolution), int(net.img_resolution))
        self.num_classes = int(net.label_dim)
        if self.num_classes == 0:
            raise ConfigError(f"decoder.source: {cfg.source!r} is unconditional (label_dim = 0); "
                              "ctrlshift needs a class-conditional network")
        self.class_names = self.default_class_names()
        self.sigma_range = (float(net.sigma_min), float(net.sigma_max))
        self.eye = torch.eye(self.num_classes, device=self.device)

        self.round_sigma = getattr(self.raw_net, "round_sigma", None)

    def _denoise(self, x, sigma, labels):
        return self.net(x.float(), sigma.float().expand(x.shape[0]), self.eye[labels])

    @torch.no_grad()
    def decode_float(self, z, labels):
        z, labels = self.prepare(z, labels)
        with self.autocast():
            return self.solver.run_edm(self._denoise, z, labels, *self.sigma_range, round_sigma=self.round_sigma)

    def identity(self):
        out = {**super().identity(), "sampler": self.solver.settings_edm(*self.sigma_range)}
        record = getattr(self.raw_net, "edm_record", None)
        if record:
            out["network"] = record
        return out
