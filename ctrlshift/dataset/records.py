"""Typed records of a dataset's manifest: one :class:`ConfigInfo` per family-value config, and the
:class:`FamilyInfo` view that groups a family's configs by intensity.

They are what travels from the generator's shift families through ``manifest.json`` to every
reader and result file: a family's axis name and unit, its train value, each value's intensity.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..record import JsonRecord


@dataclass
class ConfigInfo(JsonRecord):
    """One family-value config of a dataset (an entry of ``manifest["configs"]``)."""

    family: str  # the registered shift family
    prefix: str  # the config-name prefix (the family, or the shift entry's `name`)
    value: float  # control value
    train_value: float  # the family's base value (train and val splits live there)
    axis: str  # the physical axis of the intensity (R, theta, ...)
    axis_unit: str
    intensity: float  # the value on that axis
    outside_fraction: float  # share of latents outside the training typical set
    shifted_classes: list[int] | None  # class-conditional shift: the classes that move
    family_params: dict
    splits: dict[str, dict]  # split -> {"num_examples", "seed"}
    centre_angle: float | None = None  # overlap: exact angle between train and test centres
    label_consistency: float | None = None  # share of test images a reference classifier labels as their class
    total_variation: float | None = None  # TV between train and test laws of the family's shift statistic
    pixel_distance: float | None = None  # mean |pixel difference| (0..1) to the base value's image, same seed
    kid: float | None = None  # kernel inception-style distance to the base value's test images (consistency)

    @property
    def is_base(self) -> bool:
        return self.value == self.train_value

    @property
    def distance(self) -> float:
        """How far the control value is from the train value (orders a family's tests)."""
        return abs(self.value - self.train_value)

    def to_json(self) -> dict:
        out = super().to_json()
        for key in ("centre_angle", "label_consistency", "total_variation", "pixel_distance", "kid"):
            if out[key] is None:
                out.pop(key)
        return out


@dataclass
class FamilyInfo:
    """A family of a dataset: its base config and its test configs by increasing intensity."""

    prefix: str
    family: str
    axis: str
    axis_unit: str
    train_value: float
    base: str | None = None  # the config with the train (and val) splits
    tests: list[str] = field(default_factory=list)  # configs with a test split, nearest first
