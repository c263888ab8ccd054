"""The ``diffusers-pipeline`` backend on tiny random pipelines built from configs: Stable
Diffusion and SDXL UNet pipelines, flow-matching SD3 and Flux transformer pipelines. The decoder's images equal
calling the pipeline itself with the same ``latents=``, do not depend on the batch size, and the
latent is the pipeline's initial noise in its own shape."""

from __future__ import annotations

import pytest
import torch

from ctrlshift.errors import ConfigError
from ctrlshift.generator.decoders import DecoderConfig, RuntimeConfig, create_decoder
from ctrlshift.generator.decoders.diffusers_pipeline import pack_flux, unpack_flux
from ctrlshift.generator.samplers import SamplerConfig

from .conftest import byte_clip_tokenizer

NAMES = ["cat", "dog", "eel"]


@pytest.fixture(scope="module")
def tiny_sd3_dir(tmp_path_factory):
    """SD3 with two tiny CLIP text encoders (no T5: SD3 pads with zeros without it), a tiny
    SD3Transformer2DModel and its FlowMatchEulerDiscreteScheduler."""
    from diffusers import (AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel,
                           StableDiffusion3Pipeline)
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    root = tmp_path_factory.mktemp("tiny-sd3")
    tok, vocab = byte_clip_tokenizer(root / "tok")
    end = vocab["<|endoftext|>"]
    torch.manual_seed(0)

    def clip():
        return CLIPTextModelWithProjection(CLIPTextConfig(
            vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
            max_position_embeddings=77, projection_dim=16, bos_token_id=vocab["<|startoftext|>"], eos_token_id=end,
            pad_token_id=end))

    tr = SD3Transformer2DModel(sample_size=4, patch_size=1, in_channels=4, num_layers=1, attention_head_dim=8,
                               num_attention_heads=2, caption_projection_dim=16, joint_attention_dim=32,
                               pooled_projection_dim=32, out_channels=4)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                        norm_num_groups=4, sample_size=8, shift_factor=0.06, scaling_factor=1.5)
    pipe = StableDiffusion3Pipeline(transformer=tr, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
                                    text_encoder=clip(), tokenizer=tok, text_encoder_2=clip(), tokenizer_2=tok,
                                    text_encoder_3=None, tokenizer_3=None)
    pipe.save_pretrained(root / "pipe")
    return root / "pipe"


@pytest.fixture(scope="module")
def tiny_sdxl_dir(tmp_path_factory):
    """SDXL: two tiny CLIP encoders (the second with projection), a UNet with SDXL's text-time
    added conditioning, and an EulerDiscreteScheduler."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    root = tmp_path_factory.mktemp("tiny-sdxl")
    tok, vocab = byte_clip_tokenizer(root / "tok")
    end = vocab["<|endoftext|>"]
    torch.manual_seed(0)
    text = dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=77, bos_token_id=vocab["<|startoftext|>"], eos_token_id=end, pad_token_id=end,
                projection_dim=16)
    unet = UNet2DConditionModel(sample_size=4, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(8, 16), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=2, norm_num_groups=4, addition_embed_type="text_time",
                                addition_time_embed_dim=8, projection_class_embeddings_input_dim=16 + 6 * 8)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                        norm_num_groups=4, sample_size=8)
    StableDiffusionXLPipeline(vae=vae, text_encoder=CLIPTextModel(CLIPTextConfig(**text)),
                              text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**text)), tokenizer=tok,
                              tokenizer_2=tok, unet=unet,
                              scheduler=EulerDiscreteScheduler(num_train_timesteps=50)).save_pretrained(root / "pipe")
    return root / "pipe"


NO_T5 = {"text_encoder_3": None, "tokenizer_3": None}  # how users load SD3 without its T5 encoder too


@pytest.fixture(scope="module")
def tiny_flux_dir(tmp_path_factory):
    """Flux with a tiny CLIP and a tiny T5 (its tokenizer a character-level Unigram built in
    memory), a tiny FluxTransformer2DModel taking 2x2-packed latents of a 4-channel VAE."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel, T5TokenizerFast

    root = tmp_path_factory.mktemp("tiny-flux")
    tok, vocab = byte_clip_tokenizer(root / "tok")
    end = vocab["<|endoftext|>"]
    torch.manual_seed(0)
    clip = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32,
                                        num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=77,
                                        bos_token_id=vocab["<|startoftext|>"], eos_token_id=end, pad_token_id=end))
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(chr(c), -1.0) for c in range(32, 127)]
    unigram = Tokenizer(models.Unigram(pieces, unk_id=2))
    unigram.pre_tokenizer = pre_tokenizers.Metaspace()
    t5tok = T5TokenizerFast(tokenizer_object=unigram, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                            extra_ids=0)
    t5 = T5EncoderModel(T5Config(vocab_size=len(pieces), d_model=16, d_ff=32, d_kv=8, num_layers=1, num_heads=2))
    tr = FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=8,
                                num_attention_heads=2, joint_attention_dim=16, pooled_projection_dim=16,
                                axes_dims_rope=[2, 2, 4])
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                        norm_num_groups=4, sample_size=8, shift_factor=0.06, scaling_factor=1.5)
    FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=clip, tokenizer=tok,
                 text_encoder_2=t5, tokenizer_2=t5tok, transformer=tr).save_pretrained(root / "pipe")
    return root / "pipe"


