"""Evaluation harness: metrics by hand, summaries, training, resume, sweeps, results, build."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from ctrlshift import results as res
from ctrlshift.cli import main
from ctrlshift.dataset import Split
from ctrlshift.errors import ConfigError, CtrlshiftError
from ctrlshift.evaluation.metrics import classification_metrics, ece
from ctrlshift.evaluation.robustness import flip_intensities, flip_summary, mean_std, sweep_summary
from ctrlshift.evaluation.train import Preprocess, Recipe, TrainConfig, predict, random_crop, train_classifier
from ctrlshift.models import MODELS, create_model


# -- metrics --------------------------------------------------------------------------------------

def test_metrics_against_hand_computation():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    labels = torch.tensor([0, 0, 2, 2])
    m = classification_metrics(logits, labels)
    assert m["top1"] == 0.5  # rows 0 and 3
    p = torch.softmax(logits.double(), 1)
    assert m["nll"] == pytest.approx(float(-torch.log(p[torch.arange(4), labels]).mean()))
    assert m["per_class"][0] == 0.5 and math.isnan(m["per_class"][1]) and m["per_class"][2] == 0.5
    assert "top5" not in m  # only with more than 5 classes


def test_ece_bins_follow_torchmetrics_at_the_edges():
    """Bins are [lo, hi): a confidence of exactly 0.6 falls in [0.6, 0.8), not [0.4, 0.6); a
    confidence of 1.0 has a bin of its own."""
    import math

    def logits_for(p):  # two classes, class 0 with probability p
        return torch.tensor([[math.log(p), math.log(1 - p)]], dtype=torch.float64) if p < 1 else \
            torch.tensor([[0.0, -1e4]], dtype=torch.float64)

    logits = torch.cat([logits_for(0.6), logits_for(0.75)])
    labels = torch.tensor([0, 1])  # right at 0.6, wrong at 0.75: one bin [0.6, 0.8) -> |0.5 - 0.675|
    assert ece(logits, labels, bins=5) == pytest.approx(0.175, abs=1e-9)
    # with (lo, hi] bins 0.6 would sit alone in (0.4, 0.6]: 0.5 * 0.4 + 0.5 * 0.75 = 0.575
    ones = torch.cat([logits_for(1.0), logits_for(0.9)])
    # wrong at 1.0, right at 0.9: separate bins give 0.5 * 1.0 + 0.5 * 0.1; one bin would give 0.45
    assert ece(ones, torch.tensor([1, 0]), bins=5) == pytest.approx(0.55, abs=1e-9)


def test_ece_single_bin_by_hand():
    # two predictions, both with confidence 0.8 (same bin), one right: |0.5 - 0.8| = 0.3
    p = math.log(0.8 / 0.2)
    logits = torch.tensor([[p, 0.0], [p, 0.0]])
    assert ece(logits, torch.tensor([0, 1])) == pytest.approx(0.3, abs=1e-9)


def test_top5_with_many_classes():
    logits = torch.arange(10.0).repeat(2, 1)  # class 9 first, then 8, ...
    m = classification_metrics(logits, torch.tensor([5, 4]))
    assert m["top1"] == 0.0 and m["top5"] == 0.5


# -- robustness summaries --------------------------------------------------------------------------

def test_sweep_summary_by_hand():
    s = sweep_summary([0.0, 0.5, 1.0], [0.9, 0.7, 0.5])
    assert s["base"] == 0.9 and s["at_max"] == 0.5 and s["min"] == 0.5 and s["drop"] == pytest.approx(0.4)
    assert s["nauc"] == pytest.approx((0.8 * 0.5 + 0.6 * 0.5) / 1.0)
    assert s["rel_nauc"] == pytest.approx(0.7 / 0.9)


def test_at_max_is_the_last_value_and_min_the_lowest():
    s = sweep_summary([0.0, 0.5, 1.0], [0.9, 0.4, 0.6])  # not monotone: the lowest is in the middle
    assert s["at_max"] == 0.6 and s["min"] == 0.4 and s["drop"] == pytest.approx(0.3)


def test_result_files_from_before_the_rename_read_with_at_max_and_min(tiny_dataset, tmp_path):
    import json

    from ctrlshift.cli import main
    from ctrlshift.results import read_result

    cfg = tmp_path / "e.yaml"
    cfg.write_text("models: [{name: mlp_mixer, kwargs: {dim: 16, depth: 1}}]\naugments: [none]\n"
                   "families: [truncation]\ntrain: {epochs: 1, batch_size: 4}\ndevice: cpu\n")
    assert main(["evaluate", str(cfg), "--data", str(tiny_dataset[1]), "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 0
    path = next((tmp_path / "r").rglob("*.json"))
    data = json.loads(path.read_text())
    data["summary"]["worst"] = data["summary"].pop("at_max")
    del data["summary"]["min"]
    path.write_text(json.dumps(data))
    r = read_result(path)
    assert r.summary["at_max"] == data["summary"]["worst"]
    assert r.summary["min"] == min(m["top1"] for m in data["metrics"].values())
    assert main(["build", str(tmp_path / "r")]) == 0
    assert "| clean | at max | min | drop |" in (tmp_path / "r" / "leaderboard.md").read_text()
    # the dataset's intensity measures travel into the results and get their own plot
    assert {"total_variation", "pixel_distance"} <= set(data["metrics"]["truncation-110"])
    assert (tmp_path / "r" / "plots" / f"{data['dataset']['name']}-measures.png").stat().st_size > 1000


def test_sweep_summary_on_a_falling_axis():
    # subspace_scale: the axis falls from 1.0 as the shift grows
    s = sweep_summary([1.0, 0.8, 0.5], [0.9, 0.8, 0.6])
    assert s["nauc"] == pytest.approx((0.85 * 0.2 + 0.7 * 0.3) / 0.5)
    with pytest.raises(ValueError, match="not ordered"):
        sweep_summary([1.0, 0.5, 0.8], [0.9, 0.8, 0.6])


def test_flip_intensity_per_image():
    correct = np.array([[1, 1, 1, 0],    # base: image 3 is wrong at the base
                        [1, 0, 1, 1],    # image 1 flips at the first shifted value
                        [0, 1, 1, 1]])   # image 0 flips at the second; image 2 never
    flips = flip_intensities([90, 100, 110], correct.astype(bool))
    assert flips[0] == 20 and flips[1] == 10 and np.isinf(flips[2]) and np.isnan(flips[3])
    s = flip_summary([90, 100, 110], flips)
    assert s["flipped_share"] == pytest.approx([0.0, 1 / 3, 2 / 3])
    assert s["never_flipped"] == pytest.approx(1 / 3) and s["median"] == 20 and s["max_distance"] == 20


def test_mean_std_over_seeds():
    assert mean_std([0.5, 0.7]) == pytest.approx((0.6, math.sqrt(0.02)))
    assert mean_std([0.5]) == (0.5, 0.0)


# -- models ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["resnet20", "preact_resnet18", "vgg19_bn", "densenet_bc", "resnext29",
                                  "mlp_mixer", "vit_small"])
def test_zoo_models_run_at_small_sizes(name):
    kwargs = {"densenet_bc": {"depth": 10, "growth": 4}, "resnext29": {"cardinality": 2, "base_width": 4},
              "mlp_mixer": {"dim": 16, "depth": 1}, "vit_small": {"dim": 16, "depth": 1, "heads": 2}}.get(name, {})
    if name in ("preact_resnet18", "vgg19_bn", "resnet20"):
        kwargs = {"width": 0.125}
    for size in (16, 32):
        net = create_model(name, 7, img_size=size, **kwargs)
        assert net(torch.randn(2, 3, size, size)).shape == (2, 7)


def test_timm_models_by_name_and_unknown_names():
    net = create_model("timm/resnet10t", 4, img_size=32)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 4)
    with pytest.raises(ConfigError, match="not a ctrlshift model"):
        create_model("resnet_nope_123", 4)
    assert "resnet20" in MODELS.list("res*")


# -- training -------------------------------------------------------------------------------------

def toy_split(n=96, seed=0):
    """Two separable classes: a bright left half or a bright right half."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    imgs = torch.randint(0, 60, (n, 8, 8, 3), generator=g, dtype=torch.uint8)
    imgs[labels == 0, :, :4] += 150
    imgs[labels == 1, :, 4:] += 150
    return Split(imgs, labels, torch.arange(n))


