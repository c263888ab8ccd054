"""Every decoder backend with a tiny random network: shape, dtype, determinism, load errors."""

from __future__ import annotations

import json
import pickle
import sys
import textwrap

import pytest
import torch

from ctrlshift.errors import ConfigError
from ctrlshift.generator.decoders import (DecoderConfig, RuntimeConfig, create_decoder, list_decoders,
                                          to_uint8)
from ctrlshift.generator.samplers import SamplerConfig

from .conftest import build_tiny_dit

CPU = RuntimeConfig(device="cpu", batch_size=4)


class TinyEDM(torch.nn.Module):
    """A module with EDM's interface: ``net(x, sigma, class_labels)`` and its attributes."""

    def __init__(self, img_resolution=8, img_channels=3, label_dim=4):
        super().__init__()
        self.img_resolution, self.img_channels, self.label_dim = img_resolution, img_channels, label_dim
        self.sigma_min, self.sigma_max = 0.0, float("inf")
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(img_channels, img_channels, 3, padding=1)
        self.emb = torch.nn.Linear(label_dim, img_channels)

    def forward(self, x, sigma, class_labels):
        sigma = sigma.reshape(-1, 1, 1, 1)
        c_skip, c_out = 0.25 / (sigma ** 2 + 0.25), sigma * 0.5 / (sigma ** 2 + 0.25).sqrt()
        c_in = 1 / (sigma ** 2 + 0.25).sqrt()
        f = torch.tanh(self.conv(x * c_in) + self.emb(class_labels)[:, :, None, None])
        return c_skip * x + c_out * f


class TinyG(torch.nn.Module):
    """A GAN-style generator G(z, y)."""

    latent_shape = (2, 4, 4)
    num_classes = 3

    def __init__(self, width=8):
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(3, 2)
        self.up = torch.nn.ConvTranspose2d(2, 3, 4, stride=2, padding=1)

    def forward(self, z, y):
        return torch.tanh(self.up(z + self.emb(y)[:, :, None, None]))


def check_decoder(dec, n=3):
    z = torch.randn(n, *dec.latent_shape, generator=torch.Generator().manual_seed(0)).reshape(n, -1)
    y = torch.arange(n) % dec.num_classes
    out = dec.decode(z, y)
    assert out.dtype == torch.uint8 and out.dim() == 4 and out.shape[0] == n and out.shape[-1] == 3
    assert torch.equal(out, dec.decode(z, y))  # deterministic
    assert not torch.equal(out, dec.decode(z * 0.5, y))  # the latent matters
    assert len(dec.class_names) == dec.num_classes
    assert dec.identity()["latent_shape"] == list(dec.latent_shape)
    return out


def test_backends_are_registered():
    assert {"diffusers-unet", "diffusers-dit", "diffusers-sd", "edm", "torch"} <= set(list_decoders())


@pytest.mark.parametrize("sampler", ["ddim", "edm-heun"])
def test_diffusers_unet(tiny_unet_dir, sampler):
    dec = create_decoder(DecoderConfig(source=str(tiny_unet_dir)), SamplerConfig(name=sampler, steps=3), CPU)
    assert dec.latent_shape == (3, 8, 8) and dec.num_classes == 4
    out = check_decoder(dec)
    assert out.shape == (3, 8, 8, 3)
    # labels condition the output
    z = torch.randn(1, 192).expand(4, -1)
    imgs = dec.decode(z, torch.arange(4))
    assert not torch.equal(imgs[0], imgs[1])


def test_embedded_tiny_model_loads_through_the_diffusers_path():
    dec = create_decoder(DecoderConfig(source="ctrlshift://tiny-mnist"), SamplerConfig(steps=2), CPU)
    assert dec.latent_shape == (1, 16, 16) and dec.num_classes == 10
    assert dec.class_names[7] == "seven"
    out = check_decoder(dec, 2)
    assert out.shape == (2, 16, 16, 3) and torch.equal(out[..., 0], out[..., 2])  # gray repeated


