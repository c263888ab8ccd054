"""The base of the typed records written as JSON (manifest configs, result records, gap reports)."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

R = TypeVar("R", bound="JsonRecord")


class JsonRecord:
    """A dataclass mixin: ``to_json`` gives the fields as a dict, ``from_json`` builds one from a
    dict and passes over keys it does not know (files written by a newer ctrlshift stay readable)."""

    def to_json(self) -> dict:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_json(cls: type[R], data: dict[str, Any]) -> R:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in names})
