"""Typed configs shared by every job.

A job's config is a tree of dataclasses. One function, :func:`load_config`, resolves it in one
order: component defaults, then the YAML file (a path or a packaged preset name), then dotted
``key=value`` overrides from the command line. Every key is checked against the dataclass: an
unknown key, a wrong type or an out-of-range value raises :class:`ConfigError` with one line that
names the key, the bad value and what is allowed, suggesting the closest key.

Field constraints live in the field metadata (``meta(min=1, help=...)``); fixed choices are
``Literal``; a name that must be registered carries its registry (``meta(registry=FAMILIES)``), so
plugins widen the choices. A dataclass may define ``with_defaults(path)`` to return a copy with
component defaults filled in (a family's reference values, say) and ``validate(path)`` to check
itself without changing anything. A top-level ``plugins: [module, ...]`` key is imported before the
rest of the config is validated.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from .errors import ConfigError, RegistryError


def _preset_dir() -> Path:
    """``configs/`` at the repository root ships as ``ctrlshift/configs`` in the wheel; a source
    checkout (or an editable install) reads it at the root."""
    here = Path(__file__).resolve().parent
    for folder in (here / "configs", here.parent / "configs"):
        if folder.is_dir():
            return folder
    return here / "configs"


PRESET_DIR = _preset_dir()


def meta(help: str = "", min: float | None = None, max: float | None = None, **extra: Any):
    """Field metadata: a help line, an allowed numeric range (inclusive), and optionally
    ``registry=`` for a string that must name a registered component."""
    return {"help": help, "min": min, "max": max, **extra}


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def resolve_source(source: str | Path) -> Path:
    """A config argument is a YAML file, else the name of a packaged preset.

    Only a file counts as a path: a folder that happens to share a preset's name (``./quickstart``
    after the quickstart ran) does not hide the preset. When neither reading works, the one line
    says both.
    """
    path = Path(source)
    if path.is_file():
        return path
    preset = PRESET_DIR / f"{source}.yaml"
    if preset.is_file() and path.name == str(source):
        return preset
    if path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        where = "a folder" if path.is_dir() else "no such file"
        raise ConfigError(f"config file {str(path)!r} does not exist ({where}; presets: {', '.join(list_presets())})")
    close = difflib.get_close_matches(str(source), list_presets(), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    folder = " (a folder of that name is not a config)" if path.is_dir() else ""
    raise ConfigError(
        f"config {str(source)!r} is neither a YAML file nor a preset{hint}{folder}; "
        f"presets: {', '.join(list_presets())}"
    )


def read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {str(path)!r}{where}: not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r}: expected a mapping at the top, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value, e.g. sampler.steps=18")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r}: the key before '=' is empty")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def apply_override(data: dict, key: str, value: Any) -> None:
    """Set ``a.b.0.c=value`` inside nested dicts and lists (indices address list items)."""
    parts = key.split(".")
    node: Any = data
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"override {key!r}: {where!r} is not an index of a list of {len(node)}")
            idx = int(part)
            if last:
                node[idx] = value
            else:
                node = node[idx]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if not isinstance(node.get(part), (dict, list)):
                    node[part] = {}
                node = node[part]
        else:
            raise ConfigError(f"override {key!r}: {'.'.join(parts[:depth])!r} is a value, not a section")


def _describe(tp: Any) -> str:
    origin = get_origin(tp)
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if tp is bool:
        return "true or false"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (list, tuple):
        return "a list"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) if a is not type(None) else "null" for a in get_args(tp))
    return str(tp)


def _convert(tp: Any, value: Any, path: str, md: dict) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, path, md)
            except ConfigError:
                pass
        raise ConfigError(f"{path}: expected {_describe(tp)}, got {value!r}")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{path}: {value!r} is not allowed{hint}; expected {_describe(tp)}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return build(tp, value, path)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        (item_tp, *_) = get_args(tp) or (Any,)
        items = [_convert(item_tp, v, f"{path}.{i}", {}) for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        _check_range(value, path, md)
        return value
    if tp is float:
        if isinstance(value, str) and _EXPONENT.fullmatch(value.strip()):  # YAML 1.1 reads 1e30 as a string
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        _check_range(float(value), path, md)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        registry = md.get("registry")
        if registry is not None:
            try:
                registry.get(value)
            except RegistryError as exc:
                raise ConfigError(f"{path}: {exc}") from None
        return value
    raise TypeError(f"config type {tp} at {path} is not supported")


_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _check_range(value: float, path: str, md: dict) -> None:
    lo, hi = md.get("min"), md.get("max")
    if lo is not None and value < lo:
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ConfigError(f"{path}: {value!r} is out of range; expected a value {rng}")
    if hi is not None and value > hi:
        rng = f"<= {hi}" if lo is None else f"in [{lo}, {hi}]"
        raise ConfigError(f"{path}: {value!r} is out of range; expected a value {rng}")


def _all_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        keys.append(key)
        if dataclasses.is_dataclass(hints[f.name]):
            keys.extend(_all_keys(hints[f.name], key + "."))
    return keys


def build(cls: type, data: dict, path: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, checking every key, type and range."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            full = f"{path}.{key}" if path else str(key)
            candidates = [f"{path}.{k}" if path else k for k in _all_keys(cls)]
            close = difflib.get_close_matches(full, candidates, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            allowed = f"allowed here: {', '.join(fields)}" if fields else "this section takes no keys"
            raise ConfigError(f"unknown key {full!r}{hint} ({allowed})")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            full = f"{path}.{name}" if path else name
            kwargs[name] = _convert(hints[name], data[name], full, dict(f.metadata))
    try:
        obj = cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        missing = [n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        where = f"{path}." if path else ""
        raise ConfigError(f"missing key {where}{missing[0] if missing else '?'}: required") from exc
    fill = getattr(obj, "with_defaults", None)
    if fill is not None:
        obj = fill(path)
    check = getattr(obj, "validate", None)
    if check is not None:
        check(path)
    return obj


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...] | dict = ()) -> dict:
    """Apply ``key=value`` strings (or a ``{dotted.key: value}`` mapping) to ``data`` in place."""
    items = overrides.items() if isinstance(overrides, dict) else (parse_override(t) for t in overrides)
    for key, value in items:
        apply_override(data, key, value)
    return data


def load_config(cls: type, source: str | Path | dict | None,
                overrides: list[str] | tuple[str, ...] | dict = ()) -> Any:
    """Component defaults <- YAML file, preset name or mapping <- overrides, validated.

    ``overrides`` are ``key=value`` strings as on the command line, or a ``{dotted.key: value}``
    mapping. Plugin modules named under ``plugins`` are imported before validation.
    """
    from . import plugins

    if isinstance(source, dict):
        data = copy.deepcopy(source)
    else:
        data = read_yaml(resolve_source(source)) if source is not None else {}
    apply_overrides(data, overrides)
    if isinstance(data.get("plugins"), list):
        plugins.load(data["plugins"])
    return build(cls, data)


def _show(value: Any) -> str:
    """A default as YAML, on one line (config dataclasses inside lists as mappings)."""
    plain = _plain(value)
    return yaml.safe_dump(plain, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items() if v not in (None, {}, [])}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def field_help(cls: type, prefix: str = "", instance: Any = None) -> list[tuple[str, str, str, str]]:
    """(key, type description, help, default) for every leaf key, for ``--help`` listings and docs.
    Defaults are read from a default-constructed config, so nested sections show the defaults
    their parent gives them."""
    if instance is None:
        try:
            instance = cls()
        except TypeError:  # a section with required keys (a list item such as a model)
            instance = None
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        value = getattr(instance, f.name, dataclasses.MISSING) if instance is not None else dataclasses.MISSING
        if dataclasses.is_dataclass(tp):
            rows.extend(field_help(tp, key + ".", value if value is not dataclasses.MISSING else None))
        else:
            default = "required" if value is dataclasses.MISSING else _show(value)
            rows.append((key, _describe(tp), f.metadata.get("help", ""), default))
    return rows
