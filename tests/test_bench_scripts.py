"""The speed benchmarks run (CI's smoke test of `--quick`): their JSON carries every key the docs
table reads. No timing is asserted; speed is what the scripts print."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_script(name: str, tmp_path: Path, *args: str) -> dict:
    """Run ``scripts/NAME`` with ``args`` and ``--json``; returns the JSON it wrote."""
    out = tmp_path / f"{name}.json"
    subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args, "--json", str(out)], check=True,
                   capture_output=True, timeout=600)
    return json.loads(out.read_text())


@pytest.mark.slow
def test_bench_generate_quick_writes_its_json(tmp_path):
    r = run_script("bench_generate.py", tmp_path, "--quick", "--images", "16", "--batch", "8", "--repeat", "1")
    assert {"device", "torch", "workloads"} <= set(r)
    w = r["workloads"][0]
    assert {"reference", "ctrlshift", "job"} <= set(w["img_per_s"])
    for key in ("speedup", "job_over_decode", "job_over_decode_marginal", "flops_per_image", "bytes_ratio_2n_over_n",
                "shard_bytes_ratio_2n_over_n"):
        assert w[key] is not None and w[key] > 0
    assert 0 < w["decoder_share_of_job"] <= 1
    assert "mfu" in w  # None on a CPU


@pytest.mark.slow
def test_bench_train_quick_writes_its_json(tmp_path):
    r = run_script("bench_train.py", tmp_path, "--quick", "--epochs", "2")
    assert set(r["img_per_s"]) == {"usual", "ctrlshift"} and r["speedup"] > 0
    assert all(0 <= v <= 1 for v in r["test_top1"].values())
    assert r["img_per_s_after_first_epoch"]["usual"] > 0 and r["img_per_s_after_first_epoch"]["ctrlshift"] > 0


@pytest.mark.slow
def test_bench_precision_compares_two_versions_of_one_dataset(tmp_path):
    r = run_script("bench_precision.py", tmp_path, "--config", "tiny", "--epochs", "1")
    assert r["dtype"] == "bfloat16" and 0 < r["overall"]["differ"] < 1  # bf16 moves pixels, not all of them
    assert set(r["configs"]) == {f"{f}-{v}" for f, vs in [("truncation", (90, 100, 110)), ("extend", (50, 75, 100)),
                                                          ("overlap", (0, 20, 40))] for v in vs}
    for row in r["configs"].values():
        assert set(row) == {"train", "val", "test", "top1"} or set(row) == {"test", "top1"}
        assert 0 <= row["top1"]["predictions_changed"] <= 1


@pytest.mark.slow
def test_bench_processes_writes_the_same_shards_on_two_processes(tmp_path):
    r = run_script("bench_processes.py", tmp_path, "--processes", "2", "--images", "64")
    assert r["same_shards"] is True and [x["processes"] for x in r["runs"]] == [1, 2]
    assert set(r["runs"][1]["ranks"]) == {"0", "1"} and sum(x["images"] for x in r["runs"][1]["ranks"].values()) == 64
    assert r["scaling_writing"] > 0 and r["scaling_wall"] > 0
