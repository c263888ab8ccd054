"""The generate job end to end on a tiny random UNet: format, resume, locking, determinism."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from ctrlshift.cli import main
from ctrlshift.config import load_config
from ctrlshift.dataset import format as writer
from ctrlshift.dataset import iter_rows
from ctrlshift.files import sha256_file
from ctrlshift.generator.decoders import RuntimeConfig, create_decoder
from ctrlshift.generator.shifts import sample_seed
from ctrlshift.generator.spec import GenerateConfig

from .helpers import tiny_config


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and writer.STATE_DIR not in p.parts}


def run(cfg_path, out, *extra) -> int:
    return main(["generate", str(cfg_path), "--out", str(out), "--no-progress", *extra])


@pytest.fixture
def reference(tiny_dataset):
    """The shared clean single-process run that other tests compare against."""
    return tiny_dataset


def test_dataset_opens_with_datasets_and_carries_provenance(reference):
    datasets = pytest.importorskip("datasets", reason="needs the datasets library")
    cfg, out = reference
    ds = datasets.load_dataset(str(out), "overlap-30", split="test")
    assert len(ds) == 7
    assert ds.features["label"].names == ["class_0", "class_1", "class_2", "class_3"]
    row = ds[5]
    assert row["image"].size == (8, 8) and row["image"].mode == "RGB"
    assert row["index"] == 5 and row["seed"] == sample_seed(3, 5)
    assert row["family"] == "overlap" and row["value"] == 30.0
    assert row["intensity"] == pytest.approx(0.3 * np.pi)
    train = datasets.load_dataset(str(out), "truncation-90", split="train")
    assert sorted(train["index"]) == list(range(10))
    assert np.bincount(train["label"], minlength=4).tolist() in ([3, 3, 2, 2], [3, 2, 3, 2], [2, 3, 3, 2],
                                                                  [3, 2, 2, 3], [2, 3, 2, 3], [2, 2, 3, 3])


def test_layout_manifest_and_card(reference):
    _, out = reference
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["configs"]) == {"truncation-90", "truncation-110", "overlap-0", "overlap-30"}
    assert manifest["configs"]["truncation-90"]["splits"] == {"train": {"num_examples": 10, "seed": 1},
                                                             "val": {"num_examples": 4, "seed": 2},
                                                             "test": {"num_examples": 7, "seed": 3}}
    assert "train" not in manifest["configs"]["truncation-110"]["splits"]  # train only at the base value
    assert manifest["configs"]["overlap-30"]["outside_fraction"] > manifest["configs"]["overlap-0"]["outside_fraction"]
    assert manifest["generator"]["backend"] == "diffusers-unet" and manifest["num_processes"] == 1
    assert manifest["config"]["sampler"]["steps"] == 2  # the resolved config travels with the data
    for rec in manifest["shards"]:
        assert sha256_file(out / rec["path"]) == rec["sha256"]
    assert (out / "data/truncation-90/train-00002-of-00003.parquet").is_file()  # 10 rows, shards of 4
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "config_name: overlap-30" in card and "dataset_hash" in card
    assert (out / "grids" / "overlap.png").is_file() and (out / "grids" / "overlap-30.png").is_file()


def test_resume_after_a_crash_mid_run_redoes_only_missing_work(reference, tmp_path, monkeypatch):
    cfg, ref = reference
    out = tmp_path / "ds"  # the same folder name as the reference (the card quotes it)
    real = writer.write_shard
    calls = []

    def crash_after_three(*args, **kwargs):
        if len(calls) == 3:
            raise KeyboardInterrupt  # as if the process were killed mid-run
        calls.append(args[1].rel_path)
        return real(*args, **kwargs)

    monkeypatch.setattr(writer, "write_shard", crash_after_three)
    assert run(cfg, out) == 130
    assert not (out / "manifest.json").exists()
    # A half-written temporary shard, as a kill during the write would leave.
    tmp = out / "data" / "overlap-0" / ".tmp-test-00000-of-00002.parquet-999"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_bytes(b"partial")
    monkeypatch.setattr(writer, "write_shard", lambda *a, **k: (calls.append(a[1].rel_path), real(*a, **k))[1])
    assert run(cfg, out) == 0
    assert len(calls) == len(set(calls)) == 16  # every shard written exactly once across both runs
    assert files(out) == files(ref) and not tmp.exists()


def test_damaged_shard_is_detected_and_rewritten(reference, tmp_path):
    import shutil

    cfg, ref = reference
    out = tmp_path / "ds"  # the same folder name as the reference (the card quotes it)
    shutil.copytree(ref, out)
    victim = out / "data" / "overlap-30" / "test-00001-of-00002.parquet"
    victim.write_bytes(victim.read_bytes()[:100])
    other = out / "data" / "overlap-30" / "test-00000-of-00002.parquet"
    before = other.stat().st_mtime_ns
    assert run(cfg, out) == 0
    assert files(out) == files(ref)
    assert other.stat().st_mtime_ns == before  # the verified shard was not touched


def test_other_settings_are_refused_unless_overwrite(reference, tmp_path, capsys):
    import shutil

    cfg, ref = reference
    out = tmp_path / "ds"  # the same folder name as the reference (the card quotes it)
    shutil.copytree(ref, out)
    snapshot = files(out)
    assert run(cfg, out, "sampler.steps=3") == 2
    assert "made with other settings than this config" in capsys.readouterr().err
    assert files(out) == snapshot  # nothing damaged
    assert run(cfg, out, "sampler.steps=3", "--overwrite") == 0
    assert files(out) != snapshot


def test_a_second_run_on_the_same_folder_is_locked_out(reference, tmp_path, capsys):
    cfg, _ = reference
    out = tmp_path / "ds"  # the same folder name as the reference (the card quotes it)
    lock = writer.folder_lock(out)
    lock.acquire()
    try:
        pid = os.fork()
        if pid == 0:  # another process tries the same folder
            os._exit(run(cfg, out))
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 2
    finally:
        lock.release()
    assert not (out / "data").exists()


def test_batch_size_is_part_of_the_settings(reference, tmp_path, capsys):
    """The batch size is in each shard's fingerprint (a network's kernels may round a sample
    differently in batches of other sizes): a rerun with another one is other settings. Seeds,
    labels and indices never depend on it, and pixels at most by rounding."""
    import shutil

    cfg, ref = reference
    out = tmp_path / "ds"  # the same folder name as the reference (the card quotes it)
    shutil.copytree(ref, out)
    assert run(cfg, out, "runtime.batch_size=4") == 2
    assert "made with other settings" in capsys.readouterr().err
    fresh = tmp_path / "fresh" / "ds"
    assert run(cfg, fresh, "runtime.batch_size=4") == 0
    for path in (ref / "data").rglob("*.parquet"):
        a = pq.read_table(path).to_pydict()
        b = pq.read_table(fresh / path.relative_to(ref)).to_pydict()
        assert a["seed"] == b["seed"] and a["label"] == b["label"] and a["index"] == b["index"]
        for x, y in zip(a["image"], b["image"]):
            diff = np.abs(writer.decode_png(x["bytes"]).astype(int) - writer.decode_png(y["bytes"]).astype(int))
            assert diff.max() <= 1, path


def test_latents_regenerate_a_single_image(reference, tmp_path):
    cfg_path, ref = reference
    npz = tmp_path / "z.npz"
    assert main(["latents", str(cfg_path), "--family", "overlap", "--value", "30", "--split", "test",
                 "--indices", "4:6", "--out", str(npz)]) == 0
    data = np.load(npz)
    assert data["latents"].shape == (2, 3, 8, 8)
    rows = [r for r in iter_rows(ref, "overlap-30", "test") if r["index"] in (4, 5)]
    assert data["seeds"].tolist() == [r["seed"] for r in rows]
    assert data["labels"].tolist() == [r["label"] for r in rows]
    cfg = load_config(GenerateConfig, cfg_path)
    dec = create_decoder(cfg.decoder, cfg.sampler, RuntimeConfig(device="cpu"))
    images = dec.decode(torch.from_numpy(data["latents"]).reshape(2, -1), torch.from_numpy(data["labels"]))
    assert writer.encode_png(images.numpy()) == [r["image"] for r in rows]


def test_latents_need_the_shape_in_the_config(write_config, tiny_unet_dir, tmp_path, capsys):
    cfg = tiny_config(tiny_unet_dir)
    del cfg["decoder"]["latent_shape"]
    path = write_config(cfg)
    assert main(["latents", str(path), "--family", "overlap", "--value", "0", "--split", "test",
                 "--indices", "0:2", "--out", str(tmp_path / "z.npy")]) == 2
    assert "decoder.latent_shape: needed to draw latents" in capsys.readouterr().err


def test_dry_run_prints_the_plan_and_writes_nothing(reference, tmp_path, capsys):
    cfg, _ = reference
    assert main(["generate", str(cfg), "--out", str(tmp_path / "o"), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "4 configs, 16 shards, 56 images" in text
    assert "2 network calls per batch of 3" in text and "overlap-30" in text
    assert not (tmp_path / "o").exists()


def test_export_imagefolder(reference, tmp_path):
    _, ref = reference
    assert main(["export", str(ref), "--format", "imagefolder", "--out", str(tmp_path / "f"), "--no-progress"]) == 0
    pngs = sorted((tmp_path / "f").rglob("*.png"))
    assert len(pngs) == 56  # 2 families x (10 train + 4 val) + 4 configs x 7 test
    assert {p.parent.parent.name for p in pngs} == {"train", "val", "test"}
    assert all(p.parent.name.split("_")[0].isdigit() for p in pngs)
    import torchvision

    folder = torchvision.datasets.ImageFolder(str(tmp_path / "f" / "overlap-30" / "test"))
    assert folder.classes == sorted(folder.classes) and len(folder) == 7


def test_class_subset_and_class_conditional_shift(write_config, tiny_unet_dir, tmp_path):
    cfg = tiny_config(tiny_unet_dir, **{"decoder.classes": [3, 1], "decoder.num_classes": 2,
                                        "decoder.class_names": ["three", "one"]})
    cfg["shifts"] = [{"family": "overlap", "values": [0, 30], "classes": [1]}]
    out = tmp_path / "ds"  # the same folder name as the reference (the card quotes it)
    assert run(write_config(cfg), out) == 0
    rows = list(iter_rows(out, "overlap-30", "test"))
    assert {(r["label"], r["model_label"]) for r in rows} == {(0, 3), (1, 1)}
    base = {r["index"]: r["image"] for r in iter_rows(out, "overlap-0", "test")}
    for r in rows:  # class 0 ("three") is not shifted: same image as at the base value
        assert (r["image"] == base[r["index"]]) == (r["label"] == 0)


@pytest.mark.slow
def test_two_processes_write_the_same_bytes(reference, tmp_path):
    cfg, ref = reference
    out = tmp_path / "ds"  # the same folder name as the reference (the card quotes it)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # runtime.device=auto on a machine without CUDA: both ranks must join one (gloo) group
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "ctrlshift", "generate", str(cfg), "runtime.device=auto", "--out", str(out), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=Path(__file__).parent.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = files(ref), files(out)
    assert a.keys() == b.keys()
    assert {k: v for k, v in a.items() if k != "manifest.json"} == {k: v for k, v in b.items() if k != "manifest.json"}
    ma, mb = json.loads(a["manifest.json"]), json.loads(b["manifest.json"])
    assert mb["num_processes"] == 2 and {r["rank"] for r in mb["shards"]} == {0, 1}
    for m in (ma, mb):  # how the run was spread (processes, threads) is recorded, and is all that differs
        m.pop("num_processes")
        m.pop("cpu_threads")
        for r in m["shards"]:
            r.pop("rank")
    assert ma == mb


@pytest.mark.slow
def test_the_cpu_thread_count_does_not_change_the_bytes(reference, tmp_path):
    cfg, ref = reference
    outs = {}
    for threads in ("1", "2"):
        out = tmp_path / threads / "ds"
        proc = subprocess.run([sys.executable, "-m", "ctrlshift", "generate", str(cfg), "--out", str(out), "--no-progress"],
                              capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": threads},
                              timeout=300, cwd=Path(__file__).parent.parent)
        assert proc.returncode == 0, proc.stderr[-2000:]
        outs[threads] = out
        assert json.loads((out / "manifest.json").read_text())["cpu_threads"] == int(threads)
    a, b = files(outs["1"]), files(outs["2"])
    a.pop("manifest.json"), b.pop("manifest.json")
    assert a == b


def test_manifest_records_latent_tv_and_the_paired_pixel_distance(tiny_dataset):
    from ctrlshift.dataset import Dataset

    ds = Dataset.open(tiny_dataset[1])
    base, shifted = ds.configs["overlap-0"], ds.configs["overlap-30"]
    assert base.total_variation == 0.0 and base.pixel_distance == 0.0
    assert 0 < shifted.total_variation <= 1 and shifted.pixel_distance > 0
    a, b = ds.load("overlap-0", "test"), ds.load("overlap-30", "test")
    by_hand = (a.images.double() - b.images.double()).abs().mean() / 255
    assert shifted.pixel_distance == pytest.approx(float(by_hand), rel=1e-9)
    assert ds.configs["truncation-110"].pixel_distance > 0
    assert "| TV (latent) | pixel distance |" in (tiny_dataset[1] / "README.md").read_text()


def test_every_file_is_written_once_and_shard_bytes_grow_linearly(write_config, tiny_unet_dir, tmp_path,
                                                                   monkeypatch):
    """What the job writes is O(N): each shard, record, manifest and card is put in place once
    (no shard or manifest rewritten as the run goes), and twice the images make twice the shards."""
    real, placed = os.replace, []
    monkeypatch.setattr(os, "replace", lambda src, dst, **kw: (placed.append(str(dst)), real(src, dst, **kw))[1])

    def run_size(test: int) -> tuple[int, list[str]]:
        placed.clear()
        cfg = write_config(tiny_config(tiny_unet_dir, **{"shifts": [{"family": "truncation", "values": [90]}],
                                                         "splits.train.size": 0, "splits.val.size": 0,
                                                         "splits.test.size": test, "output.grid": 0}),
                           f"cfg{test}.yaml")
        out = tmp_path / f"n{test}"
        assert run(cfg, out) == 0
        shard_bytes = sum(p.stat().st_size for p in (out / "data").rglob("*.parquet"))
        return shard_bytes, list(placed)

    n_bytes, n_placed = run_size(8)
    twice_bytes, twice_placed = run_size(16)
    assert any(p.endswith("manifest.json") for p in n_placed) and any(p.endswith("README.md") for p in n_placed)
    for placed_once in (n_placed, twice_placed):
        assert len(placed_once) == len(set(placed_once)), sorted(placed_once)
    assert sum(p.endswith(".parquet") for p in twice_placed) == 2 * sum(p.endswith(".parquet") for p in n_placed) == 4
    assert 1.8 < twice_bytes / n_bytes < 2.2


@pytest.mark.slow
def test_runtime_compile_decodes_what_the_eager_network_decodes(reference, tmp_path):
    """runtime.compile (torch.compile, inductor on the CPU) changes how the network runs, not what
    the dataset holds: the same images but for rare one-grey-level roundings."""
    cfg, ref = reference
    out = tmp_path / "ds"
    assert run(cfg, out, "runtime.compile=true", "splits.train.size=0", "splits.val.size=0") == 0
    for name in ("truncation-110", "overlap-30"):
        a = np.stack([writer.decode_png(r["image"]) for r in iter_rows(ref, name, "test", ["image"])]).astype(int)
        b = np.stack([writer.decode_png(r["image"]) for r in iter_rows(out, name, "test", ["image"])]).astype(int)
        assert a.shape == b.shape and np.abs(a - b).max() <= 1 and (a != b).mean() < 0.01, name
