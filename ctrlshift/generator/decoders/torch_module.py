"""Any torch generator ``G(z, y)`` (GANs, VAE decoders) named by an import string.

``decoder.source`` is ``package.module:attr``, a class or factory called with
``decoder.options.kwargs``; ``decoder.options.state_dict`` loads weights. The latent shape and class
count come from the module's ``latent_shape`` and ``num_classes`` attributes, or from
``decoder.latent_shape`` and ``decoder.num_classes``. The output is read in ``[-1, 1]`` (or
``[0, 1]`` with ``options.output_range: unit``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from ...config import meta
from ...errors import ConfigError
from .base import DECODERS, Decoder, build_module


@dataclass
class TorchOptions:
    kwargs: dict = field(default_factory=dict, metadata=meta("constructor arguments"))
    state_dict: str | None = field(default=None, metadata=meta("a torch state_dict file to load"))
    output_range: Literal["signed", "unit"] = field(default="signed", metadata=meta(
        "signed: G outputs [-1, 1]; unit: [0, 1]"))
    label_format: Literal["index", "onehot"] = field(default="index", metadata=meta(
        "how G takes its labels: class indices or one-hot rows"))


@DECODERS.register("torch")
class TorchDecoder(Decoder):
    """Any torch generator G(z, y) named by an import string (GANs, VAE decoders)."""

    Options = TorchOptions

    def __init__(self, cfg, sampler, runtime):
        super().__init__(cfg, sampler, runtime)
        module = build_module(cfg.source, self.options.kwargs, self.options.state_dict)
        shape = getattr(module, "latent_shape", None) or cfg.latent_shape
        if shape is None:
            raise ConfigError("decoder.latent_shape: the torch module has no latent_shape attribute; set it in the config")
        k = getattr(module, "num_classes", None) or (len(cfg.classes) if cfg.classes else cfg.num_classes)
        if k is None:
            raise ConfigError("decoder.num_classes: the torch module has no num_classes attribute; set it in the config")
        self.module = self.maybe_compile(module.to(self.device).eval().requires_grad_(False))
        self.latent_shape = tuple(int(s) for s in shape)
        self.num_classes = int(k)
        self.class_names = self.default_class_names()

    @torch.no_grad()
    def decode_float(self, z, labels):
        z, labels = self.prepare(z, labels)
        if self.options.label_format == "onehot":
            labels = torch.nn.functional.one_hot(labels, self.num_classes).float()
        with self.autocast():
            x = self.module(z, labels)
        if torch.is_tensor(x) and self.options.output_range == "unit":
            x = x * 2 - 1
        return x
