"""Label validity across intensity: the reference classifier's verdicts, recorded and used."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import yaml

from ctrlshift.cli import main
from ctrlshift.dataset import Dataset
from ctrlshift.dataset.check import check_dataset

QUICK = ["reference.name=mlp_mixer", "reference.kwargs={dim: 16, depth: 1}", "train.epochs=2", "train.batch_size=4",
         "device=cpu"]


def test_consistency_is_recorded_and_evaluate_can_use_it(tiny_dataset, tmp_path, capsys):
    ds_path = tmp_path / "ds"
    shutil.copytree(tiny_dataset[1], ds_path)
    assert main(["consistency", str(ds_path), *QUICK, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "overlap-30" in out and "label consistency" in out
    data = json.loads((ds_path / "consistency.json").read_text())
    ds = Dataset.open(ds_path)
    for name, r in data["configs"].items():
        assert len(r["consistent"]) == r["n"] == 7
        assert ds.configs[name].label_consistency == r["share"] == sum(r["consistent"]) / 7
    assert "| label consistency |" in (ds_path / "README.md").read_text()
    assert "| KID |" in (ds_path / "README.md").read_text()
    assert ds.configs["overlap-0"].kid == 0.0 and ds.configs["overlap-30"].kid == data["configs"]["overlap-30"]["kid"]
    assert check_dataset(ds_path)[0] == []  # the dataset itself is untouched

    cfg = tmp_path / "e.yaml"
    cfg.write_text(yaml.safe_dump({"models": [{"name": "mlp_mixer", "kwargs": {"dim": 16, "depth": 1}}],
                                   "augments": ["none"], "families": ["overlap"],
                                   "train": {"epochs": 1, "batch_size": 4}, "device": "cpu"}))
    base = ["evaluate", str(cfg), "--data", str(ds_path), "--out", str(tmp_path / "r"), "--no-progress"]
    assert main(base) == 0
    assert main(base + ["consistent_only=true"]) == 0
    full = json.loads((tmp_path / "r/ds/overlap/mlp_mixer__none__nall__s0.json").read_text())
    sub = json.loads((tmp_path / "r/ds/overlap/mlp_mixer__none__nall__s0__consistent.json").read_text())
    for name in ("overlap-0", "overlap-30"):
        share = data["configs"][name]["share"]
        assert full["metrics"][name]["label_consistency"] == share
        assert full["metrics"][name]["n"] == 7 and sub["metrics"][name]["n"] == sum(data["configs"][name]["consistent"])
    assert main(["build", str(tmp_path / "r")]) == 0
    assert "Label consistency (test images a reference classifier still labels as their class): overlap-0" in \
        (tmp_path / "r" / "leaderboard.md").read_text()


def test_consistent_only_needs_the_measurement(tiny_dataset, tmp_path, capsys):
    cfg = tmp_path / "e.yaml"
    cfg.write_text(yaml.safe_dump({"models": [{"name": "mlp_mixer"}], "consistent_only": True, "device": "cpu"}))
    assert main(["evaluate", str(cfg), "--data", str(tiny_dataset[1]), "--out", str(tmp_path / "r")]) == 2
    assert "no consistency.json; run `ctrlshift consistency" in capsys.readouterr().err


def test_kernel_distance_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    from ctrlshift.evaluation.consistency import kernel_distance

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(400, 8, generator=g, dtype=torch.float64), torch.randn(400, 8, generator=g, dtype=torch.float64)
    same = kernel_distance(a, b)
    assert abs(same) < 0.05
    shifts = [kernel_distance(a, b + s) for s in (0.25, 0.5, 1.0)]
    assert same < shifts[0] < shifts[1] < shifts[2]
    x, y = a[:5], b[:4]  # by hand: unbiased MMD^2 with the cubic kernel
    k = lambda u, v: (u @ v / 8 + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(5) for j in range(5) if i != j) / 20
    yy = sum(k(y[i], y[j]) for i in range(4) for j in range(4) if i != j) / 12
    xy = sum(k(x[i], y[j]) for i in range(5) for j in range(4)) / 20
    assert kernel_distance(x, y) == pytest.approx(float(xx + yy - 2 * xy), rel=1e-9)


def test_kid_in_inception_features_from_a_local_state_dict(tiny_dataset, tmp_path, capsys):
    """The Inception feature space runs through torchvision's real Inception-v3; here with random
    weights from a local file (no download), offline its ImageNet weights are a one-line error."""
    from safetensors.torch import save_file
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    save_file(inception_v3(weights=None, aux_logits=True, init_weights=True).state_dict(),
              str(tmp_path / "inception.safetensors"))
    ds_path = tmp_path / "ds"
    shutil.copytree(tiny_dataset[1], ds_path)
    assert main(["consistency", str(ds_path), *QUICK, "kid_features=inception",
                 f"kid_inception_weights={tmp_path / 'inception.safetensors'}", "--no-progress"]) == 0
    ds = Dataset.open(ds_path)
    assert ds.configs["overlap-0"].kid == 0.0 and ds.configs["overlap-30"].kid is not None
    assert main(["consistency", str(ds_path), *QUICK, "kid_features=inception",
                 f"kid_inception_weights={tmp_path / 'none.safetensors'}", "--no-progress"]) == 2
    assert "kid_inception_weights" in capsys.readouterr().err
