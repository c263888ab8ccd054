"""Publishing: the plan (--dry-run, no network), the refusals that need no Hub, and the card."""

from __future__ import annotations

import shutil

import yaml

from ctrlshift.cli import main


def test_dry_run_prints_files_sizes_and_front_matter(tiny_dataset, capsys):
    ds = tiny_dataset[1]
    assert main(["publish", str(ds), "--repo", "me/x", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"publish {ds} -> https://huggingface.co/datasets/me/x (public): ")
    assert "data/overlap-30/test-00001-of-00002.parquet" in out and "manifest.json" in out
    assert ".ctrlshift" not in out and "card front matter:" in out and "config_name: overlap-30" in out


def test_publish_without_token_or_network_is_one_line_and_changes_nothing(tiny_dataset, tmp_path, capsys,
                                                                          monkeypatch):
    import huggingface_hub

    ds = tmp_path / "ds"
    shutil.copytree(tiny_dataset[1], ds)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in ds.rglob("*"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["publish", str(ds), "--repo", "me/x"]) == 2
    assert "HF_HUB_OFFLINE is set" in capsys.readouterr().err
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)  # as on a machine never logged in
    assert main(["publish", str(ds), "--repo", "me/x"]) == 2
    assert "no Hugging Face token; run `hf auth login` or set HF_TOKEN" in capsys.readouterr().err
    assert sorted((p.name, p.stat().st_mtime_ns) for p in ds.rglob("*")) == before


def test_a_damaged_dataset_or_a_bad_repo_id_is_refused(tiny_dataset, tmp_path, capsys):
    ds = tmp_path / "ds"
    shutil.copytree(tiny_dataset[1], ds)
    shutil.copy(next((ds / "data" / "overlap-0").glob("*.parquet")), ds / "data" / "overlap-0" / "extra.parquet")
    assert main(["publish", str(ds), "--repo", "me/x", "--dry-run"]) == 2
    assert "1 problems (the first:" in capsys.readouterr().err
    assert main(["publish", str(ds), "--repo", "../x", "--dry-run"]) == 2
    assert "--repo: '../x' is not OWNER/NAME" in capsys.readouterr().err


def test_the_card_is_complete_and_renders(tiny_dataset):
    card = (tiny_dataset[1] / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["size_categories"] == ["n<1K"] and front["task_categories"] == ["image-classification"]
    names = [f["name"] for f in front["dataset_info"]["features"]]
    assert names == ["image", "label", "model_label", "index", "seed", "family", "value", "intensity"]
    assert {c["config_name"] for c in front["configs"]} == {"truncation-90", "truncation-110", "overlap-0",
                                                            "overlap-30"}
    for section in ("## Sample grids", "## Load", "## Regenerate any image", "## Citation"):
        assert section in card
    assert "![overlap](grids/overlap.png)" in card and "@inproceedings{friedman2024controlshift" in card
    assert "ctrlshift latents config.yaml --family truncation --value 90" in card
    assert card.count("```") % 2 == 0  # every code block is closed
    body = card.split("---\n", 2)[2]
    table = [line for line in body.splitlines() if line.startswith("| ")]
    assert len({line.count("|") for line in table}) == 1  # the table's rows have the header's columns
