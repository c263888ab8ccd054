"""Label validity across intensity: does a shifted image still show its class?

At strong shifts some generated images stop showing their class (at R = 1.2 a few tiny-model
digits are illegible), so part of an accuracy drop may be label noise rather than a model's
failure. ``ctrlshift consistency DIR`` trains a reference classifier on each family's base value
(or loads yours), labels every test image of every value, and records per config the share it
labels as the image's class: ``DIR/consistency.json`` (with the per-image verdicts) and
``label_consistency`` in the manifest and the card. ``evaluate`` copies the share into every
result, and ``consistent_only: true`` evaluates on the consistent images alone.

The same reference gives an image-space intensity measure that does not saturate: the kernel
distance (KID: the unbiased squared MMD with the cubic polynomial kernel of Binkowski et al. 2018)
between each config's test images and the base value's, in the reference's penultimate features
(``kid`` in the manifest and the card).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from ..config import meta, to_dict
from ..dataset import Dataset, Split, SplitCache, card
from ..dataset import format as fmt
from ..device import resolve_device
from ..errors import CtrlshiftError
from ..files import atomic_write_json
from ..models import create_model
from ..provenance import stamp
from .job import ModelSpec
from .train import AUGMENTS, Preprocess, Recipe, TrainConfig, predict, train_classifier

log = logging.getLogger(__name__)

SCHEMA = "ctrlshift-consistency/1"
FILE = "consistency.json"


@dataclass
class ConsistencyConfig:
    reference: ModelSpec = field(default_factory=lambda: ModelSpec("resnet20", "reference", {"width": 2.0}), metadata=meta(
        "the reference classifier (trained on each base value unless train: false, e.g. your own weights)"))
    augment: str = field(default="crop", metadata=meta("augmentation of the reference's training: " + ", ".join(AUGMENTS)))
    seed: int = 0
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=20, batch_size=64, optimizer="adamw",
                                                                   lr=3e-3, weight_decay=0.05))
    device: str = "auto"
    kid_features: Literal["reference", "inception"] = field(default="reference", metadata=meta(
        "feature space of the KID: the reference classifier's penultimate layer, or Inception-v3's pool "
        "features (torchvision's ImageNet weights, downloaded once, or kid_inception_weights)"))
    kid_inception_weights: str | None = field(default=None, metadata=meta(
        "a local Inception-v3 state dict (.safetensors or a torch file, read with weights_only)"))
    plugins: list[str] = field(default_factory=list, metadata=meta("modules imported before the config is read"))


def measure(ds: Dataset, cfg: ConsistencyConfig, progress: bool = True) -> dict[str, dict]:
    """config -> {"share", "n", "consistent": [bool per test image, in index order]}."""
    device = resolve_device(cfg.device)
    load = SplitCache(ds)
    inception = InceptionFeatures(cfg.kid_inception_weights, device) if cfg.kid_features == "inception" else None
    out = {}
    for fam in ds.families().values():
        if fam.base is None:
            log.warning("%s: no train split at its base value; no reference classifier for it", fam.prefix)
            continue
        train = load(fam.base, "train")
        val = load(fam.base, "val") if "val" in ds.configs[fam.base].splits else None
        pre = Preprocess.fit(train.images)
        torch.manual_seed(cfg.seed)
        spec = cfg.reference
        kwargs = dict(spec.kwargs)
        k = ds.num_classes if spec.train else int(kwargs.pop("num_classes", ds.num_classes))
        model = create_model(spec.name, k, img_size=pre.img_size, pretrained=spec.pretrained,
                             state_dict=spec.state_dict, **kwargs)
        if spec.train:
            log.info("consistency: training the reference %s on %s", spec.display, fam.base)
            train_classifier(model, train, val, pre, Recipe(cfg.train, cfg.augment, cfg.seed), progress=progress,
                             device=device)
        model = model.to(device)
        base_features = None
        for config in fam.tests:
            split: Split = load(config, "test")
            with PenultimateFeatures(model if inception is None else None) as feats:
                logits = predict(model, split, pre, device, cfg.train.eval_batch_size)
            ok = (logits.argmax(1) == split.labels).tolist()
            f = feats.value if inception is None else inception(split.images)
            is_base = ds.configs[config].value == ds.configs[config].train_value
            if base_features is None and is_base:
                base_features = f
            out[config] = {"share": sum(ok) / max(len(ok), 1), "n": len(ok), "consistent": ok,
                           "reference_trained_on": fam.base,
                           "kid": 0.0 if is_base and f is not None else
                           kernel_distance(base_features, f) if base_features is not None and f is not None else None}
    return out


class PenultimateFeatures:
    """Records the input of the model's last ``Linear`` layer (its penultimate features) while
    the ``with`` block runs; with ``model`` None, records nothing."""

    def __init__(self, model: torch.nn.Module | None):
        linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)] if model is not None else []
        self.layer = linears[-1] if linears else None
        self.parts: list[torch.Tensor] = []
        self.value: torch.Tensor | None = None

    def __enter__(self):
        if self.layer is not None:
            self.handle = self.layer.register_forward_hook(
                lambda m, inputs, output: self.parts.append(inputs[0].detach().flatten(1).double().cpu()))
        return self

    def __exit__(self, *exc):
        if self.layer is not None:
            self.handle.remove()
            self.value = torch.cat(self.parts) if self.parts else None
        return False


class InceptionFeatures:
    """Inception-v3's 2048-d pool features of uint8 ``[N, H, W, 3]`` images (resized to 299,
    ImageNet-normalised), the usual KID feature space. The weights are torchvision's ImageNet ones
    (downloaded once to torch's cache) or a local state dict."""

    def __init__(self, weights: str | None, device, batch_size: int = 64):
        from torchvision.models import Inception_V3_Weights, inception_v3

        from ..errors import ConfigError
        from ..plugins import load_weights

        self.device, self.batch_size = device, batch_size
        if weights is not None:
            net = inception_v3(weights=None, aux_logits=True, init_weights=False)
            load_weights(net, weights, "consistency.kid_inception_weights")
        else:
            try:
                net = inception_v3(weights=Inception_V3_Weights.IMAGENET1K_V1)
            except Exception as exc:  # offline, or a damaged download
                first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
                raise ConfigError("consistency.kid_features: inception needs torchvision's Inception-v3 ImageNet "
                                  f"weights, which could not be loaded ({first}); give a local file with "
                                  "consistency.kid_inception_weights=PATH, or use kid_features=reference") from None
        net.fc = torch.nn.Identity()
        self.net = net.eval().to(device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor([0.485, 0.456, 0.406], device=self.device).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225], device=self.device).view(1, 3, 1, 1)
        parts = []
        for i in range(0, len(images), self.batch_size):
            x = images[i:i + self.batch_size].to(self.device).permute(0, 3, 1, 2).float() / 255
            x = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
            parts.append(self.net((x - mean) / std).double().cpu())
        return torch.cat(parts)


