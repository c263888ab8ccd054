"""The dataset format on disk: shards, records, manifest, card, grids, lock.

Layout (Hugging Face compatible; ``datasets.load_dataset(DIR, "<family>-<value>", split=...)`` opens
it with no custom code)::

    DIR/README.md                                   dataset card; YAML front matter lists the configs
    DIR/manifest.json                               resolved config, generator, counts, shard sha256s
    DIR/data/<family>-<value>/<split>-NNNNN-of-NNNNN.parquet
    DIR/grids/<family>-<value>.png, grids/<family>.png   sample grids (same seeds across values)
    DIR/.ctrlshift/                                 lock, resolved config, one record per finished shard

Columns: ``image`` (struct of PNG ``bytes`` and ``path``, the ``datasets`` Image encoding),
``label`` (ClassLabel), ``model_label`` (the generator's class index), ``index``, ``seed`` (the
sample's noise seed), ``family``, ``value``, ``intensity``.

A shard is written to a temporary file and renamed into place; a record with its sha256 follows.
A rerun skips shards whose record and checksum verify, and redoes partial or damaged ones.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from PIL import Image

from ..errors import CtrlshiftError

log = logging.getLogger(__name__)

FORMAT = "ctrlshift-dataset/1"
STATE_DIR = ".ctrlshift"


def format_value(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def config_name(prefix: str, value: float) -> str:
    return f"{prefix}-{format_value(value)}"


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.parquet"


def schema(class_names: Sequence[str]) -> pa.Schema:
    """The arrow schema, with the ``datasets`` features in its ``huggingface`` metadata."""
    features = {
        "image": {"_type": "Image"},
        "label": {"names": list(class_names), "_type": "ClassLabel"},
        "model_label": {"dtype": "int64", "_type": "Value"},
        "index": {"dtype": "int64", "_type": "Value"},
        "seed": {"dtype": "int64", "_type": "Value"},
        "family": {"dtype": "string", "_type": "Value"},
        "value": {"dtype": "float64", "_type": "Value"},
        "intensity": {"dtype": "float64", "_type": "Value"},
    }
    fields = [
        pa.field("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        pa.field("label", pa.int64()),
        pa.field("model_label", pa.int64()),
        pa.field("index", pa.int64()),
        pa.field("seed", pa.int64()),
        pa.field("family", pa.string()),
        pa.field("value", pa.float64()),
        pa.field("intensity", pa.float64()),
    ]
    meta = {"huggingface": json.dumps({"info": {"features": features}})}
    return pa.schema(fields, metadata=meta)


def encode_png(images: np.ndarray) -> list[bytes]:
    """``[N, H, W, 3]`` uint8 -> PNG bytes per image (deterministic, zlib level 6)."""
    out = []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG", compress_level=6)
        out.append(buf.getvalue())
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: object) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=False) + "\n").encode())


@dataclass(frozen=True)
class ShardTask:
    """One shard: rows ``start..stop-1`` of a split of a family-value config."""

    config: str
    prefix: str
    family: str
    value: float
    split: str
    split_seed: int
    shard: int
    num_shards: int
    start: int
    stop: int
    fingerprint: str

    @property
    def rel_path(self) -> str:
        return f"data/{self.config}/{shard_name(self.split, self.shard, self.num_shards)}"

    @property
    def rows(self) -> int:
        return self.stop - self.start


def record_path(root: Path, task: ShardTask) -> Path:
    return root / STATE_DIR / "shards" / f"{task.config}__{task.split}-{task.shard:05d}.json"


def write_shard(root: Path, task: ShardTask, class_names: Sequence[str], columns: dict, rank: int) -> dict:
    """Write one shard atomically, then its record; returns the record."""
    table = pa.Table.from_pydict(
        {"image": [{"bytes": b, "path": None} for b in columns["png"]], **{k: columns[k] for k in
         ("label", "model_label", "index", "seed", "family", "value", "intensity")}},
        schema=schema(class_names))
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="snappy", row_group_size=1000)
    data = buf.getvalue()
    path = root / task.rel_path
    atomic_write_bytes(path, data)
    record = {"path": task.rel_path, "sha256": hashlib.sha256(data).hexdigest(), "rows": task.rows,
              "first_index": task.start, "last_index": task.stop - 1, "rank": rank,
              "fingerprint": task.fingerprint}
    atomic_write_json(record_path(root, task), record)
    return record


def shard_status(root: Path, task: ShardTask) -> str:
    """'done' (record and checksum verify), 'missing', 'damaged' or 'stale' (other settings)."""
    rec_path = record_path(root, task)
    path = root / task.rel_path
    if not rec_path.is_file() or not path.is_file():
        return "missing"
    try:
        record = json.loads(rec_path.read_text())
    except json.JSONDecodeError:
        return "damaged"
    if record.get("fingerprint") != task.fingerprint:
        return "stale"
    if record.get("rows") != task.rows or sha256_file(path) != record.get("sha256"):
        return "damaged"
    return "done"


def read_record(root: Path, task: ShardTask) -> dict:
    return json.loads(record_path(root, task).read_text())


def clean_temporaries(root: Path) -> int:
    """Remove temporary files that an interrupted run left behind."""
    count = 0
    for tmp in root.rglob(".tmp-*"):
        tmp.unlink(missing_ok=True)
        count += 1
    return count


class DirLock:
    """An exclusive lock on an output folder; released when the process ends, even on a crash."""

    def __init__(self, root: Path):
        self.path = root / STATE_DIR / "lock"
        self.fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                holder = self.path.read_text().strip() or "another process"
                raise CtrlshiftError(f"{self.path.parent.parent}: another ctrlshift run ({holder}) is writing "
                                     "this folder; wait for it to finish or choose another --out") from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {os.uname().nodename}".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


# ----------------------------------------------------------------------------------------------
# Reading


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


def decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


# ----------------------------------------------------------------------------------------------
# Card and grids


def write_card(root: Path, manifest: dict) -> None:
    configs = manifest["configs"]
    front = {
        "license": manifest["card"]["license"],
        "pretty_name": manifest["card"]["pretty_name"],
        "task_categories": ["image-classification"],
        "tags": ["ctrlshift", "distribution-shift", "synthetic"],
        "configs": [
            {"config_name": name,
             "data_files": [{"split": split, "path": f"data/{name}/{split}-*.parquet"}
                            for split in info["splits"]]}
            for name, info in configs.items()
        ],
        "ctrlshift": {"format": FORMAT, "generator": manifest["generator"]["source"],
                      "backend": manifest["generator"]["backend"],
                      "sampler": manifest["generator"].get("sampler", {}).get("name"),
                      "dataset_hash": manifest["dataset_hash"]},
    }
    gen = manifest["generator"]
    lines = [
        "---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "",
        f"# {manifest['card']['pretty_name']}", "",
        manifest["card"]["description"] or
        "Images decoded by one generator from latent distributions shifted by controlled amounts "
        "(Control+Shift). Train on the base value; test on every value.", "",
        f"- Generator: `{gen['source']}` ({gen['backend']}); latent shape {gen['latent_shape']}",
        f"- Sampler: {json.dumps({k: v for k, v in gen.get('sampler', {}).items() if k != 'sigmas'})}",
        f"- Classes ({len(manifest['class_names'])}): {', '.join(manifest['class_names'])}",
        f"- Labels: {manifest['config']['labels']}; made by ctrlshift {manifest['ctrlshift_version']}",
        "", "| config | family | value | axis | intensity | outside training typical set | splits |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, info in configs.items():
        splits = ", ".join(f"{s} {v['num_examples']}" for s, v in info["splits"].items())
        lines.append(f"| {name} | {info['family']} | {format_value(info['value'])} | {info['axis']} | "
                     f"{info['intensity']:.4g} | {info['outside_fraction']:.3f} | {splits} |")
    first = next(iter(configs))
    lines += ["", "## Load", "", "```python", "from datasets import load_dataset",
              f"ds = load_dataset(\"{root.name}\", \"{first}\", split=\"test\")  # a local folder or hub id",
              "```", "",
              "Each row records its `index` and `seed`: `ctrlshift latents` regenerates the latent of any "
              "image, and the same seeds are decoded at every value of a family. `manifest.json` holds the "
              "resolved config, the generator's identity and every shard's sha256.", ""]
    (root / "README.md").write_text("\n".join(lines))


def image_grid(images: Sequence[np.ndarray], cols: int, scale: int = 1, pad: int = 2) -> Image.Image:
    h, w = images[0].shape[:2]
    rows = (len(images) + cols - 1) // cols
    canvas = Image.new("RGB", (cols * (w * scale + pad) + pad, rows * (h * scale + pad) + pad), "white")
    for k, img in enumerate(images):
        tile = Image.fromarray(img).resize((w * scale, h * scale), Image.NEAREST)
        canvas.paste(tile, (pad + (k % cols) * (w * scale + pad), pad + (k // cols) * (h * scale + pad)))
    return canvas


def write_grids(root: Path, manifest: dict, per_row: int) -> list[str]:
    """One grid per config (first test images) and one per family (a row per value, same seeds)."""
    written = []
    grid_dir = root / "grids"
    grid_dir.mkdir(exist_ok=True)
    by_family: dict[str, list[tuple[float, list[np.ndarray]]]] = {}
    for name, info in manifest["configs"].items():
        split = "test" if "test" in info["splits"] else next(iter(info["splits"]))
        rows = []
        for row in iter_rows(root, name, split, columns=["image"]):
            rows.append(decode_png(row["image"]))
            if len(rows) >= per_row * per_row:
                break
        if not rows:
            continue
        scale = max(1, 64 // rows[0].shape[0])
        image_grid(rows, per_row, scale).save(grid_dir / f"{name}.png")
        written.append(f"grids/{name}.png")
        if split == "test":
            by_family.setdefault(info["prefix"], []).append((info["value"], rows[:per_row]))
    for prefix, items in by_family.items():
        items.sort(key=lambda it: it[0])
        tiles = [img for _, imgs in items for img in imgs]
        scale = max(1, 64 // tiles[0].shape[0])
        image_grid(tiles, per_row, scale).save(grid_dir / f"{prefix}.png")
        written.append(f"grids/{prefix}.png")
    return written
