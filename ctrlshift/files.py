"""Writing files so that an interruption never leaves a half-written one, and locking a folder.

Every artifact ctrlshift writes (shards, records, manifests, results, checkpoints, caches,
corrections) goes through these helpers: write to a temporary file beside the target, flush and
fsync, then ``os.replace`` it into place. A crash leaves either the old file or the new one, and at
worst a ``.tmp-*`` file that the next run removes.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import math
import os
from pathlib import Path

from .errors import CtrlshiftError

TMP_PREFIX = ".tmp-"


def _tmp_path(path: Path) -> Path:
    return path.with_name(f"{TMP_PREFIX}{path.name}-{os.getpid()}")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def strict_json(obj: object) -> object:
    """``obj`` with every NaN and infinity replaced by None, so that strict JSON parsers read it
    (``null`` means "undefined": a class with no test image, a ratio over zero, ...)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def atomic_write_json(path: str | Path, obj: object) -> None:
    """Strict JSON (NaN and infinities as null) with one space of indent and a final newline."""
    text = json.dumps(strict_json(obj), indent=1, sort_keys=False, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode())


def atomic_save_torch(path: str | Path, obj: object) -> None:
    """``torch.save`` through a temporary file (read back with ``torch.load(weights_only=True)``)."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    torch.save(obj, tmp)
    os.replace(tmp, path)


def atomic_save_npz(path: str | Path, **arrays) -> None:
    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def atomic_save_npy(path: str | Path, array) -> None:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(path, buf.getvalue())


def clean_temporaries(root: str | Path) -> int:
    """Remove the temporary files that an interrupted run left under ``root``; returns the count."""
    count = 0
    for tmp in Path(root).rglob(f"{TMP_PREFIX}*"):
        tmp.unlink(missing_ok=True)
        count += 1
    return count


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class DirLock:
    """An exclusive lock on a folder (``lock_path``); released when the process ends, even on a crash."""

    def __init__(self, lock_path: str | Path, folder: str | Path):
        self.path = Path(lock_path)
        self.folder = Path(folder)
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
                raise CtrlshiftError(f"{self.folder}: another ctrlshift run ({holder}) is writing "
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
