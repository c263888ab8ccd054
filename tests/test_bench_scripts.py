"""The speed benchmarks run (CI's smoke test of `--quick`): their JSON carries every key the docs
table reads. No timing is asserted; speed is what the scripts print."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_generate_quick_writes_its_json(tmp_path):
    out = tmp_path / "g.json"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_generate.py"), "--quick", "--images", "16",
                    "--batch", "8", "--json", str(out)], check=True, capture_output=True, timeout=600)
    r = json.loads(out.read_text())
    assert {"device", "torch", "workloads"} <= set(r)
    w = r["workloads"][0]
    assert {"reference", "ctrlshift", "job"} <= set(w["img_per_s"])
    for key in ("speedup", "job_over_decode", "job_over_decode_marginal", "flops_per_image", "bytes_ratio_2n_over_n"):
        assert w[key] is not None and w[key] > 0
    assert "mfu" in w  # None on a CPU


@pytest.mark.slow
def test_bench_train_quick_writes_its_json(tmp_path):
    out = tmp_path / "t.json"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_train.py"), "--quick", "--epochs", "1",
                    "--json", str(out)], check=True, capture_output=True, timeout=600)
    r = json.loads(out.read_text())
    assert set(r["img_per_s"]) == {"usual", "ctrlshift"} and r["speedup"] > 0
    assert all(0 <= v <= 1 for v in r["test_top1"].values())
