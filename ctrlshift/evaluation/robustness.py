"""Accuracy against intensity: summaries of a sweep, and the per-image flip intensity.

A sweep is the accuracy at the intensities ``x_0, x_1, ...`` of one family, ordered by their
distance ``d_k = |x_k - x_0|`` from the train value ``x_0`` (an axis may fall as the shift grows, as
subspace_scale's does). Summaries:

- ``base``: accuracy at ``x_0``; ``at_max``: at the largest intensity; ``min``: the lowest accuracy
  anywhere in the sweep (below ``at_max`` when the curve is not monotone);
- ``drop``: ``base - at_max`` (accuracy points lost over the sweep);
- ``nauc``: the normalised area under the accuracy-intensity curve,
  ``trapz(acc, d) / d_max``, i.e. the mean accuracy over the intensity range;
- ``rel_nauc``: ``nauc / base``, 1 for a model that loses nothing.

Flip intensity: the same noise seeds are decoded at every value, so image ``i`` exists at every
intensity. For each image predicted correctly at ``x_0``, its flip intensity is the smallest
distance ``d_k`` at which its prediction is wrong (``inf`` if it never is). ``flip_summary``
reports the share of images flipped by each intensity and the median flip distance.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def distances(intensities: Sequence[float]) -> np.ndarray:
    x = np.asarray(intensities, dtype=np.float64)
    d = np.abs(x - x[0])
    if np.any(np.diff(d) < 0):
        raise ValueError(f"intensities {list(x)} are not ordered by distance from the first")
    return d


def trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    """The trapezoid rule (``np.trapezoid`` exists only from numpy 2.0 on)."""
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2)


def sweep_summary(intensities: Sequence[float], accuracies: Sequence[float]) -> dict:
    d = distances(intensities)
    y = np.asarray(accuracies, dtype=np.float64)
    out = {"base": float(y[0]), "at_max": float(y[-1]), "min": float(y.min()), "drop": float(y[0] - y[-1])}
    out["nauc"] = trapezoid(y, d) / d[-1] if d[-1] > 0 else float(y[0])
    out["rel_nauc"] = out["nauc"] / out["base"] if out["base"] > 0 else float("nan")
    return out


def flip_intensities(intensities: Sequence[float], correct: np.ndarray) -> np.ndarray:
    """``correct``: ``[values, images]`` booleans, values in the order of ``intensities`` (the
    first is the train value). Returns per image the first intensity where a correct prediction
    turns wrong; ``inf`` if it never does, ``nan`` for images wrong at the train value."""
    d = distances(intensities)
    correct = np.asarray(correct, dtype=bool)
    out = np.full(correct.shape[1], np.inf)
    out[~correct[0]] = np.nan
    for k in range(1, len(d)):
        newly = np.isinf(out) & ~correct[k]
        out[newly] = d[k]
    return out


def flip_summary(intensities: Sequence[float], flips: np.ndarray) -> dict:
    valid = flips[~np.isnan(flips)]
    d = distances(intensities)
    share = [float((valid <= v).mean()) if len(valid) else float("nan") for v in d]
    median = float(np.median(valid)) if len(valid) else float("nan")
    # median: None when fewer than half of the images ever flip (it lies beyond max_distance)
    return {"intensities": [float(v) for v in intensities], "distances": d.tolist(), "flipped_share": share,
            "median": median if math.isfinite(median) else None, "max_distance": float(d[-1]),
            "never_flipped": float(np.isinf(valid).mean()) if len(valid) else float("nan"),
            "n": int(len(valid))}


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    a = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if len(a) == 0:
        return float("nan"), float("nan")
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0
