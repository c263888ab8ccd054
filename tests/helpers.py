"""Test helpers: a tiny generate config, built with the config system's own override function."""

from __future__ import annotations

from pathlib import Path

from ctrlshift.config import apply_overrides


def tiny_config(source: Path | str, **over) -> dict:
    """A seconds-long generate config on a tiny model at ``source``; ``over`` maps dotted keys to
    values, applied exactly as command-line overrides are."""
    cfg = {
        "name": "t",
        "decoder": {"backend": "diffusers-unet", "source": str(source), "latent_shape": [3, 8, 8], "num_classes": 4},
        "sampler": {"name": "ddim", "steps": 2},
        "shifts": [{"family": "truncation", "values": [90, 110]},
                   {"family": "overlap", "values": [0, 30]}],
        "splits": {"train": {"size": 10, "seed": 1}, "val": {"size": 4, "seed": 2}, "test": {"size": 7, "seed": 3}},
        "intensity": {"samples": 200},
        "output": {"shard_size": 4, "grid": 3},
        "runtime": {"batch_size": 3, "device": "cpu", "encode_workers": 1},
    }
    return apply_overrides(cfg, over)
