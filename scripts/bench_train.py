"""Training speed: ctrlshift's training loop against the usual path, same model, same data.

The usual path is what most Control+Shift users write: the dataset exported as PNG files
(``ctrlshift export --format imagefolder``), torchvision's ``ImageFolder`` with a ``DataLoader``
(worker processes, pinned memory) and PIL/torchvision augmentation (random crop with padding,
horizontal flip), and a plain loop. ctrlshift's loop decodes the shards once into a uint8 tensor
on the device and augments whole batches there (``ctrlshift.evaluation.train_classifier``). Both
train the same model (the 32px ResNet-18 of the zoo, ``preact_resnet18``) with the same optimiser
(SGD, Nesterov, cosine schedule), epochs and batch size; the script reports images/s of both,
their ratio and the test accuracy each reaches on the base value's test split.

    python scripts/bench_train.py --quick                 # CPU, under a minute, the tiny preset
    python scripts/bench_train.py --data DIR --epochs 5   # a generated CIFAR-size dataset, GPU
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def usual_path(folder: Path, test, model, args, device, num_classes, pre) -> tuple[float, float, float | None]:
    """ImageFolder + DataLoader + PIL augmentation + a plain loop; (img/s, test accuracy, img/s
    after the first epoch, which holds worker start-up)."""
    from torchvision import datasets, transforms

    size = test.images.shape[1]
    tf = transforms.Compose([transforms.RandomCrop(size, padding=max(1, size // 8)), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor(), transforms.Normalize(pre.mean, pre.std)])
    ds = datasets.ImageFolder(str(folder), transform=tf)
    loader = torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                                         pin_memory=device.type == "cuda", drop_last=True,
                                         persistent_workers=args.workers > 0)
    model = model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    total = args.epochs * len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    seen, t0, marks = 0, time.perf_counter(), []
    for _ in range(args.epochs):
        model.train()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with amp:
                loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            seen += len(y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        marks.append((seen, time.perf_counter()))
    seconds = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        x = pre(test.images.to(device))
        acc = float((model(x).argmax(1).cpu() == test.labels).double().mean())
    later = (marks[-1][0] - marks[0][0]) / (marks[-1][1] - marks[0][1]) if len(marks) > 1 else None
    return seen / seconds, acc, later


def ctrlshift_path(train, test, model, args, device, pre) -> tuple[float, float, float | None]:
    """ctrlshift's train_classifier; (img/s, test accuracy, img/s after the first epoch, which
    holds decoding the split onto the device and, with --compile, compilation)."""
    from ctrlshift.evaluation.train import Recipe, TrainConfig, predict, train_classifier

    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer="sgd", lr=args.lr,
                      weight_decay=5e-4, warmup_epochs=0.0, mixed_precision="bf16" if device.type == "cuda" else "no",
                      compile=args.compile)
    t0 = time.perf_counter()
    record = train_classifier(model, train, None, pre, Recipe(cfg, "cropflip", 0), progress=False, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    acc = float((predict(model.to(device), test, pre, device).argmax(1) == test.labels).double().mean())
    later = [h["img_per_s"] for h in record["history"][1:]]
    return args.epochs * len(train) / seconds, acc, (len(later) / sum(1 / v for v in later)) if later else None


def resized(split, size: int):
    """The split's images resized to ``size`` pixels a side (bilinear), still uint8: both paths
    then train on the same larger images (``--size 32``: the tiny 16px digits at CIFAR size)."""
    import dataclasses

    x = split.images.permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return dataclasses.replace(split, images=x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous())


def write_imagefolder(split, class_names, folder: Path) -> Path:
    """``folder/<class>/<i>.png`` for the usual path, from images in memory, in the class folders
    of ``ctrlshift export`` (whose order is the labels' order for ``ImageFolder``)."""
    from PIL import Image

    from ctrlshift.dataset.export import class_folder

    names = [class_folder(k, n, len(class_names)) for k, n in enumerate(class_names)]
    for name in names:
        (folder / name).mkdir(parents=True, exist_ok=True)
    for i, (img, y) in enumerate(zip(split.images.numpy(), split.labels.tolist())):
        Image.fromarray(img).save(folder / names[y] / f"{i:06d}.png")
    return folder


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="CPU, the tiny preset's base value, a narrow model")
    p.add_argument("--data", help="a ctrlshift dataset folder (default with --quick: generate the tiny preset)")
    p.add_argument("--config", help="the config to train on (default: the first family's base value)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--width", type=float, default=None, help="ResNet-18 width multiplier (1 = the usual)")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers of the usual path")
    p.add_argument("--size", type=int, default=None,
                   help="resize the images to this many pixels a side for both paths (default: as generated)")
    p.add_argument("--compile", action="store_true", help="train.compile: torch.compile ctrlshift's training step")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    args.epochs = args.epochs or (4 if args.quick else 5)
    args.batch_size = args.batch_size or (32 if args.quick else 512)
    args.workers = args.workers if args.workers is not None else (2 if args.quick else 8)
    width = args.width or (0.25 if args.quick else 1.0)

    import ctrlshift
    from ctrlshift.dataset import Dataset
    from ctrlshift.dataset.export import export_imagefolder
    from ctrlshift.evaluation.train import Preprocess
    from ctrlshift.models import create_model

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data) if args.data else None
        if root is None:
            if not args.quick:
                p.error("--data DIR is needed without --quick (generate one first, e.g. cifar10-edm-truncation)")
            root = Path(tmp) / "tiny"
            ctrlshift.generate("tiny", root, progress=False, splits__train__size=512, splits__test__size=300, shifts=[
                {"family": "truncation", "values": [90]}])
        ds = Dataset.open(root)
        config = args.config or next(iter(ds.families().values())).base
        train, test = ds.load(config, "train"), ds.load(config, "test")
        folder = Path(tmp) / "imagefolder"
        if args.size and args.size != train.images.shape[1]:
            train, test = resized(train, args.size), resized(test, args.size)
            train_folder = write_imagefolder(train, ds.class_names, folder)
        else:
            export_imagefolder(root, folder, progress=False)
            train_folder = folder / config / "train"
        pre = Preprocess.fit(train.images)
        k = ds.num_classes
        torch.manual_seed(0)
        m1 = create_model("preact_resnet18", k, img_size=pre.img_size, width=width)
        torch.manual_seed(0)
        m2 = create_model("preact_resnet18", k, img_size=pre.img_size, width=width)
        usual_ips, usual_acc, usual_later = usual_path(train_folder, test, m1, args, device, k, pre)
        ours_ips, ours_acc, ours_later = ctrlshift_path(train, test, m2, args, device, pre)
    result = {"benchmark": "train", "device": torch.cuda.get_device_name(device) if device.type == "cuda" else
              platform.processor() or platform.machine(), "device_type": device.type, "torch": torch.__version__,
              "cpu_threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d"), "quick": args.quick,
              "model": f"preact_resnet18 (width {width})", "train_images": len(train),
              "image_size": int(train.images.shape[1]), "epochs": args.epochs,
              "batch_size": args.batch_size, "workers": args.workers, "compile": args.compile,
              "img_per_s": {"usual": usual_ips, "ctrlshift": ours_ips}, "speedup": ours_ips / usual_ips,
              "img_per_s_after_first_epoch": {"usual": usual_later, "ctrlshift": ours_later},
              "speedup_after_first_epoch": ours_later / usual_later if ours_later and usual_later else None,
              "test_top1": {"usual": usual_acc, "ctrlshift": ours_acc}}
    print(f"device {result['device']} ({device.type}), torch {torch.__version__}; {result['model']}, "
          f"{len(train)} images of {result['image_size']}px x {args.epochs} epochs, batch {args.batch_size}")

    def later(v):
        return f"{v:10.1f}" if v else f"{'-':>10}"

    print(f"{'path':<34} {'img/s':>10} {'after ep. 1':>11} {'test top-1':>10}")
    print(f"{'ImageFolder + DataLoader + PIL':<34} {usual_ips:10.1f} {later(usual_later)} {100 * usual_acc:9.1f}%")
    print(f"{'ctrlshift train_classifier':<34} {ours_ips:10.1f} {later(ours_later)} {100 * ours_acc:9.1f}%")
    after = result["speedup_after_first_epoch"]
    print(f"speedup {result['speedup']:.2f}x" + (f" ({after:.2f}x after the first epoch)" if after else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
