"""The result-record schema, read and written by every job (``ctrlshift-result/1``).

One JSON file per (model, dataset, family, task, seed), documented in docs/results.md::

    {"schema", "task", "run_id", "model": {name, label, kwargs, params, pretrained, ...},
     "dataset": {path, name, hash, family, base_config, axis, axis_unit, class_names?},
     "preprocessing": {...}, "training": {...} | null, "seed",
     "metrics": {config: {value, intensity, distance, top1, top5?, nll, ece, per_class, n}},
     "summary": {base, at_max, min, drop, nauc, rel_nauc}, "flip": {...} | null,
     "ctrlshift_version", "git_commit", "versions"}

:class:`ResultRecord` is that file as a typed object (``to_json`` / ``from_json``); ``collect``
reads a folder of them for the ``build`` step.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CtrlshiftError
from .files import atomic_write_json
from .provenance import stamp
from .record import JsonRecord

SCHEMA = "ctrlshift-result/1"
REQUIRED = ("schema", "task", "run_id", "model", "dataset", "seed", "metrics", "summary")


@dataclass
class DatasetRef(JsonRecord):
    """Which dataset and family a result measures, and the family's intensity axis."""

    name: str
    family: str
    axis: str
    axis_unit: str = ""
    path: str = ""
    hash: str = ""
    base_config: str | None = None
    class_names: list[str] | None = None

    @classmethod
    def of(cls, ds, family, class_names: bool = True) -> "DatasetRef":
        """From a :class:`~ctrlshift.dataset.Dataset` and one of its :class:`~ctrlshift.dataset.FamilyInfo`."""
        return cls(ds.name, family.prefix, family.axis, family.axis_unit, str(ds.root), ds.dataset_hash,
                   family.base, ds.class_names if class_names else None)

    def to_json(self) -> dict:
        out = {"path": self.path, "name": self.name, "hash": self.hash, "family": self.family,
               "base_config": self.base_config, "axis": self.axis, "axis_unit": self.axis_unit}
        if self.class_names is not None:
            out["class_names"] = self.class_names
        return out


@dataclass
class ResultRecord(JsonRecord):
    task: str  # "classification" or "zero-shot"
    run_id: str
    model: dict
    dataset: DatasetRef
    seed: int
    metrics: dict[str, dict]  # config -> metrics at that value
    summary: dict  # base, at_max, min, drop, nauc, rel_nauc
    flip: dict | None = None
    preprocessing: dict = field(default_factory=dict)
    training: dict | None = None
    fingerprint: str | None = None  # the run's settings: a rerun with other settings does not skip it
    weights: str | None = None  # the trained weights beside the result file (safetensors), for `verify`
    verified: dict | None = None  # written by `ctrlshift verify`: ok, tolerance, first difference
    schema: str = SCHEMA
    ctrlshift_version: str = ""
    git_commit: str | None = None
    versions: dict = field(default_factory=dict)

    @classmethod
    def new(cls, **fields) -> "ResultRecord":
        """A record stamped with this ctrlshift's version, commit and library versions."""
        return cls(**fields, **stamp())

    @property
    def family(self) -> str:
        return self.dataset.family

    @property
    def label(self) -> str:
        """The row name in tables: the model's label, its augmentation and training size."""
        t = self.training or {}
        label = self.model.get("label") or self.model["name"]
        if t.get("augment") not in (None, "none"):
            label += f" +{t['augment']}"
        if t.get("train_size"):
            label += f" n={t['train_size']}"
        return label

    def summary_line(self) -> str:
        s = self.summary
        return (f"{self.family}/{self.run_id}: clean {100 * s['base']:.1f}%, at max {100 * s['at_max']:.1f}%, "
                f"nAUC {100 * s['nauc']:.1f}%")

    def to_json(self) -> dict:
        return {"schema": self.schema, "task": self.task, "run_id": self.run_id, "model": self.model,
                "dataset": self.dataset.to_json(), "preprocessing": self.preprocessing, "training": self.training,
                "seed": self.seed, "metrics": self.metrics, "summary": self.summary, "flip": self.flip,
                "fingerprint": self.fingerprint, "weights": self.weights, "verified": self.verified,
                "ctrlshift_version": self.ctrlshift_version, "git_commit": self.git_commit,
                "versions": self.versions}

    @classmethod
    def from_json(cls, data: dict) -> "ResultRecord":
        return super().from_json({**data, "dataset": DatasetRef.from_json(data["dataset"])})


