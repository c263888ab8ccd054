"""Gap corrections under Control+Shift shifts: ``shift_robustness.json`` and one plot per family.

For each family of a ctrlshift dataset, each correction (projected, mean, Liang) is fitted once on
the family's base value (its train split, else val, else test) and applied unchanged to the test
split of every value. Because the same noise seeds are decoded at every value of a family, image
``i`` of each test split is the same sample moved by the shift, so per family, value and alpha
the report gives:

- ``top1``: zero-shot accuracy of the corrected embeddings;
- ``unchanged``: the share of predictions equal to the base value's for the same seeds (same
  correction, same alpha);
- ``l2m``: the gap norm ``|mean(T') - mean(X')|`` after correction;
- ``noise``: the share of predictions kept under Gaussian embedding noise (the paper's probe);
- and per family and alpha the flip-intensity summary (the distance from the base value at which
  a correct prediction first turns wrong).

Alpha is on the corrections' common scale: 0 is no correction, 1 closes the gap along the
correction's direction on the fitting split (:mod:`.corrections`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ..dataset import Dataset
from ..evaluation.robustness import distances, flip_intensities, flip_summary
from ..files import atomic_write_json
from ..names import slug
from ..plotting import pyplot, save
from ..provenance import stamp
from . import corrections
from .metrics import l2m
from .robustness import noise_robustness

log = logging.getLogger(__name__)

SCHEMA = "ctrlshift-gap-shift/1"


def fit_split(ds: Dataset, base: str) -> str:
    """The split of the base config the corrections are fitted on: train, else val, else test."""
    splits = ds.configs[base].splits
    for name in ("train", "val", "test"):
        if (splits.get(name) or {}).get("num_examples"):
            return name
    raise ValueError(f"config {base!r} has no split")


def shift_robustness(embed, T: torch.Tensor, ds: Dataset, kinds, alphas, renormalize: bool, sigma2s,
                     trials: int = 5, seed: int = 0, source: dict | None = None) -> dict:
    """The report (see the module docstring). ``embed(config, split) -> (X, labels)`` gives the
    image embeddings of a split; ``T`` the class-text embeddings."""
    T = T.double()
    families = {}
    for fam in ds.families().values():
        if fam.base is None or not fam.tests:
            continue
        split = fit_split(ds, fam.base)
        X_fit, _ = embed(fam.base, split)
        tests = {c: embed(c, "test") for c in fam.tests}
        intensities = [ds.configs[c].intensity for c in fam.tests]
        dist = distances(intensities)
        base_test = fam.tests[0]
        rows = {}
        for kind in kinds:
            fitted = corrections.fit(kind, X_fit.double(), T, 1.0, renormalize, source=source)
            per_alpha = []
            for a in alphas:
                c = fitted.with_alpha(float(a))
                Tc = c.texts(T)
                preds, correct, values = {}, [], []
                for config, (X, labels) in tests.items():
                    Xc = c.images(X.double())
                    pred = corrections.predict(Xc, Tc)
                    preds[config] = pred
                    correct.append((pred == labels).numpy())
                    values.append({
                        "config": config, "value": ds.configs[config].value,
                        "intensity": ds.configs[config].intensity,
                        "top1": float((pred == labels).double().mean()),
                        "l2m": l2m(Xc, Tc),
                        "noise": {str(s): noise_robustness(Xc, Tc, s, trials, seed) for s in sigma2s}})
                same = all(len(p) == len(preds[base_test]) for p in preds.values())
                for v, config in zip(values, tests):
                    v["unchanged"] = (float((preds[config] == preds[base_test]).double().mean())
                                      if same else None)
                flips = flip_summary(intensities, flip_intensities(intensities, np.stack(correct))) if same else None
                per_alpha.append({"alpha": float(a), **({"lambda": c.lam} if c.lam is not None else {}),
                                  "values": values, "flip": flips})
            rows[kind] = {"scale": fitted.scale, "alphas": per_alpha}
        families[fam.prefix] = {"family": fam.family, "axis": fam.axis, "axis_unit": fam.axis_unit,
                                "base": fam.base, "fit_split": split, "tests": fam.tests,
                                "distances": dist.tolist(), "corrections": rows}
    return {"schema": SCHEMA, "dataset": ds.name, "dataset_hash": ds.dataset_hash, "source": source or {},
            "renormalize": renormalize, "alphas": [float(a) for a in alphas],
            "sigma2": [float(s) for s in sigma2s], "families": families, **stamp()}


def write(report: dict, out: Path) -> tuple[Path, list[str]]:
    """``out/shift_robustness.json`` and ``out/shift_robustness/<family>.png``."""
    path = out / "shift_robustness.json"
    atomic_write_json(path, report)
    plots = [plot_family(prefix, fam, report["sigma2"], out / "shift_robustness" / slug(prefix))
             for prefix, fam in report["families"].items()]
    return path, plots


def plot_family(prefix: str, fam: dict, sigma2s, path: Path) -> str:
    """Accuracy against intensity, one line per alpha, one panel per correction; the middle noise
    level's robustness in a second row."""
    plt = pyplot()
    kinds = list(fam["corrections"])
    s_mid = str(sigma2s[len(sigma2s) // 2]) if sigma2s else None
    fig, axes = plt.subplots(2 if s_mid else 1, len(kinds), figsize=(4.2 * len(kinds), 6.4 if s_mid else 3.4),
                             dpi=110, squeeze=False)
    cmap = plt.get_cmap("viridis")
    for j, kind in enumerate(kinds):
        rows = fam["corrections"][kind]["alphas"]
        for k, r in enumerate(rows):
            x = [v["intensity"] for v in r["values"]]
            colour = cmap(k / max(len(rows) - 1, 1))
            label = f"alpha {r['alpha']:g}" + (f" (lambda {r['lambda']:.3g})" if "lambda" in r else "")
            axes[0][j].plot(x, [100 * v["top1"] for v in r["values"]], marker="o", ms=3, color=colour, label=label)
            if s_mid:
                axes[1][j].plot(x, [100 * v["noise"][s_mid] for v in r["values"]], marker="o", ms=3, color=colour)
        axes[0][j].set_title(f"{prefix}: {kind} correction")
        axes[0][j].set_ylabel("zero-shot top-1 (%)")
        axes[0][j].grid(alpha=0.3)
        axes[0][j].legend(fontsize=6, frameon=False)
        if s_mid:
            axes[1][j].set_ylabel(f"kept under noise s2={s_mid} (%)")
            axes[1][j].grid(alpha=0.3)
        axes[-1][j].set_xlabel(f"{fam['axis']}" + (f" ({fam['axis_unit']})" if fam["axis_unit"] else ""))
    fig.tight_layout()
    return save(fig, path, ("png",))[0]


def summary_lines(report: dict) -> list[str]:
    lines = []
    for prefix, fam in report["families"].items():
        for kind, c in fam["corrections"].items():
            for r in c["alphas"]:
                accs = " ".join(f"{100 * v['top1']:.1f}" for v in r["values"])
                lines.append(f"{prefix} {kind} alpha {r['alpha']:g}: top-1 by intensity {accs}")
    return lines
