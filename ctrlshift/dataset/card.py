"""The dataset card (``README.md`` with the ``datasets`` YAML front matter) and the sample grids."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import yaml
from PIL import Image

from ..files import atomic_write_bytes, atomic_write_text
from .format import FORMAT, decode_png, format_value
from .reader import iter_rows
from .records import ConfigInfo


def write_card(root: Path, manifest: dict) -> None:
    configs = {name: ConfigInfo.from_json(info) for name, info in manifest["configs"].items()}
    gen = manifest["generator"]
    front = {
        "license": manifest["card"]["license"],
        "pretty_name": manifest["card"]["pretty_name"],
        "task_categories": ["image-classification"],
        "tags": ["ctrlshift", "distribution-shift", "synthetic"],
        "configs": [
            {"config_name": name,
             "data_files": [{"split": split, "path": f"data/{name}/{split}-*.parquet"} for split in info.splits]}
            for name, info in configs.items()
        ],
        "ctrlshift": {"format": FORMAT, "generator": gen["source"], "backend": gen["backend"],
                      "sampler": gen.get("sampler", {}).get("name"), "dataset_hash": manifest["dataset_hash"]},
    }
    lines = [
        "---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "",
        f"# {manifest['card']['pretty_name']}", "",
        manifest["card"]["description"] or
        "Images decoded by one generator from latent distributions shifted by controlled amounts "
        "(Control+Shift). Train on the base value; test on every value.", "",
        f"- Generator: `{gen['source']}` ({gen['backend']}); latent shape {gen['latent_shape']}",
        f"- Sampler: {json.dumps({k: v for k, v in gen.get('sampler', {}).items() if k != 'sigmas'})}",
        f"- Classes ({len(manifest['class_names'])}): {', '.join(manifest['class_names'])}",
        f"- Labels: {manifest['config']['labels']}; made by ctrlshift {manifest['ctrlshift_version']}",
        "", "| config | family | value | axis | intensity | outside training typical set | splits |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, info in configs.items():
        splits = ", ".join(f"{s} {v['num_examples']}" for s, v in info.splits.items())
        lines.append(f"| {name} | {info.family} | {format_value(info.value)} | {info.axis} | "
                     f"{info.intensity:.4g} | {info.outside_fraction:.3f} | {splits} |")
    first = next(iter(configs))
    lines += ["", "## Load", "", "```python", "from datasets import load_dataset",
              f"ds = load_dataset(\"{root.name}\", \"{first}\", split=\"test\")  # a local folder or hub id",
              "```", "",
              "Each row records its `index` and `seed`: `ctrlshift latents` regenerates the latent of any "
              "image, and the same seeds are decoded at every value of a family. `manifest.json` holds the "
              "resolved config, the generator's identity and every shard's sha256.", ""]
    atomic_write_text(root / "README.md", "\n".join(lines))


def image_grid(images: Sequence[np.ndarray], cols: int, scale: int = 1, pad: int = 2) -> Image.Image:
    h, w = images[0].shape[:2]
    rows = (len(images) + cols - 1) // cols
    canvas = Image.new("RGB", (cols * (w * scale + pad) + pad, rows * (h * scale + pad) + pad), "white")
    for k, img in enumerate(images):
        tile = Image.fromarray(img).resize((w * scale, h * scale), Image.NEAREST)
        canvas.paste(tile, (pad + (k % cols) * (w * scale + pad), pad + (k // cols) * (h * scale + pad)))
    return canvas


def _save_png(image: Image.Image, path: Path) -> None:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def write_grids(root: Path, manifest: dict, per_row: int) -> list[str]:
    """One grid per config (first test images) and one per family (a row per value, same seeds)."""
    written = []
    grid_dir = root / "grids"
    grid_dir.mkdir(exist_ok=True)
    by_family: dict[str, list[tuple[float, list[np.ndarray]]]] = {}
    for name, raw in manifest["configs"].items():
        info = ConfigInfo.from_json(raw)
        split = "test" if "test" in info.splits else next(iter(info.splits))
        rows = []
        for row in iter_rows(root, name, split, columns=["image"]):
            rows.append(decode_png(row["image"]))
            if len(rows) >= per_row * per_row:
                break
        if not rows:
            continue
        scale = max(1, 64 // rows[0].shape[0])
        _save_png(image_grid(rows, per_row, scale), grid_dir / f"{name}.png")
        written.append(f"grids/{name}.png")
        if split == "test":
            by_family.setdefault(info.prefix, []).append((info.value, rows[:per_row]))
    for prefix, items in by_family.items():
        items.sort(key=lambda it: it[0])
        tiles = [img for _, imgs in items for img in imgs]
        scale = max(1, 64 // tiles[0].shape[0])
        _save_png(image_grid(tiles, per_row, scale), grid_dir / f"{prefix}.png")
        written.append(f"grids/{prefix}.png")
    return written
