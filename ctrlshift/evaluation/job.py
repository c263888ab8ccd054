"""The evaluate job: train on each family's base value, test on every value, write result files.

One config sweeps models x augmentations x training-set sizes x seeds; each (run, family) writes
``OUT/<dataset>/<family>/<run_id>.json`` and is skipped when that file exists.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..config import meta, to_dict
from ..errors import ConfigError, CtrlshiftError
from ..provenance import git_commit, versions
from .data import Dataset, Split
from .metrics import classification_metrics
from .models import count_params, create_model
from .results import SCHEMA, write_result
from .robustness import distances, flip_intensities, flip_summary, sweep_summary
from .train import AUGMENTS, Preprocess, TrainConfig, predict, train_classifier

log = logging.getLogger(__name__)


@dataclass
class ModelSpec:
    name: str = field(metadata=meta("a ctrlshift architecture (resnet20, mlp_mixer, ...) or a timm model name"))
    label: str | None = field(default=None, metadata=meta("name shown in tables (default: name)"))
    kwargs: dict = field(default_factory=dict, metadata=meta("architecture arguments, e.g. {width: 0.5}"))
    pretrained: bool = field(default=False, metadata=meta("timm pretrained weights when available"))
    train: bool = field(default=True, metadata=meta(
        "false: evaluate as is (a pretrained classifier), mapping dataset labels through model_label"))


@dataclass
class EvaluateConfig:
    name: str = field(default="evaluate", metadata=meta("name of the sweep"))
    models: list[ModelSpec] = field(default_factory=lambda: [ModelSpec("resnet20")])
    augments: list[str] = field(default_factory=lambda: ["cropflip"], metadata=meta(
        "augmentation presets: " + ", ".join(AUGMENTS)))
    train_sizes: list[int] = field(default_factory=lambda: [0], metadata=meta(
        "training-set sizes to sweep (0: the whole train split)"))
    seeds: list[int] = field(default_factory=lambda: [0])
    families: list[str] | None = field(default=None, metadata=meta("subset of the dataset's families (default: all)"))
    train: TrainConfig = field(default_factory=TrainConfig)
    device: str = field(default="auto", metadata=meta("auto | cpu | cuda"))

    def validate(self, path: str = "") -> None:
        bad = [a for a in self.augments if a not in AUGMENTS]
        if bad:
            raise ConfigError(f"augments: {bad} are not augmentation presets; expected some of {', '.join(AUGMENTS)}")
        if not self.models:
            raise ConfigError("models: empty; list at least one {name: ...}")
        if any(n < 0 for n in self.train_sizes):
            raise ConfigError(f"train_sizes: {self.train_sizes} has a negative size")


def run_id(spec: ModelSpec, augment: str, size: int, seed: int) -> str:
    label = (spec.label or spec.name).replace("/", "_")
    if not spec.train:
        return f"{label}__pretrained__s{seed}"
    return f"{label}__{augment}__n{size or 'all'}__s{seed}"


def evaluate(cfg: EvaluateConfig, data: str | Path, out: str | Path, progress: bool = True) -> list[Path]:
    """Run the sweep; returns the result files (existing ones included)."""
    ds = Dataset.open(data)
    families = ds.families()
    wanted = cfg.families or list(families)
    unknown = [f for f in wanted if f not in families]
    if unknown:
        raise ConfigError(f"families: {unknown} are not in {data}; it has {', '.join(families)}")
    for f in wanted:
        if families[f]["base"] is None:
            raise CtrlshiftError(f"{data}: family {f!r} has no train split at its base value; "
                                 "generate it with splits.train.size > 0")
    out = Path(out)
    cpu = cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available())
    device = torch.device("cpu" if cpu else "cuda")
    cache: dict[tuple, Split] = {}

    def load(config: str, split: str) -> Split:
        if (config, split) not in cache:
            cache[(config, split)] = ds.load(config, split)
        return cache[(config, split)]

    paths = []
    for fam in wanted:
        info = families[fam]
        for spec in cfg.models:
            for augment in (cfg.augments if spec.train else ["none"]):
                for size in (cfg.train_sizes if spec.train else [0]):
                    for seed in cfg.seeds:
                        rid = run_id(spec, augment, size, seed)
                        path = out / ds.root.name / fam / f"{rid}.json"
                        paths.append(path)
                        if path.is_file():
                            log.info("skip %s/%s: %s exists", fam, rid, path)
                            continue
                        t0 = time.time()
                        result = _run(cfg, ds, fam, info, spec, augment, size, seed, load, device, cpu,
                                      path.parent / "checkpoints" / rid, progress)
                        result["run_id"] = rid
                        write_result(path, result)
                        s = result["summary"]
                        log.info("%s/%s: clean %.1f%%, worst %.1f%%, nAUC %.1f%% (%.0fs)", fam, rid,
                                 100 * s["base"], 100 * s["worst"], 100 * s["nauc"], time.time() - t0)
    return paths


def sweep_metrics(ds: Dataset, configs: list[str], logits_of: Callable[[str, Split], torch.Tensor],
                  load: Callable[[str, str], Split] | None = None) -> tuple[dict, dict, dict | None]:
    """Metrics of one family's test splits ``configs`` (ordered by intensity), the sweep summary,
    and the flip-intensity summary (None when the splits differ in size). ``logits_of(config,
    split)`` gives a model's logits; ``load`` reads a split (default: ``ds.load``)."""
    load = load or ds.load
    intensities = [ds.configs[c]["intensity"] for c in configs]
    metrics, correct = {}, []
    for config, d in zip(configs, distances(intensities)):
        split = load(config, "test")
        logits = logits_of(config, split)
        m = classification_metrics(logits, split.labels)
        m.update(value=ds.configs[config]["value"], intensity=ds.configs[config]["intensity"], distance=float(d))
        metrics[config] = m
        correct.append((logits.argmax(1) == split.labels).numpy())
    summary = sweep_summary(intensities, [metrics[c]["top1"] for c in configs])
    same = all(len(c) == len(correct[0]) for c in correct)
    flip = flip_summary(intensities, flip_intensities(intensities, np.stack(correct))) if same else None
    return metrics, summary, flip


