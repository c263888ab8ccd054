"""Result files, and the ``build`` step that merges them into tables and plots.

One JSON file per run (schema ``ctrlshift-result/1``, documented in docs/results.md)::

    {"schema", "task", "run_id", "model": {name, kwargs, params, pretrained},
     "dataset": {path, name, hash, family, base_config, axis, axis_unit},
     "preprocessing": {mean, std, img_size, in_chans}, "training": {...}, "seed",
     "metrics": {config: {value, intensity, distance, top1, top5?, nll, ece, per_class, n}},
     "summary": {base, worst, drop, nauc, rel_nauc}, "flip": {...},
     "ctrlshift_version", "git_commit", "versions"}

``build(RESULTS_DIR)`` writes ``results.csv`` (one row per run and config), ``leaderboard.md``
(per family: mean +- std over seeds of clean accuracy, worst accuracy, drop and normalised AUC) and
``plots/<family>.png`` / ``.svg`` (accuracy against intensity, a band of +- one std over seeds).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..errors import CtrlshiftError
from ..plotting import pyplot, save
from ..generator.writer import atomic_write_bytes, atomic_write_json
from .robustness import mean_std

log = logging.getLogger(__name__)

SCHEMA = "ctrlshift-result/1"
REQUIRED = ("schema", "task", "run_id", "model", "dataset", "seed", "metrics", "summary")


def write_result(path: Path, result: dict) -> None:
    missing = [k for k in REQUIRED if k not in result]
    if missing:
        raise ValueError(f"result lacks {missing}")
    atomic_write_json(path, result)


def read_result(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise CtrlshiftError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if data.get("schema") != SCHEMA:
        raise CtrlshiftError(f"{path}: schema {data.get('schema')!r}, expected {SCHEMA!r}")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise CtrlshiftError(f"{path}: result file lacks {missing}")
    return data


def collect(root: str | Path) -> list[dict]:
    root = Path(root)
    if not root.is_dir():
        raise CtrlshiftError(f"RESULTS_DIR: {str(root)!r} is not a folder")
    out = []
    for path in sorted(root.rglob("*.json")):
        if path.parent.name == "checkpoints":
            continue
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and data.get("schema") == SCHEMA:
            out.append(read_result(path))
    if not out:
        raise CtrlshiftError(f"RESULTS_DIR: no {SCHEMA} result files under {str(root)!r}")
    return out


def model_label(r: dict) -> str:
    t = r.get("training") or {}
    label = r["model"].get("label") or r["model"]["name"]
    if t.get("augment") not in (None, "none"):
        label += f" +{t['augment']}"
    if t.get("train_size"):
        label += f" n={t['train_size']}"
    return label


def _fmt(mean: float, std: float, seeds: int) -> str:
    if math.isnan(mean):
        return "-"
    return f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if seeds > 1 else "")


def build(root: str | Path, out: str | Path | None = None, plots: bool = True) -> dict:
    """Merge result files into CSV, a Markdown leaderboard and plots; returns the paths written."""
    results = collect(root)
    out = Path(out) if out else Path(root)
    out.mkdir(parents=True, exist_ok=True)

    rows = []
    for r in results:
        for config, m in r["metrics"].items():
            rows.append({"dataset": r["dataset"]["name"], "family": r["dataset"]["family"], "model": model_label(r),
                         "seed": r["seed"], "config": config, "value": m["value"], "intensity": m["intensity"],
                         "distance": m.get("distance"), "top1": m["top1"], "top5": m.get("top5"), "nll": m["nll"],
                         "ece": m["ece"], "n": m["n"], "run_id": r["run_id"]})
    text = io.StringIO()
    table = csv.DictWriter(text, fieldnames=list(rows[0]))
    table.writeheader()
    table.writerows(rows)
    atomic_write_bytes(out / "results.csv", text.getvalue().encode())
    lines = []

    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in results:
        groups[(r["dataset"]["name"], r["dataset"]["family"], model_label(r))].append(r)
    by_family: dict[tuple, list] = defaultdict(list)
    for (ds, fam, label), runs in groups.items():
        summ = {k: mean_std([run["summary"][k] for run in runs]) for k in ("base", "worst", "drop", "nauc")}
        medians = [run["flip"]["median"] if run["flip"]["median"] is not None else math.inf
                   for run in runs if run.get("flip")]
        if medians and all(math.isinf(m) for m in medians):
            flip = f">{max(run['flip'].get('max_distance', math.nan) for run in runs):.3g}"
        elif medians:
            flip = f"{mean_std([m for m in medians if math.isfinite(m)])[0]:.3g}"
        else:
            flip = "-"
        by_family[(ds, fam)].append((label, len(runs), summ, flip, runs))
    lines.append("# Leaderboard\n")
    lines.append("Accuracy (%) of models trained on the base value and tested at every intensity; "
                 "mean ± std over seeds. nAUC: mean accuracy over the intensity range. "
                 "Flip: median distance from the base value (on the family's axis) at which a correct "
                 "prediction turns wrong; >x when most never do within the sweep.\n")
    for (ds, fam), entries in sorted(by_family.items()):
        axis = entries[0][4][0]["dataset"].get("axis", "intensity")
        lines.append(f"## {ds} / {fam} (axis: {axis})\n")
        lines.append("| rank | model | seeds | clean | worst | drop | nAUC | flip |")
        lines.append("|---|---|---|---|---|---|---|---|")
        entries.sort(key=lambda e: -e[2]["nauc"][0])
        for k, (label, n, summ, flip, _) in enumerate(entries, 1):
            lines.append(f"| {k} | {label} | {n} | {_fmt(*summ['base'], n)} | {_fmt(*summ['worst'], n)} | "
                         f"{_fmt(*summ['drop'], n)} | {_fmt(*summ['nauc'], n)} | {flip} |")
        lines.append("")
    atomic_write_bytes(out / "leaderboard.md", "\n".join(lines).encode())
    written = {"csv": str(out / "results.csv"), "markdown": str(out / "leaderboard.md"), "plots": []}
    if plots:
        written["plots"] = plot_families(by_family, out / "plots")
    return written


def _draw(ax, ds: str, fam: str, entries: list) -> None:
    first = entries[0][4][0]
    for label, n, _, _, runs in entries:
        configs = sorted(runs[0]["metrics"], key=lambda c: runs[0]["metrics"][c].get("distance", 0.0))
        x = np.array([runs[0]["metrics"][c]["intensity"] for c in configs])
        ys = np.array([[run["metrics"][c]["top1"] * 100 for c in configs] for run in runs])
        mean = ys.mean(0)
        line, = ax.plot(x, mean, marker="o", ms=3.5, label=f"{label} ({n} seed{'s' if n > 1 else ''})")
        if n > 1:
            std = ys.std(0, ddof=1)
            ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, lw=0)
    unit = first["dataset"].get("axis_unit") or ""
    ax.set_xlabel(f"{first['dataset'].get('axis', 'intensity')}" + (f" ({unit})" if unit else ""))
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"{ds}: {fam}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, frameon=False)


def plot_families(by_family: dict, folder: Path) -> list[str]:
    """One figure per family, and one per dataset with every family side by side."""
    plt = pyplot()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for (ds, fam), entries in sorted(by_family.items()):
        fig, ax = plt.subplots(figsize=(5.2, 3.6), dpi=120)
        _draw(ax, ds, fam, entries)
        fig.tight_layout()
        paths += save(fig, folder / f"{ds}-{fam}")
    for ds in sorted({d for d, _ in by_family}):
        fams = sorted(f for d, f in by_family if d == ds)
        fig, axes = plt.subplots(1, len(fams), figsize=(4.2 * len(fams), 3.4), dpi=110, squeeze=False)
        for ax, fam in zip(axes[0], fams):
            _draw(ax, ds, fam, by_family[(ds, fam)])
        fig.tight_layout()
        paths += save(fig, folder / f"{ds}-all")
    return paths


def markdown_table(results_dir: str | Path) -> str:
    return (Path(results_dir) / "leaderboard.md").read_text()
