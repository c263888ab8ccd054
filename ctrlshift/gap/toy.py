"""Toy simulations of the modality gap under contrastive training (``ctrlshift gap toy``).

``n`` matched pairs of free embeddings ``x_i, y_i`` in ``dim`` dimensions are trained with the
symmetric InfoNCE loss at temperature ``tau`` by gradient descent, either on the unit sphere
(embeddings normalised before the similarity, as CLIP) or unnormalised. They start as two tight
clusters around orthogonal points (``init: clusters``, the modality gap at initialisation) or as
isotropic Gaussians (``init: gaussian``). Tracked over steps: the loss, the gap norm, each
modality's variance along the gap and its share of the total variance, and the part of the gap
inside each modality's centred span (``|V V^T g| / |g|``, V the principal directions holding all
but ``span_tol`` of the variance).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from ..config import load_config, meta
from ..files import atomic_write_json
from ..plotting import pyplot, save
from .metrics import gap_vector, normalize, span_fraction, variance_along


@dataclass
class ToyConfig:
    n: int = field(default=3, metadata=meta("pairs (the gap can only stay orthogonal to spans that leave room: n <= dim)", min=2))
    dim: int = field(default=3, metadata=meta("embedding dimension", min=2))
    init: Literal["clusters", "gaussian"] = "clusters"
    sphere: bool = field(default=True, metadata=meta("normalise embeddings before the similarity"))
    temperature: float = field(default=0.1, metadata=meta("InfoNCE temperature", min=1e-4))
    steps: int = field(default=3000, metadata=meta("gradient steps", min=1))
    lr: float = field(default=0.5, metadata=meta("learning rate", min=0.0))
    cluster_std: float = field(default=0.05, metadata=meta("spread of the initial clusters", min=0.0))
    record_every: int = field(default=25, metadata=meta("steps between records", min=1))
    span_tol: float = field(default=1e-3, metadata=meta(
        "variance share below which a principal direction is outside the span", min=0.0))
    seed: int = 0


def principal_span(Z: torch.Tensor, tol: float) -> torch.Tensor:
    c = Z - Z.mean(0)
    _, s, vh = torch.linalg.svd(c, full_matrices=False)
    share = s ** 2 / (s ** 2).sum().clamp_min(1e-30)
    return vh[share > tol].T


def init_embeddings(cfg: ToyConfig) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(cfg.seed)
    x = torch.randn(cfg.n, cfg.dim, generator=g, dtype=torch.float64)
    y = torch.randn(cfg.n, cfg.dim, generator=g, dtype=torch.float64)
    if cfg.init == "clusters":
        e = torch.eye(cfg.dim, dtype=torch.float64)
        x, y = e[0] + cfg.cluster_std * x, e[1] + cfg.cluster_std * y
    else:
        x, y = x / cfg.dim ** 0.5, y / cfg.dim ** 0.5
    if cfg.sphere:
        x, y = normalize(x), normalize(y)
    return x, y


def measure(x: torch.Tensor, y: torch.Tensor, tol: float) -> dict:
    g = gap_vector(x, y)
    vx, vy = variance_along(x, g), variance_along(y, g)
    tx, ty = float(x.var(0, unbiased=False).sum()), float(y.var(0, unbiased=False).sum())
    return {"gap_norm": float(g.norm()), "var_along_gap_x": vx, "var_along_gap_y": vy,
            "var_share_x": vx / max(tx, 1e-30), "var_share_y": vy / max(ty, 1e-30),
            "gap_in_span_x": span_fraction(g, principal_span(x, tol)),
            "gap_in_span_y": span_fraction(g, principal_span(y, tol))}


def simulate(cfg: ToyConfig, progress: bool = False) -> dict:
    x0, y0 = init_embeddings(cfg)
    X = x0.clone().requires_grad_(True)
    Y = y0.clone().requires_grad_(True)
    opt = torch.optim.SGD([X, Y], lr=cfg.lr)
    target = torch.arange(cfg.n)
    history = []
    from tqdm.auto import tqdm

    for step in tqdm(range(cfg.steps + 1), desc="toy", unit="step", disable=not progress, leave=False):
        x, y = (normalize(X), normalize(Y)) if cfg.sphere else (X, Y)
        logits = x @ y.T / cfg.temperature
        loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
        if step % cfg.record_every == 0 or step == cfg.steps:
            with torch.no_grad():
                history.append({"step": step, "loss": float(loss), **measure(x.detach(), y.detach(), cfg.span_tol)})
        if step == cfg.steps:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        x, y = (normalize(X), normalize(Y)) if cfg.sphere else (X, Y)
    return {"history": history, "x": x.detach(), "y": y.detach(), "x0": x0, "y0": y0}


def plot_toy(result: dict, cfg: ToyConfig, path: Path) -> list[str]:
    plt = pyplot()
    h = result["history"]
    steps = [r["step"] for r in h]
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.3), dpi=110)
    axes[0].plot(steps, [r["loss"] for r in h])
    axes[0].set_title("InfoNCE loss")
    axes[1].plot(steps, [r["gap_norm"] for r in h])
    axes[1].set_title("gap norm |mean(y) - mean(x)|")
    axes[2].semilogy(steps, [max(r["var_share_x"], 1e-12) for r in h], label="x")
    axes[2].semilogy(steps, [max(r["var_share_y"], 1e-12) for r in h], label="y")
    axes[2].set_title("share of variance along the gap")
    axes[2].legend(frameon=False)
    axes[3].plot(steps, [r["gap_in_span_x"] for r in h], label="x")
    axes[3].plot(steps, [r["gap_in_span_y"] for r in h], label="y")
    axes[3].set_title("|V V^T g| / |g| (gap inside the span)")
    axes[3].legend(frameon=False)
    for a in axes:
        a.set_xlabel("step")
        a.grid(alpha=0.3)
    fig.suptitle(f"toy: n={cfg.n}, dim={cfg.dim}, init={cfg.init}, {'sphere' if cfg.sphere else 'unnormalised'}, "
                 f"tau={cfg.temperature}", fontsize=9)
    fig.tight_layout()
    paths = save(fig, path.with_suffix(""))
    if cfg.dim in (2, 3):
        fig = plt.figure(figsize=(8, 3.8), dpi=110)
        for k, (title, x, y) in enumerate((("start", result["x0"], result["y0"]), ("end", result["x"], result["y"]))):
            ax = fig.add_subplot(1, 2, k + 1, projection="3d" if cfg.dim == 3 else None)
            pts = [x.numpy().T, y.numpy().T]
            for p, c, lab in zip(pts, ("tab:blue", "tab:orange"), ("x (image)", "y (text)")):
                ax.scatter(*p, s=8, c=c, label=lab)
            ax.set_title(title)
            ax.legend(fontsize=7, frameon=False)
        fig.tight_layout()
        paths += save(fig, path.with_name(path.stem + "-points"), ("png",))
    return paths


@dataclass
class ToyRun:
    """What ``ctrlshift gap toy`` wrote: ``toy.json`` (the history) and its plots."""

    config: ToyConfig
    history: list[dict]
    plots: list[str]

    def summary_lines(self) -> list[str]:
        lines = []
        for name, r in (("start", self.history[0]), ("end", self.history[-1])):
            lines.append(f"{name:>5}: loss {r['loss']:.4f}, gap {r['gap_norm']:.3f}, variance share along gap "
                         f"x {r['var_share_x']:.2e} y {r['var_share_y']:.2e}, gap inside span "
                         f"x {r['gap_in_span_x']:.3f} y {r['gap_in_span_y']:.3f}")
        return lines


def run_toy(overrides: list[str] | dict, out: str | Path, progress: bool = False) -> ToyRun:
    """Simulate with ``ToyConfig`` defaults <- ``overrides`` and write ``out/toy.json`` and plots."""
    cfg = load_config(ToyConfig, None, overrides)
    result = simulate(cfg, progress)
    out = Path(out)
    atomic_write_json(out / "toy.json", {"schema": "ctrlshift-gap-toy/1", "config": vars(cfg),
                                         "history": result["history"]})
    return ToyRun(cfg, result["history"], plot_toy(result, cfg, out / "toy.png"))
