"""One model across one family's intensities: the harness's public sweep, shared by classifiers
and zero-shot VLMs (and used by :mod:`ctrlshift.gap`)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..dataset import Dataset, FamilyInfo, Split
from .metrics import classification_metrics
from .robustness import distances, flip_intensities, flip_summary, sweep_summary


# Per-config measures of the dataset copied into every result's metrics (docs/results.md).
MEASURES = ("label_consistency", "total_variation", "pixel_distance", "kid")


def sweep_metrics(ds: Dataset, family: FamilyInfo, logits_of: Callable[[str, Split], torch.Tensor],
                  load: Callable[[str, str], Split] | None = None) -> tuple[dict, dict, dict | None]:
    """Metrics at each test config of ``family`` (ordered by intensity), the sweep summary, and
    the flip-intensity summary (None when the splits differ in size). ``logits_of(config, split)``
    gives a model's logits; ``load`` reads a split (default: ``ds.load``)."""
    load = load or ds.load
    configs = family.tests
    intensities = [ds.configs[c].intensity for c in configs]
    metrics, correct = {}, []
    for config, d in zip(configs, distances(intensities)):
        split = load(config, "test")
        logits = logits_of(config, split)
        m = classification_metrics(logits, split.labels)
        m.update(value=ds.configs[config].value, intensity=ds.configs[config].intensity, distance=float(d))
        for key in MEASURES:
            if getattr(ds.configs[config], key) is not None:
                m[key] = getattr(ds.configs[config], key)
        metrics[config] = m
        correct.append((logits.argmax(1) == split.labels).numpy())
    summary = sweep_summary(intensities, [metrics[c]["top1"] for c in configs])
    same = all(len(c) == len(correct[0]) for c in correct)
    flip = flip_summary(intensities, flip_intensities(intensities, np.stack(correct))) if same else None
    return metrics, summary, flip
