"""Model adapters shared by every part: one contract each.

- :mod:`.classifiers`: the classifier zoo (the paper's 32px architectures, any timm model), in
  :data:`MODELS`; ``create_model(name, num_classes, ...)``;
- :mod:`.vlm`: VLM adapters (open_clip, transformers) in :data:`VLM_BACKENDS`, prompt templates as
  data, and an embedding cache.
"""

from .classifiers import MODELS, count_params, create_model, list_models
from .vlm import VLM, VLM_BACKENDS, VLMConfig, cached_embeddings, load_templates, load_vlm

__all__ = ["MODELS", "VLM", "VLM_BACKENDS", "VLMConfig", "cached_embeddings", "count_params", "create_model",
           "list_models", "load_templates", "load_vlm"]
