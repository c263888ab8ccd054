"""Read NVlabs EDM checkpoints (``.pkl``) without running the code they carry; convert them.

A released EDM pickle holds ``torch_utils.persistence`` records: for every network object, the
source code of its module (which ``pickle.load`` would ``exec``), its class name, its constructor
kwargs and its state (parameters, buffers, submodules). :func:`read_edm_pickle` unpickles with an
allow-list: the persistence hook becomes a plain :class:`Record` (the source is kept as text and
never run), tensors are rebuilt with ``torch.load(weights_only=True)``, and any other global is
refused with one line. :func:`build_network` then constructs ctrlshift's own module
(:mod:`.edm`) from the top record's class name and kwargs and loads the recorded state with
``strict=True``.

:func:`convert` writes ``config.json`` (class name, kwargs) and ``model.safetensors``: the
``edm`` decoder backend loads such a folder with no pickle at all (``ctrlshift convert edm PKL
--out DIR``).
"""

from __future__ import annotations

import io
import json
import logging
import math
import pickle
from pathlib import Path

import torch

from ...errors import ConfigError
from ...files import atomic_write_bytes, atomic_write_text
from .edm import PRECONDITIONINGS

log = logging.getLogger(__name__)

CONFIG_FORMAT = "ctrlshift-edm-network/1"


class Record:
    """One ``torch_utils.persistence`` object: its class name, constructor arguments and state.
    ``module_src`` is the pickled source code, kept as text only."""

    def __init__(self, meta: dict):
        self.meta = dict(meta)
        self.class_name = str(self.meta.get("class_name"))
        self.module_src = self.meta.get("module_src", "")
        self.state = dict(self.meta.get("state") or {})

    @property
    def init_args(self) -> tuple:
        return tuple(self.state.get("_init_args") or ())

    @property
    def init_kwargs(self) -> dict:
        return dict(self.state.get("_init_kwargs") or {})

    def tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """The state dict this object's record describes (parameters and persistent buffers)."""
        out: dict[str, torch.Tensor] = {}
        skip = set(self.state.get("_non_persistent_buffers_set") or ())
        for name, p in (self.state.get("_parameters") or {}).items():
            if p is not None:
                out[prefix + name] = p.detach() if torch.is_tensor(p) else p
        for name, b in (self.state.get("_buffers") or {}).items():
            if b is not None and name not in skip:
                out[prefix + name] = b
        for name, child in (self.state.get("_modules") or {}).items():
            if isinstance(child, Record):
                out.update(child.tensors(f"{prefix}{name}."))
        return out


class ContainerRecord(Record):
    """A plain torch container (``ModuleDict``, ``ModuleList``, ``Sequential``) inside an EDM
    network: pickled as its class and ``__dict__``, kept here as a record of that state."""

    torch_class = ""

    def __setstate__(self, state):
        self.meta, self.class_name, self.module_src = {}, self.torch_class, ""
        self.state = dict(state)


def _container(name: str) -> type:
    return type(f"{name}Record", (ContainerRecord,), {"torch_class": name})


class EasyDict(dict):
    """Stands in for ``dnnlib.util.EasyDict`` (a dict with attribute access) in pickled metadata."""


def _copyreg_reconstructor(cls, base, state):
    """``copyreg._reconstructor`` for the allowed record classes only (protocols 0 and 1)."""
    if not (isinstance(cls, type) and issubclass(cls, ContainerRecord)) or base is not object:
        raise pickle.UnpicklingError(f"copyreg._reconstructor of {cls!r} is not allowed")
    return cls.__new__(cls)


def _reconstruct(meta):
    return Record(meta)


def _load_storage(b: bytes):
    return torch.load(io.BytesIO(b), weights_only=True)


def _numpy_globals() -> dict:
    import numpy as np

    out = {("numpy", "dtype"): np.dtype, ("numpy", "ndarray"): np.ndarray}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[(mod, "scalar")] = _np_scalar
        out[(mod, "_reconstruct")] = _np_reconstruct
    return out


def _np_scalar(dtype, data=None):
    import numpy as np

    return np.frombuffer(data, dtype=dtype)[0].copy() if data is not None else dtype.type()


def _np_reconstruct(cls, shape, dtype):
    import numpy as np

    if cls is not np.ndarray:
        raise pickle.UnpicklingError(f"numpy array subclass {cls!r} is not allowed")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _allowed() -> dict:
    import collections

    import torch._utils as tu

    allowed = {
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct,
        ("dnnlib.util", "EasyDict"): EasyDict,
        ("dnnlib", "EasyDict"): EasyDict,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set, ("builtins", "frozenset"): frozenset, ("builtins", "slice"): slice,
        ("torch._utils", "_rebuild_tensor_v2"): tu._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): tu._rebuild_parameter,
        ("torch.storage", "_load_from_bytes"): _load_storage,
        ("torch", "Size"): torch.Size, ("torch", "device"): torch.device,
    }
    for name in ("ModuleDict", "ModuleList", "Sequential"):
        allowed[("torch.nn.modules.container", name)] = _container(name)
    allowed[("copyreg", "_reconstructor")] = _copyreg_reconstructor
    if hasattr(tu, "_rebuild_parameter_with_state"):
        allowed[("torch._utils", "_rebuild_parameter_with_state")] = tu._rebuild_parameter_with_state
    for name in ("float32", "float16", "bfloat16", "float64", "int64", "int32", "uint8", "bool"):
        allowed[("torch", name)] = getattr(torch, name)
    for name in ("FloatStorage", "HalfStorage", "DoubleStorage", "LongStorage", "IntStorage", "ByteStorage",
                 "BoolStorage", "BFloat16Storage"):
        allowed[("torch", name)] = getattr(torch, name)
    allowed.update(_numpy_globals())
    return allowed


