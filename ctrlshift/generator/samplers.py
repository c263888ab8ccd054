"""Deterministic ODE solvers that turn a latent into a clean sample.

Diffusers models decode with diffusers' own scheduler classes, built from the model's
``scheduler_config.json`` (:mod:`.schedulers`: ``model``, ``ddim``, ``dpmsolver++``, ``unipc``,
``euler``, ``heun``, ``flow-euler``, ...); stochastic schedulers are refused. ctrlshift's own pure
solvers below remain where they add something: EDM's Heun sampler for EDM networks (and on the
sigmas of a diffusers model), and a DDIM reference on the exact ODE that the tests hold the
schedulers to.

Each pure sampler is a pure function of a model callable, the initial latent ``z`` (unit variance) and
precomputed tables. Per-step work stays on the device: step sizes are Python floats or entries of
a precomputed device tensor, so no step synchronises with the host.

- :func:`edm_heun`: the EDM sampler (Karras et al. 2022, Alg. 2 with no churn) on a denoiser
  ``D(x, sigma, labels)``; ``x_T = z * sigma_max``.
- :func:`ddim`: the reference DDIM (eta = 0, trailing timesteps) on an epsilon/v/sample-predicting network of a discrete
  variance-preserving schedule ``alphas_cumprod``; ``x_T = z``.
- :func:`vp_denoiser`: wraps such a discrete-time network as an EDM denoiser, so the Heun sampler
  also runs on diffusers models ("EDM-style Heun on the model's sigmas").

Decoders reach them through :data:`SAMPLERS`: ``create_sampler(cfg)`` gives a :class:`Sampler`
that knows its network calls per batch, how to run on a discrete VP model (:class:`VPModel`) and,
where it can, on an EDM denoiser, and what the manifest records about it. A plugin adds a sampler
by subclassing :class:`Sampler` and decorating it with ``@SAMPLERS.register("name")``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ..config import meta
from ..errors import ConfigError
from ..registry import Registry

Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
EpsModel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

SAMPLERS: Registry["Sampler"] = Registry("sampler")


@dataclass
class SamplerConfig:
    name: str = field(default="model", metadata=meta(
        "model: the scheduler class the model's own scheduler config names; ddim, dpmsolver++, unipc, "
        "euler, heun, flow-euler, ... (ctrlshift list samplers): that diffusers scheduler built from the "
        "model's config; edm-heun: EDM 2nd-order Heun (docs/methods.md)", registry=SAMPLERS))
    steps: int = field(default=50, metadata=meta("solver steps (Heun uses 2 network calls per step but the last)", min=1))
    sigma_min: float | None = field(default=None, metadata=meta(
        "smallest noise level of the Karras schedule; null: the model's own (0.002 for EDM)", min=0.0))
    sigma_max: float | None = field(default=None, metadata=meta(
        "largest noise level; null: the model's own (80 for EDM)", min=0.0))
    rho: float = field(default=7.0, metadata=meta("Karras schedule exponent", min=0.0))
    sigma_end: float = field(default=0.0, metadata=meta(
        "noise level of the very last step (0 in EDM; 1e-5 in the Control+Shift reference code)", min=0.0))
    guidance_scale: float = field(default=1.0, metadata=meta(
        "classifier-free guidance scale (DiT, Stable Diffusion and other pipelines); 1 disables it", min=0.0))
    options: dict = field(default_factory=dict, metadata=meta(
        "scheduler config keys passed to the diffusers scheduler's from_config (e.g. timestep_spacing: "
        "trailing, use_karras_sigmas: true); they override the model's own"))


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0,
                  sigma_end: float = 0.0) -> np.ndarray:
    """EDM's time steps: ``steps`` levels from sigma_max to sigma_min, then ``sigma_end``."""
    i = np.arange(steps, dtype=np.float64)
    denom = max(steps - 1, 1)
    t = (sigma_max ** (1 / rho) + i / denom * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return np.concatenate([t, [sigma_end]])


def edm_heun(denoiser: Denoiser, z: torch.Tensor, labels: torch.Tensor, sigmas: np.ndarray,
             state_dtype: torch.dtype = torch.float64,
             round_sigma: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """EDM's deterministic Heun sampler (``S_churn = 0``); the last step is plain Euler.

    ``round_sigma`` is the network's own rounding of noise levels (EDM's ``net.round_sigma``: the
    identity for VP, VE and EDM preconditioning, the nearest of its 1,000 discrete levels for
    iDDPM). As in EDM's ``edm_sampler``, every level but the final ``sigma_end`` goes through it."""
    t_steps = torch.as_tensor(sigmas, dtype=state_dtype, device=z.device)
    if round_sigma is not None:
        rounded = torch.as_tensor(round_sigma(t_steps[:-1])).to(device=z.device, dtype=state_dtype)
        t_steps = torch.cat([rounded, t_steps[-1:]])
    x = z.to(state_dtype) * t_steps[0]
    n = len(sigmas) - 1
    for i in range(n):
        t_cur, t_next = t_steps[i], t_steps[i + 1]
        d_cur = (x - denoiser(x, t_cur, labels).to(state_dtype)) / t_cur
        x_next = x + (t_next - t_cur) * d_cur
        if i < n - 1:
            d_prime = (x_next - denoiser(x_next, t_next, labels).to(state_dtype)) / t_next
            x_next = x + (t_next - t_cur) * (0.5 * d_cur + 0.5 * d_prime)
        x = x_next
    return x


def ddim_timesteps(num_train_timesteps: int, steps: int) -> np.ndarray:
    """Evenly spaced ('trailing') timesteps from T-1 down, one per step."""
    ts = np.round(np.linspace(num_train_timesteps, 0, steps + 1)[:-1]).astype(np.int64) - 1
    return np.clip(ts, 0, num_train_timesteps - 1)


def ddim(eps_model: EpsModel, z: torch.Tensor, labels: torch.Tensor, alphas_cumprod: np.ndarray,
         steps: int, prediction_type: str = "epsilon", clip_sample: float | None = None) -> torch.Tensor:
    """DDIM with eta = 0, ending on the predicted clean sample (alpha_bar = 1).

    ``eps_model(x_t, t, labels)`` returns the network output for integer timesteps ``t``; it is
    read as ``prediction_type`` ('epsilon', 'v_prediction' or 'sample'). ``clip_sample`` clamps the
    predicted clean sample to ``[-c, c]`` as the scheduler config asks.
    """
    ts = ddim_timesteps(len(alphas_cumprod), steps)
    abar = np.asarray(alphas_cumprod, dtype=np.float64)
    x = z.float()
    t_dev = torch.as_tensor(ts, device=z.device)
    for k, t in enumerate(ts):
        a_t = float(abar[t])
        a_prev = float(abar[ts[k + 1]]) if k + 1 < len(ts) else 1.0
        out = eps_model(x, t_dev[k].expand(x.shape[0]), labels).float()
        x0, eps = _split_prediction(out, x, a_t, prediction_type)
        if clip_sample is not None:
            x0 = x0.clamp(-clip_sample, clip_sample)
            eps = (x - a_t ** 0.5 * x0) / (1 - a_t) ** 0.5
        x = a_prev ** 0.5 * x0 + (1 - a_prev) ** 0.5 * eps
    return x


def _split_prediction(out: torch.Tensor, x: torch.Tensor, abar: float, kind: str):
    sa, sb = abar ** 0.5, (1 - abar) ** 0.5
    if kind == "epsilon":
        return (x - sb * out) / sa, out
    if kind == "v_prediction":
        return sa * x - sb * out, sa * out + sb * x
    if kind == "sample":
        return out, (x - sa * out) / sb
    raise ValueError(f"prediction_type {kind!r} is not supported; expected epsilon, v_prediction or sample")


def vp_denoiser(eps_model: EpsModel, alphas_cumprod: np.ndarray, prediction_type: str = "epsilon",
                device: torch.device | str = "cpu") -> tuple[Denoiser, float, float]:
    """An EDM denoiser ``D(x, sigma, labels)`` around a discrete-time VP network.

    ``x_vp = x / sqrt(1 + sigma^2)`` and the (fractional) timestep is interpolated in log-sigma over
    the discrete schedule ``sigma_t = sqrt((1 - abar_t) / abar_t)``. Returns the denoiser and the
    schedule's smallest and largest sigma.
    """
    abar = np.asarray(alphas_cumprod, dtype=np.float64)
    log_sig = torch.as_tensor(np.log(np.sqrt((1 - abar) / abar)), device=device)
    steps = torch.arange(len(abar), dtype=torch.float64, device=device)

    def denoise(x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        s = sigma.to(torch.float64).reshape(-1)[:1]
        t = _interp(s.log(), log_sig, steps)
        abar_t = 1.0 / (1.0 + s ** 2)
        x_vp = (x * abar_t.sqrt()).float()
        out = eps_model(x_vp, t.float().expand(x.shape[0]), labels).to(torch.float64)
        sa, sb = abar_t.sqrt(), (1 - abar_t).sqrt()
        if prediction_type == "epsilon":
            eps = out
        elif prediction_type == "v_prediction":
            eps = sa * out + sb * x_vp.double()
        elif prediction_type == "sample":
            return out
        else:
            raise ValueError(f"prediction_type {prediction_type!r} is not supported")
        return x - s * eps

    sig = np.sqrt((1 - abar) / abar)
    return denoise, float(sig.min()), float(sig.max())


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear ``np.interp`` on the device (``xp`` increasing)."""
    x = x.clamp(xp[0], xp[-1])
    idx = torch.searchsorted(xp, x).clamp(1, len(xp) - 1)
    x0, x1 = xp[idx - 1], xp[idx]
    f0, f1 = fp[idx - 1], fp[idx]
    w = (x - x0) / (x1 - x0)
    return f0 + w * (f1 - f0)


# ----------------------------------------------------------------------------------------------
# The registered samplers


@dataclass
class VPModel:
    """A discrete-time variance-preserving network as a sampler sees it."""

    eps_model: EpsModel  # (x_t, timesteps, labels) -> network output
    alphas_cumprod: np.ndarray
    prediction_type: str = "epsilon"
    clip_sample: float | None = None
    device: torch.device | str = "cpu"
    scheduler_config: dict | None = None  # the model's diffusers scheduler config, as loaded

    def sigmas(self) -> np.ndarray:
        return np.sqrt((1 - self.alphas_cumprod) / self.alphas_cumprod)


class Sampler:
    """A registered sampler, configured by a :class:`SamplerConfig`. ``runs_on`` names the kinds of
    network it can drive: ``vp`` (discrete-time diffusers models) and ``edm`` (EDM denoisers)."""

    runs_on: tuple[str, ...] = ("vp",)
    refused = False  # a name registered only to refuse it with a clear line (stochastic schedulers)

    def __init__(self, cfg: SamplerConfig):
        self.cfg = cfg

    def network_calls(self) -> int:
        """Network evaluations per batch (classifier-free guidance doubles the batch, not this)."""
        raise NotImplementedError

    def run_vp(self, model: VPModel, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The clean sample of a discrete VP model from the initial latent ``z``."""
        raise NotImplementedError

    def run_edm(self, denoiser: Denoiser, z: torch.Tensor, labels: torch.Tensor, sigma_min: float,
                sigma_max: float, round_sigma: Callable | None = None) -> torch.Tensor:
        """The clean sample of an EDM denoiser with the given noise range (``round_sigma``: the
        network's rounding of noise levels, see :func:`edm_heun`)."""
        raise NotImplementedError(f"sampler {self.cfg.name!r} cannot run on an EDM network")

    def settings(self, model: VPModel | None = None) -> dict:
        """What the manifest records about the sampling (on ``model``, for a VP network)."""
        return {"name": self.cfg.name, "steps": self.cfg.steps}

    def settings_edm(self, sigma_min: float, sigma_max: float) -> dict:
        """What the manifest records about the sampling of an EDM network with this noise range."""
        raise NotImplementedError(f"sampler {self.cfg.name!r} cannot run on an EDM network")


@SAMPLERS.register("edm-heun")
class EDMHeun(Sampler):
    """EDM's Heun solver on a Karras schedule; on a VP model, over the model's sigmas."""

    runs_on = ("vp", "edm")

    def network_calls(self) -> int:
        return 2 * self.cfg.steps - 1

    def karras(self, lo: float, hi: float) -> np.ndarray:
        c = self.cfg
        lo = c.sigma_min if c.sigma_min is not None else lo
        hi = c.sigma_max if c.sigma_max is not None else hi
        return karras_sigmas(c.steps, lo, hi, c.rho, c.sigma_end)

    def vp_sigmas(self, model: VPModel) -> np.ndarray:
        sig = model.sigmas()
        return self.karras(float(sig.min()), float(sig.max()))

    def run_vp(self, model, z, labels):
        denoiser, _, _ = vp_denoiser(model.eps_model, model.alphas_cumprod, model.prediction_type, model.device)
        x0 = edm_heun(denoiser, z, labels, self.vp_sigmas(model))
        return x0.clamp(-model.clip_sample, model.clip_sample) if model.clip_sample is not None else x0

    def edm_sigmas(self, sigma_min: float, sigma_max: float) -> np.ndarray:
        """EDM's defaults (0.002, 80), clipped to the network's own range."""
        c = self.cfg
        lo = max(c.sigma_min if c.sigma_min is not None else 0.002, sigma_min)
        hi = min(c.sigma_max if c.sigma_max is not None else 80.0, sigma_max)
        return karras_sigmas(c.steps, lo, hi, c.rho, c.sigma_end)

    def run_edm(self, denoiser, z, labels, sigma_min, sigma_max, round_sigma=None):
        return edm_heun(denoiser, z, labels, self.edm_sigmas(sigma_min, sigma_max), round_sigma=round_sigma)

    def settings(self, model=None):
        out = super().settings()
        if model is not None:
            out.update(sigmas=self.vp_sigmas(model).tolist(), rho=self.cfg.rho)
        return out

    def settings_edm(self, sigma_min, sigma_max):
        return {**super().settings(), "sigmas": self.edm_sigmas(sigma_min, sigma_max).tolist(), "rho": self.cfg.rho}


def create_sampler(cfg: SamplerConfig, network: str = "vp", backend: str = "") -> Sampler:
    """The registered sampler ``cfg.name``; it must run on ``network`` (``vp``, ``edm`` or
    ``pipeline``: a diffusers pipeline that takes a scheduler object)."""
    cls = SAMPLERS.get(cfg.name)
    if network not in cls.runs_on:
        able = [n for n in SAMPLERS.list() if network in SAMPLERS.get(n).runs_on and not SAMPLERS.get(n).refused]
        raise ConfigError(f"sampler.name: the {backend or network} backend decodes with "
                          f"{' or '.join(repr(n) for n in able)}, not {cfg.name!r}")
    return cls(cfg)


from . import schedulers as _schedulers  # noqa: E402,F401  (registers the diffusers schedulers)
