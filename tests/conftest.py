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


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory, tiny_unet_dir) -> tuple[Path, Path]:
    """One clean single-process ``generate`` run of :func:`helpers.tiny_config`, shared by the
    generator, evaluation and gap tests: (its config file, the dataset folder). Read it, never
    write into it."""
    from ctrlshift.cli import main

    from .helpers import tiny_config

    root = tmp_path_factory.mktemp("tiny-dataset")
    cfg = root / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tiny_unet_dir)))
    assert main(["generate", str(cfg), "--out", str(root / "ds"), "--no-progress"]) == 0
    return cfg, root / "ds"


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


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory):
    """A Stable Diffusion pipeline of tiny random parts, with a byte-level CLIP tokenizer."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    root = tmp_path_factory.mktemp("tiny-sd")
    tok, vocab = byte_clip_tokenizer(root)
    torch.manual_seed(0)
    end = vocab["<|endoftext|>"]
    te = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, max_position_embeddings=77,
                                      bos_token_id=vocab["<|startoftext|>"], eos_token_id=end, pad_token_id=end))
    unet = UNet2DConditionModel(sample_size=4, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(8, 16), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                                attention_head_dim=2, norm_num_groups=4)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                        norm_num_groups=4, sample_size=8)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet,
                                   scheduler=DDIMScheduler(num_train_timesteps=50, clip_sample=False),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(root / "pipe")
    return root / "pipe"


def build_tiny_dit(root: Path, num_classes: int) -> Path:
    """A DiT pipeline of tiny random parts (4x4 latents, 8x8 images) saved to ``root``; the null
    class of guidance is ``num_classes`` (DiTPipeline itself assumes 1000)."""
    from diffusers import AutoencoderKL, DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    torch.manual_seed(0)
    tr = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
                               num_layers=1, sample_size=4, patch_size=2, num_embeds_ada_norm=num_classes,
                               norm_num_groups=4)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                        norm_num_groups=4, sample_size=8)
    DiTPipeline(tr, vae, DDIMScheduler(num_train_timesteps=50)).save_pretrained(root)
    return root
