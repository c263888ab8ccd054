"""What travels with every artifact: package version, git commit, library versions."""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the ctrlshift checkout in use (None for an installed wheel)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def versions() -> dict:
    import torch

    from . import __version__

    out = {"ctrlshift": __version__, "python": platform.python_version(), "torch": torch.__version__}
    # From the installed distributions' metadata: importing diffusers only to read its version
    # would cost seconds of every job that does not use it.
    for name, dist in (("diffusers", "diffusers"), ("accelerate", "accelerate"), ("numpy", "numpy"),
                       ("pyarrow", "pyarrow"), ("PIL", "pillow")):
        try:
            out[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def stamp() -> dict:
    """``{"ctrlshift_version", "git_commit", "versions"}``: the keys every result, report and
    manifest carries."""
    v = versions()
    return {"ctrlshift_version": v["ctrlshift"], "git_commit": git_commit(), "versions": v}


def stable_hash(obj: object) -> str:
    """sha256 of the canonical JSON of ``obj``."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