def _number(v) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def schema_problem(data: dict) -> str | None:
    """The first field of a result file (one handed in from outside, say) that breaks the schema."""
    kinds = {"task": str, "run_id": str, "model": dict, "dataset": dict, "metrics": dict, "summary": dict}
    for key, kind in kinds.items():
        if not isinstance(data.get(key), kind):
            return f"field {key!r}: expected {'an object' if kind is dict else 'a string'}, got {data.get(key)!r:.60}"
    if isinstance(data["seed"], bool) or not isinstance(data["seed"], int):
        return f"field 'seed': expected an integer, got {data['seed']!r}"
    for key in ("name", "family", "axis"):
        if not isinstance(data["dataset"].get(key), str):
            return f"field 'dataset.{key}': expected a string"
    if not isinstance(data["model"].get("name"), str):
        return "field 'model.name': expected a string"
    for config, m in data["metrics"].items():
        if not isinstance(m, dict):
            return f"field 'metrics.{config}': expected an object"
        for key in ("value", "intensity", "top1", "nll", "ece", "n"):
            if key not in m or not _number(m[key]):
                return f"field 'metrics.{config}.{key}': expected a number"
        if m["top1"] is not None and not 0 <= m["top1"] <= 1:
            return f"field 'metrics.{config}.top1': {m['top1']!r} is not an accuracy in [0, 1]"
    for key in ("base", "at_max", "min", "drop", "nauc"):
        if not _number(data["summary"].get(key)):
            return f"field 'summary.{key}': expected a number"
    return None


def write_result(path: str | Path, result: ResultRecord) -> None:
    atomic_write_json(path, result.to_json())


def upgrade_summary(data: dict) -> None:
    """Files written before ``worst`` was renamed: ``worst`` was the accuracy at the largest
    intensity (``at_max``); ``min`` is recomputed from the metrics."""
    s = data.get("summary")
    if isinstance(s, dict) and "worst" in s and "at_max" not in s:
        s["at_max"] = s.pop("worst")
        tops = [m.get("top1") for m in (data.get("metrics") or {}).values() if isinstance(m, dict)]
        tops = [t for t in tops if isinstance(t, (int, float))]
        s.setdefault("min", min(tops) if tops else s["at_max"])


def read_result(path: str | Path) -> ResultRecord:
    """A result file, checked against the schema; ``.path`` on the record says where it was read."""
    record = _read(path)
    record.path = str(path)
    return record


def _read(path: str | Path) -> ResultRecord:
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise CtrlshiftError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        got = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise CtrlshiftError(f"{path}: schema {got!r}, expected {SCHEMA!r}")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise CtrlshiftError(f"{path}: result file lacks {missing}")
    upgrade_summary(data)
    problem = schema_problem(data)
    if problem:
        raise CtrlshiftError(f"{path}: {problem} (see docs/results.md)")
    try:
        return ResultRecord.from_json(data)
    except (TypeError, KeyError) as exc:
        raise CtrlshiftError(f"{path}: not a {SCHEMA} result ({exc})") from None


def collect(root: str | Path) -> list[ResultRecord]:
    """Every result file under ``root`` (training checkpoints and other JSON are passed over)."""
    root = Path(root)
    if not root.is_dir():
        raise CtrlshiftError(f"RESULTS_DIR: {str(root)!r} is not a folder")
    out = []
    for path in sorted(root.rglob("*.json")):
        if path.parent.name == "checkpoints":
            continue
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and data.get("schema") == SCHEMA:
            out.append(read_result(path))
    if not out:
        raise CtrlshiftError(f"RESULTS_DIR: no {SCHEMA} result files under {str(root)!r}")
    return out
