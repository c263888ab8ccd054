"""``ctrlshift.benchmark(model, dataset)``: your own trained classifier across every intensity.

RobustBench-style: any ``torch.nn.Module`` that maps a batch of images to logits is evaluated on
every test config of every family of a ctrlshift dataset (no training), with the same metrics,
summaries and flip intensities as the evaluate job, and the same result records (``--out`` writes
them for ``ctrlshift build``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import torch

from ..dataset import Dataset, Split, SplitCache
from ..device import resolve_device
from ..errors import ConfigError
from ..models import count_params
from ..names import slug
from ..results import DatasetRef, ResultRecord, write_result
from .sweep import sweep_metrics
from .train import Preprocess

log = logging.getLogger(__name__)


def unit_range(batch: torch.Tensor) -> torch.Tensor:
    """The default preprocessing: uint8 ``[N, H, W, 3]`` -> float ``[N, 3, H, W]`` in [0, 1]."""
    return batch.permute(0, 3, 1, 2).contiguous().float().div_(255.0)


def as_preprocess(preprocess) -> Callable[[torch.Tensor], torch.Tensor]:
    """None (unit range), a callable on uint8 NHWC batches, a :class:`Preprocess`, or a mapping
    ``{mean: [...], std: [...]}`` of per-channel statistics in [0, 1] units."""
    if preprocess is None:
        return unit_range
    if isinstance(preprocess, dict):
        try:
            return Preprocess(list(preprocess["mean"]), list(preprocess["std"]), 0)
        except KeyError as exc:
            raise ConfigError(f"preprocess: a mapping needs mean and std, lacks {exc}") from None
    if not callable(preprocess):
        raise ConfigError(f"preprocess: expected a callable, a Preprocess or {{mean, std}}; got {preprocess!r}")
    return preprocess


def benchmark(model: torch.nn.Module, dataset: str | Path | Dataset, preprocess=None, *, name: str | None = None,
              out: str | Path | None = None, families: list[str] | None = None, labels: str = "dataset",
              batch_size: int = 256, device: str = "auto") -> list[ResultRecord]:
    """Evaluate ``model`` on every test config of ``dataset``; one :class:`ResultRecord` per family.

    ``labels="dataset"``: the model's outputs are the dataset's classes 0..K-1. ``labels="model"``:
    it outputs the generator's label space (e.g. 1,000 ImageNet classes) and its logits are read
    through the dataset's class mapping. With ``out``, the records are written as result files
    (``out/<dataset>/<family>/<name>__benchmark.json``) that ``ctrlshift build`` merges.

    >>> records = ctrlshift.benchmark(my_net, "datasets/tiny",
    ...                               preprocess={"mean": [0.13] * 3, "std": [0.3] * 3})  # doctest: +SKIP
    >>> print(records[0].summary_line())                                                # doctest: +SKIP
    """
    ds = dataset if isinstance(dataset, Dataset) else Dataset.open(dataset)
    if labels not in ("dataset", "model"):
        raise ConfigError(f"labels: {labels!r}; expected 'dataset' or 'model'")
    label_map = None
    if labels == "model":
        if not ds.model_classes:
            raise ConfigError(f"labels: 'model' needs a dataset made with decoder.classes; {ds.root} uses the "
                              "generator's own classes, so use labels='dataset'")
        label_map = torch.tensor(ds.model_classes)
    fams = ds.families()
    unknown = [f for f in families or [] if f not in fams]
    if unknown:
        raise ConfigError(f"families: {unknown} are not in {ds.root}; it has {', '.join(fams)}")
    pre = as_preprocess(preprocess)
    dev = resolve_device(device)
    model = model.to(dev).eval()
    label = name or type(model).__name__
    load = SplitCache(ds)
    ds.verify_all()

    @torch.no_grad()
    def logits_of(config: str, split: Split) -> torch.Tensor:
        outs = []
        for i in range(0, len(split), batch_size):
            x = pre(split.images[i:i + batch_size].to(dev))
            outs.append(model(x).float().cpu())
        logits = torch.cat(outs)
        return logits[:, label_map] if label_map is not None else logits

    records = []
    for fam in (fams[f] for f in families or fams):
        metrics, summary, flip = sweep_metrics(ds, fam, logits_of, load)
        rec = ResultRecord.new(
            task="classification", run_id=f"{slug(label)}__benchmark",
            model={"name": label, "label": label, "trained": False, "source": "ctrlshift.benchmark",
                   "params": count_params(model), "labels": labels},
            dataset=DatasetRef.of(ds, fam), preprocessing={"kind": getattr(pre, "__name__", type(pre).__name__),
                                                          **(pre.as_dict() if isinstance(pre, Preprocess) else {})},
            training=None, seed=0, metrics=metrics, summary=summary, flip=flip)
        records.append(rec)
        log.info("%s", rec.summary_line())
        if out is not None:
            write_result(Path(out) / ds.name / fam.prefix / f"{rec.run_id}.json", rec)
    return records
