"""``croissant.json``: the dataset described in the MLCommons Croissant format (JSON-LD, 1.0).

Every shard is a ``FileObject`` with its sha256; every config is a ``RecordSet`` whose fields
(image, label, the provenance columns, and the split read from the file name) come from a
``FileSet`` of that config's shards. The Responsible-AI fields that apply to synthetic data are
filled in. ``mlcroissant.Dataset(jsonld=DIR/croissant.json).records(record_set=CONFIG)`` reads the
rows (tested). Nothing in it depends on the time or the machine, so it is as reproducible as the
shards.
"""

from __future__ import annotations

from pathlib import Path

from ..files import atomic_write_json
from .records import ConfigInfo

CONTEXT = {
    "@language": "en", "@vocab": "https://schema.org/", "citeAs": "cr:citeAs", "column": "cr:column",
    "conformsTo": "dct:conformsTo", "cr": "http://mlcommons.org/croissant/", "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"}, "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/", "examples": {"@id": "cr:examples", "@type": "@json"},
    "equivalentProperty": "cr:equivalentProperty", "extract": "cr:extract", "field": "cr:field",
    "fileProperty": "cr:fileProperty", "fileObject": "cr:fileObject", "fileSet": "cr:fileSet", "format": "cr:format",
    "includes": "cr:includes", "isLiveDataset": "cr:isLiveDataset", "jsonPath": "cr:jsonPath", "key": "cr:key",
    "md5": "cr:md5", "parentField": "cr:parentField", "path": "cr:path", "recordSet": "cr:recordSet",
    "references": "cr:references", "regex": "cr:regex", "repeated": "cr:repeated", "replace": "cr:replace",
    "samplingRate": "cr:samplingRate", "sc": "https://schema.org/", "separator": "cr:separator",
    "source": "cr:source", "subField": "cr:subField", "transform": "cr:transform",
}

COLUMNS = (("label", "sc:Integer", "the dataset class (ClassLabel; names in the card)"),
           ("model_label", "sc:Integer", "the generator's class index"),
           ("index", "sc:Integer", "position in the split; the same noise seed at every value of the family"),
           ("seed", "sc:Integer", "the sample's noise seed (ctrlshift latents regenerates its latent)"),
           ("family", "sc:Text", "the shift family"),
           ("value", "sc:Float", "the family's control value"),
           ("intensity", "sc:Float", "the value on the family's physical axis"))


def _fields(config: str, fileset: str) -> list[dict]:
    src = {"fileSet": {"@id": fileset}}
    fields = [{"@type": "cr:Field", "@id": f"{config}/image", "name": "image", "dataType": "sc:ImageObject",
               "description": "the image (PNG)",
               "source": {**src, "extract": {"column": "image"}, "transform": {"jsonPath": "bytes"}}}]
    fields += [{"@type": "cr:Field", "@id": f"{config}/{col}", "name": col, "dataType": kind, "description": about,
                "source": {**src, "extract": {"column": col}}} for col, kind, about in COLUMNS]
    fields.append({"@type": "cr:Field", "@id": f"{config}/split", "name": "split", "dataType": "sc:Text",
                   "description": "train, val or test (from the shard's file name)",
                   "source": {**src, "extract": {"fileProperty": "filename"},
                              "transform": {"regex": "^(train|val|test)-.*\\.parquet$"}}})
    return fields


def croissant(manifest: dict, citation: str) -> dict:
    """The Croissant JSON-LD document of a dataset's manifest."""
    gen = manifest["generator"]
    configs = {n: ConfigInfo.from_json(c) for n, c in manifest["configs"].items()}
    distribution = [{"@type": "cr:FileObject", "@id": r["path"], "name": r["path"], "contentUrl": r["path"],
                     "encodingFormat": "application/x-parquet", "sha256": r["sha256"]} for r in manifest["shards"]]
    record_sets = []
    for name, info in configs.items():
        fileset = f"{name}-shards"
        distribution.append({"@type": "cr:FileSet", "@id": fileset, "name": fileset,
                             "description": f"the shards of config {name}",
                             "encodingFormat": "application/x-parquet", "includes": f"data/{name}/*.parquet"})
        record_sets.append({"@type": "cr:RecordSet", "@id": name, "name": name,
                            "description": f"{info.family} at value {info.value:g} ({info.axis} = {info.intensity:.4g})",
                            "field": _fields(name, fileset)})
    return {
        "@context": CONTEXT, "@type": "sc:Dataset", "name": manifest["name"],
        "description": manifest["card"]["description"] or
        "Images decoded by one generator from latent distributions shifted by controlled amounts (Control+Shift).",
        "conformsTo": "http://mlcommons.org/croissant/1.0", "license": manifest["card"]["license"],
        "url": f"https://huggingface.co/datasets/{manifest['name']}", "citeAs": citation,
        "version": "1.0.0", "keywords": ["distribution shift", "robustness", "synthetic", "ctrlshift"],
        "rai:dataCollection": f"Synthetic: every image is decoded by the generator {gen['source']} ({gen['backend']}) "
                              "from a latent drawn from a shifted distribution; nothing is collected from people.",
        "rai:dataCollectionType": "Synthetic data",
        "rai:personalSensitiveInformation": "None collected; the images are samples of a generative model's classes.",
        "rai:dataBiases": "The images inherit the biases of the generator's training data; the shift families change "
                          "the latent distribution only, by documented amounts (the card's intensity table).",
        "rai:dataUseCases": "Measuring how classifiers and vision-language models degrade under distribution shifts "
                            "of controlled intensity; not for training models meant to represent real data.",
        "rai:dataLimitations": "At strong shifts some images stop showing their class; `ctrlshift consistency` "
                               "measures the share that still does.",
        "distribution": distribution, "recordSet": record_sets,
    }


def write_croissant(root: Path, manifest: dict, citation: str) -> None:
    atomic_write_json(root / "croissant.json", croissant(manifest, citation))
