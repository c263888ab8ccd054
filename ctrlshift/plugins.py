"""Plugins: user packages that register shift families, decoders, samplers, classifiers, VLM
backends or data sources without editing ctrlshift.

A plugin is a Python module that registers components when it is imported, e.g.::

    from ctrlshift.generator.shifts import FAMILIES, ShiftFamily

    @FAMILIES.register("dropout")
    class Dropout(ShiftFamily): ...

Three ways to load one, in this order:

1. installed packages name their modules in the ``ctrlshift.plugins`` entry-point group
   (``[project.entry-points."ctrlshift.plugins"] my_family = "my_pkg.family"``); they are imported
   once, the first time a registry is asked for a name it does not hold, and by the CLI at start-up;
2. ``--plugin MODULE`` on the command line (repeatable), imported before the config is read;
3. a ``plugins: [module, ...]`` key in a config file, imported before the config is validated.
"""

from __future__ import annotations

import importlib
import logging
from importlib import metadata

from .errors import ConfigError

log = logging.getLogger(__name__)

GROUP = "ctrlshift.plugins"
_loaded_entry_points = False


def load_entry_points() -> list[str]:
    """Import every module named in the ``ctrlshift.plugins`` entry-point group (once)."""
    global _loaded_entry_points
    if _loaded_entry_points:
        return []
    _loaded_entry_points = True
    names = []
    for ep in metadata.entry_points(group=GROUP):
        try:
            ep.load()
        except Exception as exc:  # a broken plugin must not hide the others; say which one
            raise ConfigError(f"plugin entry point {ep.name!r} ({ep.value}) failed to import: "
                              f"{type(exc).__name__}: {exc}") from None
        log.debug("loaded plugin entry point %s = %s", ep.name, ep.value)
        names.append(ep.name)
    return names


def load(modules: list[str] | tuple[str, ...], key: str = "plugins") -> None:
    """Import plugin modules by name; a failure names ``key`` and the module."""
    for k, name in enumerate(modules):
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{key}.{k}: expected a module name, got {name!r}")
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"{key}.{k}: cannot import plugin module {name!r} ({exc}); "
                              "is its folder on PYTHONPATH or the package installed?") from None


def import_object(spec: str, key: str = "decoder.source"):
    """``package.module:attr`` -> the object; a failure is a :class:`ConfigError` naming ``key``."""
    module_name, _, attr = str(spec).partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{key}: {spec!r} is not an import string; expected 'package.module:attr'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{key}: cannot import module {module_name!r} ({exc})") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"{key}: module {module_name!r} has no attribute {attr!r}") from None


def load_weights(module, path: str, key: str) -> None:
    """Load a state dict into ``module`` from a ``.safetensors`` file or a torch file read with
    ``weights_only=True`` (nothing in it runs code)."""
    from pathlib import Path

    import torch

    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"{key}: {str(file)!r} does not exist")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file))
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
        module.load_state_dict(state)
    except Exception as exc:  # unreadable, pickled code refused, or keys and shapes that do not fit
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{key}: cannot load {str(file)!r} into the model ({first})") from None
