"""The decoder contract, its config sections, and the helpers backends share.

Every backend implements the :class:`Decoder` contract::

    latent_shape: tuple[int, ...]     # one sample's latent, e.g. (3, 32, 32)
    num_classes: int                  # the model's classes
    class_names: list[str]
    decode_float(z, labels) -> [N, C, H, W] floats in [-1, 1]   # z: [N, *latent_shape] float32,
                                                                # labels: model class indices
    identity() -> dict                # what the manifest records about the generator

``decode(z, labels)`` turns ``decode_float`` into uint8 ``[N, H, W, 3]`` images with the config's
``output.quantize`` rule (:func:`to_uint8`); a backend that makes its own uint8 images may override
``decode`` instead.

Backends are registered in :data:`DECODERS` (``diffusers-unet``, ``diffusers-dit``,
``diffusers-sd``, ``diffusers-pipeline``, ``edm``, ``torch``). ``create_decoder(cfg, sampler, runtime)`` builds one. To
add a backend (in a module of this package, or in a plugin), subclass :class:`Decoder`, give it an
``Options`` dataclass for its backend-specific ``decoder.options`` keys, and decorate it with
``@DECODERS.register("name")``.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from ... import embedded
from ...config import build, meta
from ...device import resolve_device
from ...errors import ConfigError, CtrlshiftError
from ...plugins import import_object, load_weights
from ...registry import Registry
from ..samplers import SamplerConfig

log = logging.getLogger(__name__)

DECODERS: Registry["Decoder"] = Registry("decoder backend")


@dataclass
class DecoderConfig:
    backend: str = field(default="diffusers-unet", metadata=meta(
        "diffusers-unet | diffusers-dit | diffusers-sd | edm | torch (or a plugin's)", registry=DECODERS))
    source: str = field(default="ctrlshift://tiny-mnist", metadata=meta(
        "hub id, local folder, EDM pickle path/URL, 'module:attr' import string, or ctrlshift://NAME "
        "for a model embedded in the package"))
    revision: str | None = field(default=None, metadata=meta("hub revision (branch, tag or commit)"))
    latent_shape: list[int] | None = field(default=None, metadata=meta(
        "shape of one latent [C, H, W]; needed by `ctrlshift latents`, checked against the model"))
    num_classes: int | None = field(default=None, metadata=meta(
        "number of dataset classes; checked against the model", min=1))
    classes: list[int] | None = field(default=None, metadata=meta(
        "model class indices that form the dataset's classes 0..K-1 (e.g. 10 ImageNet classes)"))
    class_names: list[str] | None = field(default=None, metadata=meta("names of the dataset's classes"))
    options: dict = field(default_factory=dict, metadata=meta("backend-specific options"))


@dataclass
class RuntimeConfig:
    device: str = field(default="auto", metadata=meta("auto | cpu | cuda | cuda:N"))
    dtype: Literal["float32", "bfloat16", "float16"] = field(default="float32", metadata=meta(
        "autocast dtype of the network (the sampler state stays float32/float64)"))
    batch_size: int = field(default=64, metadata=meta("images decoded per network call", min=1))
    compile: bool = field(default=False, metadata=meta("torch.compile the network"))
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = field(
        default="default", metadata=meta(
            "torch.compile mode with compile: true (reduce-overhead and max-autotune add CUDA graphs on a GPU)"))
    encode_workers: int = field(default=2, metadata=meta(
        "threads that PNG-encode and write shards while the next batch decodes", min=1))


def resolve_source(source: str) -> str:
    """``ctrlshift://NAME`` -> the packaged model folder; anything else is returned unchanged."""
    return embedded.resolve(source, "decoder.source")


def looks_local(source: str) -> bool:
    return source.startswith((".", "/", "~")) or Path(source).exists() or source.count("/") > 1


def check_local(source: str) -> None:
    if looks_local(source) and not Path(source).expanduser().exists():
        raise ConfigError(f"decoder.source: {source!r} does not exist; give a local folder or file, or a hub id")


def build_module(spec: str, kwargs: dict, state_dict: str | None) -> torch.nn.Module:
    """Call the factory named by ``spec`` with ``kwargs`` and load ``state_dict`` if given."""
    factory = import_object(spec)
    try:
        module = factory(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"decoder.options.kwargs: {spec} does not accept {kwargs} ({exc})") from None
    if state_dict:
        load_weights(module, state_dict, "decoder.options.state_dict")
    return module


class DecoderOutputError(CtrlshiftError):
    """A decoder broke its contract: non-finite values, a wrong shape or dtype."""


QUANTIZE = ("round", "floor")


