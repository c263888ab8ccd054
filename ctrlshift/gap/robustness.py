"""Robustness of zero-shot predictions: the fraction of predictions unchanged under a perturbation.

``Rob = P[NN(x, T) == NN(x + e, T)]`` over images ``x`` and perturbations ``e``, where ``NN(x, T)``
is the class whose text embedding scores highest. Perturbations:

- ``noise``: Gaussian noise of variance ``sigma^2`` per coordinate added to the (corrected) image
  embeddings, ``trials`` draws each;
- ``quantisation``: every coordinate rounded to the centre of one of ``b`` equal bins on [-1, 1];
- ``templates``: the class texts embedded with other caption templates (a rewording of the prompt).

Clean accuracy is reported beside every point: a correction that buys robustness by losing accuracy
shows it.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .metrics import l2m
from .corrections import Correction, predict


def unchanged(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a == b).double().mean())


def quantize(X: torch.Tensor, bins: int) -> torch.Tensor:
    width = 2.0 / bins
    idx = ((X.double().clamp(-1, 1) + 1) / width).floor().clamp(0, bins - 1)
    return -1 + (idx + 0.5) * width


def noise_robustness(X: torch.Tensor, T: torch.Tensor, sigma2: float, trials: int = 5, seed: int = 0) -> float:
    gen = torch.Generator().manual_seed(seed)
    clean = predict(X, T)
    vals = []
    for _ in range(trials):
        e = torch.randn(X.shape, generator=gen, dtype=torch.float64) * sigma2 ** 0.5
        vals.append(unchanged(clean, predict(X.double() + e, T)))
    return sum(vals) / len(vals)


def robustness_curves(X: torch.Tensor, T: torch.Tensor, labels: torch.Tensor, correction: Correction,
                      alphas: Sequence[float], sigma2s: Sequence[float] = (0.005, 0.022, 0.040),
                      bins: Sequence[int] = (32, 64, 128, 256), reworded: dict[str, torch.Tensor] | None = None,
                      trials: int = 5, seed: int = 0) -> list[dict]:
    """One row per alpha: clean accuracy, robustness to noise, quantisation and rewording."""
    rows = []
    for a in alphas:
        c = correction.with_alpha(float(a))
        Xc, Tc = c.images(X), c.texts(T)
        pred = predict(Xc, Tc)
        row = {"alpha": float(a), **({"lambda": c.lam} if c.lam is not None else {}),
               "clean_top1": float((pred == labels).double().mean()), "l2m": l2m(Xc, Tc),
               "noise": {str(s): noise_robustness(Xc, Tc, s, trials, seed) for s in sigma2s},
               "quantisation": {str(b): unchanged(pred, predict(quantize(Xc, b), Tc)) for b in bins}}
        if reworded:
            row["templates"] = {}
            for name, T_alt in reworded.items():
                p_alt = predict(Xc, c.texts(T_alt))
                row["templates"][name] = {"unchanged": unchanged(pred, p_alt),
                                          "top1": float((p_alt == labels).double().mean())}
        rows.append(row)
    return rows
