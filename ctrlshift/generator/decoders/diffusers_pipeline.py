"""Any diffusers pipeline that takes ``latents=`` and a prompt: SD 1.x/2.x, SDXL, SD3, PixArt,
Sana, Flux, ... (backend ``diffusers-pipeline``).

The latent is the pipeline's initial noise, in the shape its ``prepare_latents`` would draw: for
UNet and most transformer pipelines ``[C, H/f, W/f]`` (``f`` the VAE's scale factor); for Flux the
unpacked ``[C, H/8, W/8]``, packed into Flux's 2x2 patches before the call (a fixed permutation, so
the families' geometry is unchanged). The shift families act on it; the decoder calls the pipeline
itself with ``latents=``, the class prompts, ``sampler.steps`` and ``sampler.guidance_scale``.

Flow-matching pipelines (SD3, Flux, Sana and any ``FlowMatchEulerDiscreteScheduler`` model) decode
deterministically through the same path: their sampler is an ODE from the t = 1 noise, which is the
latent. The pipeline's scheduler is kept (``sampler.name: model``) or replaced by any deterministic
one by name; stochastic schedulers are refused.

Class names become prompts through ``decoder.options.prompt_template`` (or explicit
``decoder.options.prompts``, one per class); ``decoder.latent_shape`` picks the resolution.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field

import torch

from ...config import meta
from ...errors import ConfigError
from ..samplers import create_sampler
from .base import DECODERS, Decoder, resolve_source
from .diffusers_backend import _load

log = logging.getLogger(__name__)


@dataclass
class PipelineOptions:
    prompt_template: str = field(default="a photo of a {}", metadata=meta(
        "prompt of each class; {} is the class name"))
    prompts: list[str] | None = field(default=None, metadata=meta(
        "explicit prompts, one per class (instead of the template)"))
    negative_prompt: str = field(default="", metadata=meta("negative prompt (with guidance_scale > 1)"))
    call_kwargs: dict = field(default_factory=dict, metadata=meta(
        "further keyword arguments of the pipeline call (e.g. max_sequence_length)"))
    pipeline_kwargs: dict = field(default_factory=dict, metadata=meta(
        "further keyword arguments of from_pretrained (e.g. variant: fp16)"))


def pack_flux(latents: torch.Tensor) -> torch.Tensor:
    """``[N, C, H, W]`` -> Flux's packed ``[N, (H/2)(W/2), 4C]`` (2x2 patches, channels first)."""
    n, c, h, w = latents.shape
    x = latents.view(n, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(n, (h // 2) * (w // 2), c * 4)


def unpack_flux(packed: torch.Tensor, c: int, h: int, w: int) -> torch.Tensor:
    """The inverse of :func:`pack_flux`."""
    n = packed.shape[0]
    x = packed.view(n, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(n, c, h, w)


@DECODERS.register("diffusers-pipeline")
class PipelineDecoder(Decoder):
    """Any text-to-image pipeline taking latents= (SD, SDXL, SD3, PixArt, Sana, Flux, ...)."""

    Options = PipelineOptions

    def __init__(self, cfg, sampler, runtime):
        super().__init__(cfg, sampler, runtime)
        from diffusers import DiffusionPipeline

        names = cfg.class_names or (self.options.prompts and [f"class_{k}" for k in range(len(self.options.prompts))])
        if not names:
            raise ConfigError("decoder.class_names: a text-to-image pipeline needs the class names (or "
                              "decoder.options.prompts) to write its prompts")
        self.class_names = list(names)
        self.num_classes = len(self.class_names)
        if self.options.prompts is not None and len(self.options.prompts) != self.num_classes:
            raise ConfigError(f"decoder.options.prompts: {len(self.options.prompts)} prompts for "
                              f"{self.num_classes} classes")
        if self.options.prompts is None and "{}" not in self.options.prompt_template:
            raise ConfigError(f"decoder.options.prompt_template: {self.options.prompt_template!r} has no {{}} "
                              "for the class name")
        source = resolve_source(cfg.source)
        kwargs = dict(self.options.pipeline_kwargs)
        if runtime.dtype != "float32":
            kwargs.setdefault("torch_dtype", getattr(torch, runtime.dtype))
        pipe = _load(DiffusionPipeline, source, None, cfg.revision, "diffusers pipeline", **kwargs)
        params = inspect.signature(pipe.__call__).parameters
        if "latents" not in params:
            raise ConfigError(f"decoder.backend: {type(pipe).__name__} does not take latents=; use diffusers-dit or "
                              "diffusers-unet for class-conditional models, or a pipeline that takes latents")
        self.call_params = set(params)
        self.solver = create_sampler(sampler, "pipeline", cfg.backend)
        own = dict(pipe.scheduler.config)
        pipe.scheduler = self.solver.scheduler(own)  # refuses stochastic and mismatched schedulers
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe.to(self.device)
        self.flux = type(pipe).__name__.startswith("Flux")
        self.vae_scale = int(getattr(pipe, "vae_scale_factor", 8))
        self.latent_shape = self._latent_shape(cfg.latent_shape)
        self.prompts = list(self.options.prompts) if self.options.prompts is not None else [
            self.options.prompt_template.format(n) for n in self.class_names]

    def _latent_shape(self, configured) -> tuple[int, ...]:
        net = getattr(self.pipe, "unet", None) or getattr(self.pipe, "transformer", None)
        if net is None:
            raise ConfigError(f"decoder.source: {type(self.pipe).__name__} has neither a unet nor a transformer")
        c = int(net.config.in_channels) // (4 if self.flux else 1)
        if self.flux:  # its transformer has no sample size; the pipeline's default is in latent pixels
            size = int(getattr(self.pipe, "default_sample_size", 128))
        else:
            size = getattr(net.config, "sample_size", None) or getattr(self.pipe, "default_sample_size", None)
            size = size[0] if isinstance(size, (list, tuple)) else size
        if configured is not None:
            if len(configured) != 3 or configured[0] != c:
                raise ConfigError(f"decoder.latent_shape: {list(configured)}; the pipeline's latent has {c} channels: "
                                  f"give [{c}, H, W] (H, W = image size / {self.vae_scale})")
            if self.flux and (configured[1] % 2 or configured[2] % 2):
                raise ConfigError(f"decoder.latent_shape: {list(configured)}; Flux packs 2x2 patches, so H and W "
                                  "must be even")
            return tuple(int(s) for s in configured)
        return (c, int(size), int(size))

    def call_kwargs(self, n: int) -> dict:
        _, h, w = self.latent_shape
        out = {"num_inference_steps": self.sampler.steps, "guidance_scale": self.sampler.guidance_scale,
               "height": h * self.vae_scale, "width": w * self.vae_scale, "output_type": "pt"}
        if self.options.negative_prompt and "negative_prompt" in self.call_params:
            out["negative_prompt"] = [self.options.negative_prompt] * n
        if "use_resolution_binning" in self.call_params:
            out["use_resolution_binning"] = False
        out.update(self.options.call_kwargs)
        return out

    def pipeline_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Latents ``[N, *latent_shape]`` in the form the pipeline's ``latents=`` takes."""
        return pack_flux(z) if self.flux else z

    @torch.no_grad()
    def decode_float(self, z, labels):
        z, labels = self.prepare(z, labels)
        prompts = [self.prompts[int(k)] for k in labels.tolist()]
        out = self.pipe(prompt=prompts, latents=self.pipeline_latents(z.float()), **self.call_kwargs(len(prompts)))
        images = out.images if hasattr(out, "images") else out[0]
        return images.float() * 2 - 1

    def identity(self) -> dict:
        sched = self.pipe.scheduler
        return {**super().identity(), "pipeline": type(self.pipe).__name__, "prompts": self.prompts,
                "negative_prompt": self.options.negative_prompt,
                "sampler": {"name": self.sampler.name, "steps": self.sampler.steps,
                            "guidance_scale": self.sampler.guidance_scale, "scheduler": type(sched).__name__,
                            "config": self.solver.settings_of(sched)}}
