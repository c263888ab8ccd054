"""The Control+Shift claims, checked with uncertainty: a verdict table per claim from result files.

Reads the results of ``configs/claims-{zoo,augment,size}.yaml`` (any result files under DIR) and
prints, per claim, a Markdown table with mean +- std over seeds and a verdict (holds / does not
hold / unclear), and draws ``claims.png`` (accuracy against intensity, one panel per claim).

    python scripts/claims_table.py results-claims --family truncation --plot results-claims/claims.png

Verdict rules (stated in each table's caption, so a reader can disagree with them):

- a *fall* is significant when the mean drop (accuracy at the base value minus at the largest
  intensity) exceeds twice its standard deviation over seeds; it is *monotone* when no step
  between neighbouring intensities rises by more than that step's standard deviation over seeds;
- two numbers *differ* when their means are further apart than the sum of their standard
  deviations.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CNNS = ("resnet20", "preact-resnet18", "vgg19-bn", "densenet-bc-40", "resnext29")
ATTENTION_FREE_MIXERS = ("mlp-mixer", "vit-small")


def load(root: Path, family: str):
    from ctrlshift.results import collect

    groups = defaultdict(list)
    for r in collect(root):
        if r.dataset.family != family or r.task != "classification":
            continue
        t = r.training or {}
        groups[(r.model.get("label") or r.model["name"], t.get("augment"), t.get("train_size"))].append(r)
    out = {}
    for key, runs in groups.items():
        ref = runs[0].metrics
        configs = sorted(ref, key=lambda c: ref[c]["distance"])
        acc = np.array([[run.metrics[c]["top1"] for c in configs] for run in sorted(runs, key=lambda r: r.seed)])
        out[key] = {"x": [ref[c]["intensity"] for c in configs], "acc": acc, "seeds": len(runs),
                    "nauc": np.array([run.summary["nauc"] for run in runs])}
    return out


def ms(a) -> str:
    a = np.asarray(a, dtype=np.float64) * 100
    return f"{a.mean():.1f} ± {a.std(ddof=1):.1f}" if len(a) > 1 else f"{a.mean():.1f}"


def fall(acc: np.ndarray) -> tuple[bool, bool]:
    drop = acc[:, 0] - acc[:, -1]
    significant = drop.mean() > 2 * drop.std(ddof=1) if len(drop) > 1 else drop.mean() > 0
    steps = acc[:, 1:] - acc[:, :-1]
    monotone = bool(np.all(steps.mean(0) <= (steps.std(0, ddof=1) if len(acc) > 1 else 0)))
    return bool(significant), monotone


def curve(g) -> str:
    return ", ".join(ms(g["acc"][:, k]) for k in range(g["acc"].shape[1]))


def zoo_size(groups) -> int | None:
    """The training size the architecture sweep used: the one most architectures share."""
    sizes = [k[2] for k in groups if k[1] == "crop" and k[0] != "resnet20"]
    return max(set(sizes), key=sizes.count) if sizes else None


def claim_zoo(groups) -> list[str]:
    n = zoo_size(groups)
    rows = {k[0]: g for k, g in groups.items() if k[1] == "crop" and k[2] == n and k[0] in CNNS + ATTENTION_FREE_MIXERS
            and g["seeds"] >= 2}
    if not rows:
        return []
    x = next(iter(rows.values()))["x"]
    lines = ["**Claim 1: accuracy falls monotonically with intensity, for every architecture.** "
             f"Top-1 (%) at R = {', '.join(f'{v:g}' for v in x)}, mean ± std over seeds; the fall is "
             "significant when the mean drop exceeds twice its std, monotone when no step rises by more "
             "than its std.", "",
             "| architecture | seeds | top-1 by intensity | drop | verdict |", "|---|---|---|---|---|"]
    verdicts = []
    for label in [m for m in CNNS + ATTENTION_FREE_MIXERS if m in rows]:
        g = rows[label]
        sig, mono = fall(g["acc"])
        v = "holds" if sig and mono else "does not hold" if not sig else "unclear (not monotone)"
        verdicts.append(v)
        lines.append(f"| {label} | {g['seeds']} | {curve(g)} | {ms(g['acc'][:, 0] - g['acc'][:, -1])} | {v} |")
    overall = "holds" if all(v == "holds" for v in verdicts) else \
        "does not hold" if any(v == "does not hold" for v in verdicts) else "unclear"
    lines += ["", f"Overall: **{overall}** ({sum(v == 'holds' for v in verdicts)} of {len(verdicts)} architectures)."]
    lines += ["", *claim_bias(rows)]
    return lines


def claim_bias(rows) -> list[str]:
    cnn = [rows[m] for m in CNNS if m in rows]
    other = {m: rows[m] for m in ATTENTION_FREE_MIXERS if m in rows}
    if not cnn or not other:
        return []
    rel = {m: g["acc"][:, -1] / g["acc"][:, 0] for m, g in rows.items()}
    lines = ["**Claim 4: stronger inductive bias is more robust** (CNNs against MLP-Mixer and ViT). Robustness "
             "as the share of clean accuracy kept at the largest intensity (at max / base), mean ± std over "
             "seeds; a CNN is more robust than a model when the means are further apart than the summed stds.",
             "", "| model | kept at max intensity | clean top-1 |", "|---|---|---|"]
    for m in rows:
        lines.append(f"| {m} | {ms(rel[m])} | {ms(rows[m]['acc'][:, 0])} |")
    wins, total = 0, 0
    for c in (m for m in CNNS if m in rows):
        for o in other:
            total += 1
            wins += rel[c].mean() - rel[o].mean() > rel[c].std(ddof=1) + rel[o].std(ddof=1)
    v = "holds" if wins == total else "does not hold" if wins == 0 else "unclear"
    return lines + ["", f"Verdict: **{v}** (a CNN beats an attention/mixing model beyond noise in {wins} of "
                        f"{total} pairs)."]


def claim_augment(groups) -> list[str]:
    n = zoo_size(groups)
    rows = {k[1]: g for k, g in groups.items() if k[0] == "resnet20" and k[1] in
            ("none", "crop", "cropflip", "randaugment", "augmix", "mixup") and g["seeds"] >= 2 and k[2] == n}
    if len(rows) < 2:
        return []
    lines = ["**Claim 2: augmentations shift the curve but do not remove the fall** (ResNet-20). The fall "
             "remains when it is significant (drop > 2 std); an augmentation shifts the curve when its nAUC "
             "differs from no augmentation's by more than the summed stds.", "",
             "| augmentation | top-1 by intensity | nAUC | drop | fall remains | shifts the curve |",
             "|---|---|---|---|---|---|"]
    base = rows.get("none")
    remains, shifts = [], []
    for aug, g in rows.items():
        sig, _ = fall(g["acc"])
        shift = "-" if aug == "none" or base is None else \
            ("yes" if abs(g["nauc"].mean() - base["nauc"].mean()) > g["nauc"].std(ddof=1) + base["nauc"].std(ddof=1)
             else "no")
        remains.append(sig)
        if shift != "-":
            shifts.append(shift == "yes")
        lines.append(f"| {aug} | {curve(g)} | {ms(g['nauc'])} | {ms(g['acc'][:, 0] - g['acc'][:, -1])} | "
                     f"{'yes' if sig else 'no'} | {shift} |")
    v = "holds" if all(remains) and any(shifts) else "does not hold" if not all(remains) else \
        "unclear (the fall remains, but no augmentation shifts the curve beyond noise)"
    return lines + ["", f"Verdict: **{v}**."]


def claim_size(groups) -> list[str]:
    rows = {k[2]: g for k, g in groups.items() if k[0] == "resnet20" and k[1] == "crop" and g["seeds"] >= 2}
    if len(rows) < 3:
        return []
    sizes = sorted(rows)
    lines = ["**Claim 3: more training data stops helping beyond a point** (ResNet-20, crop). Accuracy at "
             "the largest intensity and nAUC by training size; a doubling helps when the means differ by "
             "more than the summed stds.", "",
             "| train images | clean top-1 | at max intensity | nAUC |", "|---|---|---|---|"]
    for n in sizes:
        g = rows[n]
        lines.append(f"| {n:,} | {ms(g['acc'][:, 0])} | {ms(g['acc'][:, -1])} | {ms(g['nauc'])} |")
    helps = []
    for a, b in zip(sizes, sizes[1:]):
        ga, gb = rows[a]["nauc"], rows[b]["nauc"]
        helps.append(gb.mean() - ga.mean() > ga.std(ddof=1) + gb.std(ddof=1))
    v = "holds" if helps[0] and not helps[-1] else "does not hold" if all(helps) else "unclear"
    return lines + ["", f"Verdict: **{v}** (each doubling helps beyond noise: {', '.join('yes' if h else 'no' for h in helps)})."]


def plot(groups, path: Path) -> None:
    from ctrlshift.plotting import pyplot, save

    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), dpi=110)
    n = zoo_size(groups)
    panels = [("architectures (crop)", lambda k: k[1] == "crop" and k[2] == n, lambda k: k[0]),
              ("augmentations (ResNet-20)", lambda k: k[0] == "resnet20" and k[2] == n, lambda k: k[1]),
              ("training size (ResNet-20, crop)", lambda k: k[0] == "resnet20" and k[1] == "crop", lambda k: f"n={k[2]}")]
    for ax, (title, keep, label) in zip(axes, panels):
        for k, g in sorted(groups.items(), key=lambda kv: str(kv[0])):
            if not keep(k) or g["seeds"] < 2:
                continue
            mean, std = 100 * g["acc"].mean(0), 100 * g["acc"].std(0, ddof=1)
            line, = ax.plot(g["x"], mean, marker="o", ms=3, label=label(k))
            ax.fill_between(g["x"], mean - std, mean + std, color=line.get_color(), alpha=0.15, lw=0)
        ax.set_title(title)
        ax.set_xlabel("R (latent std)")
        ax.set_ylabel("top-1 (%), mean ± 1 std over seeds")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, frameon=False)
    fig.tight_layout()
    save(fig, path.with_suffix(""), ("png",))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", metavar="DIR")
    p.add_argument("--family", default="truncation")
    p.add_argument("--plot", metavar="PNG")
    args = p.parse_args(argv)
    groups = load(Path(args.results), args.family)
    for block in (claim_zoo(groups), claim_augment(groups), claim_size(groups)):
        if block:
            print("\n".join(block) + "\n")
    if args.plot:
        plot(groups, Path(args.plot))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
