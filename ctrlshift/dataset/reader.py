"""Reading ctrlshift datasets: the manifest, rows of a split, and decoded in-memory splits.

Small images are decoded once into a ``[N, H, W, 3]`` uint8 tensor; training and evaluation then
index that tensor and augment on the device, so the loader is never the bottleneck.
"""

from __future__ import annotations

import io
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image

from ..errors import CtrlshiftError
from .records import ConfigInfo, FamilyInfo

log = logging.getLogger(__name__)


def read_manifest(root: str | Path) -> dict:
    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise CtrlshiftError(f"{root}: no manifest.json; not a finished ctrlshift dataset "
                             "(rerun `ctrlshift generate` on it to finish it)")
    return json.loads(path.read_text())


def shard_paths(root: str | Path, config: str, split: str) -> list[Path]:
    return sorted((Path(root) / "data" / config).glob(f"{split}-*-of-*.parquet"))


def iter_rows(root: str | Path, config: str, split: str, columns: Sequence[str] | None = None) -> Iterator[dict]:
    """Rows of one config's split as dicts (``image`` holds the PNG bytes)."""
    for path in shard_paths(root, config, split):
        table = pq.read_table(path, columns=list(columns) if columns else None)
        for row in table.to_pylist():
            if "image" in row and isinstance(row["image"], dict):
                row["image"] = row["image"]["bytes"]
            yield row


@dataclass
class Split:
    """Images and labels in memory: one split of one config, or any other labelled image set."""

    images: torch.Tensor  # [N, H, W, 3] uint8
    labels: torch.Tensor  # [N] int64
    index: torch.Tensor  # [N] int64 (position in the split; the same seed at every value)
    config: str = ""
    split: str = ""

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, n: int | None) -> "Split":
        if n is None or n >= len(self):
            return self
        return Split(self.images[:n], self.labels[:n], self.index[:n], self.config, self.split)


def _decode(blobs: list[bytes]) -> np.ndarray:
    return np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs])


@dataclass
class Dataset:
    """A ctrlshift dataset folder: its manifest, typed config records and lazily decoded splits.

    >>> ds = Dataset.open("datasets/tiny")                      # doctest: +SKIP
    >>> ds.families()["overlap"].tests                          # doctest: +SKIP
    ['overlap-0', 'overlap-10', 'overlap-20', 'overlap-40']
    >>> ds.load("overlap-20", "test").images.shape              # doctest: +SKIP
    torch.Size([30, 16, 16, 3])
    """

    root: Path
    manifest: dict

    @classmethod
    def open(cls, root: str | Path) -> "Dataset":
        """Open the dataset folder ``root`` written by ``ctrlshift generate`` (it must be finished:
        its ``manifest.json`` is written last)."""
        root = Path(root)
        if not root.is_dir():
            raise CtrlshiftError(f"--data: {str(root)!r} is not a folder; give a dataset written by `ctrlshift generate`")
        return cls(root, read_manifest(root))

    def __post_init__(self):
        self.configs: dict[str, ConfigInfo] = {n: ConfigInfo.from_json(c) for n, c in self.manifest["configs"].items()}

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest["class_names"])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def dataset_hash(self) -> str:
        return self.manifest["dataset_hash"]

    @property
    def model_classes(self) -> list[int] | None:
        """The generator's class index of each dataset class, when the dataset uses a subset."""
        return self.manifest["config"]["decoder"].get("classes")

    def families(self) -> dict[str, FamilyInfo]:
        """prefix -> :class:`FamilyInfo` (its base config, and its tests by increasing intensity)."""
        out: dict[str, FamilyInfo] = {}
        for name, info in self.configs.items():
            fam = out.setdefault(info.prefix, FamilyInfo(info.prefix, info.family, info.axis, info.axis_unit,
                                                         info.train_value))
            if info.is_base and "train" in info.splits:
                fam.base = name
            if "test" in info.splits:
                fam.tests.append(name)
        for fam in out.values():
            fam.tests.sort(key=lambda n: self.configs[n].distance)
        return out

    def load(self, config: str, split: str, workers: int = 2) -> Split:
        if config not in self.configs:
            raise CtrlshiftError(f"{self.root}: no config {config!r}; it has {', '.join(self.configs)}")
        if split not in self.configs[config].splits:
            raise CtrlshiftError(f"{self.root}: config {config!r} has no {split!r} split "
                                 f"(it has {', '.join(self.configs[config].splits)})")
        tables = [pq.read_table(p, columns=["image", "label", "index"]) for p in shard_paths(self.root, config, split)]
        blobs = [row["bytes"] for t in tables for row in t.column("image").to_pylist()]
        labels = torch.tensor([v for t in tables for v in t.column("label").to_pylist()], dtype=torch.int64)
        index = torch.tensor([v for t in tables for v in t.column("index").to_pylist()], dtype=torch.int64)
        chunks = [blobs[i:i + 512] for i in range(0, len(blobs), 512)]
        with ThreadPoolExecutor(workers) as pool:
            arrays = list(pool.map(_decode, chunks))
        images = torch.from_numpy(np.concatenate(arrays)) if arrays else torch.empty(0, 0, 0, 3, dtype=torch.uint8)
        order = torch.argsort(index)
        return Split(images[order], labels[order], index[order], config, split)

    def summary_line(self) -> str:
        images = sum(s["rows"] for s in self.manifest["shards"])
        return f"dataset: {self.root} ({len(self.configs)} configs, {images} images)"

    def first_base(self) -> str:
        """The base config of the first family that has one (the default for probes and the gap)."""
        for fam in self.families().values():
            if fam.base:
                return fam.base
        raise CtrlshiftError(f"{self.root}: no family has a train split at its base value")


class SplitCache:
    """``cache(config, split)``: each split of a dataset decoded once, then served from memory."""

    def __init__(self, ds: Dataset):
        self.ds = ds
        self._splits: dict[tuple[str, str], Split] = {}

    def __call__(self, config: str, split: str) -> Split:
        if (config, split) not in self._splits:
            self._splits[(config, split)] = self.ds.load(config, split)
        return self._splits[(config, split)]
