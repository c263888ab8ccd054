"""``ctrlshift gap CONFIG --out DIR``: measure, correct and stress the modality gap of a VLM.

Writes to DIR: ``gap_metrics.json``, ``pca.png``, ``corrections/<kind>.json|.pt`` (fitted once,
reusable), ``robustness.json`` and ``robustness.png`` (curves over alpha, clean accuracy beside),
and, for a ctrlshift dataset, zero-shot accuracy at every intensity as result files in the shared
schema (``DIR/results``), which ``ctrlshift build`` merges with classifier results, and
``shift_robustness.json`` with ``shift_robustness/<family>.png``: each correction fitted on each
family's base value and applied unchanged to every shifted split (:mod:`.shift`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import meta, to_dict
from ..dataset import Dataset, SplitCache, load_source
from ..errors import ConfigError
from ..evaluation import sweep_metrics
from ..files import atomic_write_json
from ..names import slug
from ..models import VLMConfig, cached_embeddings, load_templates, load_vlm
from ..plotting import pyplot, save
from ..provenance import stamp
from ..record import JsonRecord
from ..results import DatasetRef, ResultRecord, write_result
from . import corrections, shift
from .metrics import gap_report
from .robustness import robustness_curves

log = logging.getLogger(__name__)

REPORT_SCHEMA = "ctrlshift-gap/1"


@dataclass
class GapData:
    source: str = field(default="mnist5k", metadata=meta(
        "mnist5k (held-out real digits), a ctrlshift dataset folder, an ImageFolder tree, "
        "torchvision:<Dataset>:<root>[:train|test], or any registered data source"))
    config: str | None = field(default=None, metadata=meta(
        "dataset config used for the gap and the corrections (default: the first family's base)"))
    split: str = field(default="test", metadata=meta("split used for the gap and the corrections"))
    size: int = field(default=16, metadata=meta("image size for mnist5k", min=4))


@dataclass
class CorrectionSweep:
    kinds: list[str] = field(default_factory=lambda: ["projected", "mean", "liang"])
    alphas: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5])
    renormalize: bool = field(default=True, metadata=meta("re-normalise corrected image embeddings"))


@dataclass
class RobustnessConfig:
    sigma2: list[float] = field(default_factory=lambda: [0.005, 0.022, 0.040])
    bins: list[int] = field(default_factory=lambda: [32, 64, 128, 256])
    trials: int = field(default=5, metadata=meta("noise draws per point", min=1))
    seed: int = 0


@dataclass
class GapConfig:
    vlm: VLMConfig = field(default_factory=VLMConfig)
    data: GapData = field(default_factory=GapData)
    templates: str = field(default="mnist", metadata=meta(
        "packaged template set (mnist, cifar10, imagenet10) or a JSON file; its first set is the "
        "reference, the others are rewordings"))
    correction: CorrectionSweep = field(default_factory=CorrectionSweep)
    robustness: RobustnessConfig = field(default_factory=RobustnessConfig)
    zero_shot: bool = field(default=True, metadata=meta("zero-shot accuracy at every intensity (ctrlshift datasets)"))
    shift: bool = field(default=True, metadata=meta(
        "ctrlshift datasets: fit each correction on each family's base value and apply it to every shifted "
        "test split (shift_robustness.json and a plot per family)"))
    plugins: list[str] = field(default_factory=list, metadata=meta("modules imported before the config is read"))

    def validate(self, path: str = "") -> None:
        bad = [k for k in self.correction.kinds if k not in corrections.KINDS]
        if bad:
            raise ConfigError(f"correction.kinds: {bad} are not corrections; expected some of {', '.join(corrections.KINDS)}")


@dataclass
class GapReport(JsonRecord):
    """``gap_metrics.json``: the gap of one model on one image set, with clean accuracy."""

    vlm: dict
    data: dict  # the image set's identity (also the embedding-cache key)
    templates: str
    reference_templates: str
    n_images: int
    dim: int
    classes: dict  # gap_report(images, class texts)
    pairs: dict  # gap_report(images, their own class text), paired
    clean_top1: float
    reworded_top1: dict[str, float]
    config: dict
    schema: str = REPORT_SCHEMA
    ctrlshift_version: str = ""
    git_commit: str | None = None
    versions: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        out = super().to_json()
        return {"schema": out.pop("schema"), **out}

    def summary_lines(self) -> list[str]:
        c = self.classes
        return [f"gap |mean(text) - mean(image)| = {c['l2m']:.3f}; RMG {self.pairs['rmg']:.3f}; "
                f"gap inside the text span {c['gap_in_span_text']:.3f}, image span {c['gap_in_span_image']:.3f}",
                f"clean zero-shot top-1 {100 * self.clean_top1:.1f}%; reworded: "
                + ", ".join(f"{k} {100 * v:.1f}%" for k, v in self.reworded_top1.items())]


@dataclass
class GapRun:
    """What ``run`` wrote: the report, the robustness curves per correction, plots, result files."""

    report: GapReport
    curves: dict[str, list[dict]]
    plots: list[str]
    results: list[Path]
    shift: dict | None = None  # shift_robustness.json, for a ctrlshift dataset

    def summary_lines(self) -> list[str]:
        lines = self.report.summary_lines()
        for kind, rows in self.curves.items():
            lines.append(f"{kind} correction:")
            for r in rows:
                noise = " ".join(f"{100 * v:.1f}" for v in r["noise"].values())
                quant = " ".join(f"{100 * v:.1f}" for v in r["quantisation"].values())
                tpl = " ".join(f"{100 * v['unchanged']:.1f}" for v in r.get("templates", {}).values())
                lam = f" (lambda {r['lambda']:.3f})" if "lambda" in r else ""
                lines.append(f"  alpha {r['alpha']:<5}{lam} clean {100 * r['clean_top1']:5.1f}% | gap {r['l2m']:.3f} | "
                             f"noise {noise} | quant {quant} | reworded {tpl}")
        return lines


def run(cfg: GapConfig, out: str | Path, progress: bool = True) -> GapRun:
    """Measure, correct and stress the modality gap of ``cfg.vlm`` on ``cfg.data``; write to ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vlm = load_vlm(cfg.vlm)
    tpl = load_templates(cfg.templates)
    sets = list(tpl["templates"])
    ref_set, others = sets[0], sets[1:]

    data = load_source(cfg.data.source, cfg.data.config, cfg.data.split, cfg.data.size)
    if data.dataset is not None and cfg.zero_shot:
        data.dataset.verify_all()  # the zero-shot sweep reads every test split: stop now, not at the end
    split, key = data.test, data.key
    names = tpl.get("classes") or data.class_names
    if len(names) != len(data.class_names):
        raise ConfigError(f"templates: {len(names)} class names for a dataset of {len(data.class_names)} classes")
    cache = out / "cache"
    X = cached_embeddings(vlm, split.images, cache, key, cfg.vlm.batch_size, progress).double()
    T = vlm.class_embeddings(names, tpl["templates"][ref_set]).double()
    reworded = {s: vlm.class_embeddings(names, tpl["templates"][s]).double() for s in others}
    labels = split.labels

    report = GapReport.from_json({
        "vlm": vlm.identity, "data": key, "templates": cfg.templates, "reference_templates": ref_set,
        "n_images": len(X), "dim": X.shape[1], "classes": gap_report(X, T),
        "pairs": gap_report(X, T[labels], paired=True, texts=T),
        "clean_top1": float(((X @ T.T).argmax(1) == labels).double().mean()),
        "reworded_top1": {s: float(((X @ R.T).argmax(1) == labels).double().mean()) for s, R in reworded.items()},
        "config": to_dict(cfg), **stamp()})
    atomic_write_json(out / "gap_metrics.json", report.to_json())

    curves, fitted = {}, {}
    for kind in cfg.correction.kinds:
        c = corrections.fit(kind, X, T, 1.0, cfg.correction.renormalize,
                            source={"vlm": vlm.identity, "data": key, "templates": ref_set})
        c.save(out / "corrections" / kind)
        fitted[kind] = c
        r = cfg.robustness
        curves[kind] = robustness_curves(X, T, labels, c, cfg.correction.alphas, r.sigma2, r.bins, reworded,
                                         r.trials, r.seed)
    atomic_write_json(out / "robustness.json", {"schema": "ctrlshift-gap-robustness/1", "vlm": vlm.identity,
                                                "data": key, "curves": curves})
    plots = [plot_pca(X, T, labels, out / "pca.png"), plot_robustness(curves, out / "robustness.png")]
    results, shifted = [], None
    load = SplitCache(data.dataset) if data.dataset is not None else None  # both sweeps read the same splits
    if data.dataset is not None and cfg.zero_shot:
        results = zero_shot_results(vlm, data.dataset, names, tpl["templates"][ref_set], cache, cfg, out / "results",
                                    progress, fitted, load)
    if data.dataset is not None and cfg.shift:
        shifted = shift_report(vlm, data.dataset, T, cache, cfg, progress, {"vlm": vlm.identity, "templates": ref_set},
                               load)
        plots += shift.write(shifted, out)[1]
    return GapRun(report, curves, plots, results, shifted)


