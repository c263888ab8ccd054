"""Config resolution and the one-line errors of bad input."""

from __future__ import annotations

import pytest

from ctrlshift.cli import main
from ctrlshift.config import apply_override, load_config, parse_override
from ctrlshift.errors import ConfigError
from ctrlshift.generator.spec import GenerateConfig

from .helpers import tiny_config


def test_order_defaults_then_yaml_then_overrides(write_config, tiny_unet_dir):
    path = write_config(tiny_config(tiny_unet_dir))
    cfg = load_config(GenerateConfig, path, ["sampler.steps=7", "shifts.1.values=[0, 10, 20]"])
    assert cfg.sampler.steps == 7  # override beats the YAML's 2
    assert cfg.runtime.batch_size == 3  # from the YAML
    assert cfg.sampler.rho == 7.0  # component default
    assert cfg.shifts[1].values == [0.0, 10.0, 20.0]
    assert cfg.shifts[0].train_value == 90.0  # the family's reference default fills in


def test_preset_by_name_and_family_defaults():
    cfg = load_config(GenerateConfig, "cifar10-edm-overlap")
    assert cfg.shifts[0].family == "overlap"
    assert cfg.shifts[0].values == [0.0, 10.0, 20.0, 30.0, 40.0]
    assert (cfg.splits.train.size, cfg.splits.train.seed) == (50000, 12345)


@pytest.mark.parametrize("override, fragment", [
    ("sampler.step=3", "unknown key 'sampler.step'; did you mean 'sampler.steps'?"),
    ("sampler.steps=abc", "sampler.steps: expected an integer, got 'abc'"),
    ("sampler.steps=0", "sampler.steps: 0 is out of range; expected a value >= 1"),
    ("sampler.name=ddimm", "sampler.name: unknown sampler 'ddimm' (did you mean 'ddim'?); known: "),
    ("runtime.compile=maybe", "runtime.compile: expected true or false"),
    ("labels=balance", "did you mean 'balanced'?"),
    ("shifts.0.family=trunc", "shifts.0.family: unknown shift family 'trunc' (did you mean 'truncation'?)"),
    ("shifts.1.values=[0, 120]", "shifts.1.values.1: 120.0 is out of range for family 'overlap'"),
    ("shifts.1.params.mix=2", "shifts.1.params.mix: 2.0 is out of range; expected a value in [0.0, 1.0]"),
    ("shifts.5.values=[1]", "'shifts.5' is not an index of a list of 2"),
    ("splits.test.size=-1", "splits.test.size: -1 is out of range"),
])
def test_bad_values_name_key_value_and_what_is_allowed(write_config, tiny_unet_dir, override, fragment):
    path = write_config(tiny_config(tiny_unet_dir))
    with pytest.raises(ConfigError) as err:
        load_config(GenerateConfig, path, [override])
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_false_string_is_false_not_truthy():
    assert parse_override("runtime.compile=False") == ("runtime.compile", False)
    assert parse_override("name=foo") == ("name", "foo")


def test_override_creates_sections_and_indexes_lists():
    data = {"shifts": [{"family": "extend"}]}
    apply_override(data, "shifts.0.params.mix", 0.3)
    apply_override(data, "runtime.batch_size", 8)
    assert data == {"shifts": [{"family": "extend", "params": {"mix": 0.3}}], "runtime": {"batch_size": 8}}


def test_cli_bad_input_exits_2_with_one_line(capsys, write_config, tiny_unet_dir, tmp_path):
    path = write_config(tiny_config(tiny_unet_dir))
    out = tmp_path / "out"
    assert main(["generate", str(path), "--out", str(out), "runtime.batch_sise=4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: unknown key 'runtime.batch_sise'; did you mean 'runtime.batch_size'? "
                   "(allowed here: device, dtype, batch_size, compile, compile_mode, encode_workers)"]
    assert not out.exists()  # nothing written


def test_cli_missing_config_file(capsys, tmp_path):
    assert main(["generate", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml' does not exist" in capsys.readouterr().err


def test_cli_unknown_preset_suggests(capsys):
    assert main(["generate", "tiyn", "--dry-run"]) == 2
    assert "did you mean 'tiny'?" in capsys.readouterr().err


def test_invalid_yaml_names_file_and_line(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nshifts: [\n")
    assert main(["generate", str(bad), "--dry-run"]) == 2
    assert "bad.yaml' line" in capsys.readouterr().err


def test_a_folder_named_like_a_preset_does_not_hide_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").mkdir()
    (tmp_path / "quickstart").mkdir()  # what the README's first command leaves behind
    assert load_config(GenerateConfig, "tiny").name == "tiny"
    assert load_config(GenerateConfig, "quickstart").name == "quickstart"
    assert main(["generate", "tiny", "--dry-run"]) == 0
    assert "dataset 'tiny'" in capsys.readouterr().out
    (tmp_path / "mine").mkdir()
    with pytest.raises(ConfigError, match=r"config 'mine' is neither a YAML file nor a preset \(a folder of that name"):
        load_config(GenerateConfig, "mine")
    with pytest.raises(ConfigError, match=r"config file 'sub/tiny.yaml' does not exist"):
        load_config(GenerateConfig, "sub/tiny.yaml")


def test_exponent_numbers_are_numbers(write_config, tiny_unet_dir):
    # YAML 1.1 (PyYAML) reads 1e30 as a string; for a number field it is the number
    cfg = load_config(GenerateConfig, write_config(tiny_config(tiny_unet_dir)), ["shifts.0.values=[1e30, 2.5E-3]"])
    assert cfg.shifts[0].values == [1e30, 2.5e-3]
    with pytest.raises(ConfigError, match="expected a number, got 'e5'"):
        load_config(GenerateConfig, write_config(tiny_config(tiny_unet_dir)), ["shifts.0.values=[e5]"])


@pytest.mark.parametrize("job, keys", [("generate", ["sampler.steps", "splits.train.size"]),
                                       ("evaluate", ["train.epochs", "seeds"]),
                                       ("latents", ["decoder.latent_shape"]),
                                       ("probe", ["max_patches", "top"]),
                                       ("gap", ["correction.alphas", "temperature"])])
def test_each_commands_help_lists_its_keys_with_defaults(job, keys, capsys):
    with pytest.raises(SystemExit):
        main([job, "--help"])
    text = capsys.readouterr().out
    for key in keys:
        line = next(l for l in text.splitlines() if l.strip().startswith(key + " "))
        assert line.rstrip().endswith("]"), line  # [default]
    assert "splits.test.size=100" not in text or job in ("generate",)


def test_help_without_a_command_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys\nfrom ctrlshift.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "generate" in proc.stdout