def test_random_crop_keeps_content_shifted():
    x = torch.arange(1, 17, dtype=torch.uint8).view(1, 4, 4, 1).repeat(64, 1, 1, 1)  # no zero inside
    out = random_crop(x, 1, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x[0, :, :, 0], (1, 1, 1, 1))
    shifts = {(dy, dx): padded[dy:dy + 4, dx:dx + 4] for dy in range(3) for dx in range(3)}
    seen = set()
    for img in out:  # each crop is the original moved by at most one pixel, zero-filled
        match = [s for s, ref in shifts.items() if torch.equal(img[:, :, 0], ref)]
        assert len(match) == 1
        seen.add(match[0])
    assert len(seen) > 3  # the offsets vary from image to image


def test_loop_learns_a_separable_toy_set():
    train, test = toy_split(), toy_split(seed=1)
    pre = Preprocess.fit(train.images)
    torch.manual_seed(0)
    net = create_model("resnet20", 2, img_size=8, width=0.25)
    cfg = TrainConfig(epochs=6, batch_size=16, optimizer="sgd", lr=0.05)
    rec = train_classifier(net, train, test, pre, Recipe(cfg, "none", 0), progress=False)
    assert rec["val_top1"] >= 0.95
    assert rec["history"][-1]["loss"] < rec["history"][0]["loss"]
    acc = float((predict(net, test, pre, "cpu").argmax(1) == test.labels).double().mean())
    assert acc == rec["val_top1"]  # the best epoch's weights are the ones kept