class _Unpickler(pickle.Unpickler):
    def __init__(self, f, where: str):
        super().__init__(f)
        self.where = where
        self.allowed = _allowed()

    def find_class(self, module: str, name: str):
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise ConfigError(f"decoder.source: {self.where} asks to import {module}.{name}, which is not part of "
                              "an EDM network; ctrlshift refuses to run code from a pickle (convert only "
                              "checkpoints from NVlabs/edm, or load it through decoder.options.edm_checkout "
                              "if you trust it)") from None

    def persistent_load(self, pid):
        raise ConfigError(f"decoder.source: {self.where} uses persistent ids; it is not an EDM pickle")


def read_edm_pickle(data: bytes | io.BufferedIOBase, where: str = "the pickle") -> dict:
    """The top-level dict of an EDM pickle, with every persistent object as a :class:`Record`."""
    f = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    try:
        out = _Unpickler(f, where).load()
    except ConfigError:
        raise
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError, RuntimeError) as exc:
        raise ConfigError(f"decoder.source: {where} is not a readable EDM pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(out, dict):
        raise ConfigError(f"decoder.source: {where} holds a {type(out).__name__}, not an EDM checkpoint dict")
    return out


def _plain(value):
    """Constructor kwargs as JSON-able values (numpy scalars -> floats, tuples -> lists, inf kept)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not torch.is_tensor(value):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": repr(value)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ConfigError(f"EDM network kwargs hold a {type(value).__name__} ({value!r}), which ctrlshift cannot store")


def _unplain(value):
    if isinstance(value, dict):
        if set(value) == {"float"}:
            return float(value["float"])
        return {k: _unplain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unplain(v) for v in value]
    return value


def build_network(class_name: str, kwargs: dict, state: dict[str, torch.Tensor] | None, where: str):
    """ctrlshift's module for an EDM class name and its constructor kwargs, with ``state`` loaded."""
    cls = PRECONDITIONINGS.get(class_name)
    if cls is None:
        raise ConfigError(f"decoder.source: {where} holds a {class_name!r}; ctrlshift builds EDM networks of the "
                          f"classes {', '.join(PRECONDITIONINGS)}")
    try:
        net = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"decoder.source: {where}: {class_name} does not take the recorded kwargs ({exc})") from None
    if state is not None:
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            detail = "; ".join(line.strip() for line in str(exc).strip().splitlines()[:2])
            raise ConfigError(f"decoder.source: {where}: the recorded weights do not fit {class_name} ({detail})") from None
    return net.eval().requires_grad_(False)


def network_from_record(record: Record, where: str):
    if not isinstance(record, Record):
        raise ConfigError(f"decoder.source: {where} holds a {type(record).__name__}, not an EDM network")
    if record.init_args:
        raise ConfigError(f"decoder.source: {where}: the network was built with positional arguments; "
                          "ctrlshift reads EDM networks built with keyword arguments")
    return build_network(record.class_name, record.init_kwargs, record.tensors(), where)


def load_edm_pickle_safely(data: bytes, where: str, key: str = "ema"):
    """ctrlshift's EDM network from the bytes of an EDM ``.pkl``; no pickled code is run."""
    top = read_edm_pickle(data, where)
    if key not in top:
        raise ConfigError(f"decoder.options.pickle_key: {key!r} is not in {where}; it holds {sorted(top)}")
    record = top[key]
    net = network_from_record(record, where)
    net.edm_record = {"class_name": record.class_name, "init_kwargs": _plain(record.init_kwargs)}
    return net


def convert(data: bytes, out: Path, where: str, key: str = "ema") -> Path:
    """Write ``out/config.json`` and ``out/model.safetensors`` from an EDM pickle's bytes."""
    net = load_edm_pickle_safely(data, where, key)
    return save_converted(net, net.edm_record["class_name"], net.edm_record["init_kwargs"], out, where)


def save_converted(net: torch.nn.Module, class_name: str, init_kwargs: dict, out: Path, source: str = "") -> Path:
    """Write an EDM network as the folder :func:`load_converted` reads: ``config.json`` (class
    name, constructor kwargs) and ``model.safetensors``."""
    from safetensors.torch import save

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    atomic_write_bytes(out / "model.safetensors", save(state))
    config = {"format": CONFIG_FORMAT, "class_name": class_name, "init_kwargs": _plain(init_kwargs), "source": source}
    atomic_write_text(out / "config.json", json.dumps(config, indent=2) + "\n")
    log.info("wrote %s (%s, %d tensors) from %s", out, class_name, len(state), source or "a network")
    return out


def is_converted(folder: Path) -> bool:
    return (Path(folder) / "config.json").is_file() and (Path(folder) / "model.safetensors").is_file()


def load_converted(folder: Path):
    """ctrlshift's EDM network from a :func:`convert` folder (JSON + safetensors, no pickle)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    where = str(folder)
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"decoder.source: {where}/config.json is not readable JSON ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != CONFIG_FORMAT:
        raise ConfigError(f"decoder.source: {where}/config.json is not a converted EDM network (format "
                          f"{config.get('format') if isinstance(config, dict) else None!r}, expected "
                          f"{CONFIG_FORMAT!r}); run `ctrlshift convert edm PKL --out DIR`")
    net = build_network(config.get("class_name", ""), _unplain(config.get("init_kwargs") or {}),
                        load_file(str(folder / "model.safetensors")), where)
    net.edm_record = {"class_name": config["class_name"], "init_kwargs": config.get("init_kwargs") or {}}
    return net
