"""NVlabs EDM networks, decoded with EDM's Heun sampler (docs/methods.md section 1).

The network is any module with EDM's ``net(x, sigma, class_labels)`` signature and its attributes
``img_resolution``, ``img_channels``, ``label_dim``, ``sigma_min``, ``sigma_max``. Sources:

- an NVlabs pickle (local path or URL, e.g. ``edm-cifar10-32x32-cond-vp.pkl``): unpickling needs
  the EDM repository's ``dnnlib`` and ``torch_utils``, so ``decoder.options.edm_checkout`` must name
  a checkout of https://github.com/NVlabs/edm;
- an import string ``package.module:attr`` of a class or factory, called with
  ``decoder.options.kwargs`` and optionally loaded with ``decoder.options.state_dict``.
"""

from __future__ import annotations

import logging
import pickle
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ...config import meta
from ...errors import ConfigError
from ..samplers import create_sampler
from .base import DECODERS, Decoder, build_module, resolve_source, to_uint8

log = logging.getLogger(__name__)

EDM_ATTRS = ("img_resolution", "img_channels", "label_dim", "sigma_min", "sigma_max")


@dataclass
class EDMOptions:
    edm_checkout: str | None = field(default=None, metadata=meta(
        "path of a checkout of NVlabs/edm (needed to unpickle its networks)"))
    pickle_key: str = field(default="ema", metadata=meta("entry of the pickle that holds the network"))
    kwargs: dict = field(default_factory=dict, metadata=meta("constructor arguments for an import-string source"))
    state_dict: str | None = field(default=None, metadata=meta("weights for an import-string source"))


def _is_pickle(source: str) -> bool:
    return source.endswith(".pkl") or source.startswith(("http://", "https://"))


def load_edm_pickle(source: str, checkout: str | None, key: str = "ema") -> torch.nn.Module:
    if checkout is None:
        raise ConfigError(f"decoder.options.edm_checkout: loading the EDM pickle {source!r} needs a checkout of "
                          "https://github.com/NVlabs/edm (its dnnlib and torch_utils); set it to that folder")
    root = Path(checkout).expanduser()
    if not (root / "dnnlib").is_dir() or not (root / "torch_utils").is_dir():
        raise ConfigError(f"decoder.options.edm_checkout: {str(root)!r} has no dnnlib/ and torch_utils/; "
                          "point it at a checkout of https://github.com/NVlabs/edm")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import dnnlib  # noqa: F401  (resolved from the checkout)

    if source.startswith(("http://", "https://")):
        opener = dnnlib.util.open_url(source)
    else:
        if not Path(source).is_file():
            raise ConfigError(f"decoder.source: EDM pickle {source!r} does not exist")
        opener = open(source, "rb")
    with opener as f:
        data = pickle.load(f)
    if key not in data:
        raise ConfigError(f"decoder.options.pickle_key: {key!r} is not in {source!r}; it holds {sorted(data)}")
    return data[key]


@DECODERS.register("edm")
class EDMDecoder(Decoder):
    Options = EDMOptions

    def __init__(self, cfg, sampler, runtime):
        super().__init__(cfg, sampler, runtime)
        self.solver = create_sampler(sampler, "edm", cfg.backend)
        source = resolve_source(cfg.source)
        if _is_pickle(source):
            net = load_edm_pickle(source, self.options.edm_checkout, self.options.pickle_key)
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

    def _denoise(self, x, sigma, labels):
        return self.net(x.float(), sigma.float().expand(x.shape[0]), self.eye[labels])

    @torch.no_grad()
    def decode(self, z, labels):
        z = z.to(self.device, non_blocking=True).reshape(-1, *self.latent_shape)
        labels = labels.to(self.device, non_blocking=True)
        with self.autocast():
            x = self.solver.run_edm(self._denoise, z, labels, *self.sigma_range)
        return to_uint8(x)

    def identity(self):
        return {**super().identity(), "sampler": self.solver.settings_edm(*self.sigma_range)}
