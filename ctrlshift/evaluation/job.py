"""The evaluate job: train on each family's base value, test on every value, write result files.

One config sweeps models x augmentations x training-set sizes x seeds; each (run, family) writes
``OUT/<dataset>/<family>/<run_id>.json`` and is skipped when that file exists.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..config import meta, to_dict
from ..dataset import Dataset, FamilyInfo, Split, SplitCache
from ..device import resolve_device
from ..errors import ConfigError, CtrlshiftError
from ..files import atomic_write_bytes
from ..models import count_params, create_model
from ..names import slug
from ..provenance import stable_hash
from ..results import DatasetRef, ResultRecord, read_result, write_result
from .sweep import sweep_metrics
from .train import AUGMENTS, Checkpoint, Preprocess, Recipe, TrainConfig, predict, train_classifier

log = logging.getLogger(__name__)


@dataclass
class ModelSpec:
    name: str = field(metadata=meta(
        "a ctrlshift architecture (resnet20, mlp_mixer, ...), a timm model name, or your own package.module:factory"))
    label: str | None = field(default=None, metadata=meta("name shown in tables (default: name)"))
    kwargs: dict = field(default_factory=dict, metadata=meta("architecture arguments, e.g. {width: 0.5}"))
    pretrained: bool = field(default=False, metadata=meta("timm pretrained weights (an error when they cannot be had)"))
    state_dict: str | None = field(default=None, metadata=meta(
        "weights to load (.safetensors, or a torch file read with weights_only)"))
    train: bool = field(default=True, metadata=meta(
        "false: evaluate as is (a pretrained classifier), mapping dataset labels through model_label"))

    @property
    def display(self) -> str:
        return self.label or self.name


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
    consistent_only: bool = field(default=False, metadata=meta(
        "test only on images a reference classifier labels as their class (needs `ctrlshift consistency`)"))
    plugins: list[str] = field(default_factory=list, metadata=meta("modules imported before the config is read"))

    def validate(self, path: str = "") -> None:
        bad = [a for a in self.augments if a not in AUGMENTS]
        if bad:
            raise ConfigError(f"augments: {bad} are not augmentation presets; expected some of {', '.join(AUGMENTS)}")
        if not self.models:
            raise ConfigError("models: empty; list at least one {name: ...}")
        if any(n < 0 for n in self.train_sizes):
            raise ConfigError(f"train_sizes: {self.train_sizes} has a negative size")


@dataclass
class RunSpec:
    """One run of the sweep: a model with one recipe on one family."""

    family: FamilyInfo
    model: ModelSpec
    augment: str
    size: int  # training-set size (0: all)
    seed: int
    consistent_only: bool = False

    @property
    def run_id(self) -> str:
        label = slug(self.model.display)
        tail = "__consistent" if self.consistent_only else ""
        if not self.model.train:
            return f"{label}__pretrained__s{self.seed}{tail}"
        return f"{label}__{self.augment}__n{self.size or 'all'}__s{self.seed}{tail}"


def plan_runs(cfg: EvaluateConfig, families: dict[str, FamilyInfo]) -> list[RunSpec]:
    runs = []
    for fam in cfg.families or list(families):
        for spec in cfg.models:
            for augment in (cfg.augments if spec.train else ["none"]):
                for size in (cfg.train_sizes if spec.train else [0]):
                    runs.extend(RunSpec(families[fam], spec, augment, size, seed, cfg.consistent_only)
                                for seed in cfg.seeds)
    return runs


def _check_families(cfg: EvaluateConfig, families: dict[str, FamilyInfo], data) -> None:
    unknown = [f for f in cfg.families or [] if f not in families]
    if unknown:
        raise ConfigError(f"families: {unknown} are not in {data}; it has {', '.join(families)}")
    for f in cfg.families or list(families):
        if families[f].base is None:
            raise CtrlshiftError(f"{data}: family {f!r} has no train split at its base value; "
                                 "generate it with splits.train.size > 0")


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """The model's weights as safetensors, written atomically (tensors copied, so shared ones are fine)."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(path, save(state))


