"""``ctrlshift verify RESULT.json --data DIR``: re-evaluate a result's saved model and check it.

RobustBench re-verifies leaderboard entries; so does this. The model is rebuilt from the result
(architecture, arguments, preprocessing), its weights are loaded from the safetensors file beside
the result, the dataset's hash is compared with the one the result names, and every metric at
every config is measured again and compared within the tolerance below. The verdict is written
into the result's ``verified`` field; ``ctrlshift build`` marks verified rows.

Tolerance: accuracies (``top1``, ``top5``) within one image (``1/n``), since a prediction that sits
on a tie can flip between machines; ``nll`` and ``ece`` within 1e-4 absolute. On the machine that
wrote the result the numbers agree exactly.
"""

from __future__ import annotations

import logging
from pathlib import Path


from ..dataset import Dataset, SplitCache
from ..device import resolve_device
from ..errors import CtrlshiftError
from ..plugins import load_weights
from ..results import ResultRecord, read_result, write_result
from .job import model_for
from .sweep import sweep_metrics
from .train import Preprocess, predict

log = logging.getLogger(__name__)

CLOSE = 1e-4


def first_difference(claimed: dict, measured: dict) -> str | None:
    """The first metric that differs beyond the tolerance, as one line, or None."""
    for config, m in claimed.items():
        if config not in measured:
            return f"{config}: not measured again (the dataset has no such config)"
        got = measured[config]
        n = max(int(m.get("n") or got["n"]), 1)
        for key in ("top1", "top5"):
            if m.get(key) is not None and abs(got.get(key, float("nan")) - m[key]) > 1 / n + 1e-12:
                return f"{config}.{key}: claimed {m[key]:.4f}, measured {got.get(key, float('nan')):.4f}"
        for key in ("nll", "ece"):
            if m.get(key) is not None and not abs(got[key] - m[key]) <= CLOSE:
                return f"{config}.{key}: claimed {m[key]:.6f}, measured {got[key]:.6f}"
        if m.get("n") is not None and m["n"] != got["n"]:
            return f"{config}.n: claimed {m['n']} images, measured {got['n']}"
    return None


def verify(result_path: str | Path, data: str | Path, device: str = "auto") -> ResultRecord:
    """Re-evaluate ``result_path``'s model on ``data``; writes and returns the verdict."""
    path = Path(result_path)
    r = read_result(path)
    ds = Dataset.open(data)
    verdict = {"ok": False, "dataset": str(ds.root), "tolerance": {"accuracy": "1/n", "nll, ece": CLOSE}}
    if r.dataset.hash != ds.dataset_hash:
        verdict["first_difference"] = f"dataset hash: the result names {r.dataset.hash[:16]}…, {ds.root} is " \
                                      f"{ds.dataset_hash[:16]}…"
    else:
        measured = measure(r, path, ds, device)
        verdict["first_difference"] = first_difference(r.metrics, measured)
        verdict["ok"] = verdict["first_difference"] is None
    r.verified = verdict
    write_result(path, r)
    return r


def measure(r: ResultRecord, path: Path, ds: Dataset, device: str = "auto") -> dict:
    """The metrics of ``r``'s saved model at every config of its family, measured now."""
    if r.task != "classification":
        raise CtrlshiftError(f"{path}: task {r.task!r}; verify re-evaluates classifiers (zero-shot results are "
                             "reproduced by rerunning `ctrlshift gap`)")
    if not r.weights:
        raise CtrlshiftError(f"{path}: the result names no saved weights; rerun its evaluate (which now saves them)")
    weights = path.with_name(r.weights)
    if weights.name != r.weights or not weights.is_file():
        raise CtrlshiftError(f"{weights}: the weights this result names are missing; keep the .safetensors file "
                             "beside its result")
    fam = ds.families().get(r.family)
    if fam is None:
        raise CtrlshiftError(f"{ds.root}: no family {r.family!r}; verify the result on the dataset it names")
    p = r.preprocessing
    pre = Preprocess(list(p["mean"]), list(p["std"]), int(p["img_size"]), int(p.get("in_chans", 3)))
    model, label_map = model_for(ds, r.model["name"], r.model.get("kwargs") or {}, r.model.get("trained", True),
                                 pre.img_size)
    load_weights(model, str(weights), "weights")
    dev = resolve_device(device)
    model = model.to(dev).eval()
    batch = int(((r.training or {}).get("config") or {}).get("eval_batch_size", 512))

    def logits_of(config, split):
        logits = predict(model, split, pre, dev, batch)
        return logits[:, label_map] if label_map is not None else logits

    metrics, _, _ = sweep_metrics(ds, fam, logits_of, SplitCache(ds))
    return metrics
