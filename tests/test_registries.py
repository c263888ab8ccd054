"""Registries that dispatch: data sources, VLM backends, samplers, decoders are chosen by name."""

from __future__ import annotations

import pytest

from ctrlshift.config import load_config
from ctrlshift.dataset.sources import SOURCES, load_source, resolve_source
from ctrlshift.errors import ConfigError, CtrlshiftError
from ctrlshift.generator.samplers import SAMPLERS, SamplerConfig, create_sampler


def test_data_sources_resolve_by_name_prefix_or_folder(tiny_dataset, tmp_path):
    _, ds = tiny_dataset
    (tmp_path / "tree" / "a").mkdir(parents=True)
    assert {"mnist5k", "ctrlshift", "imagefolder", "torchvision"} <= set(SOURCES.list())
    assert resolve_source("mnist5k") == ("mnist5k", "mnist5k")
    assert resolve_source(str(ds)) == ("ctrlshift", str(ds))
    assert resolve_source(str(tmp_path / "tree")) == ("imagefolder", str(tmp_path / "tree"))
    assert resolve_source(f"imagefolder:{tmp_path}") == ("imagefolder", str(tmp_path))
    assert resolve_source("torchvision:CIFAR10:/data:test") == ("torchvision", "CIFAR10:/data:test")
    with pytest.raises(ConfigError, match=r"data.source: unknown data source 'mnist5' \(did you mean 'mnist5k'\?\)"):
        load_source("mnist5")
    with pytest.raises(CtrlshiftError, match="data.source: '/no/such/folder' does not exist"):
        load_source("/no/such/folder")


def test_ctrlshift_source_reads_the_base_config(tiny_dataset):
    _, ds = tiny_dataset
    data = load_source(str(ds), train=True)
    assert data.dataset is not None and data.key["config"] == "truncation-90"
    assert len(data.test) == 7 and len(data.train) == 10 and data.class_names[0] == "class_0"
    assert load_source(str(ds)).train is None  # only decoded when asked for


def test_vlm_backend_is_checked_against_its_registry():
    from ctrlshift.gap.job import GapConfig

    with pytest.raises(ConfigError, match=r"vlm.backend: unknown VLM backend 'open-clip' \(did you mean 'open_clip'\?\)"):
        load_config(GapConfig, "gap-tiny-clip", ["vlm.backend=open-clip"])


def test_samplers_know_their_network_calls_and_networks():
    assert set(SAMPLERS.list()) >= {"ddim", "edm-heun"}
    assert create_sampler(SamplerConfig("ddim", steps=7)).network_calls() == 7
    assert create_sampler(SamplerConfig("edm-heun", steps=7)).network_calls() == 13  # Heun: 2 per step but the last
    with pytest.raises(ConfigError, match="sampler.name: the edm backend decodes with 'edm-heun', not 'ddim'"):
        create_sampler(SamplerConfig("ddim"), "edm", "edm")


def test_dry_run_counts_network_calls_through_the_sampler(tiny_dataset, capsys):
    from ctrlshift.cli import main

    cfg, _ = tiny_dataset
    assert main(["generate", str(cfg), "sampler.name=edm-heun", "sampler.steps=3", "--dry-run"]) == 0
    assert "5 network calls per batch of 3" in capsys.readouterr().out


def test_listings_show_the_backends_and_schedulers_with_what_they_are(capsys):
    from ctrlshift.cli import main

    assert main(["list", "samplers"]) == 0
    out = capsys.readouterr().out
    for line in ("flow-euler", "dpmsolver++", "unipc", "model ", "edm-heun"):
        assert line in out
    assert "refused: diffusers DDPMScheduler is stochastic" in out
    assert main(["list", "decoders"]) == 0
    out = capsys.readouterr().out
    assert "diffusers-pipeline  Any text-to-image pipeline taking latents=" in out