@pytest.fixture(scope="module")
def tiny_dit_dir(tmp_path_factory):
    root = build_tiny_dit(tmp_path_factory.mktemp("tiny-dit"), 5)
    # The hub's facebook/DiT-XL-2-256 carries its ImageNet names in model_index.json like this.
    index = json.loads((root / "model_index.json").read_text())
    index["id2label"] = {str(k): n for k, n in enumerate(["ant", "bee, wasp", "cat", "dog", "eel"])}
    (root / "model_index.json").write_text(json.dumps(index))
    return root


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_diffusers_dit(tiny_dit_dir, guidance):
    dec = create_decoder(DecoderConfig(backend="diffusers-dit", source=str(tiny_dit_dir)),
                         SamplerConfig(steps=2, guidance_scale=guidance), CPU)
    assert dec.latent_shape == (4, 4, 4) and dec.num_classes == 5
    assert dec.class_names[:2] == ["ant", "bee"]
    assert check_decoder(dec).shape == (3, 8, 8, 3)


def test_dit_guidance_changes_the_output(tiny_dit_dir):
    outs = []
    for g in (1.0, 4.0):
        dec = create_decoder(DecoderConfig(backend="diffusers-dit", source=str(tiny_dit_dir)),
                             SamplerConfig(steps=2, guidance_scale=g), CPU)
        outs.append(dec.decode(torch.randn(2, 64, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1])))
    assert not torch.equal(*outs)


def test_edm_import_string():
    dec = create_decoder(DecoderConfig(backend="edm", source="tests.test_decoders:TinyEDM",
                                       options={"kwargs": {"label_dim": 4}}),
                         SamplerConfig(name="edm-heun", steps=3), CPU)
    assert dec.latent_shape == (3, 8, 8) and dec.num_classes == 4
    check_decoder(dec)


def make_edm_checkout(root):
    (root / "dnnlib").mkdir(parents=True)
    (root / "dnnlib" / "__init__.py").write_text("from . import util\n")
    (root / "dnnlib" / "util.py").write_text("def open_url(url):\n    raise OSError('offline')\n")
    (root / "torch_utils").mkdir()
    (root / "torch_utils" / "__init__.py").write_text("")
    (root / "training").mkdir()
    (root / "training" / "__init__.py").write_text("")
    (root / "training" / "networks.py").write_text(textwrap.dedent("""\
        import torch
        class Net(torch.nn.Module):
            img_resolution, img_channels, label_dim, sigma_min, sigma_max = 8, 3, 2, 0.0, float('inf')
            def __init__(self):
                super().__init__()
                self.scale = torch.nn.Parameter(torch.tensor(0.5))
            def forward(self, x, sigma, class_labels):
                s = sigma.reshape(-1, 1, 1, 1)
                return x * self.scale / (1 + s ** 2) + class_labels[:, :1, None, None]
        """))


def test_edm_checkout_stays_an_option_for_trusted_pickles(tmp_path):
    """A pickle of a foreign class is refused by the safe reader, and loads only through the
    EDM checkout the user names (which runs its code)."""
    checkout = tmp_path / "edm"
    make_edm_checkout(checkout)
    sys.path.insert(0, str(checkout))
    try:
        from training.networks import Net

        with open(tmp_path / "net.pkl", "wb") as f:
            pickle.dump({"ema": Net()}, f)
    finally:
        sys.path.remove(str(checkout))
        for mod in [m for m in sys.modules if m == "training" or m.startswith(("training.", "dnnlib", "torch_utils"))]:
            del sys.modules[mod]
    cfg = DecoderConfig(backend="edm", source=str(tmp_path / "net.pkl"))
    with pytest.raises(ConfigError, match=r"asks to import training\.networks\.Net, which is not part of an EDM "
                                          "network; ctrlshift refuses to run code from a pickle"):
        create_decoder(cfg, SamplerConfig(name="edm-heun", steps=2), CPU)
    bad = DecoderConfig(backend="edm", source=str(tmp_path / "net.pkl"), options={"edm_checkout": str(tmp_path)})
    with pytest.raises(ConfigError, match="has no dnnlib/ and torch_utils/"):
        create_decoder(bad, SamplerConfig(name="edm-heun", steps=2), CPU)
    good = DecoderConfig(backend="edm", source=str(tmp_path / "net.pkl"), options={"edm_checkout": str(checkout)})
    try:
        dec = create_decoder(good, SamplerConfig(name="edm-heun", steps=2), CPU)
        assert dec.num_classes == 2
        check_decoder(dec, 2)
    finally:
        sys.path.remove(str(checkout))


