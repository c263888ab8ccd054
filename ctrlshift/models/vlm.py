"""Vision-language model adapters and zero-shot classification.

One contract for every backend::

    vlm.transform(images uint8 [N, H, W, 3]) -> model input
    vlm.tokenize(texts) -> tokens
    vlm.encode_image(x) -> unit-norm embeddings [N, D]
    vlm.encode_text(tokens) -> unit-norm embeddings [M, D]

Backends are registered in :data:`VLM_BACKENDS`: ``open_clip`` (a model name with a pretrained tag
or checkpoint file, ``hf-hub:org/repo``, or ``local-dir:/path`` -- the embedded tiny CLIP is
``ctrlshift://tiny-clip``, a local dir) and ``transformers`` (CLIP or SigLIP from a hub id or
folder); a plugin adds one with ``@VLM_BACKENDS.register("name")`` on a :class:`VLM` subclass whose
constructor takes a :class:`VLMConfig`. Prompt templates are data: JSON lists of strings with
``{}`` for the class name (:func:`load_templates`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .. import embedded
from ..config import meta
from ..device import resolve_device
from ..errors import ConfigError
from ..files import atomic_save_torch
from ..registry import Registry

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).resolve().parent / "templates"

VLM_BACKENDS: Registry["VLM"] = Registry("VLM backend")


@dataclass
class VLMConfig:
    backend: str = field(default="open_clip", metadata=meta("open_clip | transformers (or a plugin's)",
                                                            registry=VLM_BACKENDS))
    name: str = field(default="ctrlshift://tiny-clip", metadata=meta(
        "open_clip model name, hf-hub:org/repo, local-dir:PATH or ctrlshift://tiny-clip; "
        "or a transformers hub id / folder"))
    pretrained: str | None = field(default=None, metadata=meta("open_clip pretrained tag or checkpoint file"))
    batch_size: int = field(default=256, metadata=meta("images per encoder call", min=1))
    device: str = "auto"


def weights_stamp(*candidates: str | None) -> list:
    """(name, size, mtime_ns) of the local weight files among ``candidates`` (files, or folders
    searched for weights), so that a checkpoint changed in place changes the embedding-cache key."""
    out = []
    for c in candidates:
        if not c:
            continue
        path = Path(str(c).removeprefix("local-dir:")).expanduser()
        files = [path] if path.is_file() else sorted(
            p for p in path.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES) if path.is_dir() else []
        for f in files:
            st = f.stat()
            out.append([f.name, st.st_size, st.st_mtime_ns])
    return out


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".json")


class VLM:
    """The adapter contract; see the module docstring. ``identity`` names the model in result
    files; ``cache_identity`` adds the local weight files' sizes and times for the embedding cache."""

    identity: dict
    weights: list = []

    @property
    def cache_identity(self) -> dict:
        return {**self.identity, "weights": self.weights}

    def transform(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def tokenize(self, texts: list[str]):
        raise NotImplementedError

    def encode_image(self, x) -> torch.Tensor:
        raise NotImplementedError

    def encode_text(self, tokens) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def image_embeddings(self, images: torch.Tensor, batch_size: int = 256, progress: bool = False) -> torch.Tensor:
        from tqdm.auto import tqdm

        out = []
        with tqdm(total=len(images), unit="img", desc="embed images", disable=not progress, leave=False) as bar:
            for i in range(0, len(images), batch_size):
                out.append(self.encode_image(self.transform(images[i:i + batch_size])))
                bar.update(min(batch_size, len(images) - i))
        return torch.cat(out).float().cpu() if out else torch.empty(0)

    @torch.no_grad()
    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        return self.encode_text(self.tokenize(texts)).float().cpu()

    @torch.no_grad()
    def class_embeddings(self, class_names: list[str], templates: list[str]) -> torch.Tensor:
        """Per class, the normalised mean of its template embeddings (CLIP's zero-shot head)."""
        rows = []
        for name in class_names:
            e = self.text_embeddings([t.format(name) for t in templates])
            m = e.mean(0)
            rows.append(m / m.norm())
        return torch.stack(rows)


@VLM_BACKENDS.register("open_clip")
class OpenClipVLM(VLM):
    def __init__(self, cfg: VLMConfig):
        try:
            import open_clip
        except ImportError:
            raise ConfigError("vlm.backend: open_clip is not installed; pip install 'ctrlshift[vlm]'") from None

        name = cfg.name
        if embedded.is_embedded(name):
            name = f"local-dir:{embedded.embedded_path(name, 'vlm.name')}"
        self.device = resolve_device(cfg.device, "vlm.device")
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=cfg.pretrained, device=self.device)
        except (RuntimeError, OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"vlm.name: could not load open_clip model {cfg.name!r} "
                              f"(pretrained={cfg.pretrained!r}): {first}") from None
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(name)
        self.identity = {"backend": "open_clip", "name": cfg.name, "pretrained": cfg.pretrained}
        self.weights = weights_stamp(name if name.startswith("local-dir:") else None, cfg.pretrained)

    def transform(self, images):
        return torch.stack([self.preprocess(Image.fromarray(np.asarray(img))) for img in images]).to(self.device)

    def tokenize(self, texts):
        return self.tokenizer(texts).to(self.device)

    def encode_image(self, x):
        return torch.nn.functional.normalize(self.model.encode_image(x).float(), dim=-1)

    def encode_text(self, tokens):
        return torch.nn.functional.normalize(self.model.encode_text(tokens).float(), dim=-1)