def kernel_distance(X: torch.Tensor, Y: torch.Tensor) -> float:
    """KID: the unbiased estimate of the squared MMD between the feature sets ``X`` [n, d] and
    ``Y`` [m, d] with the kernel ``k(a, b) = (a.b / d + 1)^3``; about 0 for one distribution."""
    X, Y = X.double(), Y.double()
    n, m, d = len(X), len(Y), X.shape[1]
    if n < 2 or m < 2:
        return float("nan")
    kxx, kyy, kxy = ((X @ X.T / d + 1) ** 3, (Y @ Y.T / d + 1) ** 3, (X @ Y.T / d + 1) ** 3)
    return float((kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1)) + (kyy.sum() - kyy.diagonal().sum()) /
                 (m * (m - 1)) - 2 * kxy.mean())


def run(root: str | Path, cfg: ConsistencyConfig, progress: bool = True) -> dict:
    """Measure and record: ``consistency.json``, the manifest's ``label_consistency``, the card."""
    ds = Dataset.open(root)
    ds.verify_all()
    lock = fmt.folder_lock(ds.root)
    lock.acquire()
    try:
        result = measure(ds, cfg, progress)
        atomic_write_json(ds.root / FILE, {"schema": SCHEMA, "config": to_dict(cfg), "dataset_hash": ds.dataset_hash,
                                           "configs": result, **stamp()})
        manifest = dict(ds.manifest)
        for name, r in result.items():
            manifest["configs"][name]["label_consistency"] = r["share"]
            if r.get("kid") is not None:
                manifest["configs"][name]["kid"] = r["kid"]
        atomic_write_json(ds.root / "manifest.json", manifest)
        card.write_card(ds.root, manifest)
    finally:
        lock.release()
    return result


def consistent_indices(ds: Dataset) -> dict[str, set[int]]:
    """config -> the indices of its test images the reference classifier labels as their class."""
    path = ds.root / FILE
    if not path.is_file():
        raise CtrlshiftError(f"{ds.root}: no {FILE}; run `ctrlshift consistency {ds.root}` first "
                             "(or set consistent_only: false)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CtrlshiftError(f"{path}: not valid JSON ({exc}); run `ctrlshift consistency {ds.root}` again") from None
    if data.get("dataset_hash") != ds.dataset_hash:
        raise CtrlshiftError(f"{path}: made for another version of this dataset; run `ctrlshift consistency "
                             f"{ds.root}` again")
    # the verdicts are in index order, and a test split's indices are 0..n-1
    return {name: {i for i, ok in enumerate(r["consistent"]) if ok} for name, r in data["configs"].items()}


class ConsistentOnly:
    """A split loader whose test splits hold only the images the reference labels as their class."""

    def __init__(self, load, keep: dict[str, set[int]]):
        self.load, self.keep = load, keep

    def __call__(self, config: str, split: str) -> Split:
        s = self.load(config, split)
        if split != "test":
            return s
        if config not in self.keep:
            raise CtrlshiftError(f"{config}: not in consistency.json; run `ctrlshift consistency` on the dataset again")
        mask = torch.tensor([int(i) in self.keep[config] for i in s.index], dtype=torch.bool)
        return Split(s.images[mask], s.labels[mask], s.index[mask], s.config, s.split)
