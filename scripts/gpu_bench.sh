#!/usr/bin/env bash
# Every GPU benchmark, for a lent GPU machine (docs/benchmarks.md). Its image has torch, timm,
# accelerate and transformers; diffusers and ctrlshift's other needs come as wheels in .wheels/
# (here: `pip download diffusers safetensors pyarrow open_clip_torch -d .wheels`, then run this
# with .wheels carried). A lent machine allows 10 minutes a command, so the work comes in two
# stages of about 8 minutes each on an H100-class GPU:
#   bash scripts/gpu_bench.sh 1   # generation: EDM CIFAR-10 (with every lever), ImageNet-64, DiT-XL/2
#   bash scripts/gpu_bench.sh 2   # training (plain and train.compile) and bf16 pixels against fp32
# Writes JSON and a log per stage under $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/bench-out}
STAGE=${1:-1}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  pip install -q --no-index --find-links .wheels diffusers safetensors pyarrow 2>&1 | tail -2
  pip install -q --no-deps -e . 2>&1 | tail -1
  if [ "$STAGE" = 1 ]; then
    python scripts/bench_generate.py --workloads edm-cifar10 --images 800 --batch 400 --compile --levers \
        --json "$OUT/bench_generate_cifar10.json"
    python scripts/bench_generate.py --workloads edm-imagenet64 --images 400 --batch 200 --compile \
        --json "$OUT/bench_generate_imagenet64.json"
    python scripts/bench_generate.py --workloads dit-xl2 --images 256 --batch 128 --reference-batch 64 \
        --compile --json "$OUT/bench_generate_dit.json"
  else
    python -m ctrlshift generate tiny --out /tmp/tiny-bench splits.train.size=50000 splits.test.size=2000 \
        shifts='[{family: truncation, values: [90]}]' runtime.batch_size=2000 --no-progress
    # CIFAR size: the 16px digits resized to 32px for both paths (no CIFAR generator ships offline)
    python scripts/bench_train.py --data /tmp/tiny-bench --size 32 --epochs 3 --json "$OUT/bench_train.json"
    python scripts/bench_train.py --data /tmp/tiny-bench --size 32 --epochs 3 --compile \
        --json "$OUT/bench_train_compile.json"
    python scripts/bench_precision.py --json "$OUT/bench_precision.json"
  fi
} 2>&1 | tee "$OUT/log-$STAGE"
