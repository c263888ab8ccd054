"""Samplers against the exact probability-flow map of Gaussian data.

For data ``x0 ~ N(0, s^2 I)`` the ideal denoiser is ``D(x, sigma) = s^2 / (s^2 + sigma^2) x``, and
the ODE from ``x_T = z sigma_max`` ends at ``z sigma_max s / sqrt(s^2 + sigma_max^2)``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ctrlshift.generator.samplers import (ddim, ddim_timesteps, edm_heun, karras_sigmas, vp_denoiser)

S = 0.5


def cosine_abar(n=1000):
    from diffusers import DDIMScheduler

    return DDIMScheduler(num_train_timesteps=n, beta_schedule="squaredcos_cap_v2").alphas_cumprod.double().numpy()


def test_karras_sigmas_match_edm():
    sig = karras_sigmas(18, 0.002, 80.0, 7.0)
    assert len(sig) == 19 and sig[0] == pytest.approx(80.0) and sig[-2] == pytest.approx(0.002) and sig[-1] == 0
    assert np.all(np.diff(sig) < 0)
    assert karras_sigmas(50, 0.002, 80, 7, sigma_end=1e-5)[-1] == 1e-5


def test_edm_heun_follows_the_exact_flow():
    z = torch.randn(4, 16, generator=torch.Generator().manual_seed(0))
    sig = karras_sigmas(50, 0.002, 80.0)
    out = edm_heun(lambda x, s, y: S ** 2 / (S ** 2 + s ** 2) * x, z, torch.zeros(4), sig)
    # 50 Karras steps leave a relative error of 0.6% on this ODE (it falls 4x per halving)
    expected = z.double() * 80.0 * S / math.sqrt(S ** 2 + 80.0 ** 2)
    assert torch.allclose(out, expected, rtol=0.01)
    assert not torch.allclose(out, expected, rtol=1e-3)  # the error is really second order, not zero


def test_heun_is_second_order():
    z = torch.randn(2, 8, generator=torch.Generator().manual_seed(1))
    exact = z.double() * 80 * S / math.sqrt(S ** 2 + 80 ** 2)
    den = lambda x, s, y: S ** 2 / (S ** 2 + s ** 2) * x
    errs = [float((edm_heun(den, z, None, karras_sigmas(n, 0.002, 80)) - exact).abs().max()) for n in (10, 20)]
    assert errs[1] < errs[0] / 3  # halving the step cuts the error by about 4


def gaussian_eps(abar):
    table = torch.as_tensor(abar)

    def eps_model(x, t, y):
        a = table[t.long()].to(x.dtype).view(-1, *[1] * (x.dim() - 1))
        return (1 - a).sqrt() / (a * S ** 2 + 1 - a) * x

    return eps_model


def test_ddim_follows_the_exact_flow():
    abar = cosine_abar()
    z = torch.randn(4, 16, generator=torch.Generator().manual_seed(2))
    out = ddim(gaussian_eps(abar), z, None, abar, steps=100)
    a_t = abar[ddim_timesteps(len(abar), 100)[0]]
    expected = z * S / math.sqrt(a_t * S ** 2 + 1 - a_t)
    assert torch.allclose(out, expected.float(), rtol=0.02)


def test_ddim_timesteps_descend_from_the_last():
    ts = ddim_timesteps(1000, 10)
    assert ts[0] == 999 and len(ts) == 10 and np.all(np.diff(ts) < 0) and ts[-1] >= 0


def test_vp_denoiser_lets_heun_run_on_a_discrete_model():
    abar = cosine_abar()
    table = torch.as_tensor(abar)

    def eps_model(x, t, y):  # fractional timesteps: interpolate the schedule
        lo = t.floor().long().clamp(0, len(abar) - 2)
        w = (t - lo).to(torch.float64)
        a = ((1 - w) * table[lo] + w * table[lo + 1]).to(x.dtype).view(-1, 1)
        return (1 - a).sqrt() / (a * S ** 2 + 1 - a) * x

    den, smin, smax = vp_denoiser(eps_model, abar)
    z = torch.randn(4, 16, generator=torch.Generator().manual_seed(3))
    sig = karras_sigmas(40, smin, min(smax, 80.0))
    out = edm_heun(den, z, None, sig)
    top = sig[0]
    expected = z.double() * top * S / math.sqrt(S ** 2 + top ** 2)
    assert torch.allclose(out, expected, rtol=0.02)
