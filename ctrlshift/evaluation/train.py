"""Training loop (accelerate) for classifiers on in-memory uint8 splits.

Images live in memory as uint8; each step indexes a batch, moves it to the device, converts and
normalises it there, and augments it there (crop, flip, mixup), so small images never wait on a
loader. RandAugment and AugMix run per image through torchvision on the host. The loop takes a
seed (data order and augmentation), keeps the weights of the best validation epoch, checkpoints
every epoch and resumes from the checkpoint.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from ..config import meta
from ..dataset import Split
from ..device import resolve_device
from ..errors import CtrlshiftError
from ..files import atomic_save_torch

log = logging.getLogger(__name__)

AUGMENTS = ("none", "crop", "cropflip", "randaugment", "augmix", "mixup")


@dataclass
class TrainConfig:
    epochs: int = field(default=30, metadata=meta("training epochs", min=1))
    batch_size: int = field(default=128, metadata=meta("images per optimisation step", min=1))
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = field(default=0.05, metadata=meta("peak learning rate", min=0.0))
    momentum: float = field(default=0.9, metadata=meta("SGD momentum", min=0.0, max=1.0))
    weight_decay: float = field(default=5e-4, metadata=meta("weight decay", min=0.0))
    warmup_epochs: float = field(default=1.0, metadata=meta("linear warm-up before the cosine decay", min=0.0))
    label_smoothing: float = field(default=0.0, metadata=meta("label smoothing", min=0.0, max=1.0))
    mixup_alpha: float = field(default=0.2, metadata=meta("Beta(alpha, alpha) of mixup", min=0.0))
    mixed_precision: Literal["no", "bf16", "fp16"] = field(default="no", metadata=meta("autocast dtype"))
    channels_last: bool = field(default=True, metadata=meta(
        "channels_last memory format on CUDA (ignored on the CPU, where it crashes narrow layers in torch 2.14)"))
    eval_batch_size: int = field(default=512, metadata=meta("images per evaluation call", min=1))
    compile: bool = field(default=False, metadata=meta(
        "torch.compile the training step's forward and backward (evaluation runs the model uncompiled)"))


@dataclass
class Preprocess:
    """uint8 ``[N, H, W, 3]`` -> normalised float ``[N, C, H, W]`` (recorded in every result)."""

    mean: list[float]
    std: list[float]
    img_size: int
    in_chans: int = 3

    @classmethod
    def fit(cls, images: torch.Tensor) -> "Preprocess":
        x = images.double() / 255.0
        mean = x.mean(dim=(0, 1, 2))
        std = x.std(dim=(0, 1, 2)).clamp_min(1e-3)
        return cls([round(float(m), 5) for m in mean], [round(float(s), 5) for s in std], int(images.shape[1]))

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        # contiguous NCHW: permute() alone would hand convolutions channels-last strides, and on
        # the CPU torch 2.14's channels-last convolutions corrupt memory for very narrow layers.
        x = batch.permute(0, 3, 1, 2).contiguous().float().div_(255.0)
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def as_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "img_size": self.img_size, "in_chans": self.in_chans}


def random_crop(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Per-image random crop of a zero-padded NHWC uint8 batch (vectorised gather)."""
    b, h, w, c = x.shape
    padded = F.pad(x.permute(0, 3, 1, 2), (pad, pad, pad, pad)).permute(0, 2, 3, 1)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]
    return padded[torch.arange(b, device=x.device)[:, None, None], rows, cols]


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip = (torch.rand(x.shape[0], generator=gen) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(2), x)


def host_augment(x: torch.Tensor, kind: str, gen: torch.Generator) -> torch.Tensor:
    """RandAugment / AugMix per image on the host (torchvision), seeded from ``gen``."""
    from torchvision.transforms import v2

    op = v2.RandAugment() if kind == "randaugment" else v2.AugMix()
    out = torch.empty_like(x)
    state = torch.get_rng_state()
    try:
        torch.manual_seed(int(torch.randint(2 ** 31, (1,), generator=gen)))
        for i in range(len(x)):
            out[i] = op(x[i].permute(2, 0, 1)).permute(1, 2, 0)
    finally:
        torch.set_rng_state(state)
    return out


