"""Reading ctrlshift datasets: the manifest, rows of a split, and decoded in-memory splits.

Small images are decoded once into a ``[N, H, W, 3]`` uint8 tensor; training and evaluation then
index that tensor and augment on the device, so the loader is never the bottleneck.
"""

from __future__ import annotations

import io
import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from ..errors import CtrlshiftError
from ..files import sha256_file
from ..names import is_safe
from .format import STATE_DIR
from .records import ConfigInfo, FamilyInfo

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SHARD_PATH = re.compile(r"data/([^/]+)/(train|val|test)-(\d{5})-of-(\d{5})\.parquet")
_verified: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, per process


class DatasetError(CtrlshiftError):
    """A dataset folder that is damaged, incomplete or not a ctrlshift dataset."""


def repair_hint(root: str | Path) -> str:
    """What to run to repair a damaged dataset folder."""
    saved = Path(root) / STATE_DIR / "config.yaml"
    if saved.is_file():
        return f"rerun `ctrlshift generate {saved} --out {root}` to repair it"
    return "regenerate it with the config in its manifest.json (or download it again)"


def read_manifest(root: str | Path) -> dict:
    """The manifest of a finished dataset, checked: valid JSON, the keys readers rely on, safe
    config names and shard paths. A problem is one :class:`DatasetError` line naming the file."""
    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise DatasetError(f"{root}: no manifest.json; not a finished ctrlshift dataset "
                           "(rerun `ctrlshift generate` on it to finish it)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc}); {repair_hint(root)}") from None
    problem = manifest_problem(data)
    if problem:
        raise DatasetError(f"{path}: {problem}; {repair_hint(root)}")
    return data


def manifest_problem(m: object) -> str | None:
    """The first thing wrong with a manifest's structure, or None."""
    if not isinstance(m, dict):
        return "not a JSON object"
    kinds = {"configs": dict, "shards": list, "class_names": list, "dataset_hash": str, "config": dict}
    for key, kind in kinds.items():
        if not isinstance(m.get(key), kind):
            return f"{key!r} is missing or not a {kind.__name__}"
    if not m["configs"]:
        return "'configs' is empty"
    if not all(isinstance(n, str) for n in m["class_names"]):
        return "'class_names' holds a non-string"
    for name, raw in m["configs"].items():
        if not is_safe(name):
            return f"config name {name!r} is not a safe folder name"
        if not isinstance(raw, dict):
            return f"configs.{name} is not an object"
        try:
            info = ConfigInfo.from_json(raw)
        except TypeError as exc:
            return f"configs.{name}: {exc}"
        if not is_safe(info.prefix) or not is_safe(info.family):
            return f"configs.{name}: family or prefix {info.prefix!r} is not a safe name"
        if not isinstance(info.splits, dict) or not set(info.splits) <= set(SPLITS) or not all(
                isinstance(v, dict) and isinstance(v.get("num_examples"), int) for v in info.splits.values()):
            return f"configs.{name}.splits: expected {{train|val|test: {{num_examples, seed}}}}"
        for key in ("value", "train_value", "intensity"):
            if isinstance(getattr(info, key), bool) or not isinstance(getattr(info, key), (int, float)):
                return f"configs.{name}.{key}: expected a number"
    for k, rec in enumerate(m["shards"]):
        if not isinstance(rec, dict) or not isinstance(rec.get("path"), str):
            return f"shards.{k}: not a shard record"
        match = SHARD_PATH.fullmatch(rec["path"])
        if not match or match.group(1) not in m["configs"] or match.group(2) not in m["configs"][match.group(1)]["splits"]:
            return f"shards.{k}.path {rec['path']!r} is not a shard of a listed config and split"
        if not isinstance(rec.get("sha256"), str) or not re.fullmatch(r"[0-9a-f]{64}", rec["sha256"]) or \
                not isinstance(rec.get("rows"), int):
            return f"shards.{k} ({rec['path']}): no valid sha256 and rows"
    return None


def shard_paths(root: str | Path, config: str, split: str) -> list[Path]:
    return sorted((Path(root) / "data" / config).glob(f"{split}-*-of-*.parquet"))


def _rows(table: pa.Table) -> Iterator[dict]:
    for row in table.to_pylist():
        if "image" in row and isinstance(row["image"], dict):
            row["image"] = row["image"]["bytes"]
        yield row


