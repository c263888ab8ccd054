"""One place that turns a ``device`` config value into a ``torch.device``."""

from __future__ import annotations

import torch

from .errors import ConfigError


def resolve_device(name: str | torch.device = "auto", key: str = "device") -> torch.device:
    """``auto`` -> CUDA when available, else the CPU; ``cpu``, ``cuda``, ``cuda:N`` as given.

    Asking for CUDA where there is none is a :class:`ConfigError` naming ``key``.
    """
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"{key}: {name!r} is not a device; expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}: {name!r} asked for but no CUDA device is available; use cpu or auto")
    return dev
