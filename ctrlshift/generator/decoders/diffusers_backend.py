"""diffusers backends: class-conditional UNet2DModel, DiT (+ its VAE), Stable Diffusion.

Each loads with ``from_pretrained`` from a hub id or a local folder laid out like a diffusers
pipeline (``unet/``, ``transformer/``, ``vae/``, ``scheduler/``). Decoding is deterministic: a
diffusers scheduler built from the model's own scheduler config (``sampler.name: model``, or any
deterministic one by name, :mod:`ctrlshift.generator.schedulers`), or EDM's Heun solver on the
model's sigmas. The embedded tiny model goes through this very path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ...config import meta
from ...errors import ConfigError
from ..samplers import VPModel, create_sampler
from .base import DECODERS, Decoder, check_local, resolve_source

log = logging.getLogger(__name__)


def _load(cls, source: str, subfolder: str | None, revision: str | None, what: str, **kwargs):
    return _loading(lambda: cls.from_pretrained(source, subfolder=subfolder, revision=revision, **kwargs),
                    source, subfolder, what)


def load_scheduler_config(source: str, subfolder: str | None, revision: str | None) -> dict:
    """The model's scheduler config (``scheduler_config.json``) as a plain dict."""
    from diffusers import DDIMScheduler

    return dict(_loading(lambda: DDIMScheduler.load_config(source, subfolder=subfolder, revision=revision),
                         source, subfolder, "scheduler config"))


def _loading(load, source: str, subfolder: str | None, what: str):
    """``load()``, with a missing folder or an unloadable hub id as one line naming what to check."""
    check_local(source)
    try:
        return load()
    except (OSError, ValueError, EnvironmentError) as exc:
        where = f"{source}/{subfolder}" if subfolder else source
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise ConfigError(f"decoder.source: could not load the {what} from {where!r} ({first}); "
                          "check the hub id or folder, and the network or HF_HUB_OFFLINE cache") from None


def vp_table(config: dict):
    """(alphas_cumprod, prediction_type, clip range or None) of a VP scheduler config, for the
    samplers that need the discrete schedule itself (EDM Heun on the model's sigmas)."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(config)
    clip = float(config.get("clip_sample_range", 1.0)) if config.get("clip_sample", False) else None
    return sched.alphas_cumprod.double().numpy(), config.get("prediction_type", "epsilon"), clip


class VPDiffusionDecoder(Decoder):
    """Shared sampling for discrete-time variance-preserving diffusers models: the registered
    sampler (``sampler.name``) runs on :meth:`vp_model`."""

    alphas_cumprod: np.ndarray
    prediction_type: str
    clip_sample: float | None
    scheduler_config: dict

    def set_scheduler(self, config: dict) -> None:
        self.scheduler_config = dict(config)
        self.alphas_cumprod, self.prediction_type, self.clip_sample = vp_table(self.scheduler_config)
        self.solver_settings = self.solver.settings(self.vp_model())  # fails early on a bad sampler

    def __init__(self, cfg, sampler, runtime):
        super().__init__(cfg, sampler, runtime)
        self.solver = create_sampler(sampler, "vp", cfg.backend)

    def eps_model(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def finish(self, x0: torch.Tensor) -> torch.Tensor:
        """Clean sample in model space -> image in [-1, 1]."""
        return x0

    def vp_model(self) -> VPModel:
        return VPModel(self.eps_model, self.alphas_cumprod, self.prediction_type, self.clip_sample, self.device,
                       self.scheduler_config)

    def sampler_settings(self) -> dict:
        s = self.sampler
        out = {"name": s.name, "steps": s.steps, "guidance_scale": s.guidance_scale,
               "prediction_type": self.prediction_type, "clip_sample": self.clip_sample,
               "num_train_timesteps": len(self.alphas_cumprod)}
        out.update(self.solver_settings)
        return out

    @torch.no_grad()
    def decode_float(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        z, labels = self.prepare(z, labels)
        with self.autocast():
            x0 = self.solver.run_vp(self.vp_model(), z, labels)
            return self.finish(x0.float()).float()

    def identity(self) -> dict:
        return {**super().identity(), "sampler": self.sampler_settings()}


@dataclass
class UNetOptions:
    subfolder: str | None = field(default="unet", metadata=meta("folder of the UNet inside the source"))
    scheduler_subfolder: str = field(default="scheduler", metadata=meta("folder of the scheduler config"))


@DECODERS.register("diffusers-unet")
class UNetDecoder(VPDiffusionDecoder):
    """A class-conditional UNet2DModel in pixel space (the embedded tiny model)."""

    Options = UNetOptions

    def __init__(self, cfg, sampler, runtime):
        super().__init__(cfg, sampler, runtime)
        from diffusers import UNet2DModel

        source = resolve_source(cfg.source)
        unet = _load(UNet2DModel, source, self.options.subfolder, cfg.revision, "UNet2DModel")
        k = unet.config.num_class_embeds
        if not k:
            raise ConfigError(f"decoder.source: the UNet in {cfg.source!r} has no class embedding "
                              "(num_class_embeds is null); ctrlshift needs a class-conditional model")
        self.unet = self.maybe_compile(unet.to(self.device).eval().requires_grad_(False))
        size = unet.config.sample_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        self.latent_shape = (unet.config.in_channels, *size)
        self.num_classes = int(k)
        self.class_names = self.default_class_names(source if Path(source).is_dir() else None)
        self.set_scheduler(load_scheduler_config(source, self.options.scheduler_subfolder, cfg.revision))

    def eps_model(self, x, t, labels):
        return self.unet(x, t, class_labels=labels).sample


@dataclass
class DiTOptions:
    transformer_subfolder: str = "transformer"
    vae_subfolder: str = "vae"
    scheduler_subfolder: str = "scheduler"


@DECODERS.register("diffusers-dit")
class DiTDecoder(VPDiffusionDecoder):
    """DiT (class-conditional transformer) in its VAE's latent space, with guidance.

    ``DiTTransformer2DModel`` in the latent space of its ``AutoencoderKL``, with
    classifier-free guidance (``sampler.guidance_scale``; the null class is ``num_embeds_ada_norm``).
    The latent is the transformer's initial noise ``[4, 32, 32]`` for DiT-XL/2-256."""

    Options = DiTOptions

    def __init__(self, cfg, sampler, runtime):
        super().__init__(cfg, sampler, runtime)
        from diffusers import AutoencoderKL, DiTTransformer2DModel

        source = resolve_source(cfg.source)
        o = self.options
        tr = _load(DiTTransformer2DModel, source, o.transformer_subfolder, cfg.revision, "DiT transformer")
        vae = _load(AutoencoderKL, source, o.vae_subfolder, cfg.revision, "VAE")
        self.transformer = self.maybe_compile(tr.to(self.device).eval().requires_grad_(False))
        self.vae = vae.to(self.device).eval().requires_grad_(False)
        self.scaling = float(vae.config.scaling_factor)
        self.latent_channels = tr.config.in_channels
        self.learned_sigma = tr.config.out_channels // 2 == tr.config.in_channels
        self.null_class = int(tr.config.num_embeds_ada_norm)
        self.latent_shape = (tr.config.in_channels, tr.config.sample_size, tr.config.sample_size)
        self.num_classes = self.null_class
        self.class_names = self._id2label(source) or self.default_class_names()
        self.set_scheduler(load_scheduler_config(source, o.scheduler_subfolder, cfg.revision))

    def _id2label(self, source: str) -> list[str] | None:
        from diffusers import DiffusionPipeline

        try:
            index = DiffusionPipeline.load_config(source, revision=self.cfg.revision)
        except (OSError, ValueError):
            return None
        id2label = index.get("id2label") if isinstance(index, dict) else None
        if not id2label:
            return None
        return [id2label.get(str(k), f"class_{k}").split(",")[0].strip() for k in range(self.num_classes)]

    def eps_model(self, x, t, labels):
        g = self.sampler.guidance_scale
        if g > 1:
            null = torch.full_like(labels, self.null_class)
            out = self.transformer(torch.cat([x, x]), timestep=torch.cat([t, t]),
                                   class_labels=torch.cat([labels, null])).sample
            eps = out[:, : self.latent_channels]
            cond, uncond = eps.chunk(2)
            eps = uncond + g * (cond - uncond)
        else:
            out = self.transformer(x, timestep=t, class_labels=labels).sample
            eps = out[:, : self.latent_channels] if self.learned_sigma else out
        return eps

    def finish(self, x0):
        return self.vae.decode(x0 / self.scaling).sample


