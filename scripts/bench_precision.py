"""What lower precision does to the pixels: one dataset generated twice, float32 and bf16/fp16.

The same config (default: the quickstart's, on the embedded tiny MNIST generator) is generated
with ``runtime.dtype=float32`` and with a lower autocast dtype; the sampler state stays in float32
or float64 in both. The script then reports, per config and over all of them, the fraction of
pixel values and of images that differ, and by how many grey levels; and it trains one classifier
(the zoo's ResNet-20) on the float32 base value's training split and measures its test top-1 on
both versions of every config, with the fraction of test images whose predicted class changes.

    python scripts/bench_precision.py --quick                  # CPU, about a minute: bf16 on the tiny preset
    python scripts/bench_precision.py --dtype float16 --json precision.json   # a GPU: the quickstart data

The paper presets keep ``runtime.dtype: float32``; this measures what ``bfloat16`` would change.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def compare(a, b) -> dict:
    """Pixel differences between two versions of one split (uint8 ``[N, H, W, C]``)."""
    d = (a.images.to(torch.int16) - b.images.to(torch.int16)).abs()
    per_image = d.flatten(1).amax(1)
    return {"pixel_values": d.numel(), "differ": float((d > 0).double().mean()),
            "images_differ": float((per_image > 0).double().mean()),
            "mean_abs_grey_levels": float(d.double().mean()), "max_abs_grey_levels": int(d.max())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the tiny preset with 600 training images, 8 epochs: about a minute on a CPU")
    p.add_argument("--config", default=None, help="generate config (preset or YAML; default quickstart, --quick tiny)")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"], help="the lower precision")
    p.add_argument("--epochs", type=int, default=None, help="classifier epochs (default 15; --quick 8)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", help="keep the two datasets here (default: a temporary folder)")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    config = args.config or ("tiny" if args.quick else "quickstart")
    epochs = args.epochs or (8 if args.quick else 15)
    sizes = {"splits__train__size": 600} if args.quick else {}  # enough digits to learn from

    import ctrlshift
    from ctrlshift.evaluation.train import Preprocess, Recipe, TrainConfig, predict, train_classifier
    from ctrlshift.models import create_model

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        seconds, sets = {}, {}
        for dtype in ("float32", args.dtype):
            t0 = time.perf_counter()
            sets[dtype] = ctrlshift.generate(config, root / dtype, progress=False, runtime__dtype=dtype,
                                             runtime__device=str(device), output__grid=0, **sizes)
            seconds[dtype] = time.perf_counter() - t0
        full, low = sets["float32"], sets[args.dtype]
        base = next(iter(full.families().values())).base
        rows, totals, tests = {}, [], {}
        for name in full.configs:
            for split in full.configs[name].splits:
                a, b = full.load(name, split), low.load(name, split)
                rows.setdefault(name, {})[split] = compare(a, b)
                totals.append(rows[name][split])
                if split == "test":
                    tests[name] = a, b  # each split read once: the classifier below uses these
                if (name, split) == (base, "train"):
                    train = a
        pre = Preprocess.fit(train.images)
        torch.manual_seed(0)
        model = create_model("resnet20", full.num_classes, img_size=pre.img_size)
        cfg = TrainConfig(epochs=epochs, batch_size=64, optimizer="adamw", lr=0.003, weight_decay=0.05,
                          warmup_epochs=1.0)
        train_classifier(model, train, None, pre, Recipe(cfg, "crop", 0), progress=False, device=device)
        model.eval()
        for name, (a, b) in tests.items():
            pa, pb = predict(model, a, pre, device).argmax(1), predict(model, b, pre, device).argmax(1)
            rows[name]["top1"] = {"float32": float((pa == a.labels).double().mean()),
                                  args.dtype: float((pb == b.labels).double().mean()),
                                  "predictions_changed": float((pa != pb).double().mean()), "images": len(a)}
    n = sum(t["pixel_values"] for t in totals)
    overall = {"pixel_values": n, "differ": sum(t["differ"] * t["pixel_values"] for t in totals) / n,
               "mean_abs_grey_levels": sum(t["mean_abs_grey_levels"] * t["pixel_values"] for t in totals) / n,
               "max_abs_grey_levels": max(t["max_abs_grey_levels"] for t in totals)}
    tops = [r["top1"] for r in rows.values() if "top1" in r]
    overall["top1_float32"] = sum(t["float32"] for t in tops) / len(tops)
    overall[f"top1_{args.dtype}"] = sum(t[args.dtype] for t in tops) / len(tops)
    result = {"benchmark": "precision", "device": torch.cuda.get_device_name(device) if device.type == "cuda" else
              platform.processor() or platform.machine(), "device_type": device.type, "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d"), "config": config, "dtype": args.dtype, "epochs": epochs,
              "generate_seconds": seconds, "overall": overall, "configs": rows}
    print(f"device {result['device']} ({device.type}), torch {torch.__version__}; {config}: float32 against "
          f"{args.dtype}, generated in {seconds['float32']:.0f} s and {seconds[args.dtype]:.0f} s")
    print(f"{'config':<18} {'values differ':>13} {'images differ':>13} {'mean |d|':>9} {'max |d|':>7} "
          f"{'top-1 fp32':>10} {'top-1 ' + args.dtype:>15} {'preds changed':>13}")
    for name, r in rows.items():
        t = r.get("test") or next(iter(v for k, v in r.items() if k != "top1"))
        top = r.get("top1")
        tail = (f"{100 * top['float32']:9.1f}% {100 * top[args.dtype]:14.1f}% {100 * top['predictions_changed']:12.1f}%"
                if top else "")
        print(f"{name:<18} {100 * t['differ']:12.2f}% {100 * t['images_differ']:12.1f}% "
              f"{t['mean_abs_grey_levels']:9.3f} {t['max_abs_grey_levels']:7d} {tail}")
    print(f"all splits: {100 * overall['differ']:.2f}% of {n:,} pixel values differ, mean "
          f"{overall['mean_abs_grey_levels']:.3f} grey levels, max {overall['max_abs_grey_levels']}; mean top-1 "
          f"{100 * overall['top1_float32']:.1f}% (float32) and {100 * overall[f'top1_{args.dtype}']:.1f}% "
          f"({args.dtype}) over {len(tops)} test splits")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