def test_flux_decodes_its_packed_latents_like_the_pipeline(tiny_flux_dir):
    """The ctrlshift latent is Flux's unpacked noise [C, H/f, W/f]; packed, it is exactly what the
    pipeline itself takes as latents=."""
    cfg = DecoderConfig(backend="diffusers-pipeline", source=str(tiny_flux_dir), class_names=NAMES,
                        latent_shape=[4, 8, 8], options={"call_kwargs": {"max_sequence_length": 16}})
    dec = create_decoder(cfg, SamplerConfig(steps=2), RuntimeConfig(device="cpu"))
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    labels = [1, 2]
    ours = dec.decode_float(z.reshape(2, -1), torch.tensor(labels))
    ref = pipeline_images(tiny_flux_dir, pack_flux(z), labels, 2, 1.0, max_sequence_length=16, hw=(8, 8)) * 2 - 1
    assert ours.shape == (2, 3, 16, 16)
    assert float((ours - ref).abs().max()) <= 1e-5
    with pytest.raises(ConfigError, match="Flux packs 2x2 patches, so H and W must be even"):
        create_decoder(DecoderConfig(backend="diffusers-pipeline", source=str(tiny_flux_dir), class_names=NAMES,
                                     latent_shape=[4, 7, 8]), SamplerConfig(steps=2), RuntimeConfig(device="cpu"))