def augment_batch(x: torch.Tensor, kind: str, gen: torch.Generator) -> torch.Tensor:
    if kind in ("randaugment", "augmix"):
        x = host_augment(x.cpu(), kind, gen)
        kind = "cropflip"
    pad = max(1, x.shape[1] // 8)
    if kind in ("crop", "cropflip", "mixup"):
        x = random_crop(x, pad, gen)
    if kind in ("cropflip", "mixup"):
        x = random_flip(x, gen)
    return x


def lr_lambda(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


@torch.no_grad()
def predict(model: torch.nn.Module, split: Split, pre: Preprocess, device, batch_size: int = 512,
            channels_last: bool = False) -> torch.Tensor:
    """Logits ``[N, K]`` (float32, on the host)."""
    model.eval()
    channels_last = channels_last and torch.device(device).type == "cuda"
    outs = []
    for i in range(0, len(split), batch_size):
        x = pre(split.images[i:i + batch_size].to(device, non_blocking=True))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        outs.append(model(x).float().cpu())
    return torch.cat(outs) if outs else torch.empty(0, 0)


@dataclass
class Recipe:
    """How one model is trained: the training config, an augmentation preset and a seed (data
    order, augmentation, dropout)."""

    train: TrainConfig = field(default_factory=TrainConfig)
    augment: str = "none"
    seed: int = 0

    def __post_init__(self):
        if self.augment not in AUGMENTS:
            raise ValueError(f"augment {self.augment!r}; expected one of {AUGMENTS}")


def _optimiser(model: torch.nn.Module, cfg: TrainConfig, steps_per_epoch: int):
    """SGD (Nesterov) or AdamW, with a linear warm-up then a cosine decay per step."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)
    else:
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    total, warmup = cfg.epochs * steps_per_epoch, int(cfg.warmup_epochs * steps_per_epoch)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_lambda(s, total, warmup))


class Checkpoint:
    """Where a training run keeps its state after each epoch, to resume after an interruption.

    ``fingerprint`` identifies the run's settings: a checkpoint made with other settings is refused
    (or, with ``overwrite``, discarded); an unreadable one (a kill mid-write on a filesystem without
    atomic rename) is discarded with a warning and the run starts from scratch.
    """

    def __init__(self, run_dir: Path | None, fingerprint: str | None = None, overwrite: bool = False):
        self.path = Path(run_dir) / "checkpoint.pt" if run_dir is not None else None
        self.fingerprint = fingerprint
        self.overwrite = overwrite

    def load(self, net, opt, sched, gen) -> tuple[int, list, dict] | None:
        if self.path is None or not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated or garbled: any of pickle's, zip's or torch's errors
            log.warning("%s: unreadable checkpoint (%s); starting this run from scratch", self.path,
                        str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__)
            self.path.unlink()
            return None
        if self.fingerprint is not None and state.get("fingerprint") != self.fingerprint:
            if not self.overwrite:
                raise CtrlshiftError(f"{self.path}: a checkpoint of this run made with other settings; rerun with "
                                     "--overwrite to start it again, or use another --out")
            log.warning("%s: made with other settings; --overwrite: starting this run from scratch", self.path)
            self.path.unlink()
            return None
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        gen.set_state(state["gen"])
        log.info("resumed training at epoch %d from %s", state["epoch"], self.path)
        return state["epoch"], state["history"], state["best"]

    def save(self, net, opt, sched, gen, epoch: int, history: list, best: dict) -> None:
        if self.path is not None:
            atomic_save_torch(self.path, {"model": net.state_dict(), "opt": opt.state_dict(),
                                          "sched": sched.state_dict(), "gen": gen.get_state(), "epoch": epoch,
                                          "history": history, "best": best, "fingerprint": self.fingerprint})


def _loss(model, x, y, cfg: TrainConfig, augment: str, gen: torch.Generator) -> torch.Tensor:
    if augment != "mixup":
        return F.cross_entropy(model(x), y, label_smoothing=cfg.label_smoothing)
    lam = float(torch.distributions.Beta(cfg.mixup_alpha, cfg.mixup_alpha).sample()) if cfg.mixup_alpha > 0 else 1.0
    j = torch.randperm(len(x), generator=gen).to(x.device)
    out = model(lam * x + (1 - lam) * x[j])
    return lam * F.cross_entropy(out, y, label_smoothing=cfg.label_smoothing) + \
        (1 - lam) * F.cross_entropy(out, y[j], label_smoothing=cfg.label_smoothing)


def _epoch(acc, model, opt, sched, train: Split, pre: Preprocess, recipe: Recipe, gen: torch.Generator,
           channels_last: bool) -> dict:
    """One pass over ``train`` in a seeded order; returns the epoch's loss and throughput."""
    cfg, device = recipe.train, acc.device
    rank, world = acc.process_index, acc.num_processes
    steps = max(1, math.ceil(len(train) / cfg.batch_size))
    model.train()
    perm = torch.randperm(len(train), generator=gen)
    seen, loss_sum, t0 = 0, 0.0, time.time()
    for s in range(steps):
        idx = perm[s * cfg.batch_size:(s + 1) * cfg.batch_size]
        idx = idx[rank::world] if world > 1 else idx
        x = augment_batch(train.images[idx].to(device, non_blocking=True), recipe.augment, gen)
        y = train.labels[idx].to(device, non_blocking=True)
        x = pre(x.to(device))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with acc.autocast():
            loss = _loss(model, x, y, cfg, recipe.augment, gen)
        opt.zero_grad(set_to_none=True)
        acc.backward(loss)
        opt.step()
        sched.step()
        seen += len(idx)
        loss_sum += loss.detach() * len(idx)
    loss_epoch = float(loss_sum) / max(seen, 1)
    return {"loss": round(loss_epoch, 5), "img_per_s": round(seen * world / (time.time() - t0), 1)}


def train_classifier(model: torch.nn.Module, train: Split, val: Split | None, pre: Preprocess, recipe: Recipe,
                     checkpoint: Checkpoint | Path | None = None, progress: bool = True,
                     device: str | torch.device | None = None) -> dict:
    """Train ``model`` in place (it ends with the best validation epoch's weights); returns the
    training record (history, seconds, best epoch, validation accuracy). With ``checkpoint`` (a
    :class:`Checkpoint` or a run folder) it saves its state every epoch and resumes from it."""
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    cfg = recipe.train
    device = resolve_device(device if device is not None else "auto")
    acc = Accelerator(cpu=device.type == "cpu", mixed_precision=cfg.mixed_precision)
    channels_last = cfg.channels_last and acc.device.type == "cuda"
    gen = torch.Generator().manual_seed(recipe.seed)
    torch.manual_seed(recipe.seed)  # the model's own init was drawn by the caller; this seeds dropout
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt, sched = _optimiser(model, cfg, max(1, math.ceil(len(train) / cfg.batch_size)))
    model, opt = acc.prepare(model, opt)
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint(checkpoint)
    start_epoch, history, best = 0, [], {"epoch": -1, "val_top1": -1.0, "state": None}
    resumed = ckpt.load(acc.unwrap_model(model), opt, sched, gen)
    if resumed is not None:
        start_epoch, history, best = resumed

    t0 = time.time()
    bar = tqdm(range(start_epoch, cfg.epochs), desc="train", unit="epoch", disable=not (progress and acc.is_main_process),
               dynamic_ncols=True, leave=False)
    # The compiled module shares the model's parameters: checkpoints and evaluation use the model.
    step_model = torch.compile(model) if cfg.compile else model
    for epoch in bar:
        record = {"epoch": epoch + 1, **_epoch(acc, step_model, opt, sched, train, pre, recipe, gen, channels_last)}
        if val is not None and len(val):
            logits = predict(model, val, pre, acc.device, cfg.eval_batch_size, channels_last)
            record["val_top1"] = float((logits.argmax(1) == val.labels).double().mean())
            if record["val_top1"] > best["val_top1"]:
                best = {"epoch": epoch + 1, "val_top1": record["val_top1"],
                        "state": copy.deepcopy(acc.unwrap_model(model).state_dict())}
        history.append(record)
        bar.set_postfix(loss=f"{record['loss']:.3f}", val=f"{record.get('val_top1', float('nan')):.3f}",
                        img_s=f"{record['img_per_s']:.0f}")
        if acc.is_main_process:
            ckpt.save(acc.unwrap_model(model), opt, sched, gen, epoch + 1, history, best)
    bar.close()
    net = acc.unwrap_model(model)
    if best["state"] is not None:
        net.load_state_dict(best["state"])
    return {"history": history, "seconds": round(time.time() - t0, 2), "best_epoch": best["epoch"],
            "val_top1": best["val_top1"] if best["epoch"] >= 0 else None, "device": str(acc.device),
            "num_processes": acc.num_processes}
