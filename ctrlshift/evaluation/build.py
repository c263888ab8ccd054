"""The ``build`` step: result files -> ``results.csv``, ``leaderboard.md`` and plots.

``build(RESULTS_DIR)`` writes ``results.csv`` (one row per run and config), ``leaderboard.md`` (per
family: mean +- std over seeds of clean accuracy, accuracy at the largest intensity, the lowest accuracy, drop and normalised AUC, and the
median flip intensity) and ``plots/<dataset>-<family>.png`` / ``.svg`` (accuracy against intensity,
a band of +- one std over seeds, or the Wilson 95% interval of each point for a single seed), plus ``plots/<dataset>-all`` with every family side by side.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..files import atomic_write_text
from ..names import slug
from ..plotting import pyplot, save
from ..results import ResultRecord, collect
from .robustness import mean_std

log = logging.getLogger(__name__)

SUMMARY_KEYS = ("base", "at_max", "min", "drop", "nauc")


@dataclass
class Entry:
    """One leaderboard row: a model (with its recipe) on one family, over its seeds."""

    label: str
    runs: list[ResultRecord]

    @property
    def seeds(self) -> int:
        return len(self.runs)

    def summary(self, key: str) -> tuple[float, float]:
        return mean_std([run.summary[key] for run in self.runs])

    @property
    def verified(self) -> bool:
        """Every seed's result re-verified by ``ctrlshift verify``."""
        return all((run.verified or {}).get("ok") for run in self.runs)

    def flip(self) -> str:
        """Median flip distance over seeds; ``>x`` when most images never flip within the sweep."""
        medians = [run.flip["median"] if run.flip["median"] is not None else math.inf
                   for run in self.runs if run.flip]
        if medians and all(math.isinf(m) for m in medians):
            return f">{max(run.flip.get('max_distance', math.nan) for run in self.runs if run.flip):.3g}"
        if medians:
            return f"{mean_std([m for m in medians if math.isfinite(m)])[0]:.3g}"
        return "-"


def csv_rows(results: list[ResultRecord]) -> list[dict]:
    rows = []
    for r in results:
        for config, m in r.metrics.items():
            rows.append({"dataset": r.dataset.name, "family": r.family, "model": r.label, "seed": r.seed,
                         "config": config, "value": m["value"], "intensity": m["intensity"],
                         "distance": m.get("distance"), "top1": m["top1"], "top5": m.get("top5"), "nll": m["nll"],
                         "ece": m["ece"], "n": m["n"], "run_id": r.run_id})
    return rows


def group(results: list[ResultRecord]) -> dict[tuple[str, str], list[Entry]]:
    """(dataset, family) -> leaderboard entries, one per model label, seeds merged."""
    runs: dict[tuple, list[ResultRecord]] = defaultdict(list)
    for r in results:
        runs[(r.dataset.name, r.family, r.label)].append(r)
    out: dict[tuple[str, str], list[Entry]] = defaultdict(list)
    for (ds, fam, label), rs in runs.items():
        out[(ds, fam)].append(Entry(label, rs))
    for entries in out.values():
        entries.sort(key=lambda e: -e.summary("nauc")[0])
    return dict(out)


def _fmt(mean: float, std: float, seeds: int) -> str:
    if math.isnan(mean):
        return "-"
    return f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if seeds > 1 else "")


