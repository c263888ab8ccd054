"""Decoders: latents + labels -> uint8 images (the contract is in :mod:`.base`).

Every module of this package is a backend that registers itself in :data:`DECODERS` on import;
they are all imported here, so adding a module is all it takes to add a built-in backend. Plugins
register theirs the same way from their own packages.
"""

from ...registry import import_submodules
from .base import (DECODERS, Decoder, DecoderConfig, DecoderOutputError, RuntimeConfig, build_module, check_images,
                   check_local, create_decoder, dataset_class_names, dataset_num_classes, resolve_source,
                   to_uint8)
from ...plugins import import_object

import_submodules(__name__)


def list_decoders(pattern: str = "*") -> list[str]:
    return DECODERS.list(pattern)


__all__ = ["DECODERS", "Decoder", "DecoderConfig", "DecoderOutputError", "RuntimeConfig", "check_images", "build_module", "check_local", "create_decoder",
           "dataset_class_names", "dataset_num_classes", "import_object", "list_decoders", "resolve_source",
           "to_uint8"]
