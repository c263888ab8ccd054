"""The package's shape: parts as siblings on the ground floor, the Python API, presets in the wheel,
and the README's "From Python" section run as written."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def python(code: str, cwd: Path = ROOT, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=timeout)


@pytest.mark.parametrize("part", ["ctrlshift.evaluation", "ctrlshift.gap"])
def test_importing_a_part_does_not_import_the_generator(part):
    # Every module of the part, its job modules included.
    proc = python(f"import sys, pkgutil, importlib, {part}\n"
                  f"for m in pkgutil.walk_packages({part}.__path__, '{part}.'): importlib.import_module(m.name)\n"
                  "bad = sorted(m for m in sys.modules if m.startswith('ctrlshift.generator'))\n"
                  "assert not bad, bad\n")
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_ground_floor_imports_no_part():
    proc = python("import sys, ctrlshift, ctrlshift.dataset, ctrlshift.models, ctrlshift.results, ctrlshift.files, "
                  "ctrlshift.plugins, ctrlshift.config\n"
                  "bad = sorted(m for m in sys.modules if m.split('.')[:2] in (['ctrlshift', 'generator'], "
                  "['ctrlshift', 'evaluation'], ['ctrlshift', 'gap']))\n"
                  "assert not bad, bad\n")
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_python_api_has_docstrings():
    import ctrlshift
    from ctrlshift import Dataset, build, evaluate, generate, load_config

    for obj in (generate, evaluate, build, load_config, Dataset, Dataset.open, ctrlshift.gap.run, ctrlshift.quickstart):
        assert obj.__doc__ and len(obj.__doc__.strip()) > 40, obj
    cfg = ctrlshift.load_config("generate", "tiny", ["sampler.steps=3"])
    assert cfg.sampler.steps == 3 and cfg.shifts[0].train_value == 90.0
    assert ctrlshift.load_config("evaluate", "quickstart-evaluate", {"train.epochs": 2}).train.epochs == 2


def test_api_overrides_use_double_underscores(tiny_dataset, tmp_path):
    import ctrlshift
    from ctrlshift.errors import ConfigError

    cfg_path, ref = tiny_dataset
    ds = ctrlshift.generate(str(cfg_path), tmp_path / "ds", progress=False, runtime__batch_size=5)
    assert isinstance(ds, ctrlshift.Dataset) and ds.dataset_hash == ctrlshift.Dataset.open(ref).dataset_hash
    with pytest.raises(ConfigError, match="unknown key 'sampler.stepz'"):
        ctrlshift.generate(str(cfg_path), tmp_path / "x", sampler__stepz=2)
    assert not (tmp_path / "x").exists()


def test_every_preset_loads():
    import ctrlshift
    from ctrlshift.config import PRESET_DIR, list_presets

    assert PRESET_DIR == ROOT / "configs" or PRESET_DIR.name == "configs"
    kinds = {"gap-tiny-clip": "gap", "probe-first-layer": "probe-first-layer", "probe-outliers": "probe-outliers",
             "quickstart-evaluate": "evaluate", "claims-zoo": "evaluate", "claims-augment": "evaluate",
             "claims-size": "evaluate"}
    names = list_presets()
    assert {"tiny", "quickstart", "cifar10-edm-overlap", "gap-tiny-clip"} <= set(names)
    assert sorted(p.stem for p in (ROOT / "configs").glob("*.yaml")) == names
    for name in names:
        ctrlshift.load_config(kinds.get(name, "generate"), name)


@pytest.mark.slow
def test_the_wheel_ships_every_package_and_preset(tmp_path):
    """Build the wheel from the tracked files alone, as a fresh clone would."""
    src = tmp_path / "src"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    untracked = subprocess.run(["git", "ls-files", "-z", "--others", "--exclude-standard"], cwd=ROOT,
                               capture_output=True, check=True).stdout.split(b"\0")
    for rel in filter(None, files + untracked):
        path = ROOT / rel.decode()
        if path.is_file():
            (src / rel.decode()).parent.mkdir(parents=True, exist_ok=True)
            (src / rel.decode()).write_bytes(path.read_bytes())
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", ".",
                           "-w", str(tmp_path / "dist")], cwd=src, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    wheel, = (tmp_path / "dist").glob("ctrlshift-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for preset in (ROOT / "configs").glob("*.yaml"):
        assert f"ctrlshift/configs/{preset.name}" in names
    for init in (ROOT / "ctrlshift").rglob("__init__.py"):
        assert str(init.relative_to(ROOT)) in names, init
    assert "ctrlshift/models/templates/mnist.json" in names
    assert "ctrlshift/assets/tiny-mnist/unet/diffusion_pytorch_model.safetensors" in names
    # Installed from the wheel (no source tree around), the presets resolve by name.
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    proc = subprocess.run([sys.executable, "-c", "import ctrlshift, ctrlshift.config as c; "
                           "print(c.PRESET_DIR); print(ctrlshift.load_config('generate', 'tiny').name)"],
                          cwd=tmp_path, capture_output=True, text=True, env={"PYTHONPATH": str(target), "PATH": ""})
    assert proc.returncode == 0, proc.stderr[-2000:]
    preset_dir, name = proc.stdout.split()
    assert Path(preset_dir) == target / "ctrlshift" / "configs" and name == "tiny"


@pytest.mark.slow
def test_readme_from_python_runs_as_written(tmp_path):
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## From Python"):]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    proc = python(code, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "dataset: datasets/api-demo (9 configs" in proc.stdout
    assert "overlap theta [0.0, 0.628, 1.257]" in proc.stdout
    assert "## api-demo / truncation" in proc.stdout
    assert (tmp_path / "results" / "api-demo" / "leaderboard.md").is_file()


def test_no_submodule_shadows_an_api_function():
    """``import ctrlshift.X`` rebinds ``ctrlshift.X`` to the module: no API name may be a module."""
    import importlib
    import pkgutil

    import ctrlshift

    modules = {m.name for m in pkgutil.iter_modules(ctrlshift.__path__)} - {"__main__"}
    functions = {n for n in ctrlshift.__all__ if n != "Dataset"}
    assert not functions & modules, functions & modules
    for name in modules:
        importlib.import_module(f"ctrlshift.{name}")
    assert all(callable(getattr(ctrlshift, n)) and not isinstance(getattr(ctrlshift, n), type(ctrlshift))
               for n in functions)