@VLM_BACKENDS.register("transformers")
class TransformersVLM(VLM):
    def __init__(self, cfg: VLMConfig):
        try:
            from transformers import AutoModel, AutoProcessor
        except ImportError:
            raise ConfigError("vlm.backend: transformers is not installed; pip install 'ctrlshift[vlm]'") from None

        self.device = resolve_device(cfg.device, "vlm.device")
        try:
            self.model = AutoModel.from_pretrained(cfg.name).to(self.device).eval()
            self.processor = AutoProcessor.from_pretrained(cfg.name)
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"vlm.name: could not load {cfg.name!r} with transformers ({first})") from None
        self.siglip = "siglip" in type(self.model).__name__.lower()
        self.identity = {"backend": "transformers", "name": cfg.name, "class": type(self.model).__name__}
        self.weights = weights_stamp(cfg.name)

    def transform(self, images):
        batch = self.processor(images=[Image.fromarray(np.asarray(i)) for i in images], return_tensors="pt")
        return batch["pixel_values"].to(self.device)

    def tokenize(self, texts):
        kw = {"padding": "max_length"} if self.siglip else {"padding": True}
        return {k: v.to(self.device) for k, v in self.processor(text=texts, return_tensors="pt", **kw).items()}

    def encode_image(self, x):
        out = self.model.get_image_features(pixel_values=x)
        out = getattr(out, "pooler_output", out)
        return torch.nn.functional.normalize(out.float(), dim=-1)

    def encode_text(self, tokens):
        out = self.model.get_text_features(**tokens)
        out = getattr(out, "pooler_output", out)
        return torch.nn.functional.normalize(out.float(), dim=-1)


def load_vlm(cfg: VLMConfig) -> VLM:
    """The registered backend ``cfg.backend``, built from ``cfg``."""
    return VLM_BACKENDS.create(cfg.backend, cfg)


def load_templates(name_or_path: str) -> dict:
    """``{"classes": [...], "templates": {"set name": [...]}}`` from a packaged name
    (mnist, cifar10, imagenet10) or a JSON file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = TEMPLATES / f"{name_or_path}.json"
    if not path.is_file():
        known = sorted(p.stem for p in TEMPLATES.glob("*.json"))
        raise ConfigError(f"templates: {name_or_path!r} is neither a JSON file nor one of {', '.join(known)}")
    data = json.loads(path.read_text())
    if "templates" not in data or not all("{}" in t for ts in data["templates"].values() for t in ts):
        raise ConfigError(f"templates: {path} needs a 'templates' mapping of lists of strings with '{{}}'")
    return data


def cached_embeddings(vlm: VLM, images: torch.Tensor, cache_dir: Path | None, key: dict,
                      batch_size: int = 256, progress: bool = False) -> torch.Tensor:
    """Image embeddings, cached on disk under a hash of the model (its identity and local weight
    files' sizes and times) and ``key`` (e.g. the
    dataset hash, config and split)."""
    if cache_dir is None:
        return vlm.image_embeddings(images, batch_size, progress)
    digest = hashlib.sha256(json.dumps({"model": vlm.cache_identity, **key}, sort_keys=True).encode()).hexdigest()[:24]
    path = Path(cache_dir) / f"{digest}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    emb = vlm.image_embeddings(images, batch_size, progress)
    atomic_save_torch(path, emb)
    return emb
