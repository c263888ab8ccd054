"""The typed config of the generate job (``ctrlshift generate CONFIG``)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Literal

from ..config import build, meta
from ..errors import ConfigError
from ..names import check_name
from .decoders import DecoderConfig, RuntimeConfig
from .samplers import SamplerConfig
from .shifts import FAMILIES, PAPER_TARGET_SEED


@dataclass
class ShiftSpec:
    family: str = field(metadata=meta("a registered shift family (ctrlshift list families)", registry=FAMILIES))
    values: list[float] = field(default_factory=list, metadata=meta(
        "control values of the test splits; empty: the family's reference values"))
    train_value: float | None = field(default=None, metadata=meta(
        "value of the train and val splits; null: the family's reference train value"))
    params: dict = field(default_factory=dict, metadata=meta("family parameters"))
    classes: list[int] | None = field(default=None, metadata=meta(
        "class-conditional shift: only these dataset classes move; the others stay at train_value"))
    name: str | None = field(default=None, metadata=meta(
        "config-name prefix (default: the family); lets one family appear twice with other params"))

    @property
    def prefix(self) -> str:
        return self.name or self.family

    def with_defaults(self, path: str = "") -> "ShiftSpec":
        """A copy with the family's reference train value and test values where none are given."""
        cls = FAMILIES.get(self.family)
        return dataclasses.replace(
            self, train_value=float(cls.default_train_value) if self.train_value is None else self.train_value,
            values=list(self.values) or [float(v) for v in cls.default_values])

    def validate(self, path: str = "") -> None:
        check_name(self.prefix, f"{path}.name" if self.name is not None else f"{path}.family")
        cls = FAMILIES.get(self.family)
        build(cls.Params, dict(self.params), f"{path}.params")
        lo, hi = cls.value_range
        for j, v in enumerate([self.train_value, *self.values]):
            if not (lo <= v <= hi) or not math.isfinite(v):
                key = f"{path}.train_value" if j == 0 else f"{path}.values.{j - 1}"
                raise ConfigError(f"{key}: {v!r} is out of range for family {self.family!r}; "
                                  f"expected a value in [{lo}, {hi}]")
        if len(set(self.values)) != len(self.values):
            raise ConfigError(f"{path}.values: {self.values} repeats a value")


@dataclass
class SplitSpec:
    size: int = field(default=0, metadata=meta("number of images", min=0))
    seed: int = field(default=0, metadata=meta("seed of the split's per-sample noise and labels", min=0))


@dataclass
class SplitsConfig:
    train: SplitSpec = field(default_factory=lambda: SplitSpec(50000, 12345))
    val: SplitSpec = field(default_factory=lambda: SplitSpec(1000, 54321))
    test: SplitSpec = field(default_factory=lambda: SplitSpec(5000, 0))


@dataclass
class TargetsConfig:
    mode: Literal["paper", "independent"] = field(default="paper", metadata=meta(
        "paper: numpy legacy RNG, u1 then u2, shared by all families; independent: a pair per family"))
    seed: int = field(default=PAPER_TARGET_SEED, metadata=meta("seed of the anchor directions", min=0))


@dataclass
class IntensityConfig:
    samples: int = field(default=20000, metadata=meta(
        "latents drawn per value for the outside-typical-set estimate", min=100))
    alpha: float = field(default=0.01, metadata=meta("tail mass left out of the training typical set",
                                                    min=1e-6, max=0.5))


@dataclass
class CardConfig:
    pretty_name: str | None = None
    license: str = field(default="other", metadata=meta("licence field of the dataset card"))
    description: str = ""


@dataclass
class OutputConfig:
    shard_size: int = field(default=1000, metadata=meta("images per parquet shard", min=1))
    grid: int = field(default=8, metadata=meta("images per row of the sample grids (0: none)", min=0))
    quantize: Literal["round", "floor"] = field(default="round", metadata=meta(
        "float image -> grey level: round (EDM's x*127.5+128, nearest level) or floor (the Control+Shift "
        "reference code's (x/2+0.5).clamp(0,1)*255 truncated to uint8)"))
    card: CardConfig = field(default_factory=CardConfig)


@dataclass
class GenerateConfig:
    name: str = field(default="ctrlshift-dataset", metadata=meta("dataset name"))
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    shifts: list[ShiftSpec] = field(default_factory=list)
    splits: SplitsConfig = field(default_factory=SplitsConfig)
    labels: Literal["balanced", "uniform"] = field(default="balanced", metadata=meta(
        "balanced: each class exactly once per block of K samples; uniform: i.i.d. (reference code)"))
    targets: TargetsConfig = field(default_factory=TargetsConfig)
    intensity: IntensityConfig = field(default_factory=IntensityConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    plugins: list[str] = field(default_factory=list, metadata=meta("modules imported before the config is read"))

    def validate(self, path: str = "") -> None:
        check_name(self.name, "name")
        if not self.shifts:
            raise ConfigError("shifts: empty; list at least one {family, values} entry")
        if not any(getattr(self.splits, s).size for s in ("train", "val", "test")):
            raise ConfigError("splits: every split has size 0; give splits.test.size (and splits.train.size "
                              "for a base value to train on) a positive number")
        prefixes = set()
        for k, spec in enumerate(self.shifts):
            where = f"shifts.{k}"
            if spec.prefix in prefixes:
                raise ConfigError(f"{where}.name: config prefix {spec.prefix!r} is used twice; "
                                  "give one of the entries a distinct `name`")
            prefixes.add(spec.prefix)
        if self.decoder.classes is not None and len(set(self.decoder.classes)) != len(self.decoder.classes):
            raise ConfigError(f"decoder.classes: {self.decoder.classes} repeats a class")
