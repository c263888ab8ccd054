"""What the first layer learns: energy profiles of filters in the patch PCA basis (docs/methods.md section 3).

- :func:`patch_basis`: eigenvectors ``u_i`` and variances ``lambda_i^2`` of the covariance of all
  input patches at the first layer's kernel size, flattened in (c, h, w) order like conv weights,
  taken after the model's input normalisation; only the data-defined components are kept (a
  rank-deficient covariance, e.g. grey images copied into 3 channels: rank 9 of 27 at 3x3, leaves
  ``eigh`` an arbitrary basis of its null space, so profiles there would mean nothing);
- :func:`energy_profile`: ``e_i = sqrt((1/K) sum_k (w_k . u_i)^2)`` over the K filters, optionally
  after subtracting the initial weights, normalised by its maximum;
- :func:`linear_cnn_profile`: the linear-CNN prediction
  ``e_i ∝ |1 - (1 - eta lambda_i^2)^t| / (eta lambda_i^2) * lambda_i`` and :func:`fit_linear_cnn`,
  a grid search over ``eta t`` for the best Pearson correlation;
- :func:`find_first_conv`: the first convolution of a network (timm, the zoo, a ViT's patch
  embedding), or one named.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ...errors import ConfigError


@dataclass
class PatchBasis:
    eigvals: torch.Tensor  # [r] variances lambda_i^2 of the data-defined components, descending
    eigvecs: torch.Tensor  # [D, r] columns u_i, (c, h, w) order
    kernel: tuple[int, int]
    channels: int
    dim: int = 0  # D = C * kh * kw, the filters' input size

    @property
    def rank(self) -> int:
        """How many components the data defines (the profiles' length)."""
        return int(self.eigvals.numel())


def patch_basis(images: torch.Tensor, kernel: int | tuple[int, int], max_patches: int = 200_000,
                seed: int = 0, rel_tol: float = 1e-9) -> PatchBasis:
    """PCA of the ``kernel``-sized patches of normalised images ``[N, C, H, W]``, restricted to
    the components with variance above ``rel_tol`` times the largest (the data-defined ones)."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    patches = F.unfold(images.double(), (kh, kw))  # [N, C*kh*kw, L], rows in (c, h, w) order
    patches = patches.transpose(1, 2).reshape(-1, patches.shape[1])
    if len(patches) > max_patches:
        keep = torch.randperm(len(patches), generator=torch.Generator().manual_seed(seed))[:max_patches]
        patches = patches[keep]
    patches = patches - patches.mean(0)
    cov = patches.T @ patches / (len(patches) - 1)
    vals, vecs = torch.linalg.eigh(cov)
    order = torch.argsort(vals, descending=True)
    vals, vecs = vals[order].clamp_min(0), vecs[:, order]
    rank = max(int((vals > rel_tol * vals[0]).sum()), 1) if float(vals[0]) > 0 and rel_tol >= 0 else len(vals)
    return PatchBasis(vals[:rank], vecs[:, :rank], (kh, kw), images.shape[1], int(cov.shape[0]))


def find_first_conv(model: nn.Module, name: str | None = None) -> tuple[str, nn.Conv2d]:
    """The first ``nn.Conv2d`` in module order (a ViT's patch embedding is one), or ``name``."""
    if name is not None:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise ConfigError(f"layer: {name!r} is not a module of {type(model).__name__}") from None
        if not isinstance(module, nn.Conv2d):
            raise ConfigError(f"layer: {name!r} is a {type(module).__name__}, not a Conv2d")
        return name, module
    for mod_name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return mod_name, module
    raise ConfigError(f"{type(model).__name__} has no Conv2d; name the first layer with layer=...")


def filter_matrix(conv: nn.Conv2d) -> torch.Tensor:
    """Weights ``[K, C*kh*kw]`` in (c, h, w) order."""
    w = conv.weight.detach().double()
    return w.reshape(w.shape[0], -1)


def energy_profile(weights: torch.Tensor, basis: PatchBasis, init: torch.Tensor | None = None) -> torch.Tensor:
    """``e_i = sqrt(mean_k (w_k . u_i)^2)``, normalised by its max (``init`` subtracted first)."""
    w = weights.double()
    if init is not None:
        w = w - init.double()
    if w.shape[1] != basis.eigvecs.shape[0]:  # D inputs; the profile has basis.rank entries
        raise ConfigError(f"filters of {w.shape[1]} inputs do not match patches of {basis.eigvecs.shape[0]}")
    e = ((w @ basis.eigvecs) ** 2).mean(0).sqrt()
    return e / e.max().clamp_min(1e-30)


def pearson(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def linear_cnn_profile(eigvals: torch.Tensor, eta: float, t: float) -> torch.Tensor:
    """``|1 - (1 - eta lambda^2)^t| / (eta lambda^2) * lambda`` normalised by its max: after ``t``
    gradient steps of size ``eta`` from zero, a linear CNN's filters have this energy along
    ``u_i``. Small ``eta t``: proportional to ``lambda`` (PCA-like); large: to ``1/lambda``
    (whitening)."""
    lam2 = eigvals.double().clamp_min(1e-12)
    x = eta * lam2
    decay = torch.exp(t * torch.log1p(-x.clamp(max=1 - 1e-12)))  # (1 - x)^t, stable for large t
    e = (1 - decay).abs() / x * lam2.sqrt()
    return e / e.max()


def fit_linear_cnn(profile: torch.Tensor, eigvals: torch.Tensor, eta: float | None = None,
                   grid: np.ndarray | None = None) -> dict:
    """Fix ``eta`` and grid-search ``t`` for the best Pearson correlation with ``profile``.

    The default ``eta = 1e-3 / lambda_max^2`` is the small-step (continuous-time) regime, where
    the curve depends on ``eta t`` alone, the one free parameter; the default grid spans
    ``eta t lambda_max^2`` from 1e-3 (PCA-like) to 1e6 (whitening). Returns ``eta``, ``t``,
    ``eta_t``, ``corr`` and the fitted curve."""
    lam2_max = float(eigvals.max())
    eta = 1e-3 / lam2_max if eta is None else float(eta)
    grid = np.logspace(-3, 6, 181) / (eta * lam2_max) if grid is None else np.asarray(grid)
    best = (-np.inf, None)
    for t in grid:
        c = pearson(profile.numpy(), linear_cnn_profile(eigvals, eta, float(t)).numpy())
        if c > best[0]:
            best = (c, float(t))
    corr, t = best
    return {"eta": eta, "t": t, "eta_t": eta * t, "corr": corr,
            "curve": linear_cnn_profile(eigvals, eta, t).tolist()}
