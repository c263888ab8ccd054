"""Export a ctrlshift dataset to other layouts."""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import CtrlshiftError
from ..files import atomic_write_bytes
from ..names import slug
from .reader import Dataset

log = logging.getLogger(__name__)


def class_folder(label: int, name: str, num_classes: int) -> str:
    """``07_seven``: the zero-padded index keeps torchvision's ImageFolder order equal to the labels."""
    width = len(str(max(num_classes - 1, 0)))
    return f"{label:0{width}d}_{slug(name)}"


def export_imagefolder(root: str | Path, out: str | Path, progress: bool = True) -> int:
    """Write ``OUT/<config>/<split>/<class>/<index>.png`` for every image; returns the count."""
    from tqdm.auto import tqdm

    ds = Dataset.open(root)
    out = Path(out)
    if out.resolve() == ds.root.resolve() or ds.root.resolve() in out.resolve().parents:
        raise CtrlshiftError(f"--out: {out} is inside the dataset itself; choose another folder")
    if out.exists() and not out.is_dir():
        raise CtrlshiftError(f"--out: {str(out)!r} is a file; give a folder")
    names = ds.class_names
    total = sum(s["num_examples"] for c in ds.configs.values() for s in c.splits.values())
    count = 0
    with tqdm(total=total, unit="img", desc="export", disable=not progress) as bar:
        for config, info in ds.configs.items():
            for split in info.splits:
                for row in ds.rows(config, split, columns=["image", "label", "index"]):
                    folder = out / config / split / class_folder(row["label"], names[row["label"]], len(names))
                    folder.mkdir(parents=True, exist_ok=True)
                    atomic_write_bytes(folder / f"{row['index']:06d}.png", row["image"])
                    count += 1
                    bar.update()
    log.info("exported %d images to %s", count, out)
    return count
