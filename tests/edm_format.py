"""Write pickles in the format of NVlabs EDM's released checkpoints, for the tests.

Every network module in the tree (not torch's own containers such as ``ModuleDict``, which EDM
does not decorate) is stored as ``torch_utils.persistence`` stores it: a call
of ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with ``meta = {type, version,
module_src, class_name, state}``, where ``state`` is the module's ``__dict__`` plus its
``_init_args`` and ``_init_kwargs``; tensors go through torch's own pickling (storages as
``torch.storage._load_from_bytes``), as in the released files. ``module_src`` is whatever the
caller gives: a real loader would ``exec`` it.
"""

from __future__ import annotations

import io
import pickle
import sys
import types

import torch


def _reconstruct_persistent_obj(meta):  # stands in for EDM's; only its import path is pickled
    raise AssertionError("a test pickle was loaded by plain pickle")


def dump_edm_pickle(top: dict, kwargs_of: dict[int, dict], module_src: str = "") -> bytes:
    """Pickle ``top`` (e.g. ``{"ema": net}``); ``kwargs_of[id(module)]`` are the constructor
    kwargs recorded for that module (EDM records them for every persistent object)."""
    pkg = types.ModuleType("torch_utils")
    mod = types.ModuleType("torch_utils.persistence")
    mod._reconstruct_persistent_obj = _reconstruct_persistent_obj
    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    pkg.persistence = mod
    saved = {k: sys.modules.get(k) for k in ("torch_utils", "torch_utils.persistence")}
    sys.modules.update({"torch_utils": pkg, "torch_utils.persistence": mod})

    class Pickler(pickle.Pickler):
        def reducer_override(self, obj):
            if isinstance(obj, torch.nn.Module) and type(obj).__module__ != "torch.nn.modules.container":
                state = dict(obj.__dict__)
                state["_init_args"] = ()
                state["_init_kwargs"] = kwargs_of.get(id(obj), {})
                meta = dict(type="class", version=6, module_src=module_src, class_name=type(obj).__name__,
                            state=state)
                return _reconstruct_persistent_obj, (meta,)
            return NotImplemented

    try:
        buf = io.BytesIO()
        Pickler(buf, protocol=4).dump(top)
        return buf.getvalue()
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
