"""Classification metrics: ``classification_metrics(logits, labels) -> dict of floats``.

- ``top1``, ``top5`` (only with more than 5 classes): accuracy in [0, 1];
- ``nll``: mean negative log-likelihood of the true class (natural log);
- ``ece``: expected calibration error with ``bins`` equal-width confidence bins,
  ``sum_b |B_b|/N * |acc(B_b) - conf(B_b)|``; the bins are ``[lo, hi)`` with confidence 1.0 in a
  bin of its own, torchmetrics' convention (``MulticlassCalibrationError``, l1 norm);
- ``per_class``: accuracy per true class (NaN for a class with no sample);
- ``acc1``, ``acc5``, ``mean_per_class_recall``: the same under CLIP_benchmark's names (the mean of
  ``per_class`` over classes with samples), so its tooling reads ctrlshift results.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def top_k(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    top = logits.topk(k, dim=1).indices
    return float((top == labels[:, None]).any(dim=1).double().mean())


def nll(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float(F.cross_entropy(logits.double(), labels))


def ece(logits: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    probs = logits.double().softmax(1)
    conf, pred = probs.max(1)
    correct = (pred == labels).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    index = torch.bucketize(conf, edges, right=True) - 1  # [lo, hi) -> 0..bins-1; exactly 1.0 -> bins
    total = 0.0
    for b in range(bins + 1):
        inside = index == b
        if inside.any():
            total += float(inside.double().mean() * (correct[inside].mean() - conf[inside].mean()).abs())
    return total


def per_class_accuracy(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[float]:
    pred = logits.argmax(1)
    out = []
    for c in range(num_classes):
        mask = labels == c
        out.append(float((pred[mask] == c).double().mean()) if mask.any() else float("nan"))
    return out


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> dict:
    logits, labels = logits.float().cpu(), labels.long().cpu()
    k = logits.shape[1]
    out = {"top1": top_k(logits, labels, 1), "nll": nll(logits, labels), "ece": ece(logits, labels, bins),
           "per_class": per_class_accuracy(logits, labels, k), "n": int(len(labels))}
    if k > 5:
        out["top5"] = top_k(logits, labels, 5)
    seen = [a for a in out["per_class"] if a == a]
    out.update(acc1=out["top1"], mean_per_class_recall=sum(seen) / len(seen) if seen else float("nan"))
    if "top5" in out:
        out["acc5"] = out["top5"]
    return out