def iter_rows(root: str | Path, config: str, split: str, columns: Sequence[str] | None = None) -> Iterator[dict]:
    """Rows of the shard files on disk for one config's split, unverified (the writer's view, used
    before the manifest exists; readers use :meth:`Dataset.rows`)."""
    for path in shard_paths(root, config, split):
        yield from _rows(pq.read_table(path, columns=list(columns) if columns else None))


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
        self.shard_records: dict[str, dict] = {r["path"]: r for r in self.manifest["shards"]}

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

    def shards(self, config: str, split: str) -> list[Path]:
        """The shard files of a config's split, as the manifest lists them, each verified against
        its sha256 (once per process for an unchanged file)."""
        if config not in self.configs:
            raise CtrlshiftError(f"{self.root}: no config {config!r}; it has {', '.join(self.configs)}")
        if split not in self.configs[config].splits:
            raise CtrlshiftError(f"{self.root}: config {config!r} has no {split!r} split "
                                 f"(it has {', '.join(self.configs[config].splits)})")
        prefix = f"data/{config}/{split}-"
        paths = []
        for rel in sorted(p for p in self.shard_records if p.startswith(prefix)):
            self.verify(rel)
            paths.append(self.root / rel)
        return paths

    def verify(self, rel: str) -> None:
        """Check one listed shard against the manifest's sha256; a :class:`DatasetError` names it."""
        path = self.root / rel
        try:
            st = path.stat()
        except FileNotFoundError:
            raise DatasetError(f"{path}: listed in the manifest but missing; {repair_hint(self.root)}") from None
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        digest = _verified.get(key) or sha256_file(path)
        if digest != self.shard_records[rel]["sha256"]:
            raise DatasetError(f"{path}: checksum does not match the manifest (the shard is damaged or was "
                               f"changed); {repair_hint(self.root)}")
        _verified[key] = digest

    def verify_all(self, configs: Sequence[str] | None = None) -> None:
        """Verify every listed shard (of ``configs``, default all) before any work starts on them."""
        wanted = set(configs) if configs is not None else set(self.configs)
        for rel in sorted(self.shard_records):
            if rel.split("/")[1] in wanted:
                self.verify(rel)

    def read_table(self, config: str, split: str, columns: Sequence[str] | None = None) -> list[pa.Table]:
        """The verified shards of a split as arrow tables."""
        out = []
        for path in self.shards(config, split):
            try:
                out.append(pq.read_table(path, columns=list(columns) if columns else None))
            except (pa.ArrowException, OSError) as exc:  # verified bytes that arrow cannot read
                raise DatasetError(f"{path}: not a readable shard ({exc}); {repair_hint(self.root)}") from None
        return out

    def rows(self, config: str, split: str, columns: Sequence[str] | None = None) -> Iterator[dict]:
        """Rows of one config's split as dicts (``image`` holds the PNG bytes), from verified shards."""
        for table in self.read_table(config, split, columns):
            yield from _rows(table)

    def load(self, config: str, split: str, workers: int = 2, progress: bool = False) -> Split:
        """Decode one config's split (verified shards) into a :class:`Split` in index order."""
        from tqdm.auto import tqdm

        tables = self.read_table(config, split, ["image", "label", "index"])
        blobs = [row["bytes"] for t in tables for row in t.column("image").to_pylist()]
        labels = torch.tensor([v for t in tables for v in t.column("label").to_pylist()], dtype=torch.int64)
        index = torch.tensor([v for t in tables for v in t.column("index").to_pylist()], dtype=torch.int64)
        chunks = [blobs[i:i + 512] for i in range(0, len(blobs), 512)]
        with ThreadPoolExecutor(workers) as pool, tqdm(total=len(blobs), unit="img", desc=f"decode {config}/{split}",
                                                       disable=not progress, leave=False) as bar:
            arrays = []
            for a in pool.map(_decode, chunks):
                arrays.append(a)
                bar.update(len(a))
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

    def __init__(self, ds: Dataset, progress: bool = False):
        self.ds = ds
        self.progress = progress
        self._splits: dict[tuple[str, str], Split] = {}

    def __call__(self, config: str, split: str) -> Split:
        if (config, split) not in self._splits:
            self._splits[(config, split)] = self.ds.load(config, split, progress=self.progress)
        return self._splits[(config, split)]
