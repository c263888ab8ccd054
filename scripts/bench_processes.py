"""Scaling over processes: the generate job on one process against N, each with the same resources.

Shards are independent, so N processes (``torchrun --nproc_per_node N``, as ``accelerate launch``
starts them) should write the same dataset N times as fast. On a CPU each process gets the same
number of intra-op threads (``--threads``, default 1), so N processes use N times the cores of
one; on a machine with N GPUs each process gets one. The script times, for 1 and for N processes:
the whole command (process start, imports, model loading, the manifest) and the shard-writing part
that each rank logs; the throughput of N processes is the images over the slowest rank's time. It
checks that both runs wrote the same shards, byte for byte.

    python scripts/bench_processes.py --processes 2           # the 2-core CPU: about a minute and a half
    python scripts/bench_processes.py --processes 8 --device cuda --images 4000 --json procs.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

RANK_LINE = re.compile(r"(?:rank (\d+): )?(\d+) images in ([\d.]+)s, decoding ([\d.]+)s")


def run_job(cfg_path: Path, out: Path, procs: int, threads: int, device: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs),
           "-m", "ctrlshift", "-v", "generate", str(cfg_path), f"runtime.device={device}", "--out", str(out),
           "--no-progress"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{procs} processes failed:\n{proc.stderr[-3000:]}")
    ranks = {}
    for m in RANK_LINE.finditer(proc.stderr):
        ranks[int(m.group(1) or 0)] = {"images": int(m.group(2)), "seconds": float(m.group(3)),
                                       "decoding_seconds": float(m.group(4))}
    if len(ranks) != procs:
        raise SystemExit(f"expected {procs} rank timings in the log, found {sorted(ranks)}")
    images = sum(r["images"] for r in ranks.values())
    slowest = max(r["seconds"] for r in ranks.values())
    return {"processes": procs, "wall_seconds": wall, "ranks": ranks, "images": images,
            "img_per_s_writing": images / slowest, "img_per_s_wall": images / wall}


def shard_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "data").rglob("*.parquet"))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--processes", type=int, default=2, help="N (default 2)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per process on a CPU (default 1)")
    p.add_argument("--images", type=int, default=1024, help="test images in all (default 1024)")
    p.add_argument("--shard-size", type=int, default=32)
    p.add_argument("--device", default="cpu", help="cpu, or cuda (one GPU per process)")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    import bench_generate as bg

    spec = bg.WORKLOADS["edm-quick"]
    torch.manual_seed(0)
    net = spec["cls"](**spec["kwargs"]).eval().requires_grad_(False)
    shape = [spec["kwargs"]["img_channels"], spec["kwargs"]["img_resolution"], spec["kwargs"]["img_resolution"]]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = bg.edm_folder(net, spec["kwargs"], tmp / "net")
        cfg = bg.job_config(folder, shape, spec["kwargs"]["label_dim"], spec["steps"], args.images,
                            {"batch_size": args.shard_size, "encode_workers": 1})
        cfg_path = tmp / "cfg.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg))
        for n in (1, args.processes):
            rows[n] = run_job(cfg_path, tmp / f"p{n}", n, args.threads, args.device)
        same = shard_bytes(tmp / "p1") == shard_bytes(tmp / f"p{args.processes}")
    one, many = rows[1], rows[args.processes]
    result = {"benchmark": "processes", "device_type": args.device, "machine": platform.processor() or
              platform.machine(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d"), "threads_per_process": args.threads, "runs": list(rows.values()),
              "scaling_writing": many["img_per_s_writing"] / one["img_per_s_writing"],
              "scaling_wall": many["img_per_s_wall"] / one["img_per_s_wall"], "same_shards": same}
    print(f"{args.images} images of the quick EDM network on {args.device}, {args.threads} thread(s) per process, "
          f"{os.cpu_count()} cores")
    print(f"{'processes':>9} {'wall s':>8} {'img/s (wall)':>13} {'writing s':>10} {'img/s (writing)':>16}")
    for r in rows.values():
        slowest = max(x["seconds"] for x in r["ranks"].values())
        print(f"{r['processes']:9d} {r['wall_seconds']:8.1f} {r['img_per_s_wall']:13.1f} {slowest:10.1f} "
              f"{r['img_per_s_writing']:16.1f}")
    n = args.processes
    print(f"{n} processes: {result['scaling_writing']:.2f}x one in shard writing ({result['scaling_writing'] / n:.2f} "
          f"of {n}x), {result['scaling_wall']:.2f}x end to end; shards byte-identical: {same}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
