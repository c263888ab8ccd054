"""``ctrlshift check DIR``: verify a whole dataset and report every problem found."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from ..provenance import stable_hash
from .format import files_under_data
from .reader import Dataset, DatasetError, repair_hint


def check_dataset(root) -> tuple[list[str], dict]:
    """(problems, counts). Each problem is one line naming the file and what is wrong; an empty
    list means every listed shard is present, verifies, reads and holds the rows it should, nothing
    unlisted lies under ``data/``, and the card and dataset hash agree with the manifest."""
    try:
        ds = Dataset.open(root)
    except DatasetError as exc:
        return [str(exc)], {}
    problems = []
    listed = set(ds.shard_records)
    rows_by_split: dict[tuple[str, str], int] = {}
    for rel, rec in sorted(ds.shard_records.items()):
        path = ds.root / rel
        try:
            ds.verify(rel)
            meta = pq.read_metadata(path)
        except DatasetError as exc:
            problems.append(str(exc).split("; ")[0])
            continue
        except (pa.ArrowException, OSError) as exc:
            problems.append(f"{path}: not a readable shard ({exc})")
            continue
        if meta.num_rows != rec["rows"]:
            problems.append(f"{path}: {meta.num_rows} rows, the manifest says {rec['rows']}")
        config, split = rel.split("/")[1], rel.split("/")[2].split("-")[0]
        rows_by_split[(config, split)] = rows_by_split.get((config, split), 0) + meta.num_rows
    for name, info in ds.configs.items():
        for split, s in info.splits.items():
            got = rows_by_split.get((name, split), 0)
            if got != s["num_examples"] and not any(p.startswith(str(ds.root / f"data/{name}/{split}-"))
                                                     for p in problems):
                problems.append(f"{ds.root / 'data' / name}: {split} split holds {got} rows, "
                                f"the manifest says {s['num_examples']}")
    for rel in files_under_data(ds.root):
        if rel not in listed:
            problems.append(f"{ds.root / rel}: not part of the dataset (the manifest does not list it); remove it")
    expected_hash = stable_hash(sorted((r["path"], r["sha256"]) for r in ds.manifest["shards"]))
    if expected_hash != ds.dataset_hash:
        problems.append(f"{ds.root / 'manifest.json'}: dataset_hash does not match its shard list")
    problems += _card_problems(ds)
    counts = {"configs": len(ds.configs), "shards": len(listed), "images": sum(rows_by_split.values())}
    return problems, counts


def _card_problems(ds: Dataset) -> list[str]:
    card = ds.root / "README.md"
    if not card.is_file():
        return [f"{card}: missing (the dataset card)"]
    text = card.read_text()
    try:
        front = yaml.safe_load(text.split("---\n")[1]) if text.startswith("---\n") else None
    except (yaml.YAMLError, IndexError):
        front = None
    if not isinstance(front, dict):
        return [f"{card}: no YAML front matter"]
    names = [c.get("config_name") for c in front.get("configs") or [] if isinstance(c, dict)]
    if sorted(names) != sorted(ds.configs):
        return [f"{card}: its configs {sorted(names)} differ from the manifest's {sorted(ds.configs)}"]
    return []


def report(root) -> tuple[int, list[str]]:
    """(exit status, lines) for the CLI: 0 and a summary when clean, 1 and every problem otherwise."""
    problems, counts = check_dataset(root)
    if not problems:
        return 0, [f"ok: {root}: {counts['configs']} configs, {counts['shards']} shards, "
                   f"{counts['images']} images verified"]
    return 1, [f"problem: {p}" for p in problems] + [f"{len(problems)} problem(s) in {root}; {repair_hint(root)}"]
