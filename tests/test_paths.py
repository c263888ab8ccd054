"""Every route by which a name from a config, a manifest or a result file becomes a path, tried
with hostile values: nothing is read or written outside the folder it belongs to."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from ctrlshift.cli import main
from ctrlshift.errors import ConfigError
from ctrlshift.names import check_name, is_safe, slug

HOSTILE = ["../x", "../../escaped", "/abs/path", "a/b", "..", ".hidden", "a\\b", "", "x" * 201, "a\0b", "~root",
           "ok/../../x"]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_not_safe_and_slug_makes_them_safe(name):
    assert not is_safe(name)
    with pytest.raises(ConfigError, match="is not a safe name"):
        check_name(name, "key")
    s = slug(name)
    assert is_safe(s) and "/" not in s and ".." not in s


def test_safe_names_pass():
    for name in ("overlap-20", "truncation-0.5", "mean_rotation--15", "t", "resnet20__crop__nall__s0", "a+b=c"):
        assert is_safe(name) and check_name(name, "k") == name


@pytest.mark.parametrize("override, key", [("shifts.0.name=../../escaped", "shifts.0.name"),
                                           ("shifts.0.name=a/b", "shifts.0.name"),
                                           ("name=../up", "name")])
def test_config_names_that_become_folders_are_checked(tiny_dataset, tmp_path, capsys, override, key):
    cfg, _ = tiny_dataset
    assert main(["generate", str(cfg), override, "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert f"error: {key}: " in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not (tmp_path / "escaped").exists()


def test_a_plugin_family_with_an_unsafe_name_cannot_make_folders(tiny_dataset, tmp_path, capsys):
    from ctrlshift.generator.shifts import FAMILIES, Truncation

    FAMILIES.register("../evil")(type("Evil", (Truncation,), {}))
    try:
        cfg, _ = tiny_dataset
        assert main(["generate", str(cfg), "shifts.0.family=../evil", "--out", str(tmp_path / "o")]) == 2
        assert "shifts.0.family: '../evil' is not a safe name" in capsys.readouterr().err
    finally:
        del FAMILIES._entries["../evil"]


def hostile_copy(tiny_dataset, tmp_path, edit) -> Path:
    _, ds = tiny_dataset
    out = tmp_path / "ds"
    shutil.copytree(ds, out)
    m = json.loads((out / "manifest.json").read_text())
    edit(m)
    (out / "manifest.json").write_text(json.dumps(m))
    return out


def _prefix(m):
    m["configs"]["overlap-30"]["prefix"] = "../../evil"


def _config_name(m):
    m["configs"]["/tmp/evil"] = m["configs"].pop("overlap-30")


def _shard_path(m):
    m["shards"][0]["path"] = "data/../../../etc/passwd"


def _shard_path_other_config(m):
    m["shards"][0]["path"] = "data/nope-1/test-00000-of-00001.parquet"


@pytest.mark.parametrize("edit, fragment", [(_prefix, "family or prefix '../../evil' is not a safe name"),
                                            (_config_name, "config name '/tmp/evil' is not a safe folder name"),
                                            (_shard_path, "is not a shard of a listed config and split"),
                                            (_shard_path_other_config, "is not a shard of a listed config")])
@pytest.mark.parametrize("command", ["evaluate", "export", "check", "gap"])
def test_hostile_manifests_are_refused_by_every_reader(tiny_dataset, tmp_path, capsys, edit, fragment, command):
    ds = hostile_copy(tiny_dataset, tmp_path, edit)
    eval_cfg = tmp_path / "e.yaml"
    eval_cfg.write_text(yaml.safe_dump({"models": [{"name": "resnet20"}], "train": {"epochs": 1}, "device": "cpu"}))
    argv = {"evaluate": ["evaluate", str(eval_cfg), "--data", str(ds), "--out", str(tmp_path / "r")],
            "export": ["export", str(ds), "--out", str(tmp_path / "x")],
            "check": ["check", str(ds)],
            "gap": ["gap", "gap-tiny-clip", f"data.source={ds}", "--out", str(tmp_path / "g")]}[command]
    assert main(argv) in (1, 2)
    assert fragment in capsys.readouterr().err
    assert not (tmp_path / "evil").exists() and not Path("/tmp/evil").exists()
    assert not (tmp_path / "r").exists() and not (tmp_path / "x").exists()


def test_model_labels_become_safe_run_ids(tiny_dataset, tmp_path):
    cfg = tmp_path / "e.yaml"
    cfg.write_text(yaml.safe_dump({"models": [{"name": "mlp_mixer", "label": "../../evil",
                                               "kwargs": {"dim": 16, "depth": 1}}], "families": ["overlap"],
                                   "augments": ["none"], "train": {"epochs": 1}, "device": "cpu"}))
    out = tmp_path / "r"
    assert main(["evaluate", str(cfg), "--data", str(tiny_dataset[1]), "--out", str(out), "--no-progress"]) == 0
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert all(out in p.parents or p == cfg for p in written)
    assert (out / "ds" / "overlap" / "evil__none__nall__s0.json").is_file()


def test_build_writes_plots_inside_its_folder_whatever_the_result_files_say(tmp_path):
    from ctrlshift import results as res

    from .test_evaluation import fake_result_json

    data = fake_result_json("cnn", 0, [0.9, 0.8, 0.7])
    data["dataset"]["name"] = "../../outside"
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "a.json").write_text(json.dumps(data))
    assert res.read_result(tmp_path / "r" / "a.json").dataset.name == "../../outside"
    assert main(["build", str(tmp_path / "r")]) == 0
    assert not list(tmp_path.parent.glob("outside*"))
    assert sorted(p.name for p in (tmp_path / "r" / "plots").iterdir())[0].startswith("outside")


def test_export_class_folders_are_safe(tiny_dataset, tmp_path):
    ds = hostile_copy(tiny_dataset, tmp_path, lambda m: m.update(class_names=["../a", "/b", "c", "d"]))
    assert main(["export", str(ds), "--out", str(tmp_path / "x"), "--no-progress"]) == 0
    folders = {p.name for p in (tmp_path / "x" / "overlap-30" / "test").iterdir()}
    assert all(is_safe(f) for f in folders) and {"0_a", "1_b"} <= folders


def test_embedded_model_names_stay_in_the_assets_folder():
    from ctrlshift.embedded import embedded_path

    for name in ("ctrlshift://../configs", "ctrlshift://tiny-mnist/../../x", "ctrlshift://.", "ctrlshift://"):
        with pytest.raises(ConfigError, match="no embedded model"):
            embedded_path(name, "decoder.source")