def _run(cfg, ds: Dataset, fam: str, info: dict, spec: ModelSpec, augment: str, size: int, seed: int, load,
         device, cpu: bool, ckpt_dir: Path, progress: bool) -> dict:
    base = info["base"]
    train = load(base, "train").subset(size or None)
    val = load(base, "val") if "val" in ds.configs[base]["splits"] else None
    pre = Preprocess.fit(train.images)
    torch.manual_seed(seed)
    kwargs = dict(spec.kwargs)
    num_classes = ds.num_classes if spec.train else int(kwargs.pop("num_classes", 1000))
    model = create_model(spec.name, num_classes, img_size=pre.img_size, pretrained=spec.pretrained, **kwargs)
    training = {"augment": augment, "train_size": len(train), "config": to_dict(cfg.train)}
    if spec.train:
        record = train_classifier(model, train, val, cfg.train, augment, seed, pre, ckpt_dir, progress, cpu=cpu)
        training.update(record)
    model = model.to(device)
    label_map = None
    if not spec.train:  # pretrained: dataset label k is the model's class model_label[k]
        classes = ds.manifest["config"]["decoder"].get("classes")
        label_map = torch.tensor(classes) if classes else None
    def logits_of(config: str, split: Split) -> torch.Tensor:
        logits = predict(model, split, pre, device, cfg.train.eval_batch_size, cfg.train.channels_last)
        return logits[:, label_map] if label_map is not None else logits

    metrics, summary, flip = sweep_metrics(ds, info["tests"], logits_of, load)
    if ckpt_dir.is_dir():
        (ckpt_dir / "checkpoint.pt").unlink(missing_ok=True)
    return {
        "schema": SCHEMA,
        "task": "classification",
        "model": {"name": spec.name, "label": spec.label or spec.name, "kwargs": spec.kwargs,
                  "pretrained": spec.pretrained, "trained": spec.train, "params": count_params(model)},
        "dataset": {"path": str(ds.root), "name": ds.root.name, "hash": ds.dataset_hash, "family": fam,
                    "base_config": base, "axis": info["axis"], "axis_unit": info["axis_unit"],
                    "class_names": ds.class_names},
        "preprocessing": pre.as_dict(),
        "training": training,
        "seed": seed,
        "metrics": metrics,
        "summary": summary,
        "flip": flip,
        "ctrlshift_version": versions()["ctrlshift"],
        "git_commit": git_commit(),
        "versions": versions(),
    }