@pytest.mark.slow
def test_train_compile_learns_and_keeps_the_models_state_dict():
    """train.compile runs the training step through torch.compile (inductor, on the CPU too): it
    learns the separable toy set as the eager loop does, evaluation (uncompiled) sees the trained
    weights, and the model keeps its own parameter names for checkpoints and results."""
    train, test = toy_split(), toy_split(seed=1)
    pre = Preprocess.fit(train.images)
    torch.manual_seed(0)
    net = create_model("resnet20", 2, img_size=8, width=0.25)
    fresh = {k: v.clone() for k, v in net.state_dict().items()}
    cfg = TrainConfig(epochs=6, batch_size=16, optimizer="sgd", lr=0.05, compile=True)
    rec = train_classifier(net, train, test, pre, Recipe(cfg, "none", 0), progress=False)
    assert rec["val_top1"] >= 0.95 and rec["history"][-1]["loss"] < rec["history"][0]["loss"]
    assert net.state_dict().keys() == fresh.keys()
    acc = float((predict(net, test, pre, "cpu").argmax(1) == test.labels).double().mean())
    assert acc == rec["val_top1"]


def test_train_compile_enters_the_fingerprint_only_when_set(tiny_dataset):
    """Results written before train.compile existed keep their fingerprint (and are not redone)."""
    import dataclasses

    from ctrlshift.config import load_config, to_dict
    from ctrlshift.dataset import Dataset
    from ctrlshift.evaluation import job
    from ctrlshift.provenance import stable_hash

    cfg = load_config(job.EvaluateConfig, "quickstart-evaluate")
    ds = Dataset.open(tiny_dataset[1])
    run = job.plan_runs(cfg, ds.families())[0]
    old = to_dict(cfg.train)
    old.pop("compile")
    before = stable_hash({"model": dataclasses.asdict(run.model), "augment": run.augment, "size": run.size,
                          "seed": run.seed, "train": old, "dataset": ds.dataset_hash,
                          "family": dataclasses.asdict(run.family), "consistent_only": run.consistent_only})
    assert job.fingerprint(cfg, ds, run) == before
    compiled = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, compile=True))
    assert job.fingerprint(compiled, ds, run) != before