def shift_report(vlm, ds: Dataset, T: torch.Tensor, cache: Path, cfg: GapConfig, progress: bool, source: dict,
                 load=None) -> dict:
    """:func:`.shift.shift_robustness` on a ctrlshift dataset, embeddings cached per split."""
    load = load or SplitCache(ds)

    def embed(config: str, split: str):
        data = load(config, split)
        key = {"data": ds.dataset_hash, "config": config, "split": split}
        return cached_embeddings(vlm, data.images, cache, key, cfg.vlm.batch_size, progress).double(), data.labels

    r = cfg.robustness
    return shift.shift_robustness(embed, T, ds, cfg.correction.kinds, cfg.correction.alphas,
                                  cfg.correction.renormalize, r.sigma2, r.trials, r.seed, source)


def zero_shot_results(vlm, ds: Dataset, names, templates, cache, cfg: GapConfig, out: Path,
                      progress: bool = True, fitted: dict[str, corrections.Correction] | None = None,
                      load=None) -> list[Path]:
    """Zero-shot accuracy at every value of every family, in the shared result schema: without
    correction, and with each fitted correction (alpha = 1, fitted once on the gap's own image set
    and applied unchanged to every shifted split), so the leaderboard shows them side by side."""
    T = vlm.class_embeddings(names, templates)
    load = load or SplitCache(ds)  # every variant sweeps the same splits
    label = slug(cfg.vlm.name)
    variants: dict[str, corrections.Correction | None] = {"": None, **(fitted or {})}
    paths = []
    for fam in ds.families().values():
        for kind, c in variants.items():
            def logits_of(config: str, split, c=c) -> torch.Tensor:
                key = {"data": ds.dataset_hash, "config": config, "split": "test"}
                log.info("zero-shot%s: %s", f" ({kind})" if kind else "", config)
                X = cached_embeddings(vlm, split.images, cache, key, cfg.vlm.batch_size, progress)
                if c is None:
                    return 100.0 * X @ T.T
                return (100.0 * c.images(X) @ c.texts(T).T).float()

            metrics, summary, flip = sweep_metrics(ds, fam, logits_of, load)
            run_id = f"{label}__zeroshot" + (f"__{kind}" if kind else "")
            shown = f"{cfg.vlm.name} (zero-shot" + (f", {kind} correction)" if kind else ")")
            path = out / ds.name / fam.prefix / f"{run_id}.json"
            write_result(path, ResultRecord.new(
                task="zero-shot", run_id=run_id,
                model={"name": cfg.vlm.name, "label": shown, **vlm.identity, "correction": kind or None},
                dataset=DatasetRef.of(ds, fam, class_names=False),
                preprocessing={"templates": templates, **({"correction": {"kind": kind, "alpha": c.alpha}} if c else {})},
                training=None, seed=0, metrics=metrics, summary=summary, flip=flip))
            paths.append(path)
    return paths


