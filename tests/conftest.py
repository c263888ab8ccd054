"""Shared fixtures: tiny random networks saved and loaded the way real checkpoints are."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def tiny_unet_dir(tmp_path_factory) -> Path:
    """A class-conditional UNet2DModel (3x8x8, 4 classes) in a diffusers pipeline layout."""
    from diffusers import DDIMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
                       block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), num_class_embeds=4, norm_num_groups=4)
    root = tmp_path_factory.mktemp("tiny-unet")
    unet.save_pretrained(root / "unet")
    DDIMScheduler(num_train_timesteps=100, clip_sample=True).save_pretrained(root / "scheduler")
    return root


def tiny_config(source: Path | str, **over) -> dict:
    cfg = {
        "name": "t",
        "decoder": {"backend": "diffusers-unet", "source": str(source), "latent_shape": [3, 8, 8], "num_classes": 4},
        "sampler": {"name": "ddim", "steps": 2},
        "shifts": [{"family": "truncation", "values": [90, 110]},
                   {"family": "overlap", "values": [0, 30]}],
        "splits": {"train": {"size": 10, "seed": 1}, "val": {"size": 0, "seed": 2}, "test": {"size": 7, "seed": 3}},
        "intensity": {"samples": 200},
        "output": {"shard_size": 4, "grid": 3},
        "runtime": {"batch_size": 3, "device": "cpu", "encode_workers": 1},
    }
    for key, value in over.items():
        node = cfg
        *path, last = key.split(".")
        for p in path:
            node = node[p]
        node[last] = value
    return cfg


@pytest.fixture
def write_config(tmp_path):
    def write(cfg: dict, name: str = "cfg.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(cfg))
        return path

    return write


def byte_clip_tokenizer(root: Path):
    """A CLIP tokenizer over single bytes (no merges), written to ``root``: enough for tiny
    text encoders, with nothing to download."""
    import json

    from transformers import CLIPTokenizer

    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    chars = [chr(b) for b in printable] + [chr(256 + k) for k in range(256 - len(printable))]
    vocab = {t: k for k, t in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    root.mkdir(parents=True, exist_ok=True)
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(root / "vocab.json"), str(root / "merges.txt"), model_max_length=77), vocab
