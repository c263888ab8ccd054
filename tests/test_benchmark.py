"""Evaluating your own model: ctrlshift.benchmark on any module, your own architecture in
`evaluate` by import string and state dict, and CLIP_benchmark's metric names."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

import ctrlshift
from ctrlshift.cli import main
from ctrlshift.errors import ConfigError
from ctrlshift.evaluation.metrics import classification_metrics


class TinyNet(torch.nn.Module):
    """A user's own architecture: any factory with (optionally) num_classes."""

    def __init__(self, num_classes=4, hidden=8):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, hidden), torch.nn.ReLU(),
                                       torch.nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.net(x)


def test_clip_benchmark_names_beside_ctrlshifts():
    logits = torch.tensor([[2.0, 0, 0], [0, 2.0, 0], [2.0, 0, 0], [0, 0, 2.0]])
    m = classification_metrics(logits, torch.tensor([0, 1, 1, 2]))
    assert m["acc1"] == m["top1"] == 0.75
    assert m["mean_per_class_recall"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert "acc5" not in m  # 3 classes: no top-5


def test_benchmark_any_module_on_every_family(tiny_dataset, tmp_path):
    net = TinyNet()
    records = ctrlshift.benchmark(net, tiny_dataset[1], {"mean": [0.5] * 3, "std": [0.25] * 3}, name="mine",
                                  out=tmp_path / "r")
    assert [r.family for r in records] == ["truncation", "overlap"]
    r = records[1]
    assert list(r.metrics) == ["overlap-0", "overlap-30"] and r.model["source"] == "ctrlshift.benchmark"
    assert {"acc1", "mean_per_class_recall", "nll", "ece"} <= set(r.metrics["overlap-30"])
    assert r.flip is not None and r.summary["base"] == r.metrics["overlap-0"]["top1"]
    files = sorted((tmp_path / "r").rglob("*.json"))
    assert [f.name for f in files] == ["mine__benchmark.json"] * 2
    assert main(["build", str(tmp_path / "r")]) == 0
    assert "| 1 | mine | 1 |" in (tmp_path / "r" / "leaderboard.md").read_text()


def test_benchmark_bad_arguments(tiny_dataset):
    with pytest.raises(ConfigError, match="labels: 'model' needs a dataset made with decoder.classes"):
        ctrlshift.benchmark(TinyNet(), tiny_dataset[1], labels="model")
    with pytest.raises(ConfigError, match="preprocess: a mapping needs mean and std"):
        ctrlshift.benchmark(TinyNet(), tiny_dataset[1], {"mean": [0.5] * 3})
    with pytest.raises(ConfigError, match=r"families: \['nope'\] are not in"):
        ctrlshift.benchmark(TinyNet(), tiny_dataset[1], families=["nope"])


def test_evaluate_your_own_architecture_and_weights(tiny_dataset, tmp_path):
    net = TinyNet(hidden=6)
    with torch.no_grad():
        net.net[1].weight.mul_(3)
    torch.save(net.state_dict(), tmp_path / "w.pt")
    cfg = tmp_path / "e.yaml"
    cfg.write_text(yaml.safe_dump({"models": [{"name": "tests.test_benchmark:TinyNet", "label": "mine",
                                               "kwargs": {"hidden": 6}, "state_dict": str(tmp_path / "w.pt"),
                                               "train": False}], "families": ["overlap"], "device": "cpu"}))
    assert main(["evaluate", str(cfg), "--data", str(tiny_dataset[1]), "--out", str(tmp_path / "r"),
                 "--no-progress", "models.0.kwargs.num_classes=4"]) == 0
    r = json.loads((tmp_path / "r" / "ds" / "overlap" / "mine__pretrained__s0.json").read_text())
    # the harness normalises with the train split's statistics; the same weights through benchmark:
    from ctrlshift.dataset import Dataset
    from ctrlshift.evaluation.train import Preprocess

    ds = Dataset.open(tiny_dataset[1])
    pre = Preprocess.fit(ds.load("overlap-0", "train").images)
    rec = ctrlshift.benchmark(net, ds, pre, families=["overlap"])[0]
    assert r["metrics"]["overlap-30"]["top1"] == rec.metrics["overlap-30"]["top1"]
    assert r["metrics"]["overlap-30"]["nll"] == pytest.approx(rec.metrics["overlap-30"]["nll"], rel=1e-5)


def test_weights_that_would_run_code_are_refused(tmp_path):
    from ctrlshift.models import create_model

    torch.save(TinyNet(), tmp_path / "pickled.pt")  # a whole pickled module, not a state dict
    with pytest.raises(ConfigError, match="models.state_dict: cannot load"):
        create_model("tests.test_benchmark:TinyNet", 4, state_dict=str(tmp_path / "pickled.pt"))
    with pytest.raises(ConfigError, match="models.state_dict: .* does not exist"):
        create_model("tests.test_benchmark:TinyNet", 4, state_dict=str(tmp_path / "nope.pt"))