# train keys added after result files were first written, with their defaults: at the default they
# stay out of the fingerprint, so results made before the key existed still match (and are not redone).
LATER_TRAIN_KEYS = {"compile": False}


def fingerprint(cfg: EvaluateConfig, ds: Dataset, run: RunSpec) -> str:
    """Everything that determines a run's result: the model, its recipe, the data."""
    train = {k: v for k, v in to_dict(cfg.train).items() if LATER_TRAIN_KEYS.get(k, object()) != v}
    return stable_hash({"model": dataclasses.asdict(run.model), "augment": run.augment, "size": run.size,
                        "seed": run.seed, "train": train, "dataset": ds.dataset_hash,
                        "family": dataclasses.asdict(run.family), "consistent_only": run.consistent_only})


def _existing(path: Path, fp: str, overwrite: bool) -> bool:
    """True when ``path`` holds this run's result (skip it); other settings are refused unless
    ``overwrite``; an unreadable file is redone."""
    if not path.is_file():
        return False
    try:
        held = read_result(path).fingerprint
    except CtrlshiftError as exc:
        log.warning("%s; running it again", exc)
        return False
    if held == fp:
        return True
    if not overwrite:
        raise CtrlshiftError(f"{path}: a result of this run made with other settings; use --overwrite to redo it, "
                             "or another --out")
    return False


def evaluate(cfg: EvaluateConfig, data: str | Path, out: str | Path, progress: bool = True,
             overwrite: bool = False) -> list[Path]:
    """Run the sweep; returns the result files (existing ones included). A run whose result file
    exists with the same settings is skipped; with other settings it is refused unless ``overwrite``."""
    ds = Dataset.open(data)
    families = ds.families()
    _check_families(cfg, families, data)
    device = resolve_device(cfg.device)
    runs = plan_runs(cfg, families)
    ds.verify_all({c for run in runs for c in (run.family.base, *run.family.tests)})  # before any training
    load, trained = SplitCache(ds, progress), TrainedModels()
    if cfg.consistent_only:
        from .consistency import ConsistentOnly, consistent_indices

        load = ConsistentOnly(load, consistent_indices(ds))
    todo = []
    for run in runs:  # refuse before any training, not halfway through the sweep
        path = Path(out) / ds.name / run.family.prefix / f"{run.run_id}.json"
        fp = fingerprint(cfg, ds, run)
        if _existing(path, fp, overwrite):
            log.info("skip %s/%s: %s exists", run.family.prefix, run.run_id, path)
        else:
            todo.append((run, path, fp))
    from tqdm.auto import tqdm

    bar = tqdm(todo, desc="evaluate", unit="run", disable=not progress, dynamic_ncols=True)
    for k, (run, path, fp) in enumerate(bar, 1):
        t0 = time.time()
        bar.set_postfix_str(f"{run.family.prefix}/{run.run_id}")
        if not progress:
            log.info("run %d of %d: %s/%s", k, len(todo), run.family.prefix, run.run_id)
        ckpt = Checkpoint(path.parent / "checkpoints" / run.run_id, fp, overwrite)
        result = run_one(cfg, ds, run, load, device, ckpt, progress, trained,
                         weights=path.with_suffix(".safetensors"))
        result.fingerprint = fp
        write_result(path, result)
        log.info("%s (%.0fs)", result.summary_line(), time.time() - t0)
    bar.close()
    return [Path(out) / ds.name / run.family.prefix / f"{run.run_id}.json" for run in runs]


