"""Verified entries: evaluate saves weights, `ctrlshift verify` re-measures, build marks the row;
results handed in from outside are checked field by field."""

from __future__ import annotations

import json

import pytest
import yaml

from ctrlshift import results as res
from ctrlshift.cli import main
from ctrlshift.errors import CtrlshiftError


@pytest.fixture
def evaluated(tiny_dataset, tmp_path):
    cfg = tmp_path / "e.yaml"
    cfg.write_text(yaml.safe_dump({"models": [{"name": "resnet20", "kwargs": {"width": 0.25}}], "families": ["overlap"],
                                   "augments": ["crop"], "train": {"epochs": 1, "batch_size": 4, "channels_last": False},
                                   "device": "cpu"}))
    out = tmp_path / "r"
    assert main(["evaluate", str(cfg), "--data", str(tiny_dataset[1]), "--out", str(out), "--no-progress"]) == 0
    return out / "ds" / "overlap" / "resnet20__crop__nall__s0.json"


def test_verify_reproduces_a_result_and_build_marks_it(evaluated, tiny_dataset, capsys):
    assert evaluated.with_suffix(".safetensors").is_file()
    assert json.loads(evaluated.read_text())["weights"] == "resnet20__crop__nall__s0.safetensors"
    assert main(["verify", str(evaluated), "--data", str(tiny_dataset[1])]) == 0
    assert capsys.readouterr().out.startswith("verified: ")
    v = json.loads(evaluated.read_text())["verified"]
    assert v["ok"] is True and v["first_difference"] is None
    assert main(["build", str(evaluated.parents[2])]) == 0
    assert "| 1 | resnet20 +crop n=10 ✓ | 1 |" in (evaluated.parents[2] / "leaderboard.md").read_text()


def test_a_changed_number_or_another_dataset_does_not_verify(evaluated, tiny_dataset, tmp_path, capsys):
    data = json.loads(evaluated.read_text())
    data["metrics"]["overlap-30"]["top1"] = min(1.0, data["metrics"]["overlap-30"]["top1"] + 0.3)
    evaluated.write_text(json.dumps(data))
    assert main(["verify", str(evaluated), "--data", str(tiny_dataset[1])]) == 1
    assert "not verified: " in (err := capsys.readouterr().err) and "overlap-30.top1: claimed" in err
    assert json.loads(evaluated.read_text())["verified"]["ok"] is False

    import shutil

    other = tmp_path / "other"
    shutil.copytree(tiny_dataset[1], other)
    m = json.loads((other / "manifest.json").read_text())
    m["dataset_hash"] = "0" * 64
    (other / "manifest.json").write_text(json.dumps(m))
    assert main(["verify", str(evaluated), "--data", str(other)]) == 1
    assert "dataset hash: the result names" in capsys.readouterr().err


def test_missing_weights_are_one_line(evaluated, tiny_dataset, capsys):
    evaluated.with_suffix(".safetensors").unlink()
    assert main(["verify", str(evaluated), "--data", str(tiny_dataset[1])]) == 2
    assert "the weights this result names are missing" in capsys.readouterr().err


@pytest.mark.parametrize("edit, fragment", [
    (lambda d: d.update(seed="zero"), "field 'seed': expected an integer"),
    (lambda d: d["metrics"]["overlap-0"].update(top1=1.7), "field 'metrics.overlap-0.top1': 1.7 is not an accuracy"),
    (lambda d: d["metrics"]["overlap-0"].pop("nll"), "field 'metrics.overlap-0.nll': expected a number"),
    (lambda d: d["dataset"].pop("family"), "field 'dataset.family': expected a string"),
    (lambda d: d.update(model="resnet"), "field 'model': expected an object"),
    (lambda d: d["summary"].update(nauc="high"), "field 'summary.nauc': expected a number"),
])
def test_results_from_outside_are_checked_field_by_field(tmp_path, edit, fragment):
    from .test_evaluation import fake_result_json

    data = fake_result_json("cnn", 0, [0.9, 0.8, 0.7])
    edit(data)
    (tmp_path / "x.json").write_text(json.dumps(data))
    with pytest.raises(CtrlshiftError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        res.read_result(tmp_path / "x.json")