@dataclass
class SDOptions:
    prompt_template: str = field(default="a photo of a {}", metadata=meta("prompt per class; {} is the class name"))
    negative_prompt: str = ""


@DECODERS.register("diffusers-sd")
class StableDiffusionDecoder(VPDiffusionDecoder):
    """Stable Diffusion 1.x/2.x with prompts embedded once per class (prefer diffusers-pipeline).

    Class names become prompts; the latent is the UNet's initial noise
    (``[4, H/8, W/8]``); the pipeline's scheduler (or any deterministic one) or Heun over its schedule,
with classifier-free guidance and the prompt embeddings computed once per class.
    ``decoder.class_names`` (or ``decoder.num_classes`` with default names) defines the classes."""

    Options = SDOptions

    def __init__(self, cfg, sampler, runtime):
        super().__init__(cfg, sampler, runtime)
        from diffusers import StableDiffusionPipeline

        if not cfg.class_names:
            raise ConfigError("decoder.class_names: Stable Diffusion needs the class names to write its prompts")
        source = resolve_source(cfg.source)
        pipe = _load(StableDiffusionPipeline, source, None, cfg.revision, "Stable Diffusion pipeline",
                     safety_checker=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe.to(self.device)
        self.unet = self.maybe_compile(pipe.unet.eval().requires_grad_(False))
        self.vae = pipe.vae.eval().requires_grad_(False)
        self.scaling = float(pipe.vae.config.scaling_factor)
        size = pipe.unet.config.sample_size
        self.latent_shape = (pipe.unet.config.in_channels, size, size)
        self.class_names = list(cfg.class_names)
        self.num_classes = len(self.class_names)
        prompts = [self.options.prompt_template.format(n) for n in self.class_names]
        with torch.no_grad():
            cond, uncond = pipe.encode_prompt(prompts, self.device, 1, True,
                                              negative_prompt=[self.options.negative_prompt] * len(prompts))
        self.cond, self.uncond = cond, uncond
        self.set_scheduler(dict(pipe.scheduler.config))

    def eps_model(self, x, t, labels):
        g = self.sampler.guidance_scale
        cond = self.cond[labels]
        if g > 1:
            emb = torch.cat([cond, self.uncond[labels]])
            out = self.unet(torch.cat([x, x]), torch.cat([t, t]), encoder_hidden_states=emb).sample
            c, u = out.chunk(2)
            return u + g * (c - u)
        return self.unet(x, t, encoder_hidden_states=cond).sample

    def finish(self, x0):
        return self.vae.decode(x0 / self.scaling).sample

    def identity(self) -> dict:
        return {**super().identity(), "prompt_template": self.options.prompt_template}
