"""Models embedded in the package, named ``ctrlshift://NAME`` (``ctrlshift/assets/NAME``).

They are ordinary checkpoints in the layouts of their libraries (a diffusers pipeline folder, an
open_clip ``local-dir`` repo), so they load through the same code paths as models from the hub.
"""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError

ASSETS = Path(__file__).resolve().parent / "assets"
PREFIX = "ctrlshift://"


def is_embedded(source: str) -> bool:
    return source.startswith(PREFIX)


def embedded_path(source: str, key: str) -> Path:
    """The folder of ``ctrlshift://NAME``; an unknown name is a :class:`ConfigError` naming ``key``."""
    name = source[len(PREFIX):]
    path = ASSETS / name
    if not name or "/" in name or name.startswith(".") or not path.is_dir():
        known = sorted(p.name for p in ASSETS.iterdir() if p.is_dir()) if ASSETS.is_dir() else []
        raise ConfigError(f"{key}: no embedded model {name!r}; embedded: {', '.join(known) or 'none'}")
    return path


def resolve(source: str, key: str) -> str:
    """``ctrlshift://NAME`` -> the packaged folder; anything else unchanged."""
    return str(embedded_path(source, key)) if is_embedded(source) else source
