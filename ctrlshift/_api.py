"""Config resolution shared by the Python API functions (``ctrlshift.generate`` and friends)."""

from __future__ import annotations

import dataclasses
from typing import Any

from .config import load_config
from .errors import ConfigError


def dotted(overrides: dict[str, Any]) -> dict[str, Any]:
    """Keyword overrides -> dotted keys: ``sampler__steps=4`` is ``sampler.steps=4``."""
    return {key.replace("__", "."): value for key, value in overrides.items()}


def resolve_config(cls: type, config: Any, overrides: dict[str, Any]) -> Any:
    """``config`` as a ``cls`` instance: one already (no overrides allowed), or a preset name,
    YAML path or mapping resolved with ``overrides`` by :func:`ctrlshift.config.load_config`."""
    if isinstance(config, cls):
        if overrides:
            raise ConfigError(f"overrides {sorted(overrides)}: pass them with a preset, path or mapping, "
                              f"or use dataclasses.replace on the {cls.__name__}")
        return config
    if dataclasses.is_dataclass(config):
        raise ConfigError(f"config: expected a {cls.__name__}, a preset name, a YAML path or a mapping; "
                          f"got a {type(config).__name__}")
    return load_config(cls, config, dotted(overrides))
