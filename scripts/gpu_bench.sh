#!/usr/bin/env bash
# Every GPU benchmark in one run, for a lent GPU machine (docs/benchmarks.md). Its image has torch,
# timm, accelerate and transformers; diffusers and ctrlshift's other needs come as wheels in
# .wheels/ (here: `pip download diffusers safetensors pyarrow open_clip_torch -d .wheels`, then run
# this with .wheels carried). Writes $OUT/bench_generate.json, $OUT/bench_train.json, $OUT/log.
set -uo pipefail
OUT=${OUT:-/tmp/bench-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  pip install -q --no-index --find-links .wheels diffusers safetensors pyarrow 2>&1 | tail -2
  pip install -q --no-deps -e . 2>&1 | tail -1
  python scripts/bench_generate.py --workloads edm-cifar10 edm-imagenet64 dit-xl2 --images 800 --batch 800 \
      --compile --levers --json "$OUT/bench_generate.json"
  python -m ctrlshift generate tiny --out /tmp/tiny-bench splits.train.size=50000 \
      shifts='[{family: truncation, values: [90]}]' runtime.batch_size=2000 --no-progress
  python scripts/bench_train.py --data /tmp/tiny-bench --epochs 3 --json "$OUT/bench_train.json"
} 2>&1 | tee "$OUT/log"
