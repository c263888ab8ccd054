"""Shared figure plumbing: a headless backend, and saving one figure in several formats."""

from __future__ import annotations

import io
from pathlib import Path

from .files import atomic_write_bytes


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, base: str | Path, exts: tuple[str, ...] = ("png", "svg")) -> list[str]:
    """Save ``fig`` as ``base.<ext>`` for each format, close it, return the paths."""
    base = Path(base)
    paths = []
    for ext in exts:
        path = base.with_name(f"{base.name}.{ext}")
        buf = io.BytesIO()
        fig.savefig(buf, format=ext)
        atomic_write_bytes(path, buf.getvalue())
        paths.append(str(path))
    pyplot().close(fig)
    return paths
