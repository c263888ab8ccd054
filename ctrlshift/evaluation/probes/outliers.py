"""Outlier features and privileged directions of a representation (docs/methods.md section 4).

- :func:`kurtosis`: Pearson kurtosis (Gaussian: 3, not excess) of activations. ``axis="images"``
  (default): per feature dimension, across images -- a dimension with rare huge activations scores
  high; ``axis="features"``: per image, across its feature dimensions -- an image whose
  representation is dominated by a few dimensions scores high.
- :func:`outlier_dimensions`: the top dimensions by kurtosis, and the ratio of their mean absolute
  activation to the median dimension's.
- :func:`privileged_directions`: SVD of a linear head ``W = U S V^T``; the importance of ``v_i`` is
  ``s_i`` times the mean absolute cosine between ``v_i`` and the representations.
- :func:`pruning_curve`: accuracy of the head on representations projected onto the most important
  directions, as the least important ones are removed.

Defaults (the paper leaves them open): the layer is the representation the head reads (the
penultimate layer, ``forward_features``); kurtosis is taken across images per dimension; an
"outlier" is one of the ``top`` (10) dimensions by kurtosis, reported with its kurtosis and
magnitude ratio rather than cut at a threshold.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch


def kurtosis(acts: torch.Tensor, axis: Literal["images", "features"] = "images") -> torch.Tensor:
    x = acts.double()
    dim = 0 if axis == "images" else 1
    c = x - x.mean(dim, keepdim=True)
    m2 = (c ** 2).mean(dim)
    m4 = (c ** 4).mean(dim)
    return m4 / m2.clamp_min(1e-30) ** 2


def outlier_dimensions(acts: torch.Tensor, top: int = 10, axis: Literal["images", "features"] = "images") -> dict:
    """The ``top`` entries by kurtosis along ``axis``. ``images``: feature dimensions (``dims``),
    with the ratio of each one's mean |activation| to the median dimension's. ``features``: images
    (``dims`` then holds image indices), with the ratio of each image's largest |activation| to its
    median |activation|."""
    k = kurtosis(acts, axis)
    order = torch.argsort(k, descending=True)[:top]
    a = acts.double().abs()
    if axis == "images":
        mag = a.mean(0)
        ratio = mag[order] / mag.median().clamp_min(1e-30)
    else:
        ratio = a.max(1).values[order] / a.median(1).values[order].clamp_min(1e-30)
    return {"axis": axis, "dims": order.tolist(), "kurtosis": k[order].tolist(), "magnitude_ratio": ratio.tolist(),
            "kurtosis_median": float(k.median()), "kurtosis_all": k.tolist()}


def privileged_directions(weight: torch.Tensor, acts: torch.Tensor) -> dict:
    """``weight``: ``[K, D]`` head; ``acts``: ``[N, D]``. Directions sorted by importance."""
    u, s, vh = torch.linalg.svd(weight.double(), full_matrices=False)
    x = acts.double()
    cos = (x @ vh.T) / (x.norm(dim=1, keepdim=True) * vh.norm(dim=1)[None]).clamp_min(1e-30)
    importance = s * cos.abs().mean(0)
    order = torch.argsort(importance, descending=True)
    return {"singular_values": s[order].tolist(), "importance": importance[order].tolist(),
            "directions": vh[order], "order": order.tolist()}


def pruning_curve(weight: torch.Tensor, bias: torch.Tensor | None, acts: torch.Tensor, labels: torch.Tensor,
                  directions: torch.Tensor, fractions=None) -> dict:
    """Accuracy of ``acts @ P W^T + b`` where ``P`` keeps the most important directions
    (rows of ``directions``, most important first) and removes a ``fraction`` of the rest."""
    fractions = np.linspace(0, 1, 11) if fractions is None else np.asarray(fractions)
    x, w = acts.double(), weight.double()
    b = bias.double() if bias is not None else 0.0
    base = x @ w.T + b
    full = float((base.argmax(1) == labels).double().mean())
    n = len(directions)
    accs = []
    for f in fractions:
        keep = directions[: max(0, n - int(round(f * n)))].double()
        # remove the pruned directions' components (those outside span(keep) within the head's rowspace)
        proj = x - (x @ directions.double().T) @ directions.double() + (x @ keep.T) @ keep
        accs.append(float(((proj @ w.T + b).argmax(1) == labels).double().mean()))
    return {"fractions": fractions.tolist(), "accuracy": accs, "full": full}