class TrainedModels:
    """Trainings done in this sweep, keyed by everything that determines their outcome (the
    model, its recipe, and the bytes of the train and val images and labels). Two families whose
    base values are the same distribution with the same seeds (extend 50 and overlap 0 under the
    paper's targets) train once: the second run reuses the weights, which are bit-identical."""

    def __init__(self):
        self._done: dict[str, tuple[dict, dict]] = {}

    @staticmethod
    def key(run: RunSpec, cfg: EvaluateConfig, train: Split, val: Split | None) -> str:
        h = hashlib.sha256()
        for split in (train, val):
            if split is not None:
                h.update(split.images.numpy().tobytes())
                h.update(split.labels.numpy().tobytes())
        return stable_hash({"model": dataclasses.asdict(run.model), "augment": run.augment, "seed": run.seed,
                            "train": to_dict(cfg.train), "data": h.hexdigest()})

    def get(self, key: str) -> tuple[dict, dict] | None:
        return self._done.get(key)

    def put(self, key: str, model: torch.nn.Module, record: dict, origin: str) -> None:
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        self._done[key] = (state, {**record, "reused_from": origin})


def model_for(ds: Dataset, name: str, kwargs: dict, trained: bool, img_size: int,
              **create) -> tuple[torch.nn.Module, torch.Tensor | None]:
    """A run's model, and for a model evaluated as is (``trained`` false: a pretrained classifier
    with its own ``num_classes``, default 1000) the indices that pick the logits of the dataset's
    classes: dataset label k is the model's class ``model_label[k]``."""
    kwargs = dict(kwargs)
    num_classes = ds.num_classes if trained else int(kwargs.pop("num_classes", 1000))
    model = create_model(name, num_classes, img_size=img_size, **create, **kwargs)
    label_map = torch.tensor(ds.model_classes) if not trained and ds.model_classes else None
    return model, label_map


def run_one(cfg: EvaluateConfig, ds: Dataset, run: RunSpec, load: Callable[[str, str], Split], device: torch.device,
            checkpoint: Checkpoint, progress: bool = True, trained: TrainedModels | None = None,
            weights: Path | None = None) -> ResultRecord:
    """Train (unless the model is evaluated as is, or ``trained`` holds the same training) and
    sweep one run; returns its result record. With ``weights``, the model's weights are saved
    there (safetensors) for ``ctrlshift verify``."""
    base = run.family.base
    train = load(base, "train").subset(run.size or None)
    val = load(base, "val") if "val" in ds.configs[base].splits else None
    pre = Preprocess.fit(train.images)
    torch.manual_seed(run.seed)
    model, label_map = model_for(ds, run.model.name, run.model.kwargs, run.model.train, pre.img_size,
                                 pretrained=run.model.pretrained, state_dict=run.model.state_dict)
    training = {"augment": run.augment, "train_size": len(train), "config": to_dict(cfg.train)}
    if run.model.train:
        key = TrainedModels.key(run, cfg, train, val) if trained is not None else None
        done = trained.get(key) if trained is not None else None
        if done is not None:
            model.load_state_dict(done[0])
            training.update(done[1])
            log.info("%s/%s: the same training as %s; its weights are reused", run.family.prefix, run.run_id,
                     done[1]["reused_from"])
        else:
            recipe = Recipe(cfg.train, run.augment, run.seed)
            record = train_classifier(model, train, val, pre, recipe, checkpoint, progress, device=device)
            training.update(record)
            if trained is not None:
                trained.put(key, model, record, f"{run.family.prefix}/{run.run_id}")
    model = model.to(device)

    def logits_of(config: str, split: Split) -> torch.Tensor:
        logits = predict(model, split, pre, device, cfg.train.eval_batch_size, cfg.train.channels_last)
        return logits[:, label_map] if label_map is not None else logits

    metrics, summary, flip = sweep_metrics(ds, run.family, logits_of, load)
    if weights is not None:
        save_weights(model, weights)
    if checkpoint.path is not None:
        checkpoint.path.unlink(missing_ok=True)
    return ResultRecord.new(
        weights=weights.name if weights is not None else None,
        task="classification", run_id=run.run_id,
        model={"name": run.model.name, "label": run.model.display, "kwargs": run.model.kwargs,
               "pretrained": run.model.pretrained, "trained": run.model.train, "params": count_params(model)},
        dataset=DatasetRef.of(ds, run.family), preprocessing=pre.as_dict(), training=training, seed=run.seed,
        metrics=metrics, summary=summary, flip=flip)
