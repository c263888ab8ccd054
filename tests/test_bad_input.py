"""Bad input across every command: exit status 2, one line on stderr naming the key, file or value,
no traceback, and a watched dataset unchanged byte for byte."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from ctrlshift.cli import main

from .helpers import tiny_config


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def env(tiny_dataset, tmp_path_factory):
    """The files the cases point at: configs, a watched copy of the shared dataset, damaged copies."""
    cfg, ds = tiny_dataset
    root = tmp_path_factory.mktemp("bad-input")
    watched = root / "ds"  # the folder name the shared config's card quotes
    shutil.copytree(ds, watched)
    (root / "a-file").write_text("not a folder")
    (root / "empty").mkdir()
    (root / "flat").mkdir()
    (root / "flat" / "x.png").write_bytes(b"\x89PNG")
    (root / "bad.yaml").write_text("name: x\nshifts: [\n")
    (root / "list.yaml").write_text("- 1\n- 2\n")
    (root / "eval.yaml").write_text(yaml.safe_dump({"models": [{"name": "resnet20", "kwargs": {"width": 0.25}}],
                                                    "train": {"epochs": 1}, "device": "cpu"}))
    torch_cfg = tiny_config("tests.test_decoders:TinyG", **{"decoder.backend": "torch", "decoder.latent_shape": None,
                                                           "decoder.num_classes": None,
                                                           "decoder.options": {"kwargs": {"nope": 1}}})
    (root / "torch.yaml").write_text(yaml.safe_dump(torch_cfg))
    damaged = {}
    for kind in ("json", "edited", "unsafe", "bitflip", "truncated"):
        d = root / f"damaged-{kind}"
        shutil.copytree(ds, d)
        manifest = json.loads((d / "manifest.json").read_text())
        shard = d / manifest["shards"][0]["path"]
        if kind == "json":
            (d / "manifest.json").write_text("{ not json")
        elif kind == "edited":
            manifest["configs"]["overlap-30"]["value"] = "thirty"
            (d / "manifest.json").write_text(json.dumps(manifest))
        elif kind == "unsafe":
            manifest["configs"]["../../evil"] = manifest["configs"].pop("overlap-30")
            (d / "manifest.json").write_text(json.dumps(manifest))
        elif kind == "bitflip":
            data = bytearray(shard.read_bytes())
            data[len(data) // 2] ^= 1
            shard.write_bytes(bytes(data))
        else:
            shard.write_bytes(shard.read_bytes()[:200])
        damaged[kind] = d
    return {"cfg": str(cfg), "root": root, "ds": str(watched), "damaged": damaged, "before": snapshot(watched)}


CASES = [
    # (id, argv with {placeholders}, fragment of the one line)
    ("unknown-key", "generate {cfg} runtime.batch_sise=8 --dry-run", "unknown key 'runtime.batch_sise'"),
    ("bad-type", "generate {cfg} sampler.steps=abc --dry-run", "sampler.steps: expected an integer, got 'abc'"),
    ("out-of-range", "generate {cfg} sampler.steps=0 --dry-run", "sampler.steps: 0 is out of range"),
    ("unknown-family", "generate {cfg} shifts.0.family=trunc --dry-run", "shifts.0.family: unknown shift family 'trunc'"),
    ("unknown-sampler", "generate {cfg} sampler.name=ddimm --dry-run", "sampler.name: unknown sampler 'ddimm'"),
    ("stochastic-sampler", "generate {cfg} sampler.name=ddpm --dry-run",
     "sampler.name: 'ddpm' (DDPMScheduler) adds fresh noise at every step; a Control+Shift decoder must be a "
     "function of its latent, so use one of model, ddim"),
    ("bad-quantize", "generate {cfg} output.quantize=nearest --dry-run", "output.quantize: 'nearest'"),
    ("unknown-backend", "generate {cfg} decoder.backend=nope --dry-run", "decoder.backend: unknown decoder backend 'nope'"),
    ("all-splits-empty", "generate {cfg} splits.train.size=0 splits.val.size=0 splits.test.size=0 --dry-run",
     "splits: every split has size 0"),
    ("value-range", "generate {cfg} shifts.1.values=[0,120] --dry-run", "shifts.1.values.1: 120.0 is out of range"),
    ("repeated-value", "generate {cfg} shifts.0.values=[90,90] --dry-run", "shifts.0.values: [90.0, 90.0] repeats"),
    ("unsafe-shift-name", "generate {cfg} shifts.0.name=../../escaped --dry-run",
     "shifts.0.name: '../../escaped' is not a safe name"),
    ("unsafe-dataset-name", "generate {cfg} name=/abs/x --dry-run", "name: '/abs/x' is not a safe name"),
    ("not-key-value", "generate {cfg} sampler.steps --dry-run", "override 'sampler.steps': expected key=value"),
    ("bad-list-index", "generate {cfg} shifts.5.values=[1] --dry-run", "'shifts.5' is not an index of a list of 2"),
    ("missing-config", "generate {root}/nope.yaml", "config file"),
    ("unknown-preset", "generate tiyn --dry-run", "did you mean 'tiny'?"),
    ("invalid-yaml", "generate {root}/bad.yaml", "bad.yaml' line"),
    ("yaml-not-mapping", "generate {root}/list.yaml", "expected a mapping at the top, got list"),
    ("out-is-a-file", "generate {cfg} --out {root}/a-file --no-progress", "--out: "),
    ("out-unwritable", "generate {cfg} --out /proc/ctrlshift-nope/ds --no-progress", "/proc/ctrlshift-nope"),
    ("latents-unwritable", "latents {cfg} --family overlap --value 0 --split test --indices 0:2 "
                           "--out /proc/ctrlshift-nope/z.npy", "/proc/ctrlshift-nope"),
    ("device-foo", "generate {cfg} runtime.device=foo --out {root}/o1 --no-progress", "runtime.device: 'foo' is not a device"),
    ("device-cuda", "generate {cfg} runtime.device=cuda --out {root}/o2 --no-progress", "no CUDA device is available"),
    ("missing-checkpoint", "generate {cfg} decoder.source={root}/no-model --out {root}/o3 --no-progress",
     "decoder.source: "),
    ("module-kwargs", "generate {root}/torch.yaml --out {root}/o4 --no-progress", "decoder.options.kwargs: "),
    ("other-settings", "generate {cfg} sampler.steps=3 --out {ds} --no-progress", "made with other settings"),
    ("other-shard-size", "generate {cfg} output.shard_size=5 --out {ds} --no-progress", "made with other settings"),
    ("other-values", "generate {cfg} shifts.0.values=[90,100] --out {ds} --no-progress", "not written by this config"),
    ("unknown-plugin", "--plugin no_such_plugin_xyz generate {cfg} --dry-run", "--plugin.0: cannot import"),
    ("latents-indices", "latents {cfg} --family overlap --value 0 --split test --indices 3-5 --out {root}/z.npy",
     "--indices: '3-5' is not A:B"),
    ("latents-suffix", "latents {cfg} --family overlap --value 0 --split test --indices 0:2 --out {root}/z.txt",
     "must end in .npy"),
    ("latents-folder", "latents {cfg} --family overlap --value 0 --split test --indices 0:2 --out {root}/empty",
     "is a folder"),
    ("latents-family", "latents {cfg} --family nope --value 0 --split test --indices 0:2 --out {root}/z.npy",
     "--family: 'nope' is not in the config"),
    ("latents-range", "latents {cfg} --family overlap --value 0 --split test --indices 5:99 --out {root}/z.npy",
     "outside the test split"),
    ("evaluate-no-folder", "evaluate {root}/eval.yaml --data {root}/none --out {root}/r", "is not a folder"),
    ("evaluate-no-manifest", "evaluate {root}/eval.yaml --data {root}/empty --out {root}/r", "no manifest.json"),
    ("evaluate-augment", "evaluate {root}/eval.yaml --data {ds} --out {root}/r augments=[cutout]",
     "augments: ['cutout'] are not augmentation presets"),
    ("evaluate-family", "evaluate {root}/eval.yaml --data {ds} --out {root}/r families=[rotation]",
     "families: ['rotation'] are not in"),
    ("evaluate-no-models", "evaluate {root}/eval.yaml --data {ds} --out {root}/r models=[]", "models: empty"),
    ("evaluate-generate-preset", "evaluate tiny --data {ds} --out {root}/r",
     "config 'tiny' is a generate preset, not an evaluate one; evaluate presets: claims-augment, claims-size, claims-zoo, quickstart-evaluate"),
    ("gap-generate-preset", "gap quickstart --out {root}/g0", "config 'quickstart' is a generate preset, not a gap one"),
    ("section-without-keys", "generate {cfg} shifts.0.params.mix=2 --dry-run",
     "unknown key 'shifts.0.params.mix' (this section takes no keys)"),
    ("manifest-json", "evaluate {root}/eval.yaml --data {damaged[json]} --out {root}/r", "manifest.json: not valid JSON"),
    ("manifest-edited", "evaluate {root}/eval.yaml --data {damaged[edited]} --out {root}/r",
     "configs.overlap-30.value: expected a number"),
    ("manifest-unsafe", "evaluate {root}/eval.yaml --data {damaged[unsafe]} --out {root}/r",
     "config name '../../evil' is not a safe folder name"),
    ("shard-bitflip", "evaluate {root}/eval.yaml --data {damaged[bitflip]} --out {root}/r",
     "checksum does not match the manifest"),
    ("shard-truncated", "export {damaged[truncated]} --out {root}/x1 --no-progress", "checksum does not match the manifest"),
    ("export-manifest-json", "export {damaged[json]} --out {root}/x2 --no-progress", "manifest.json: not valid JSON"),
    ("export-out-file", "export {ds} --out {root}/a-file --no-progress", "is a file"),
    ("export-into-dataset", "export {ds} --out {ds}/sub --no-progress", "inside the dataset itself"),
    ("build-empty", "build {root}/empty", "no ctrlshift-result/1 result files"),
    ("build-not-folder", "build {root}/none", "is not a folder"),
    ("gap-empty-folder", "gap gap-tiny-clip data.source={root}/empty --out {root}/g1",
     "is neither a ctrlshift dataset (no manifest.json) nor an ImageFolder tree"),
    ("gap-flat-folder", "gap gap-tiny-clip data.source={root}/flat --out {root}/g2", "nor an ImageFolder tree"),
    ("gap-missing-source", "gap gap-tiny-clip data.source={root}/none --out {root}/g3", "does not exist"),
    ("gap-unknown-source", "gap gap-tiny-clip data.source=mnist5 --out {root}/g4", "unknown data source 'mnist5'"),
    ("gap-backend", "gap gap-tiny-clip vlm.backend=nope --out {root}/g5", "vlm.backend: unknown VLM backend 'nope'"),
    ("gap-templates", "gap gap-tiny-clip templates=nope --out {root}/g6", "templates: 'nope' is neither"),
    ("gap-correction", "gap gap-tiny-clip correction.kinds=[foo] --out {root}/g7", "correction.kinds: ['foo']"),
    ("gap-damaged", "gap gap-tiny-clip data.source={damaged[bitflip]} --out {root}/g8", "checksum does not match"),
    ("toy-unknown-key", "gap toy dims=3 --out {root}/t", "unknown key 'dims'"),
    ("probe-missing-source", "probe first-layer probe-first-layer data.source={root}/none --out {root}/p1",
     "does not exist"),
    ("probe-no-train", "probe outliers probe-outliers data.source={root}/flat --out {root}/p2", "nor an ImageFolder"),
]


@pytest.mark.parametrize("case, argv, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(env, case, argv, fragment, capsys):
    args = argv.format(cfg=env["cfg"], root=env["root"], ds=env["ds"], damaged=env["damaged"]).split()
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.strip()]
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert fragment in lines[0], lines[0]
    assert snapshot(Path(env["ds"])) == env["before"]  # nothing already written is damaged


def test_there_are_at_least_forty_cases():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)
