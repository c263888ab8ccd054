"""Fault injection: SIGKILL real `generate` and `evaluate` processes at seeded random points, resume,
and compare with an uninterrupted run.

CI runs a reduced count (``CTRLSHIFT_FAULT_TRIALS``, default 4 kill points plus one double kill);
set it higher for a longer soak, e.g. ``CTRLSHIFT_FAULT_TRIALS=40 python -m pytest tests/test_faults.py``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from .helpers import tiny_config

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
TRIALS = int(os.environ.get("CTRLSHIFT_FAULT_TRIALS", "4"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def start(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ctrlshift", *args], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


def run(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ctrlshift", *args], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def wait_for(cond, proc, timeout=120) -> bool:
    """Poll ``cond`` until it holds (True) or the process ends first (False)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return True
        if proc.poll() is not None:
            return cond()
        time.sleep(0.005)
    raise TimeoutError


def kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def published(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".ctrlshift" not in p.parts}


def indices(root: Path) -> dict[str, list[int]]:
    return {str(p.relative_to(root)): pq.read_table(p, columns=["index"]).column("index").to_pylist()
            for p in sorted((root / "data").rglob("*.parquet"))}


@pytest.fixture(scope="module")
def setup(tiny_unet_dir, tmp_path_factory):
    """A config with many small shards, and its uninterrupted run (in a subprocess, like the trials)."""
    root = tmp_path_factory.mktemp("faults")
    cfg = root / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tiny_unet_dir, **{"output.shard_size": 2, "sampler.steps": 3})))
    ref = root / "ds"
    proc = run("generate", str(cfg), "--out", str(ref), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return cfg, ref, root


def kill_points(n: int, seed: int = 0) -> list[tuple[str, float]]:
    """Seeded kill points: after the k-th shard record, a delay after the first record, or while
    the manifest, the card or the grids are written."""
    rng = random.Random(seed)
    kinds = ["record", "delay", "manifest", "card", "grids"]
    return [(kinds[i % len(kinds)], rng.random()) for i in range(n)]


def trigger(kind: str, x: float, out: Path, shards: int):
    records = out / ".ctrlshift" / "shards"
    count = lambda: len(list(records.glob("*.json"))) if records.is_dir() else 0  # noqa: E731
    if kind == "record":
        k = 1 + int(x * (shards - 1))
        return lambda: count() >= k
    if kind == "delay":
        state = {}

        def after_delay():
            if count() >= 1 and "t" not in state:
                state["t"] = time.time()
            return "t" in state and time.time() - state["t"] > x * 0.5
        return after_delay
    target = {"manifest": "manifest.json", "card": "README.md", "grids": "grids"}[kind]
    return lambda: (out / target).exists() or any(out.glob(f".tmp-{target}*"))


@pytest.mark.parametrize("trial", range(TRIALS))
def test_generate_killed_at_a_random_point_resumes_to_the_same_bytes(setup, trial, tmp_path):
    cfg, ref, _ = setup
    shards = len(json.loads((ref / "manifest.json").read_text())["shards"])
    kind, x = kill_points(TRIALS)[trial]
    out = tmp_path / "ds"
    proc = start("generate", str(cfg), "--out", str(out), "--no-progress")
    wait_for(trigger(kind, x, out, shards), proc)
    kill(proc)
    resumed = run("generate", str(cfg), "--out", str(out), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert published(out) == published(ref), f"kill point {kind} {x:.2f}"
    assert indices(out) == indices(ref)  # nothing lost, nothing duplicated
    assert run("check", str(out)).returncode == 0


def test_generate_killed_twice_before_resuming(setup, tmp_path):
    cfg, ref, _ = setup
    out = tmp_path / "ds"
    for k in (3, 9):
        proc = start("generate", str(cfg), "--out", str(out), "--no-progress")
        wait_for(lambda: len(list((out / ".ctrlshift" / "shards").glob("*.json"))) >= k
                 if (out / ".ctrlshift" / "shards").is_dir() else False, proc)
        kill(proc)
    assert run("generate", str(cfg), "--out", str(out), "--no-progress").returncode == 0
    assert published(out) == published(ref) and indices(out) == indices(ref)


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def test_one_of_two_ranks_killed_then_the_rerun_completes(setup, tmp_path):
    cfg, ref, _ = setup
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "ctrlshift", "generate", str(cfg), "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    wait_for(lambda: (out / ".ctrlshift" / "shards").is_dir() and
             len(list((out / ".ctrlshift" / "shards").glob("*.json"))) >= 4, proc, timeout=240)
    workers = children(proc.pid)
    assert len(workers) == 2, workers
    os.kill(workers[1], signal.SIGKILL)
    t0 = time.time()
    proc.wait(timeout=120)  # the agent notices and stops the other rank
    assert proc.returncode != 0 and time.time() - t0 < 120
    assert all(not Path(f"/proc/{w}").exists() or "zombie" in Path(f"/proc/{w}/status").read_text().lower()
               for w in workers)
    again = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    a, b = published(out), published(ref)
    ma, mb = json.loads(a.pop("manifest.json")), json.loads(b.pop("manifest.json"))
    assert a == b and indices(out) == indices(ref)  # every shard, the card and the grids
    assert ma["dataset_hash"] == mb["dataset_hash"] and ma["num_processes"] == 2


def test_evaluate_killed_mid_training_resumes_to_the_same_result(setup, tmp_path):
    _, ref, root = setup
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(yaml.safe_dump({"models": [{"name": "resnet20", "kwargs": {"width": 0.25}}],
                                   "families": ["overlap"], "augments": ["crop"],
                                   "train": {"epochs": 6, "batch_size": 4, "channels_last": False}, "device": "cpu"}))
    clean = run("evaluate", str(cfg), "--data", str(ref), "--out", str(tmp_path / "clean"), "--no-progress")
    assert clean.returncode == 0, clean.stderr[-2000:]
    out = tmp_path / "killed"
    ckpt = out / "ds" / "overlap" / "checkpoints" / "resnet20__crop__nall__s0" / "checkpoint.pt"
    proc = start("evaluate", str(cfg), "--data", str(ref), "--out", str(out), "--no-progress")
    assert wait_for(ckpt.is_file, proc)  # killed after an epoch's checkpoint, before the last epoch
    kill(proc)
    assert not (out / "ds" / "overlap" / "resnet20__crop__nall__s0.json").exists()
    resumed = run("evaluate", str(cfg), "--data", str(ref), "--out", str(out), "--no-progress")
    assert resumed.returncode == 0 and "resumed training at epoch" in resumed.stderr, resumed.stderr[-2000:]
    a, b = (json.loads((d / "ds/overlap/resnet20__crop__nall__s0.json").read_text()) for d in (out, tmp_path / "clean"))
    # Timings may differ; everything measured must not.
    for r in (a, b):
        r["training"].pop("seconds")
        for h in r["training"]["history"]:
            h.pop("img_per_s")
    assert a["metrics"] == b["metrics"] and a["summary"] == b["summary"] and a["training"] == b["training"]