def plot_pca(X: torch.Tensor, T: torch.Tensor, labels: torch.Tensor, path: Path) -> str:
    plt = pyplot()
    Z = torch.cat([X, T]).double()
    mean = Z.mean(0)
    _, _, vh = torch.linalg.svd(Z - mean, full_matrices=False)
    px, pt = ((X - mean) @ vh[:2].T).numpy(), ((T - mean) @ vh[:2].T).numpy()
    fig, ax = plt.subplots(figsize=(5, 4.2), dpi=110)
    ax.scatter(px[:, 0], px[:, 1], s=6, c=labels.numpy(), cmap="tab10", alpha=0.6,
               label="images (colour: true class)")
    ax.scatter(pt[:, 0], pt[:, 1], s=90, c=np.arange(len(T)), cmap="tab10", marker="*", edgecolors="k",
               label="class texts (colour: class)")
    ax.set_title("PCA of image and text embeddings (joint)")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return save(fig, path.with_suffix(""), ("png",))[0]


def plot_robustness(curves: dict, path: Path) -> str:
    plt = pyplot()
    kinds = list(curves)
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.6 * len(kinds), 3.6), dpi=110, squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        rows = curves[kind]
        a = [r["alpha"] for r in rows]
        for s in rows[0]["noise"]:
            ax.plot(a, [100 * r["noise"][s] for r in rows], marker="o", ms=3, label=f"noise s2={s}")
        for b in list(rows[0]["quantisation"])[:2]:
            ax.plot(a, [100 * r["quantisation"][b] for r in rows], marker="s", ms=3, ls="--", label=f"quant {b} bins")
        for t in rows[0].get("templates", {}):
            ax.plot(a, [100 * r["templates"][t]["unchanged"] for r in rows], marker="^", ms=3, ls=":",
                    label=f"reworded ({t})")
        ax.plot(a, [100 * r["clean_top1"] for r in rows], color="k", lw=2, label="clean top-1")
        ax.set_xlabel("alpha (0: none, 1: gap closed)")
        ax.set_ylabel("unchanged predictions / accuracy (%)")
        ax.set_title(f"{kind} correction")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, frameon=False)
    fig.tight_layout()
    return save(fig, path.with_suffix(""), ("png",))[0]