def test_resume_continues_where_it_stopped(tmp_path):
    """Kill after epoch 2 of 3 (simulated by an exception), rerun: epochs 1-2 are not redone."""
    train = toy_split()
    pre = Preprocess.fit(train.images)
    cfg = TrainConfig(epochs=3, batch_size=32, optimizer="sgd", lr=0.05, channels_last=False)
    torch.manual_seed(0)
    ref = create_model("resnet20", 2, img_size=8, width=0.25)
    rec_ref = train_classifier(ref, train, None, pre, Recipe(cfg, "crop", 5), tmp_path / "ref", progress=False)

    import ctrlshift.evaluation.train as tr

    real_save = torch.save
    saves = []

    def save_then_die(obj, path, *a, **k):
        real_save(obj, path, *a, **k)
        saves.append(obj["epoch"])
        if obj["epoch"] == 2:
            raise KeyboardInterrupt

    torch.manual_seed(0)
    net = create_model("resnet20", 2, img_size=8, width=0.25)
    tr.torch.save = save_then_die
    try:
        with pytest.raises(KeyboardInterrupt):
            train_classifier(net, train, None, pre, Recipe(cfg, "crop", 5), tmp_path / "run", progress=False)
    finally:
        tr.torch.save = real_save
    torch.manual_seed(123)  # a different init: the checkpoint must overwrite it
    net2 = create_model("resnet20", 2, img_size=8, width=0.25)
    rec = train_classifier(net2, train, None, pre, Recipe(cfg, "crop", 5), tmp_path / "run", progress=False)
    assert saves == [1, 2]
    assert [h["epoch"] for h in rec["history"]] == [1, 2, 3]
    assert [h["loss"] for h in rec["history"]] == [h["loss"] for h in rec_ref["history"]]
    for a, b in zip(net2.state_dict().values(), ref.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5)


# -- sweep, results, build ----------------------------------------------------------------------

@pytest.fixture
def dataset(tiny_dataset):
    return tiny_dataset[1]


@pytest.fixture
def eval_yaml(tmp_path):
    import yaml

    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump({
        "models": [{"name": "resnet20", "kwargs": {"width": 0.25}}, {"name": "mlp_mixer", "label": "mixer",
                                                                    "kwargs": {"dim": 16, "depth": 1}}],
        "augments": ["crop"], "seeds": [0, 1],
        "train": {"epochs": 1, "batch_size": 8, "channels_last": False}, "device": "cpu"}))
    return path


def test_evaluate_writes_one_result_per_run_and_skips_existing(dataset, eval_yaml, tmp_path, caplog):
    out = tmp_path / "results"
    assert main(["evaluate", str(eval_yaml), "--data", str(dataset), "--out", str(out), "--no-progress"]) == 0
    files = sorted(out.rglob("*.json"))
    assert len(files) == 2 * 2 * 2  # families x models x seeds
    r = res.read_result(out / "ds" / "overlap" / "mixer__crop__nall__s1.json")
    assert r.seed == 1 and r.dataset.hash and r.dataset.family == "overlap" and r.dataset.axis == "theta"
    assert list(r.metrics) == ["overlap-0", "overlap-30"]
    m = r.metrics["overlap-30"]
    assert {"top1", "nll", "ece", "per_class", "intensity", "distance"} <= set(m) and m["n"] == 7
    assert r.preprocessing["img_size"] == 8 and len(r.preprocessing["mean"]) == 3
    assert r.training["train_size"] == 10 and r.flip["n"] >= 0
    assert r.summary["base"] == r.metrics["overlap-0"]["top1"]
    assert r.ctrlshift_version and r.versions
    mtimes = {f: f.stat().st_mtime_ns for f in files}
    caplog.clear()
    assert main(["evaluate", str(eval_yaml), "--data", str(dataset), "--out", str(out), "--no-progress"]) == 0
    assert {f: f.stat().st_mtime_ns for f in files} == mtimes  # every run skipped


def test_evaluate_bad_inputs(dataset, eval_yaml, tmp_path, capsys):
    assert main(["evaluate", str(eval_yaml), "--data", str(tmp_path / "none"), "--out", str(tmp_path)]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["evaluate", str(eval_yaml), "--data", str(dataset), "--out", str(tmp_path),
                 "augments=[cutout]"]) == 2
    assert "augments: ['cutout'] are not augmentation presets" in capsys.readouterr().err
    assert main(["evaluate", str(eval_yaml), "--data", str(dataset), "--out", str(tmp_path),
                 "families=[rotation]"]) == 2
    assert "families: ['rotation'] are not in" in capsys.readouterr().err


def fake_result(model, seed, acc):
    return res.ResultRecord.from_json(fake_result_json(model, seed, acc))


def fake_result_json(model, seed, acc):
    return {"schema": res.SCHEMA, "task": "classification", "run_id": f"{model}__s{seed}",
            "model": {"name": model}, "training": {"augment": "none"}, "seed": seed,
            "dataset": {"name": "d", "family": "overlap", "axis": "theta", "axis_unit": "rad", "hash": "h"},
            "metrics": {f"overlap-{v}": {"value": v, "intensity": v / 100 * math.pi, "distance": v / 100 * math.pi,
                                         "top1": a, "nll": 1.0, "ece": 0.1, "n": 10}
                        for v, a in zip((0, 20, 40), acc)},
            "summary": sweep_summary([0, 0.2 * math.pi, 0.4 * math.pi], acc),
            "flip": {"median": 0.5 if model == "cnn" else None, "max_distance": 0.4 * math.pi}}


