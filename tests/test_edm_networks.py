"""ctrlshift's own EDM networks and the safe reader of EDM's released pickles.

The pickles here are written in the released checkpoints' format (:mod:`tests.edm_format`):
persistence records carrying module source code, class name, constructor kwargs and state. The
reader must rebuild the same network (same parameter names, same outputs) without the EDM code on
the path and without running the carried source, and refuse any foreign global in one line.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from ctrlshift.cli import main
from ctrlshift.errors import ConfigError
from ctrlshift.generator.decoders import DecoderConfig, RuntimeConfig, create_decoder, to_uint8
from ctrlshift.generator.networks.edm import PRECONDITIONINGS
from ctrlshift.generator.networks.edm_pickle import read_edm_pickle
from ctrlshift.generator.samplers import SamplerConfig, edm_heun, karras_sigmas

from .edm_format import dump_edm_pickle

CPU = RuntimeConfig(device="cpu", batch_size=4)
SONG = dict(model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4], dropout=0.0)
ADM = dict(model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4], dropout=0.0)
# The four networks of EDM's table: DDPM++ (VP), NCSN++ (VE), ADM (iDDPM), ADM (EDM), tiny.
KINDS = {
    "vp-ddpmpp": ("VPPrecond", dict(model_type="SongUNet", embedding_type="positional", encoder_type="standard",
                                    decoder_type="standard", channel_mult_noise=1, resample_filter=[1, 1], **SONG)),
    "ve-ncsnpp": ("VEPrecond", dict(model_type="SongUNet", embedding_type="fourier", encoder_type="residual",
                                    decoder_type="standard", channel_mult_noise=2, resample_filter=[1, 3, 3, 1],
                                    **SONG)),
    "iddpm-adm": ("iDDPMPrecond", dict(model_type="DhariwalUNet", M=50, **ADM)),
    "edm-adm": ("EDMPrecond", dict(model_type="DhariwalUNet", **ADM)),
    "edm-ddpmpp-skip": ("EDMPrecond", dict(model_type="SongUNet", embedding_type="positional", encoder_type="skip",
                                           decoder_type="skip", **SONG)),
}
TRAP = "import pathlib\npathlib.Path({path!r}).write_text('the pickled source ran')\n"


def make(kind: str, seed: int = 0):
    cls, extra = KINDS[kind]
    kwargs = dict(img_resolution=8, img_channels=3, label_dim=4, **extra)
    torch.manual_seed(seed)
    net = PRECONDITIONINGS[cls](**kwargs).eval()
    with torch.no_grad():  # the zero-initialised output layers would hide most of the network
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return net, kwargs


def denoise(net, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 3, 8, 8, generator=g) * 2
    sigma = torch.tensor([0.05, 1.0, 20.0])
    y = torch.eye(4)[[0, 3, 1]]
    with torch.no_grad():
        return net(x, sigma, y)


def pickle_of(net, kwargs, trap_path=None):
    src = TRAP.format(path=str(trap_path)) if trap_path else "raise SystemExit('never run')"
    return dump_edm_pickle({"ema": net, "loss_fn": None, "dataset_kwargs": {"resolution": 8}},
                           {id(net): kwargs}, module_src=src)


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_released_format_pickle_loads_without_edm_and_without_running_its_code(tmp_path, kind):
    net, kwargs = make(kind)
    trap = tmp_path / "ran.txt"
    (tmp_path / "net.pkl").write_bytes(pickle_of(net, kwargs, trap))
    dec = create_decoder(DecoderConfig(backend="edm", source=str(tmp_path / "net.pkl")),
                         SamplerConfig(name="edm-heun", steps=3), CPU)
    assert not trap.exists()  # the source code the pickle carries never ran
    loaded = dec.raw_net
    assert type(loaded).__module__ == "ctrlshift.generator.networks.edm"
    assert list(loaded.state_dict()) == list(net.state_dict())
    assert float((denoise(loaded) - denoise(net)).abs().max()) == 0.0
    assert dec.identity()["network"]["class_name"] == KINDS[kind][0]
    imgs = dec.decode(torch.randn(2, 192, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 2]))
    assert imgs.shape == (2, 8, 8, 3) and imgs.dtype == torch.uint8


def test_convert_writes_safetensors_and_json_that_load_with_no_pickle(tmp_path, monkeypatch):
    net, kwargs = make("vp-ddpmpp")
    (tmp_path / "net.pkl").write_bytes(pickle_of(net, kwargs))
    assert main(["convert", "edm", str(tmp_path / "net.pkl"), "--out", str(tmp_path / "conv")]) == 0
    assert sorted(p.name for p in (tmp_path / "conv").iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((tmp_path / "conv" / "config.json").read_text())
    assert config["class_name"] == "VPPrecond" and config["init_kwargs"]["model_channels"] == 16

    def no_pickle(*a, **k):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "Unpickler", no_pickle)
    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    dec = create_decoder(DecoderConfig(backend="edm", source=str(tmp_path / "conv")),
                         SamplerConfig(name="edm-heun", steps=3), CPU)
    assert float((denoise(dec.raw_net) - denoise(net)).abs().max()) == 0.0


def test_infinite_sigma_max_survives_conversion(tmp_path):
    net, kwargs = make("edm-adm")
    kwargs = dict(kwargs, sigma_max=float("inf"))
    (tmp_path / "net.pkl").write_bytes(pickle_of(net, kwargs))
    assert main(["convert", "edm", str(tmp_path / "net.pkl"), "--out", str(tmp_path / "conv")]) == 0
    dec = create_decoder(DecoderConfig(backend="edm", source=str(tmp_path / "conv")),
                         SamplerConfig(name="edm-heun", steps=2), CPU)
    assert dec.raw_net.sigma_max == float("inf")


class Evil:
    def __reduce__(self):
        import os

        return os.system, ("echo pwned > /dev/null",)


def test_a_pickle_carrying_a_foreign_global_is_refused_in_one_line(tmp_path, capsys):
    net, kwargs = make("vp-ddpmpp")
    data = dump_edm_pickle({"ema": net, "extra": Evil()}, {id(net): kwargs})
    (tmp_path / "evil.pkl").write_bytes(data)
    with pytest.raises(ConfigError) as err:
        read_edm_pickle(data, "evil.pkl")
    msg = str(err.value)
    assert "\n" not in msg
    assert "asks to import posix.system" in msg or "asks to import os.system" in msg
    assert "ctrlshift refuses to run code from a pickle" in msg
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"decoder: {{backend: edm, source: {tmp_path / 'evil.pkl'}}}\nsampler: {{name: edm-heun}}\n"
                   "shifts: [{family: truncation, values: [100]}]\nsplits: {test: {size: 2}}\n"
                   f"runtime: {{device: cpu}}\n")
    assert main(["generate", str(cfg), "--out", str(tmp_path / "ds"), "--no-progress"]) != 0
    lines = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln]
    assert len(lines) == 1 and "refuses to run code from a pickle" in lines[0]
    assert not (tmp_path / "ds").exists()


def test_a_class_ctrlshift_does_not_build_is_named(tmp_path):
    net, kwargs = make("vp-ddpmpp")
    data = dump_edm_pickle({"ema": net}, {id(net): kwargs})
    data = data.replace(b"VPPrecond", b"XXPrecond")
    (tmp_path / "x.pkl").write_bytes(data)
    with pytest.raises(ConfigError, match="holds a 'XXPrecond'; ctrlshift builds EDM networks of the classes "
                                          "VPPrecond, VEPrecond, iDDPMPrecond, EDMPrecond"):
        create_decoder(DecoderConfig(backend="edm", source=str(tmp_path / "x.pkl")), SamplerConfig(name="edm-heun"), CPU)


def test_the_sampler_rounds_every_sigma_through_the_network():
    """EDM's sampler calls ``net.round_sigma``: for iDDPM every level the network sees is one of its
    discrete levels ``u``, and the result differs from the unrounded schedule."""
    net, _ = make("iddpm-adm")
    seen = []

    def den(x, sigma, labels):
        seen.append(float(sigma))
        return net(x.float(), sigma.float().expand(x.shape[0]), torch.eye(4)[labels])

    z = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    sig = karras_sigmas(6, max(0.002, net.sigma_min), min(80.0, net.sigma_max))
    with torch.no_grad():
        rounded = edm_heun(den, z, torch.tensor([0, 1]), sig, round_sigma=net.round_sigma)
        plain = edm_heun(lambda x, s, y: net(x.float(), s.float().expand(2), torch.eye(4)[y]), z,
                         torch.tensor([0, 1]), sig)
    u = net.u.double().numpy()
    assert all(np.isclose(u, s, rtol=1e-6).any() for s in seen)
    assert float((rounded - plain).abs().max()) > 1e-3


def test_quantize_round_and_floor():
    x = torch.tensor([-1.0, -0.999, 0.0, 0.5, 0.999, 1.0]).reshape(1, 1, 1, 6)
    r = to_uint8(x, "round")[0, 0, :, 0].tolist()
    f = to_uint8(x, "floor")[0, 0, :, 0].tolist()
    assert r == [0, 0, 128, 191, 255, 255]  # (x*127.5+128) truncated: nearest grey level
    assert f == [0, 0, 127, 191, 254, 255]  # ((x/2+0.5)*255) truncated, as the reference code
    assert f == [int(((v / 2 + 0.5) * 255)) for v in x.flatten().tolist()]