def test_torch_module_generator():
    dec = create_decoder(DecoderConfig(backend="torch", source="tests.test_decoders:TinyG"), SamplerConfig(), CPU)
    assert dec.latent_shape == (2, 4, 4) and dec.num_classes == 3
    assert check_decoder(dec).shape == (3, 8, 8, 3)


def test_missing_local_checkpoint_is_one_clear_line(tmp_path):
    with pytest.raises(ConfigError, match=r"decoder.source: '.*nope' does not exist"):
        create_decoder(DecoderConfig(source=str(tmp_path / "nope")), SamplerConfig(), CPU)


def test_unreachable_hub_id_says_what_to_check():
    with pytest.raises(ConfigError, match="could not load the UNet2DModel from 'someone/no-such-model/unet'"):
        create_decoder(DecoderConfig(source="someone/no-such-model"), SamplerConfig(), CPU)


def test_unknown_embedded_model_lists_embedded():
    with pytest.raises(ConfigError, match="no embedded model 'nope'; embedded: .*tiny-mnist"):
        create_decoder(DecoderConfig(source="ctrlshift://nope"), SamplerConfig(), CPU)


def test_class_count_and_shape_mismatch(tiny_unet_dir):
    with pytest.raises(ConfigError, match="decoder.num_classes: config says 10 but the model .* gives 4 classes"):
        create_decoder(DecoderConfig(source=str(tiny_unet_dir), num_classes=10), SamplerConfig(), CPU)
    with pytest.raises(ConfigError, match=r"decoder.latent_shape: config says \[3, 16, 16\] .* takes \[3, 8, 8\]"):
        create_decoder(DecoderConfig(source=str(tiny_unet_dir), latent_shape=[3, 16, 16]), SamplerConfig(), CPU)
    with pytest.raises(ConfigError, match=r"decoder.classes: \[7\] are not classes of the model"):
        create_decoder(DecoderConfig(source=str(tiny_unet_dir), classes=[0, 7]), SamplerConfig(), CPU)


def test_edm_backend_rejects_ddim():
    with pytest.raises(ConfigError, match="the edm backend decodes with 'edm-heun'"):
        create_decoder(DecoderConfig(backend="edm", source="tests.test_decoders:TinyEDM"), SamplerConfig(name="ddim"), CPU)


def test_to_uint8_rounds_like_edm():
    x = torch.tensor([-1.0, -0.5, 0.0, 0.999, 1.0, 3.0]).view(1, 1, 1, 6)
    out = to_uint8(x)
    assert out.shape == (1, 1, 6, 3)
    assert out[0, 0, :, 0].tolist() == [0, 64, 128, 255, 255, 255]


def test_stable_diffusion_prompts_from_class_names(tiny_sd_dir):
    cfg = DecoderConfig(backend="diffusers-sd", source=str(tiny_sd_dir), class_names=["cat", "dog", "eel"],
                        options={"prompt_template": "a photo of a {}"})
    dec = create_decoder(cfg, SamplerConfig(steps=2, guidance_scale=3.0), CPU)
    assert dec.latent_shape == (4, 4, 4) and dec.num_classes == 3
    assert check_decoder(dec).shape == (3, 8, 8, 3)
    z = torch.randn(1, 64).expand(2, -1)
    imgs = dec.decode(z, torch.tensor([0, 1]))
    assert not torch.equal(imgs[0], imgs[1])  # the prompt conditions the image
    with pytest.raises(ConfigError, match="decoder.class_names: Stable Diffusion needs the class names"):
        create_decoder(DecoderConfig(backend="diffusers-sd", source=str(tiny_sd_dir)), SamplerConfig(), CPU)
