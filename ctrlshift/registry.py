"""Name -> factory registries (shift families, decoders, samplers, classifiers, VLM backends, data
sources).

A decorator registers a factory under a name; ``get`` / ``create`` look one up, ``list`` matches
wildcards. An unknown or duplicate name fails loudly and lists what exists. Before a lookup fails,
the plugins installed through the ``ctrlshift.plugins`` entry-point group are imported once (see
:mod:`ctrlshift.plugins`), so an installed plugin's names are found without any import by hand.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import pkgutil
from typing import Any, Callable, Generic, TypeVar

from .errors import RegistryError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise RegistryError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = factory
            return factory

        return deco

    def get(self, name: str) -> Callable[..., T]:
        if name not in self._entries:
            from .plugins import load_entry_points

            load_entry_points()
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(str(name), self._entries, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise RegistryError(
                f"unknown {self.kind} {name!r}{hint}; known: {', '.join(sorted(self._entries))}"
            ) from None

    def create(self, name: str, *args: Any, **kwargs: Any) -> T:
        return self.get(name)(*args, **kwargs)

    def list(self, pattern: str = "*") -> list[str]:
        from .plugins import load_entry_points

        load_entry_points()
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        if name not in self._entries:
            from .plugins import load_entry_points

            load_entry_points()
        return name in self._entries


def import_submodules(package: str) -> None:
    """Import every module of ``package``: each registers its components on import, so adding a
    backend module is all it takes to add a backend."""
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")
