"""Plugins from docs/extending.md, run as written: a shift family and a decoder in modules that are
not installed, imported from a folder on sys.path by `--plugin` and by a config's `plugins:` key;
and a module installed through the `ctrlshift.plugins` entry-point group."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from ctrlshift import plugins
from ctrlshift.cli import main
from ctrlshift.dataset import Dataset, iter_rows
from ctrlshift.generator.decoders import DECODERS
from ctrlshift.generator.shifts import FAMILIES
from ctrlshift.models import MODELS

DOC = Path(__file__).resolve().parent.parent / "docs" / "extending.md"


def doc_files() -> dict[str, str]:
    """Code blocks of docs/extending.md whose first line is ``# file: NAME``."""
    blocks = re.findall(r"```(?:python|yaml)\n# file: (\S+)\n(.*?)```", DOC.read_text(), flags=re.S)
    return {name: body for name, body in blocks}


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A folder on sys.path; afterwards the modules imported from it and their registrations go."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    before = {reg: set(reg._entries) for reg in (FAMILIES, DECODERS, MODELS)}
    yield folder
    for mod in [m for m, v in sys.modules.items() if str(folder) in str(getattr(v, "__file__", "") or "")]:
        del sys.modules[mod]
    for reg, names in before.items():
        for name in set(reg._entries) - names:
            del reg._entries[name]


def test_the_docs_show_a_family_a_decoder_and_a_config():
    assert set(doc_files()) == {"ctrlshift_dropout.py", "ctrlshift_stripes.py", "stripes.yaml"}


def test_doc_plugins_dry_run_and_generate(plugin_dir, tmp_path, capsys):
    for name, body in doc_files().items():
        (plugin_dir / name).write_text(body)
    cfg = plugin_dir / "stripes.yaml"
    assert "dropout" not in FAMILIES and "stripes" not in DECODERS  # nothing installed them

    # --plugin imports the family; the config's plugins: key imports both before validation
    assert main(["--plugin", "ctrlshift_dropout", "generate", str(cfg), "--out", str(tmp_path / "dry"),
                 "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "3 configs, 4 shards, 32 images" in text and "dropout-30" in text
    assert not (tmp_path / "dry").exists()

    out = tmp_path / "ds"
    assert main(["generate", str(cfg), "--out", str(out), "--no-progress"]) == 0
    ds = Dataset.open(out)
    assert list(ds.families()) == ["dropout"]
    fam = ds.families()["dropout"]
    assert fam.axis == "kept" and fam.tests == ["dropout-100", "dropout-60", "dropout-30"]
    assert [ds.configs[c].intensity for c in fam.tests] == [1.0, 0.6, 0.3]
    assert ds.class_names == ["period-2", "period-3", "period-4", "period-5"]
    assert ds.manifest["generator"]["backend"] == "stripes"
    assert ds.manifest["config"]["plugins"] == ["ctrlshift_dropout", "ctrlshift_stripes"]
    base = [r["image"] for r in iter_rows(out, "dropout-100", "test")]
    far = [r["image"] for r in iter_rows(out, "dropout-30", "test")]
    assert len(base) == len(far) == 8 and base != far  # the same seeds, shifted latents
    assert ds.load("dropout-30", "test").images.shape == (8, 8, 8, 3)


def test_an_unknown_plugin_module_is_one_clear_line(capsys, tmp_path):
    assert main(["--plugin", "no_such_plugin_module", "list", "families"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --plugin.0: cannot import plugin module 'no_such_plugin_module'")
    assert err.count("\n") == 1


def test_entry_point_plugins_load_when_a_registry_misses(plugin_dir, monkeypatch):
    (plugin_dir / "ctrlshift_ep_demo.py").write_text(
        "from ctrlshift.models import MODELS\n\n\n"
        "@MODELS.register('ep_linear')\n"
        "def ep_linear(num_classes, in_chans=3, img_size=32):\n"
        "    import torch.nn as nn\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(in_chans * img_size * img_size, num_classes))\n")
    dist = plugin_dir / "ctrlshift_ep_demo-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ctrlshift-ep-demo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[ctrlshift.plugins]\nep_demo = ctrlshift_ep_demo\n")
    monkeypatch.setattr(plugins, "_loaded_entry_points", False)
    assert "ctrlshift_ep_demo" not in sys.modules
    from ctrlshift.models import create_model

    net = create_model("ep_linear", 3, img_size=4)  # the miss loads the entry point
    assert sum(p.numel() for p in net.parameters()) == 3 * 4 * 4 * 3 + 3
    assert "ep_linear" in MODELS.list("ep_*")