def leaderboard(by_family: dict[tuple[str, str], list[Entry]]) -> str:
    lines = ["# Leaderboard\n",
             "Accuracy (%) of models trained on the base value and tested at every intensity; "
             "mean ± std over seeds. At max: accuracy at the largest intensity; min: the lowest anywhere in "
             "the sweep. nAUC: mean accuracy over the intensity range. "
             "Flip: median distance from the base value (on the family's axis) at which a correct "
             "prediction turns wrong; >x when most never do within the sweep. ✓: every seed re-verified "
             "(`ctrlshift verify`).\n"]
    for (ds, fam), entries in sorted(by_family.items()):
        lines.append(f"## {ds} / {fam} (axis: {entries[0].runs[0].dataset.axis or 'intensity'})\n")
        lines.append("| rank | model | seeds | clean | at max | min | drop | nAUC | flip |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for k, e in enumerate(entries, 1):
            cells = " | ".join(_fmt(*e.summary(key), e.seeds) for key in SUMMARY_KEYS)
            mark = " ✓" if e.verified else ""
            lines.append(f"| {k} | {e.label}{mark} | {e.seeds} | {cells} | {e.flip()} |")
        metrics = entries[0].runs[0].metrics
        if any("label_consistency" in m for m in metrics.values()):
            shares = ", ".join(f"{c} {100 * m['label_consistency']:.1f}%" for c, m in
                               sorted(metrics.items(), key=lambda kv: kv[1].get("distance", 0.0))
                               if m.get("label_consistency") is not None)
            lines.append(f"\nLabel consistency (test images a reference classifier still labels as their class): "
                         f"{shares}.")
        lines.append("")
    return "\n".join(lines)


def build(root: str | Path, out: str | Path | None = None, plots: bool = True, html: bool = False) -> dict:
    """Merge result files into CSV, a Markdown leaderboard and plots (and, with ``html``, a static
    leaderboard page); returns the paths written."""
    results = collect(root)
    out = Path(out) if out else Path(root)
    out.mkdir(parents=True, exist_ok=True)
    rows = csv_rows(results)
    text = io.StringIO()
    table = csv.DictWriter(text, fieldnames=list(rows[0]))
    table.writeheader()
    table.writerows(rows)
    atomic_write_text(out / "results.csv", text.getvalue())
    by_family = group(results)
    atomic_write_text(out / "leaderboard.md", leaderboard(by_family))
    written = {"csv": str(out / "results.csv"), "markdown": str(out / "leaderboard.md"), "plots": []}
    if plots or html:
        written["plots"] = plot_families(by_family, out / "plots")
    if html:
        from .html import write_html

        written["html"] = write_html(by_family, out, written["plots"])
    return written


def wilson(p: np.ndarray, n: np.ndarray, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """The Wilson score interval (95% for ``z = 1.96``) of accuracies ``p`` measured on ``n`` images."""
    p, n = np.asarray(p, dtype=np.float64), np.maximum(np.asarray(n, dtype=np.float64), 1)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def _draw(ax, ds: str, fam: str, entries: list[Entry]) -> None:
    first = entries[0].runs[0]
    for e in entries:
        ref = e.runs[0].metrics
        configs = sorted(ref, key=lambda c: ref[c].get("distance", 0.0))
        x = np.array([ref[c]["intensity"] for c in configs])
        ys = np.array([[run.metrics[c]["top1"] * 100 for c in configs] for run in e.runs])
        mean = ys.mean(0)
        band = "±1 std" if e.seeds > 1 else "95% CI"
        line, = ax.plot(x, mean, marker="o", ms=3.5,
                        label=f"{e.label} ({e.seeds} seed{'s' if e.seeds > 1 else ''}, {band})")
        if e.seeds > 1:
            std = ys.std(0, ddof=1)
            lo, hi = mean - std, mean + std
        else:  # one seed: the binomial uncertainty of each point's accuracy
            lo, hi = wilson(mean / 100, np.array([ref[c]["n"] for c in configs]))
            lo, hi = 100 * lo, 100 * hi
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
    unit = first.dataset.axis_unit
    ax.set_xlabel(f"{first.dataset.axis or 'intensity'}" + (f" ({unit})" if unit else ""))
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"{ds}: {fam}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, frameon=False)


def plot_families(by_family: dict[tuple[str, str], list[Entry]], folder: Path) -> list[str]:
    """One figure per family, and one per dataset with every family side by side."""
    plt = pyplot()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for (ds, fam), entries in sorted(by_family.items()):
        fig, ax = plt.subplots(figsize=(5.2, 3.6), dpi=120)
        _draw(ax, ds, fam, entries)
        fig.tight_layout()
        paths += save(fig, folder / slug(f"{ds}-{fam}"))  # names read from result files: never a path
    for ds in sorted({d for d, _ in by_family}):
        fams = sorted(f for d, f in by_family if d == ds)
        fig, axes = plt.subplots(1, len(fams), figsize=(4.2 * len(fams), 3.4), dpi=110, squeeze=False, sharey=True)
        for ax, fam in zip(axes[0], fams):
            _draw(ax, ds, fam, by_family[(ds, fam)])
        fig.tight_layout()
        paths += save(fig, folder / slug(f"{ds}-all"))
        measured = [m for m in INTENSITY_MEASURES if any(
            m in metrics for f in fams for e in by_family[(ds, f)] for metrics in e.runs[0].metrics.values())]
        if measured:
            paths += plot_measures(ds, fams, by_family, measured, folder / slug(f"{ds}-measures"))
    return paths


# Intensity measures a dataset may record per config, with their axis labels.
INTENSITY_MEASURES = {"total_variation": "TV between train and test latent statistics",
                      "pixel_distance": "mean pixel distance to the base image",
                      "kid": "KID to the base test images"}


def plot_measures(ds: str, fams: list[str], by_family, measures: list[str], path: Path) -> list[str]:
    """Accuracy (mean over seeds) against each recorded intensity measure: one row per family,
    one column per measure, so the measures can be compared on the same curves."""
    plt = pyplot()
    fig, axes = plt.subplots(len(fams), len(measures), figsize=(3.8 * len(measures), 2.9 * len(fams)), dpi=110,
                             squeeze=False, sharey=True)
    for i, fam in enumerate(fams):
        for j, key in enumerate(measures):
            ax = axes[i][j]
            for e in by_family[(ds, fam)]:
                ref = e.runs[0].metrics
                configs = [c for c in sorted(ref, key=lambda c: ref[c].get("distance", 0.0)) if key in ref[c]]
                if not configs:
                    continue
                x = [ref[c][key] for c in configs]
                y = [100 * float(np.mean([run.metrics[c]["top1"] for run in e.runs])) for c in configs]
                ax.plot(x, y, marker="o", ms=3, label=e.label)
            ax.set_xlabel(INTENSITY_MEASURES[key], fontsize=8)
            ax.set_title(f"{fam}", fontsize=9)
            ax.grid(alpha=0.3)
            if j == 0:
                ax.set_ylabel("top-1 accuracy (%)")
    axes[0][0].legend(fontsize=6, frameon=False)
    fig.tight_layout()
    return save(fig, path)
