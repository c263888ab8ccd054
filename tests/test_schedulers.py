"""diffusers' own schedulers drive the diffusers backends: the decoders equal a plain diffusers
``scheduler.step`` loop (and ``DiTPipeline`` itself) under every timestep spacing, prediction
type and clipping the model's config may set; stochastic schedulers are refused."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from ctrlshift.errors import ConfigError
from ctrlshift.generator.decoders import DecoderConfig, RuntimeConfig, create_decoder
from ctrlshift.generator.samplers import SAMPLERS, SamplerConfig, create_sampler

from .conftest import build_tiny_dit

CPU = RuntimeConfig(device="cpu", batch_size=4)
SPACINGS = ["leading", "trailing", "linspace"]
PREDICTIONS = ["epsilon", "v_prediction"]


def plain_loop(scheduler, net, z, steps):
    """The loop every diffusers pipeline runs, written out: no ctrlshift code involved."""
    scheduler.set_timesteps(steps)
    x = z * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x = scheduler.step(net(scheduler.scale_model_input(x, t), t), t, x).prev_sample
    return x


def with_scheduler(src, dst, config: dict, components=("unet",), index=False):
    dst.mkdir(parents=True)
    for c in components:
        shutil.copytree(src / c, dst / c)
    if index:
        shutil.copy(src / "model_index.json", dst / "model_index.json")
    (dst / "scheduler").mkdir()
    (dst / "scheduler" / "scheduler_config.json").write_text(json.dumps(config))
    return dst


def ddim_config(spacing, prediction, clip, steps_offset=1, n=100):
    return {"_class_name": "DDIMScheduler", "num_train_timesteps": n, "timestep_spacing": spacing,
            "prediction_type": prediction, "clip_sample": clip, "steps_offset": steps_offset,
            "beta_schedule": "squaredcos_cap_v2", "set_alpha_to_one": True}


def latents(n, shape, seed=0):
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("clip", [True, False])
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("spacing", SPACINGS)
def test_unet_decoder_equals_the_plain_diffusers_loop(tiny_unet_dir, tmp_path, spacing, prediction, clip):
    from diffusers import DDIMScheduler, UNet2DModel

    config = ddim_config(spacing, prediction, clip)
    root = with_scheduler(tiny_unet_dir, tmp_path / "m", config)
    dec = create_decoder(DecoderConfig(source=str(root)), SamplerConfig(steps=5), CPU)
    z, y = latents(3, dec.latent_shape), torch.tensor([0, 1, 3])
    ours = dec.decode_float(z.reshape(3, -1), y)
    unet = UNet2DModel.from_pretrained(root / "unet").eval()
    with torch.no_grad():
        ref = plain_loop(DDIMScheduler.from_config(config), lambda x, t: unet(x, t, class_labels=y).sample, z, 5)
    assert float((ours - ref).abs().max()) <= 1e-5
    assert dec.identity()["sampler"]["config"]["timestep_spacing"] == spacing


@pytest.mark.parametrize("name, cls", [("dpmsolver++", "DPMSolverMultistepScheduler"),
                                       ("unipc", "UniPCMultistepScheduler"), ("euler", "EulerDiscreteScheduler"),
                                       ("heun", "HeunDiscreteScheduler"), ("deis", "DEISMultistepScheduler")])
def test_any_deterministic_scheduler_by_name_equals_its_loop(tiny_unet_dir, name, cls):
    import diffusers
    from diffusers import UNet2DModel

    sampler = SamplerConfig(name=name, steps=4, options={"timestep_spacing": "trailing"})
    dec = create_decoder(DecoderConfig(source=str(tiny_unet_dir)), sampler, CPU)
    z, y = latents(2, dec.latent_shape, 1), torch.tensor([2, 0])
    ours = dec.decode_float(z.reshape(2, -1), y)
    config = json.loads((tiny_unet_dir / "scheduler" / "scheduler_config.json").read_text())
    sched = getattr(diffusers, cls).from_config(config, **create_sampler(sampler).fixed, timestep_spacing="trailing")
    unet = UNet2DModel.from_pretrained(tiny_unet_dir / "unet").eval()
    with torch.no_grad():
        ref = plain_loop(sched, lambda x, t: unet(x, t, class_labels=y).sample, z, 4)
    assert float((ours - ref).abs().max()) <= 1e-5
    ident = dec.identity()["sampler"]
    assert ident["scheduler"] == cls and ident["network_calls"] == len(sched.timesteps)
    assert torch.equal(dec.decode(z.reshape(2, -1), y), dec.decode(z.reshape(2, -1), y))


@pytest.fixture(scope="module")
def tiny_dit(tmp_path_factory):
    return build_tiny_dit(tmp_path_factory.mktemp("dit"), 1000)


@pytest.mark.parametrize("guidance", [1.0, 3.0])
@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("spacing", SPACINGS)
def test_dit_decoder_equals_dit_pipeline(tiny_dit, tmp_path, spacing, prediction, guidance):
    """DiTPipeline draws its latents with ``randn_tensor`` from the generator; the same latents
    through ctrlshift's DiT decoder give the pipeline's images."""
    from diffusers import DiTPipeline

    config = ddim_config(spacing, prediction, False, steps_offset=0, n=50)
    root = with_scheduler(tiny_dit, tmp_path / "m", config, ("transformer", "vae"), index=True)
    dec = create_decoder(DecoderConfig(backend="diffusers-dit", source=str(root)),
                         SamplerConfig(steps=4, guidance_scale=guidance), CPU)
    pipe = DiTPipeline.from_pretrained(root)
    pipe.set_progress_bar_config(disable=True)
    y = [1, 4, 0]
    ref = pipe(class_labels=y, guidance_scale=guidance, num_inference_steps=4, output_type="np",
               generator=torch.Generator().manual_seed(7)).images
    z = latents(3, dec.latent_shape, 7)
    ours = (dec.decode_float(z.reshape(3, -1), torch.tensor(y)) / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)
    assert float((ours - torch.from_numpy(ref)).abs().max()) <= 1e-5


def test_stochastic_schedulers_are_refused_with_the_alternatives(tiny_unet_dir, tmp_path):
    for name in ("ddpm", "euler-ancestral", "dpmsolver-sde"):
        with pytest.raises(ConfigError, match=rf"sampler.name: '{name}' .* adds fresh noise at every step; a "
                                              r"Control\+Shift decoder must be a function of its latent, so use one "
                                              "of model, ddim, dpmsolver\\+\\+"):
            create_sampler(SamplerConfig(name=name))
    with pytest.raises(ConfigError, match="algorithm_type 'sde-dpmsolver\\+\\+' is an SDE solver"):
        create_sampler(SamplerConfig(name="dpmsolver++", options={"algorithm_type": "sde-dpmsolver++"}))
    with pytest.raises(ConfigError, match="eta = 0.5 adds fresh noise"):
        create_sampler(SamplerConfig(name="ddim", options={"eta": 0.5}))
    ddpm = dict(ddim_config("leading", "epsilon", True), _class_name="DDPMScheduler")
    root = with_scheduler(tiny_unet_dir, tmp_path / "ddpm", ddpm)
    with pytest.raises(ConfigError, match="sampler.name: DDPMScheduler adds fresh noise at every step \\('model' on "
                                          "'DDPMScheduler'\\).* set sampler.name to one of model, ddim"):
        create_decoder(DecoderConfig(source=str(root)), SamplerConfig(name="model"), CPU)
    dec = create_decoder(DecoderConfig(source=str(root)), SamplerConfig(name="ddim", steps=2), CPU)
    assert dec.identity()["sampler"]["scheduler"] == "DDIMScheduler"  # the DDPM model's own betas, DDIM steps


def test_flow_and_diffusion_schedulers_do_not_mix(tiny_unet_dir):
    with pytest.raises(ConfigError, match="'flow-euler' \\(FlowMatchEulerDiscreteScheduler\\) cannot drive this "
                                          "variance-preserving \\(diffusion\\) model"):
        create_decoder(DecoderConfig(source=str(tiny_unet_dir)), SamplerConfig(name="flow-euler"), CPU)


def test_network_calls_come_from_the_scheduler():
    assert create_sampler(SamplerConfig(name="heun", steps=5)).network_calls() == 9
    assert create_sampler(SamplerConfig(name="ddim", steps=5)).network_calls() == 5
    assert {"model", "ddim", "dpmsolver++", "unipc", "euler", "heun", "flow-euler", "edm-heun"} <= set(SAMPLERS.list())
