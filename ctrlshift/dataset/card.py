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


CITATION = """@inproceedings{friedman2024controlshift,
  title     = {Control+Shift: Generating Controllable Distribution Shifts},
  author    = {Friedman, Roy and Chowers, Rhea},
  booktitle = {ECCV 2024 Workshops},
  year      = {2024},
  eprint    = {2409.07940},
  archivePrefix = {arXiv}
}"""


def size_category(n: int) -> str:
    """The Hub's size category of a dataset of ``n`` rows."""
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                        (10_000_000, "1M<n<10M")):
        if n < limit:
            return name
    return "10M<n<100M"


def features(class_names: Sequence[str]) -> list[dict]:
    """The ``dataset_info.features`` block of the card (the same features as the shards' schema)."""
    return [{"name": "image", "dtype": "image"},
            {"name": "label", "dtype": {"class_label": {"names": {str(k): n for k, n in enumerate(class_names)}}}},
            *({"name": c, "dtype": t} for c, t in (("model_label", "int64"), ("index", "int64"), ("seed", "int64"),
                                                   ("family", "string"), ("value", "float64"),
                                                   ("intensity", "float64")))]


def write_card(root: Path, manifest: dict) -> None:
    configs = {name: ConfigInfo.from_json(info) for name, info in manifest["configs"].items()}
    gen = manifest["generator"]
    images = sum(r["rows"] for r in manifest["shards"])
    front = {
        "license": manifest["card"]["license"],
        "pretty_name": manifest["card"]["pretty_name"],
        "task_categories": ["image-classification"],
        "size_categories": [size_category(images)],
        "tags": ["ctrlshift", "distribution-shift", "synthetic"],
        "dataset_info": {"features": features(manifest["class_names"])},
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
    ]
    consistency = any(i.label_consistency is not None for i in configs.values())
    centre = any(i.centre_angle is not None for i in configs.values())
    optional = [(key, head, fmt_) for key, head, fmt_ in (
        ("total_variation", "TV (latent)", ".3f"), ("pixel_distance", "pixel distance", ".4f"),
        ("kid", "KID", ".4f"), ("centre_angle", "centre angle (rad)", ".4g"),
        ("label_consistency", "label consistency", ".3f"))
        if any(getattr(i, key) is not None for i in configs.values())]
    extra = "".join(f" {head} |" for _, head, _ in optional)
    lines += ["", f"| config | family | value | axis | intensity | outside training typical set |{extra} splits |",
              "|---|---|---|---|---|---|---|" + "---|" * len(optional)]
    for name, info in configs.items():
        splits = ", ".join(f"{s} {v['num_examples']}" for s, v in info.splits.items())
        cell = "".join(f" {format(getattr(info, key), f)} |" if getattr(info, key) is not None else " - |"
                       for key, _, f in optional)
        lines.append(f"| {name} | {info.family} | {format_value(info.value)} | {info.axis} | "
                     f"{info.intensity:.4g} | {info.outside_fraction:.3f} |{cell} {splits} |")
    alpha = manifest["config"].get("intensity", {}).get("alpha", 0.01)
    lines += ["", "Intensity is the value on the family's physical axis; the outside share is the fraction of "
                  f"the config's latents outside the central {100 * (1 - alpha):g}% box of the training latents' "
                  "statistics (it saturates quickly in high dimension)"
              + ("; the centre angle (overlap) is the exact angle between the train and test centres" if centre else "")
              + ". TV (latent): the total variation between the train and test distributions of the family's "
                "shift statistic (the latent norm for truncation, in closed form; the cosine to the anchor or "
                "train centre otherwise). Pixel distance: the mean absolute difference (0..1) between each test "
                "image and the image of the same seed at the base value. KID: the kernel distance between the "
                "config's and the base value's test images in a reference classifier's features "
                "(`ctrlshift consistency`)."]
    if consistency:
        lines += ["", "Label consistency: the share of a config's test images that a reference classifier, "
                      "trained on the family's base value, still labels as their class (`ctrlshift consistency`)."]
    first = next(iter(configs))
    info = configs[first]
    grids = [p for p in dict.fromkeys(i.prefix for i in configs.values()) if (root / "grids" / f"{p}.png").is_file()]
    if grids:
        lines += ["", "## Sample grids", "",
                  "Each row is one value of the family, each column one noise seed (the same in every row):", ""]
        lines += [f"![{p}](grids/{p}.png)" for p in grids]
    lines += ["", "## Load", "", "```python", "from datasets import load_dataset",
              f"ds = load_dataset(\"{root.name}\", \"{first}\", split=\"test\")  # a local folder or hub id",
              "```", "",
              "## Regenerate any image", "",
              "Each row records its `index` and `seed`; the same seeds are decoded at every value of a family. "
              "With the generator above and the resolved config in `manifest.json` (saved as YAML, e.g. "
              "`config.yaml`), `ctrlshift latents` gives the exact latent of any image without loading the model, "
              "and decoding it gives the same image:", "",
              "```bash",
              f"ctrlshift latents config.yaml --family {info.prefix} --value {format_value(info.value)} "
              f"--split {next(iter(info.splits))} --indices 0:8 --out latents.npz",
              "```", "",
              "`manifest.json` holds the resolved config, the generator's identity, every shard's sha256 and the "
              "dataset hash; `ctrlshift check DIR` verifies a copy.", "",
              "## Citation", "", "```bibtex", CITATION, "```", "",
              f"The images come from the generator `{gen['source']}`: cite it as its authors ask.", ""]
    atomic_write_text(root / "README.md", "\n".join(lines))