def to_uint8(x: torch.Tensor, quantize: str = "round") -> torch.Tensor:
    """``[N, C, H, W]`` floats in [-1, 1] -> ``[N, H, W, 3]`` uint8. ``round``: to the nearest grey
    level, EDM's ``(x*127.5+128).clip(0,255)``; ``floor``: the Control+Shift reference code's
    ``((x/2+0.5).clamp(0,1)*255).to(uint8)``, which truncates. One channel is repeated to three.
    Non-finite values, integer or complex output and other shapes are a :class:`DecoderOutputError`."""
    if not torch.is_tensor(x) or x.dim() != 4:
        shape = list(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise DecoderOutputError(f"decoder output has shape {shape}; expected [N, C, H, W]")
    if x.is_complex() or not x.is_floating_point():
        raise DecoderOutputError(f"decoder output is {x.dtype}; expected floating point values in [-1, 1]")
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise DecoderOutputError(f"decoder returned {bad:,} non-finite values (of {x.numel():,})")
    if x.shape[1] not in (1, 3):
        raise DecoderOutputError(f"decoder output has {x.shape[1]} channels; expected 1 or 3")
    if quantize == "round":
        img = (x.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    elif quantize == "floor":
        img = ((x.float() / 2 + 0.5).clamp(0, 1) * 255).to(torch.uint8)
    else:
        raise ConfigError(f"output.quantize: {quantize!r}; expected one of {', '.join(QUANTIZE)}")
    if img.shape[1] == 1:
        img = img.expand(-1, 3, -1, -1)
    return img.permute(0, 2, 3, 1).contiguous()


def check_images(images: object, n: int) -> str | None:
    """What is wrong with a decoded batch of ``n`` images (uint8 ``[n, H, W, 3]``), or None."""
    if not torch.is_tensor(images):
        return f"returned a {type(images).__name__}, not a tensor"
    if images.dtype != torch.uint8:
        return f"returned {images.dtype} images; expected uint8"
    if images.dim() != 4 or images.shape[0] != n or images.shape[-1] != 3:
        return f"returned shape {list(images.shape)}; expected [{n}, H, W, 3]"
    return None


class Decoder:
    """Base class of the backends; see the module docstring for the contract."""

    Options: type = dict
    quantize: str = "round"  # set from output.quantize by create_decoder
    latent_shape: tuple[int, ...]
    num_classes: int
    class_names: list[str]

    def __init__(self, cfg: DecoderConfig, sampler: SamplerConfig, runtime: RuntimeConfig):
        self.cfg = cfg
        self.sampler = sampler
        self.runtime = runtime
        self.device = resolve_device(runtime.device, "runtime.device")
        self.options = build(self.Options, dict(cfg.options), "decoder.options") \
            if self.Options is not dict else dict(cfg.options)

    def decode_float(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Images ``[N, C, H, W]`` in [-1, 1] (C = 1 or 3) for latents ``z`` and model labels."""
        raise NotImplementedError

    @torch.no_grad()
    def decode(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """uint8 ``[N, H, W, 3]`` images: :meth:`decode_float`, quantized by ``output.quantize``."""
        return to_uint8(self.decode_float(z, labels), self.quantize)

    def prepare(self, z: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch on the decoder's device, latents in the model's shape."""
        return (z.to(self.device, non_blocking=True).reshape(-1, *self.latent_shape),
                labels.to(self.device, non_blocking=True))

    def identity(self) -> dict:
        return {"backend": self.cfg.backend, "source": self.cfg.source, "revision": self.cfg.revision,
                "class": type(self).__name__, "latent_shape": list(self.latent_shape),
                "num_classes": self.num_classes, "quantize": self.quantize}

    # -- helpers for backends -----------------------------------------------------------------
    def autocast(self):
        if self.runtime.dtype == "float32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=getattr(torch, self.runtime.dtype))

    def maybe_compile(self, module: torch.nn.Module) -> Any:
        return torch.compile(module, mode=self.runtime.compile_mode) if self.runtime.compile else module

    def default_class_names(self, folder: str | None = None) -> list[str]:
        if folder is not None:
            path = Path(folder) / "class_names.json"
            if path.is_file():
                return list(json.loads(path.read_text()))
        return [f"class_{k}" for k in range(self.num_classes)]


def create_decoder(cfg: DecoderConfig, sampler: SamplerConfig, runtime: RuntimeConfig,
                   quantize: str = "round") -> Decoder:
    """The registered backend ``cfg.backend``, loaded and checked against the config; ``quantize``
    is the ``output.quantize`` rule of :func:`to_uint8`."""
    if quantize not in QUANTIZE:
        raise ConfigError(f"output.quantize: {quantize!r}; expected one of {', '.join(QUANTIZE)}")
    decoder = DECODERS.get(cfg.backend)(cfg, sampler, runtime)
    decoder.quantize = quantize
    check_against_config(decoder, cfg)
    return decoder


def check_against_config(decoder: Decoder, cfg: DecoderConfig) -> None:
    """The config's latent shape, class count and class indices must fit the loaded model."""
    if cfg.latent_shape is not None and tuple(cfg.latent_shape) != tuple(decoder.latent_shape):
        raise ConfigError(f"decoder.latent_shape: config says {list(cfg.latent_shape)} but the model "
                          f"{cfg.source!r} takes {list(decoder.latent_shape)}; fix or remove the key")
    if cfg.classes is not None:
        bad = [c for c in cfg.classes if not 0 <= c < decoder.num_classes]
        if bad:
            raise ConfigError(f"decoder.classes: {bad} are not classes of the model "
                              f"(it has {decoder.num_classes}: 0..{decoder.num_classes - 1})")
    k = dataset_num_classes(decoder, cfg)
    if cfg.num_classes is not None and cfg.num_classes != k:
        raise ConfigError(f"decoder.num_classes: config says {cfg.num_classes} but the model {cfg.source!r} "
                          f"gives {k} classes; fix decoder.num_classes or decoder.classes")
    if cfg.class_names is not None and len(cfg.class_names) != k:
        raise ConfigError(f"decoder.class_names: {len(cfg.class_names)} names for {k} classes")


def dataset_num_classes(decoder: Decoder, cfg: DecoderConfig) -> int:
    return len(cfg.classes) if cfg.classes is not None else decoder.num_classes


def dataset_class_names(decoder: Decoder, cfg: DecoderConfig) -> list[str]:
    if cfg.class_names is not None:
        return list(cfg.class_names)
    if cfg.classes is not None:
        return [decoder.class_names[c] for c in cfg.classes]
    return list(decoder.class_names)
