"""Names that become path components: one safe pattern, checked wherever a name meets the disk.

A safe name is letters, digits and ``. _ + = -``, starts with a letter or digit, holds no ``..``
and is at most 200 characters: no separators, nothing absolute, nothing that climbs out of the
folder it is joined to. Config-name prefixes, dataset and run names, config names read from a
manifest and shard paths are all checked with it.
"""

from __future__ import annotations

import re

from .errors import ConfigError

SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]{0,199}")


def is_safe(name: object) -> bool:
    return isinstance(name, str) and SAFE.fullmatch(name) is not None and ".." not in name


def check_name(name: object, key: str) -> str:
    """``name`` if it is safe as a single path component, else a :class:`ConfigError` naming ``key``."""
    if not is_safe(name):
        raise ConfigError(f"{key}: {name!r} is not a safe name; expected letters, digits and . _ + = - "
                          "(no path separators, no '..', at most 200 characters)")
    return name  # type: ignore[return-value]


def slug(text: str) -> str:
    """A safe name made from any text (a model label, a hub id): other characters become ``_``."""
    out = re.sub(r"[^A-Za-z0-9._+=-]+", "_", text).replace("..", "_").strip("._-") or "unnamed"
    return out[:200]