def test_results_round_trip_and_schema_errors(tmp_path):
    r = fake_result("cnn", 0, [0.9, 0.8, 0.7])
    res.write_result(tmp_path / "a.json", r)
    back = res.read_result(tmp_path / "a.json")
    assert back == r and back.to_json() == json.loads(json.dumps(r.to_json()))
    assert back.dataset.axis == "theta" and back.label == "cnn"
    bad = dict(r.to_json(), schema="other/1")
    (tmp_path / "b.json").write_text(json.dumps(bad))
    with pytest.raises(CtrlshiftError, match="schema 'other/1'"):
        res.read_result(tmp_path / "b.json")
    (tmp_path / "c.json").write_text(json.dumps({"schema": res.SCHEMA}))
    with pytest.raises(CtrlshiftError, match="lacks"):
        res.read_result(tmp_path / "c.json")


def test_build_merges_seeds_into_table_and_plots(tmp_path):
    for seed, acc in ((0, [0.9, 0.8, 0.6]), (1, [0.8, 0.7, 0.5])):
        res.write_result(tmp_path / f"cnn{seed}.json", fake_result("cnn", seed, acc))
    res.write_result(tmp_path / "mix.json", fake_result("mixer", 0, [0.7, 0.5, 0.3]))
    assert main(["build", str(tmp_path)]) == 0
    md = (tmp_path / "leaderboard.md").read_text()
    rows = [l for l in md.splitlines() if l.startswith("| 1 ") or l.startswith("| 2 ")]
    assert rows[0].startswith("| 1 | cnn | 2 | 85.0 ± 7.1 | 55.0 ± 7.1 | 55.0 ± 7.1 | 30.0 ± 0.0 |")
    assert rows[1].startswith("| 2 | mixer | 1 | 70.0 | 30.0 | 30.0 | 40.0 |")
    assert rows[0].endswith("| 0.5 |") and rows[1].endswith("| >1.26 |")  # flip: median, or beyond the sweep
    csv_lines = (tmp_path / "results.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 1 + 3 * 3
    assert (tmp_path / "plots" / "d-overlap.png").stat().st_size > 1000
    assert (tmp_path / "plots" / "d-overlap.svg").read_text().lstrip().startswith("<?xml")


def test_build_without_results_is_a_clear_error(tmp_path, capsys):
    assert main(["build", str(tmp_path)]) == 2
    assert "no ctrlshift-result/1 result files" in capsys.readouterr().err


@pytest.mark.slow
def test_quickstart_smoke(tmp_path, capsys):
    # a dataset of other settings where the quickstart writes (as a run in the other mode leaves one)
    assert main(["generate", "quickstart", "--out", str(tmp_path / "qs" / "data" / "quickstart"), "--no-progress",
                 "splits.train.size=20", "splits.val.size=0", "splits.test.size=10", "sampler.steps=1",
                 "intensity.samples=100"]) == 0
    capsys.readouterr()
    assert main(["quickstart", "--out", str(tmp_path / "qs"), "--smoke", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "## quickstart / overlap" in out and "resnet20" in out and "mlp-mixer" in out
    assert len(list((tmp_path / "qs" / "results").rglob("*.json"))) == 6
    for fam in ("truncation", "extend", "overlap"):
        assert (tmp_path / "qs" / "results" / "plots" / f"quickstart-{fam}.png").is_file()


@pytest.mark.parametrize("augment", ["none", "crop", "cropflip", "randaugment", "augmix", "mixup"])
def test_every_augmentation_preset_trains(augment):
    train = toy_split(32)
    pre = Preprocess.fit(train.images)
    torch.manual_seed(0)
    net = create_model("resnet20", 2, img_size=8, width=0.25)
    rec = train_classifier(net, train, None, pre, Recipe(TrainConfig(epochs=1, batch_size=16), augment, 0),
                           progress=False)
    assert math.isfinite(rec["history"][0]["loss"])


def test_pretrained_model_is_evaluated_through_the_class_mapping(tmp_path, tiny_unet_dir):
    """A model of the generator's label space (here 6 classes) tested on a 2-class subset."""
    import yaml

    from .helpers import tiny_config

    cfg = tiny_config(tiny_unet_dir, **{"decoder.classes": [3, 1], "decoder.num_classes": 2})
    cfg["shifts"] = [{"family": "truncation", "values": [90, 110]}]
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["generate", str(tmp_path / "g.yaml"), "--out", str(tmp_path / "ds"), "--no-progress"]) == 0
    (tmp_path / "e.yaml").write_text(yaml.safe_dump({
        "models": [{"name": "resnet20", "train": False, "kwargs": {"num_classes": 6, "width": 0.25}}],
        "device": "cpu"}))
    assert main(["evaluate", str(tmp_path / "e.yaml"), "--data", str(tmp_path / "ds"), "--out",
                 str(tmp_path / "r"), "--no-progress"]) == 0
    r = res.read_result(tmp_path / "r" / "ds" / "truncation" / "resnet20__pretrained__s0.json")
    assert r.model["trained"] is False and "history" not in r.training
    assert len(r.metrics["truncation-90"]["per_class"]) == 2  # logits restricted to model classes [3, 1]


def test_result_files_are_strict_json(tmp_path):
    r = fake_result("cnn", 0, [0.0, 0.0, 0.0])  # rel_nauc is 0/0
    r.metrics["overlap-0"]["per_class"] = [1.0, float("nan")]
    res.write_result(tmp_path / "a.json", r)

    def refuse(name):
        raise ValueError(f"{name} in a result file")

    data = json.loads((tmp_path / "a.json").read_text(), parse_constant=refuse)
    assert data["summary"]["rel_nauc"] is None and data["metrics"]["overlap-0"]["per_class"] == [1.0, None]
    assert main(["build", str(tmp_path)]) == 0  # build reads null as "undefined"


def test_pretrained_weights_that_cannot_be_had_are_an_error_not_random_weights():
    with pytest.raises(ConfigError, match=r"model 'timm/resnet10t': pretrained weights could not be loaded .*"
                                          r"or set pretrained: false"):
        create_model("timm/resnet10t", 10, pretrained=True)


def test_wilson_interval_by_hand():
    from ctrlshift.evaluation.build import wilson

    lo, hi = wilson(np.array([0.5, 1.0, 0.0]), np.array([100, 20, 20]))
    assert lo[0] == pytest.approx(0.4038, abs=1e-4) and hi[0] == pytest.approx(0.5962, abs=1e-4)
    assert hi[1] == pytest.approx(1.0) and lo[1] == pytest.approx(0.8389, abs=1e-4)  # 20 of 20 right
    assert lo[2] == pytest.approx(0.0) and hi[2] == pytest.approx(0.1611, abs=1e-4)


def test_identical_trainings_run_once_and_match_a_fresh_one(tiny_unet_dir, tmp_path):
    """extend 50 and overlap 0 are one distribution with the same seeds (the paper's targets)."""
    import yaml

    from .helpers import tiny_config

    cfg = tiny_config(tiny_unet_dir)
    cfg["shifts"] = [{"family": "extend", "values": [50, 80]}, {"family": "overlap", "values": [0, 30]}]
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["generate", str(tmp_path / "g.yaml"), "--out", str(tmp_path / "ds"), "--no-progress"]) == 0
    (tmp_path / "e.yaml").write_text(yaml.safe_dump({
        "models": [{"name": "mlp_mixer", "kwargs": {"dim": 16, "depth": 1}}], "augments": ["crop"],
        "train": {"epochs": 2, "batch_size": 4, "channels_last": False}, "device": "cpu"}))
    args = ["evaluate", str(tmp_path / "e.yaml"), "--data", str(tmp_path / "ds"), "--no-progress"]
    assert main(args + ["--out", str(tmp_path / "both")]) == 0
    assert main(args + ["--out", str(tmp_path / "alone"), "families=[overlap]"]) == 0
    run = "ds/overlap/mlp_mixer__crop__nall__s0.json"
    both, alone = (json.loads((tmp_path / d / run).read_text()) for d in ("both", "alone"))
    assert both["training"]["reused_from"] == "extend/mlp_mixer__crop__nall__s0"
    assert "reused_from" not in alone["training"]
    assert both["metrics"] == alone["metrics"]
    assert [h["loss"] for h in both["training"]["history"]] == [h["loss"] for h in alone["training"]["history"]]
