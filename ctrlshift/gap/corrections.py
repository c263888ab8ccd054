"""Gap corrections: fitted once, saved, applied to new embeddings.

- ``projected`` (the paper's): ``V`` spans the centred retrieval set (e.g. the K class-text
  embeddings, K-1 directions); ``g' = g - V V^T g``; images move by ``alpha g'`` towards the texts.
  Every image's scores against the retrieval set shift by the same ``alpha <g', t_k>``, so rankings
  are kept; with re-normalisation they are kept for image queries (a positive rescaling per image),
  and for text queries only when ``g'`` is orthogonal to the images' centred span as well.
- ``mean``: images move by ``alpha g`` (the plain mean shift): rankings change unless ``g`` happens
  to be orthogonal to the retrieval span.
- ``liang`` (Liang et al. 2022): ``d = mean(X) - mean(T)`` (image minus text), ``d_hat = d/|d|``;
  texts ``t' = normalize(t + lambda/2 d_hat)``, images ``i' = normalize(i - lambda/2 d_hat)``:
  both modalities move towards each other, always re-normalised. ``lambda`` is Liang's absolute
  shift length (:attr:`Correction.lam`).

One scale for all three: ``alpha = 0`` is no correction and ``alpha = 1`` closes the gap along the
direction the correction moves, on the embeddings it was fitted on: the component of
``mean(T') - mean(X')`` along that direction is zero. Each correction stores the step that does
this (:attr:`Correction.scale`, found by bisection because re-normalisation makes it nonlinear;
exactly 1 for ``projected`` and ``mean`` without re-normalisation) and moves by ``alpha * scale``.
For ``liang`` that step is ``lambda_close``, so ``lambda = alpha * lambda_close``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from ..errors import ConfigError
from ..files import atomic_save_torch, atomic_write_json
from .metrics import centred_span, gap_vector, normalize

KINDS = ("projected", "mean", "liang")


@dataclass
class Correction:
    kind: Literal["projected", "mean", "liang"]
    alpha: float
    vector: torch.Tensor  # g' (projected), g (mean) or d_hat (liang)
    renormalize: bool = True
    basis: torch.Tensor | None = None  # V of the retrieval set (projected)
    source: dict = field(default_factory=dict)
    scale: float = 1.0  # the step that closes the gap on the fitting data (alpha = 1)

    @property
    def step(self) -> float:
        return self.alpha * self.scale

    @property
    def lam(self) -> float | None:
        """Liang et al.'s absolute shift length lambda (``liang`` only)."""
        return self.step if self.kind == "liang" else None

    def images(self, X: torch.Tensor) -> torch.Tensor:
        return self._images(X, self.step)

    def texts(self, T: torch.Tensor) -> torch.Tensor:
        return self._texts(T, self.step)

    def _images(self, X: torch.Tensor, step: float) -> torch.Tensor:
        X = X.double()
        if self.kind == "liang":
            return normalize(X - step / 2 * self.vector)
        out = X + step * self.vector
        return normalize(out) if self.renormalize else out

    def _texts(self, T: torch.Tensor, step: float) -> torch.Tensor:
        T = T.double()
        if self.kind == "liang":
            return normalize(T + step / 2 * self.vector)
        return T

    def residual(self, X: torch.Tensor, T: torch.Tensor, step: float) -> float:
        """The gap ``mean(T') - mean(X')`` along the moved direction after a step of ``step``."""
        direction = self.vector.double() / self.vector.double().norm().clamp_min(1e-30)
        sign = -1.0 if self.kind == "liang" else 1.0  # liang's vector points from texts to images
        gap = self._texts(T, step).mean(0) - self._images(X, step).mean(0)
        return sign * float(gap @ direction)

    def with_alpha(self, alpha: float) -> "Correction":
        return Correction(self.kind, alpha, self.vector, self.renormalize, self.basis, self.source, self.scale)

    def with_lambda(self, lam: float) -> "Correction":
        """A ``liang`` correction at Liang's absolute ``lambda``."""
        if self.kind != "liang":
            raise ConfigError(f"correction: lambda is Liang's parameter; {self.kind!r} takes alpha")
        return self.with_alpha(lam / self.scale if self.scale else 0.0)

    def save(self, path: str | Path) -> None:
        """``PATH.pt`` (the tensors, read back with ``weights_only=True``) then ``PATH.json``."""
        path = Path(path)
        atomic_save_torch(path.with_suffix(".pt"), {"vector": self.vector, "basis": self.basis})
        atomic_write_json(path.with_suffix(".json"), {
            "kind": self.kind, "alpha": self.alpha, "scale": self.scale, "lambda": self.lam,
            "renormalize": self.renormalize, "source": self.source,
            "dim": int(self.vector.numel()), "tensors": path.with_suffix(".pt").name})

    @classmethod
    def load(cls, path: str | Path) -> "Correction":
        path = Path(path)
        meta_path = path.with_suffix(".json")
        if not meta_path.is_file():
            raise ConfigError(f"correction: {str(meta_path)!r} does not exist")
        meta = json.loads(meta_path.read_text())
        tensors = torch.load(path.with_suffix(".pt"), weights_only=True)
        return cls(meta["kind"], meta["alpha"], tensors["vector"], meta["renormalize"], tensors["basis"],
                   meta.get("source", {}), float(meta.get("scale", 1.0)))


def fit(kind: str, X: torch.Tensor, T: torch.Tensor, alpha: float = 1.0, renormalize: bool = True,
        source: dict | None = None) -> Correction:
    """Fit a correction from image embeddings ``X`` and the retrieval set ``T`` (class texts)."""
    if kind not in KINDS:
        raise ConfigError(f"correction: {kind!r} is not one of {', '.join(KINDS)}")
    g = gap_vector(X, T)
    if kind == "projected":
        V = centred_span(T)
        c = Correction(kind, alpha, g - V @ (V.T @ g), renormalize, V, source or {})
    elif kind == "mean":
        c = Correction(kind, alpha, g, renormalize, None, source or {})
    else:
        d = -g
        c = Correction(kind, alpha, d / d.norm().clamp_min(1e-30), True, None, source or {})
    c.scale = closing_step(c, X, T)
    return c


def closing_step(c: Correction, X: torch.Tensor, T: torch.Tensor, iters: int = 60) -> float:
    """The step at which the gap along the correction's direction vanishes on ``X``, ``T``
    (bisection; the residual falls monotonically from its value at step 0)."""
    if float(c.vector.double().norm()) == 0.0 or c.residual(X, T, 0.0) <= 0:
        return 0.0
    hi = 1.0 if c.kind != "liang" else 2 * float(gap_vector(X, T).norm())
    while c.residual(X, T, hi) > 0 and hi < 1e6:
        hi *= 2
    lo = 0.0
    for _ in range(iters):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if c.residual(X, T, mid) > 0 else (lo, mid)
    return (lo + hi) / 2


def predict(X: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """Nearest class text by dot product (cosine for unit vectors)."""
    return (X.double() @ T.double().T).argmax(1)