def pipeline_images(source, z, labels, steps, guidance, template="a photo of a {}", hw=None,
                    max_sequence_length=None, **kwargs):
    """The pipeline itself, called with the same latents and prompts."""
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(source, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    h, w = hw or z.shape[-2:]
    prompts = [template.format(NAMES[k]) for k in labels]
    extra = {"max_sequence_length": max_sequence_length} if max_sequence_length else {}
    return pipe(prompt=prompts, latents=z, num_inference_steps=steps, guidance_scale=guidance, output_type="pt",
                height=h * pipe.vae_scale_factor, width=w * pipe.vae_scale_factor, **extra).images


@pytest.mark.parametrize("which, guidance", [("sd", 1.0), ("sd", 3.0), ("sd3", 1.0), ("sd3", 3.0), ("sdxl", 3.0)])
def test_pipeline_decoder_equals_the_pipeline(request, which, guidance):
    source = request.getfixturevalue(f"tiny_{which}_dir")
    extra = NO_T5 if which == "sd3" else {}
    cfg = DecoderConfig(backend="diffusers-pipeline", source=str(source), class_names=NAMES,
                        options={"pipeline_kwargs": extra})
    dec = create_decoder(cfg, SamplerConfig(steps=3, guidance_scale=guidance), RuntimeConfig(device="cpu"))
    assert dec.latent_shape == (4, 4, 4) and dec.num_classes == 3
    z = torch.randn(3, *dec.latent_shape, generator=torch.Generator().manual_seed(0))
    labels = [2, 0, 1]
    ours = dec.decode_float(z.reshape(3, -1), torch.tensor(labels))
    ref = pipeline_images(source, z, labels, 3, guidance, **extra) * 2 - 1
    assert ours.shape == (3, 3, 8, 8)
    assert float((ours - ref).abs().max()) <= 1e-5
    one = torch.cat([dec.decode_float(z[k:k + 1].reshape(1, -1), torch.tensor(labels[k:k + 1])) for k in range(3)])
    assert float((one - ours).abs().max()) <= 1e-5  # batch size does not change an image
    images = dec.decode(z.reshape(3, -1), torch.tensor(labels))
    assert images.dtype == torch.uint8 and images.shape == (3, 8, 8, 3)
    assert torch.equal(images, dec.decode(z.reshape(3, -1), torch.tensor(labels)))
    ident = dec.identity()
    assert ident["prompts"] == ["a photo of a cat", "a photo of a dog", "a photo of a eel"]
    expected = {"sd3": "FlowMatchEulerDiscreteScheduler", "sdxl": "EulerDiscreteScheduler"}.get(which, "DDIMScheduler")
    assert ident["sampler"]["scheduler"] == expected


def test_pipeline_scheduler_swaps_by_name_and_refuses_the_wrong_kind(tiny_sd_dir, tiny_sd3_dir):
    cpu = RuntimeConfig(device="cpu")
    cfg = DecoderConfig(backend="diffusers-pipeline", source=str(tiny_sd_dir), class_names=NAMES)
    dec = create_decoder(cfg, SamplerConfig(name="dpmsolver++", steps=3), cpu)
    assert dec.identity()["sampler"]["scheduler"] == "DPMSolverMultistepScheduler"
    flow = DecoderConfig(backend="diffusers-pipeline", source=str(tiny_sd3_dir), class_names=NAMES,
                         options={"pipeline_kwargs": NO_T5})
    with pytest.raises(ConfigError, match="'ddim' \\(DDIMScheduler\\) cannot drive this flow-matching model"):
        create_decoder(flow, SamplerConfig(name="ddim"), cpu)
    with pytest.raises(ConfigError, match="'euler-ancestral' .* adds fresh noise"):
        create_decoder(cfg, SamplerConfig(name="euler-ancestral"), cpu)
    with pytest.raises(ConfigError, match="sampler.name: the diffusers-pipeline backend decodes with"):
        create_decoder(cfg, SamplerConfig(name="edm-heun"), cpu)
    with pytest.raises(ConfigError, match="decoder.class_names: a text-to-image pipeline needs the class names"):
        create_decoder(DecoderConfig(backend="diffusers-pipeline", source=str(tiny_sd_dir)), SamplerConfig(), cpu)
    with pytest.raises(ConfigError, match="decoder.latent_shape: \\[3, 4, 4\\]; the pipeline's latent has 4 channels"):
        create_decoder(DecoderConfig(backend="diffusers-pipeline", source=str(tiny_sd_dir), class_names=NAMES,
                                     latent_shape=[3, 4, 4]), SamplerConfig(), cpu)


def test_the_latent_shape_picks_the_resolution(tiny_sd_dir):
    cfg = DecoderConfig(backend="diffusers-pipeline", source=str(tiny_sd_dir), class_names=NAMES,
                        latent_shape=[4, 8, 8], options={"negative_prompt": "blurry"})
    dec = create_decoder(cfg, SamplerConfig(steps=2, guidance_scale=2.0), RuntimeConfig(device="cpu"))
    assert dec.decode(torch.randn(2, 4 * 64), torch.tensor([0, 1])).shape == (2, 16, 16, 3)


def test_flux_packing_is_a_permutation_and_inverts():
    z = torch.randn(2, 16, 6, 8)
    packed = pack_flux(z)
    assert packed.shape == (2, 12, 64)
    assert torch.equal(unpack_flux(packed, 16, 6, 8), z)
    assert torch.equal(packed.flatten(1).sort().values, z.flatten(1).sort().values)  # same numbers, moved
    assert torch.equal(packed[0, 0, :4], z[0, 0, :2, :2].flatten())  # channel 0's first 2x2 patch first
