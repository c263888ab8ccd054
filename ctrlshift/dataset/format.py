"""The dataset format on disk: names, the arrow schema, shard tasks, records and resume state.

Layout (Hugging Face compatible; ``datasets.load_dataset(DIR, "<family>-<value>", split=...)`` opens
it with no custom code)::

    DIR/README.md                                   dataset card; YAML front matter lists the configs
    DIR/manifest.json                               resolved config, generator, counts, shard sha256s
    DIR/croissant.json                              the same described in MLCommons Croissant (JSON-LD)
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

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from ..files import DirLock, atomic_write_bytes, atomic_write_json, sha256_file

FORMAT = "ctrlshift-dataset/1"
STATE_DIR = ".ctrlshift"
COLUMNS = ("label", "model_label", "index", "seed", "family", "value", "intensity")


def format_value(value: float) -> str:
    """``20`` for 20.0, ``0.5``, ``1e+30`` (whole numbers beyond 1e15 keep the exponent form)."""
    v = float(value)
    return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)


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


def decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


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
    """Write one shard atomically, then its record; returns the record. ``columns`` holds ``png``
    (bytes per image) and every name in :data:`COLUMNS`."""
    table = pa.Table.from_pydict(
        {"image": [{"bytes": b, "path": None} for b in columns["png"]], **{k: columns[k] for k in COLUMNS}},
        schema=schema(class_names))
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="snappy", row_group_size=1000)
    data = buf.getvalue()
    atomic_write_bytes(root / task.rel_path, data)
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


def record_fingerprint(root: Path, task: ShardTask) -> str | None:
    """The settings fingerprint a shard's record holds (no hashing), None without a readable record."""
    try:
        return json.loads(record_path(root, task).read_text()).get("fingerprint")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def read_record(root: Path, task: ShardTask) -> dict:
    return json.loads(record_path(root, task).read_text())


def files_under_data(root: Path) -> list[str]:
    """Every file under ``root/data`` as a path relative to ``root`` (``data/<config>/<file>``)."""
    data = root / "data"
    return sorted(str(p.relative_to(root)) for p in data.rglob("*") if p.is_file()) if data.is_dir() else []


def folder_lock(root: Path) -> DirLock:
    """The lock a writer holds on a dataset folder while it writes."""
    return DirLock(root / STATE_DIR / "lock", root)
