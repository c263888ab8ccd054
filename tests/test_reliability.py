"""What readers verify, what `check` reports, one dataset per folder, the decoder contract, and
evaluate's resume refusing stale state."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml

from ctrlshift.cli import main
from ctrlshift.dataset import Dataset
from ctrlshift.dataset.check import check_dataset

from .helpers import tiny_config


def copy(tiny_dataset, tmp_path):
    cfg, ds = tiny_dataset
    out = tmp_path / "ds"
    shutil.copytree(ds, out)
    return cfg, out


def files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".ctrlshift" not in p.parts}


def test_check_passes_a_clean_dataset(tiny_dataset, capsys):
    assert main(["check", str(tiny_dataset[1])]) == 0
    assert capsys.readouterr().out.startswith(f"ok: {tiny_dataset[1]}: 4 configs, 16 shards, 56 images verified")


def test_check_reports_every_problem(tiny_dataset, tmp_path, capsys):
    _, ds = copy(tiny_dataset, tmp_path)
    shards = [r["path"] for r in json.loads((ds / "manifest.json").read_text())["shards"]]
    flip = ds / shards[0]
    data = bytearray(flip.read_bytes())
    data[100] ^= 4
    flip.write_bytes(bytes(data))
    (ds / shards[1]).write_bytes((ds / shards[1]).read_bytes()[:50])
    (ds / shards[2]).unlink()
    shutil.copy(ds / shards[3], ds / "data" / "overlap-0" / "extra.parquet")
    card = (ds / "README.md").read_text()
    (ds / "README.md").write_text(card.replace("config_name: overlap-30", "config_name: overlap-31"))
    assert main(["check", str(ds)]) == 1
    err = capsys.readouterr().err
    assert f"{flip}: checksum does not match the manifest" in err
    assert f"{ds / shards[1]}: checksum does not match" in err
    assert f"{ds / shards[2]}: listed in the manifest but missing" in err
    assert "extra.parquet: not part of the dataset" in err
    assert "README.md: its configs" in err
    assert err.strip().splitlines()[-1].startswith("5 problem(s) in ")
    problems, _ = check_dataset(ds)
    assert len(problems) == 5


def test_readers_verify_shards_once_per_unchanged_file(tiny_dataset, tmp_path, monkeypatch):
    import ctrlshift.dataset.reader as reader

    _, ds_path = copy(tiny_dataset, tmp_path)
    calls = []
    real = reader.sha256_file
    monkeypatch.setattr(reader, "sha256_file", lambda p: (calls.append(p), real(p))[1])
    ds = Dataset.open(ds_path)
    ds.load("overlap-30", "test")
    ds.load("overlap-30", "test")
    assert len(calls) == 2  # two shards, hashed once each
    shard = ds.shards("overlap-30", "test")[0]
    data = bytearray(shard.read_bytes())
    data[-20] ^= 1  # the parquet footer: still a "readable" file
    shard.write_bytes(bytes(data))
    with pytest.raises(reader.DatasetError, match="checksum does not match the manifest"):
        ds.load("overlap-30", "test")


def test_stray_files_are_refused_before_the_card(tiny_dataset, tmp_path, capsys):
    cfg, ds = copy(tiny_dataset, tmp_path)
    stray = ds / "data" / "overlap-0" / "test-00007-of-00009.parquet"
    shutil.copy(next((ds / "data" / "overlap-0").glob("test-*")), stray)
    before = files(ds)
    assert main(["generate", str(cfg), "--out", str(ds), "--no-progress"]) == 2
    assert f"{stray}: not written by this config" in capsys.readouterr().err
    assert files(ds) == before
    assert main(["generate", str(cfg), "--out", str(ds), "--no-progress", "--overwrite"]) == 0
    assert not stray.exists() and files(ds) == files(tiny_dataset[1])


@pytest.mark.parametrize("change", ["output.shard_size=3", "splits.test.size=5", "shifts.0.values=[90,100,120]",
                                    "runtime.batch_size=5"])
def test_a_changed_config_is_refused_or_replaced_cleanly(tiny_dataset, tmp_path, change, capsys):
    cfg, ds = copy(tiny_dataset, tmp_path)
    before = files(ds)
    assert main(["generate", str(cfg), change, "--out", str(ds), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "made with other settings" in err or "not written by this config" in err
    assert files(ds) == before
    assert main(["generate", str(cfg), change, "--out", str(ds), "--no-progress", "--overwrite"]) == 0
    fresh = tmp_path / "fresh" / "ds"
    assert main(["generate", str(cfg), change, "--out", str(fresh), "--no-progress"]) == 0
    assert files(ds) == files(fresh)  # nothing of the old config is left
    assert check_dataset(ds)[0] == []


# -- the decoder contract ------------------------------------------------------------------------

class BadG(torch.nn.Module):
    """A G(z, y) that breaks the contract in the way ``mode`` names."""

    latent_shape = (1, 4, 4)
    num_classes = 4

    def __init__(self, mode="nan"):
        super().__init__()
        self.mode = mode

    def forward(self, z, y):
        x = torch.tanh(z).expand(-1, 3, -1, -1).clone()
        if self.mode == "nan":
            x[1:] = float("nan")
        elif self.mode == "inf":
            x[0, 0, 0, 0] = float("inf")
        elif self.mode == "int":
            return (x * 100).long()
        elif self.mode == "complex":
            return x.to(torch.complex64)
        elif self.mode == "shape":
            return x[:, :, :, 0]
        elif self.mode == "boom":
            raise RuntimeError("boom in the generator")
        return x


@pytest.mark.parametrize("mode, fragment", [
    ("nan", "decoder returned 96 non-finite values (of 144) (in batch 0 of "),
    ("inf", "decoder returned 1 non-finite values"),
    ("int", "decoder output is torch.int64; expected floating point"),
    ("complex", "decoder output is torch.complex64"),
    ("shape", "decoder output has shape [3, 3, 4]; expected [N, C, H, W]"),
    ("boom", "decoder 'torch' failed in batch 0 of truncation-90/train shard 0: RuntimeError: boom in the generator; "
             "run with -v for the traceback"),
])
def test_bad_decoder_output_stops_with_one_line_and_writes_no_shard(tmp_path, capsys, mode, fragment):
    cfg = tiny_config("tests.test_reliability:BadG", **{"decoder.backend": "torch", "decoder.latent_shape": [1, 4, 4],
                                                       "decoder.options": {"kwargs": {"mode": mode}}})
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["generate", str(path), "--out", str(tmp_path / "ds"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err
    assert not list((tmp_path / "ds").rglob("*.parquet"))


def test_a_real_model_driven_to_nan_is_stopped(tiny_dataset, tmp_path, capsys):
    cfg, _ = tiny_dataset
    assert main(["generate", str(cfg), "shifts=[{family: truncation, values: [1e30]}]", "--out", str(tmp_path / "ds"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "non-finite values" in err and "truncation-1e+30/test shard 0" in err
    assert not (tmp_path / "ds" / "data" / "truncation-1e+30").exists()  # nothing of that shard


def test_a_good_torch_decoder_still_works(tmp_path):
    cfg = tiny_config("tests.test_reliability:BadG", **{"decoder.backend": "torch", "decoder.latent_shape": [1, 4, 4],
                                                       "decoder.options": {"kwargs": {"mode": "ok"}}})
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["generate", str(path), "--out", str(tmp_path / "ds"), "--no-progress"]) == 0
    assert check_dataset(tmp_path / "ds")[0] == []


# -- evaluate resume ------------------------------------------------------------------------------

@pytest.fixture
def eval_cfg(tmp_path):
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump({"models": [{"name": "mlp_mixer", "kwargs": {"dim": 16, "depth": 1}}],
                                    "augments": ["crop"], "families": ["overlap"],
                                    "train": {"epochs": 2, "batch_size": 8, "channels_last": False}, "device": "cpu"}))
    return path


def test_evaluate_refuses_a_result_made_with_other_settings(tiny_dataset, eval_cfg, tmp_path, capsys):
    out = tmp_path / "r"
    base = ["evaluate", str(eval_cfg), "--data", str(tiny_dataset[1]), "--out", str(out), "--no-progress"]
    assert main(base) == 0
    result = out / "ds" / "overlap" / "mlp_mixer__crop__nall__s0.json"
    first = json.loads(result.read_text())
    assert first["fingerprint"] and len(first["training"]["history"]) == 2
    assert main(base + ["train.epochs=1"]) == 2
    assert "a result of this run made with other settings; use --overwrite" in capsys.readouterr().err
    assert json.loads(result.read_text()) == first
    assert main(base + ["train.epochs=1", "--overwrite"]) == 0
    assert len(json.loads(result.read_text())["training"]["history"]) == 1


def test_evaluate_resume_refuses_a_stale_checkpoint_and_restarts_from_a_truncated_one(
        tiny_dataset, eval_cfg, tmp_path, capsys):
    from ctrlshift.evaluation.train import Checkpoint

    out = tmp_path / "r"
    base = ["evaluate", str(eval_cfg), "--data", str(tiny_dataset[1]), "--out", str(out), "--no-progress"]
    ckpt_dir = out / "ds" / "overlap" / "checkpoints" / "mlp_mixer__crop__nall__s0"
    ckpt_dir.mkdir(parents=True)
    torch.save({"fingerprint": "another run", "epoch": 1}, ckpt_dir / "checkpoint.pt")
    assert main(base) == 2
    assert "a checkpoint of this run made with other settings" in capsys.readouterr().err
    (ckpt_dir / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated")
    assert main(base) == 0
    assert "unreadable checkpoint" in capsys.readouterr().err
    ref = tmp_path / "ref"
    assert main(["evaluate", str(eval_cfg), "--data", str(tiny_dataset[1]), "--out", str(ref), "--no-progress"]) == 0
    a = json.loads((out / "ds/overlap/mlp_mixer__crop__nall__s0.json").read_text())
    b = json.loads((ref / "ds/overlap/mlp_mixer__crop__nall__s0.json").read_text())
    assert a["metrics"] == b["metrics"] and a["fingerprint"] == b["fingerprint"]
    assert Checkpoint(None).path is None


def test_a_run_that_fails_before_any_shard_leaves_no_folder(tiny_dataset, tmp_path, capsys):
    cfg, _ = tiny_dataset
    out = tmp_path / "new"
    assert main(["generate", str(cfg), f"decoder.source={tmp_path / 'no-model'}", "--out", str(out)]) == 2
    assert "decoder.source" in capsys.readouterr().err
    assert not out.exists()
