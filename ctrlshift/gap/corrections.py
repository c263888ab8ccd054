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
  both modalities move towards each other, always re-normalised.

``alpha = 0`` is no correction and ``alpha = 1`` closes the part of the gap it moves along.
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

    def images(self, X: torch.Tensor) -> torch.Tensor:
        X = X.double()
        if self.kind == "liang":
            return normalize(X - self.alpha / 2 * self.vector)
        out = X + self.alpha * self.vector
        return normalize(out) if self.renormalize else out

    def texts(self, T: torch.Tensor) -> torch.Tensor:
        T = T.double()
        if self.kind == "liang":
            return normalize(T + self.alpha / 2 * self.vector)
        return T

    def with_alpha(self, alpha: float) -> "Correction":
        return Correction(self.kind, alpha, self.vector, self.renormalize, self.basis, self.source)

    def save(self, path: str | Path) -> None:
        """``PATH.pt`` (the tensors, read back with ``weights_only=True``) then ``PATH.json``."""
        path = Path(path)
        atomic_save_torch(path.with_suffix(".pt"), {"vector": self.vector, "basis": self.basis})
        atomic_write_json(path.with_suffix(".json"), {
            "kind": self.kind, "alpha": self.alpha, "renormalize": self.renormalize, "source": self.source,
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
                   meta.get("source", {}))


def fit(kind: str, X: torch.Tensor, T: torch.Tensor, alpha: float = 1.0, renormalize: bool = True,
        source: dict | None = None) -> Correction:
    """Fit a correction from image embeddings ``X`` and the retrieval set ``T`` (class texts)."""
    if kind not in KINDS:
        raise ConfigError(f"correction: {kind!r} is not one of {', '.join(KINDS)}")
    g = gap_vector(X, T)
    if kind == "projected":
        V = centred_span(T)
        return Correction(kind, alpha, g - V @ (V.T @ g), renormalize, V, source or {})
    if kind == "mean":
        return Correction(kind, alpha, g, renormalize, None, source or {})
    d = -g
    return Correction(kind, alpha, d / d.norm().clamp_min(1e-30), True, None, source or {})


def predict(X: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """Nearest class text by dot product (cosine for unit vectors)."""
    return (X.double() @ T.double().T).argmax(1)
