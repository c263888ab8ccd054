"""Shared figure plumbing: a headless backend, and saving one figure in several formats."""

from __future__ import annotations

from pathlib import Path


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
        fig.savefig(path)
        paths.append(str(path))
    pyplot().close(fig)
    return paths