def image_grid(images: Sequence[np.ndarray], cols: int, scale: int = 1, pad: int = 2,
               row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None,
               tile_labels: Sequence[str] | None = None) -> Image.Image:
    """Tiles in rows of ``cols``, with optional labels: left of each row, above each column (when
    every row shares them), or above each tile."""
    from PIL import ImageDraw, ImageFont

    font = ImageFont.load_default()
    h, w = images[0].shape[:2]
    band = 12 if tile_labels else 0
    tw, th = w * scale + pad, h * scale + pad + band
    rows = (len(images) + cols - 1) // cols
    left = max((int(font.getlength(t)) for t in row_labels or []), default=-pad) + 2 * pad
    top = 12 + pad if col_labels else 0
    canvas = Image.new("RGB", (left + cols * tw + pad, top + rows * th + pad), "white")
    draw = ImageDraw.Draw(canvas)

    def fit(text: str) -> str:
        while len(text) > 1 and font.getlength(text) > tw - 2:
            text = text[:-1]
        return text

    for k, img in enumerate(images):
        x, y = left + pad + (k % cols) * tw, top + pad + (k // cols) * th
        canvas.paste(Image.fromarray(img).resize((w * scale, h * scale), Image.NEAREST), (x, y + band))
        if tile_labels:
            draw.text((x, y), fit(tile_labels[k]), fill="black", font=font)
    for r, text in enumerate(row_labels or []):
        draw.text((pad, top + pad + r * th + (th - 12) // 2), text, fill="black", font=font)
    for c, text in enumerate(col_labels or []):
        draw.text((left + pad + c * tw, pad), fit(text), fill="black", font=font)
    return canvas


def _save_png(image: Image.Image, path: Path) -> None:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def write_grids(root: Path, manifest: dict, per_row: int) -> list[str]:
    """One grid per config (first test images, each under its class) and one per family (a row per
    value, the same seeds in every row: each row labelled with its value and intensity, each column
    with its class)."""
    written = []
    grid_dir = root / "grids"
    grid_dir.mkdir(exist_ok=True)
    names = manifest["class_names"]
    by_family: dict[str, list[tuple[ConfigInfo, list[np.ndarray], list[str]]]] = {}
    for name, raw in manifest["configs"].items():
        info = ConfigInfo.from_json(raw)
        split = "test" if "test" in info.splits else next(iter(info.splits))
        rows, classes = [], []
        for row in iter_rows(root, name, split, columns=["image", "label"]):
            rows.append(decode_png(row["image"]))
            classes.append(names[row["label"]])
            if len(rows) >= per_row * per_row:
                break
        if not rows:
            continue
        scale = max(1, 64 // rows[0].shape[0])
        _save_png(image_grid(rows, per_row, scale, tile_labels=classes), grid_dir / f"{name}.png")
        written.append(f"grids/{name}.png")
        if split == "test":
            by_family.setdefault(info.prefix, []).append((info, rows[:per_row], classes[:per_row]))
    for prefix, items in by_family.items():
        items.sort(key=lambda it: it[0].value)
        tiles = [img for _, imgs, _ in items for img in imgs]
        labels = [f"v={format_value(i.value)}  {i.axis}={i.intensity:.3g}" for i, _, _ in items]
        scale = max(1, 64 // tiles[0].shape[0])
        _save_png(image_grid(tiles, per_row, scale, row_labels=labels, col_labels=items[0][2]),
                  grid_dir / f"{prefix}.png")
        written.append(f"grids/{prefix}.png")
    return written
