"""croissant.json validates with mlcroissant and reads the rows, images included."""

from __future__ import annotations

import json

import pytest


def test_croissant_describes_every_shard_and_reads_every_config(tiny_dataset):
    mlc = pytest.importorskip("mlcroissant", reason="needs mlcroissant (pip install mlcroissant)")
    _, root = tiny_dataset
    doc = json.loads((root / "croissant.json").read_text())
    manifest = json.loads((root / "manifest.json").read_text())
    files = {d["@id"]: d for d in doc["distribution"] if d["@type"] == "cr:FileObject"}
    assert {r["path"]: r["sha256"] for r in manifest["shards"]} == {k: v["sha256"] for k, v in files.items()}
    assert {rs["@id"] for rs in doc["recordSet"]} == set(manifest["configs"])
    assert doc["rai:dataCollectionType"] == "Synthetic data" and doc["conformsTo"].endswith("croissant/1.0")
    ds = mlc.Dataset(jsonld=str(root / "croissant.json"))  # raises on a validation error
    for name, info in manifest["configs"].items():
        records = list(ds.records(record_set=name))
        assert len(records) == sum(s["num_examples"] for s in info["splits"].values())
        splits = {r[f"{name}/split"].decode() for r in records}
        assert splits == set(info["splits"])
        first = records[0]
        assert first[f"{name}/image"].size == (8, 8) and first[f"{name}/family"].decode() == info["family"]
