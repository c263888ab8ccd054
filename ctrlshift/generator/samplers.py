"""Deterministic ODE solvers that turn a latent into a clean sample.

Each sampler is a pure function of a model callable, the initial latent ``z`` (unit variance) and
precomputed tables. Per-step work stays on the device: step sizes are Python floats or entries of
a precomputed device tensor, so no step synchronises with the host.

- :func:`edm_heun`: the EDM sampler (Karras et al. 2022, Alg. 2 with no churn) on a denoiser
  ``D(x, sigma, labels)``; ``x_T = z * sigma_max``.
- :func:`ddim`: DDIM with eta = 0 on an epsilon/v/sample-predicting network of a discrete
  variance-preserving schedule ``alphas_cumprod``; ``x_T = z``.
- :func:`vp_denoiser`: wraps such a discrete-time network as an EDM denoiser, so the Heun sampler
  also runs on diffusers models ("EDM-style Heun on the model's sigmas").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np
import torch

from ..config import meta
from ..registry import Registry

Denoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
EpsModel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

SAMPLERS: Registry[Callable] = Registry("sampler")


@dataclass
class SamplerConfig:
    name: Literal["edm-heun", "ddim"] = field(default="ddim", metadata=meta(
        "edm-heun: EDM 2nd-order Heun (METHODS.md); ddim: DDIM with eta=0"))
    steps: int = field(default=50, metadata=meta("solver steps (Heun uses 2 network calls per step but the last)", min=1))
    sigma_min: float | None = field(default=None, metadata=meta(
        "smallest noise level of the Karras schedule; null: the model's own (0.002 for EDM)", min=0.0))
    sigma_max: float | None = field(default=None, metadata=meta(
        "largest noise level; null: the model's own (80 for EDM)", min=0.0))
    rho: float = field(default=7.0, metadata=meta("Karras schedule exponent", min=0.0))
    sigma_end: float = field(default=0.0, metadata=meta(
        "noise level of the very last step (0 in EDM; 1e-5 in the Control+Shift reference code)", min=0.0))
    guidance_scale: float = field(default=1.0, metadata=meta(
        "classifier-free guidance scale (DiT, Stable Diffusion); 1 disables it", min=0.0))


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0,
                  sigma_end: float = 0.0) -> np.ndarray:
    """EDM's time steps: ``steps`` levels from sigma_max to sigma_min, then ``sigma_end``."""
    i = np.arange(steps, dtype=np.float64)
    denom = max(steps - 1, 1)
    t = (sigma_max ** (1 / rho) + i / denom * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return np.concatenate([t, [sigma_end]])


@SAMPLERS.register("edm-heun")
def edm_heun(denoiser: Denoiser, z: torch.Tensor, labels: torch.Tensor, sigmas: np.ndarray,
             state_dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """EDM's deterministic Heun sampler (``S_churn = 0``); the last step is plain Euler."""
    t_steps = torch.as_tensor(sigmas, dtype=state_dtype, device=z.device)
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


@SAMPLERS.register("ddim")
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
