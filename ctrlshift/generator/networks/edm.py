"""The EDM networks (Karras et al. 2022), written for ctrlshift: no EDM checkout, no pickled code.

Architectures: :class:`SongUNet` (DDPM++ and NCSN++ of Song et al.) and :class:`DhariwalUNet`
(ADM of Dhariwal and Nichol); preconditionings :class:`VPPrecond`, :class:`VEPrecond`,
:class:`iDDPMPrecond` and :class:`EDMPrecond`. Constructor arguments, parameter and buffer names
are those of NVlabs/edm's ``training/networks.py``, so the released checkpoints' state loads with
``strict=True`` and their recorded constructor kwargs build the same network
(:mod:`.edm_pickle` reads them from the released ``.pkl`` files without running their code).

Every network is a denoiser ``D(x, sigma, class_labels)`` with ``img_resolution``,
``img_channels``, ``label_dim``, ``sigma_min``, ``sigma_max`` and ``round_sigma``; inference only
(dropout is applied only in training mode, label dropout never).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn.functional import silu


def _init(shape, mode: str, fan_in: int, fan_out: int) -> torch.Tensor:
    if mode == "xavier_uniform":
        return math.sqrt(6 / (fan_in + fan_out)) * (torch.rand(*shape) * 2 - 1)
    if mode == "xavier_normal":
        return math.sqrt(2 / (fan_in + fan_out)) * torch.randn(*shape)
    if mode == "kaiming_uniform":
        return math.sqrt(3 / fan_in) * (torch.rand(*shape) * 2 - 1)
    if mode == "kaiming_normal":
        return math.sqrt(1 / fan_in) * torch.randn(*shape)
    raise ValueError(f"init_mode {mode!r} is not one of xavier_uniform, xavier_normal, kaiming_uniform, kaiming_normal")


class Linear(torch.nn.Module):
    def __init__(self, in_features, out_features, bias=True, init_mode="kaiming_normal", init_weight=1, init_bias=0):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        fans = dict(mode=init_mode, fan_in=in_features, fan_out=out_features)
        self.weight = torch.nn.Parameter(_init([out_features, in_features], **fans) * init_weight)
        self.bias = torch.nn.Parameter(_init([out_features], **fans) * init_bias) if bias else None

    def forward(self, x):
        y = x @ self.weight.to(x.dtype).t()
        return y.add_(self.bias.to(x.dtype)) if self.bias is not None else y


class Conv2d(torch.nn.Module):
    """A 2-D convolution (``kernel`` 0: none) with optional FIR up- or downsampling by 2."""

    def __init__(self, in_channels, out_channels, kernel, bias=True, up=False, down=False, resample_filter=(1, 1),
                 fused_resample=False, init_mode="kaiming_normal", init_weight=1, init_bias=0):
        if up and down:
            raise ValueError("Conv2d: up and down are exclusive")
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.up, self.down, self.fused_resample = up, down, fused_resample
        fans = dict(mode=init_mode, fan_in=in_channels * kernel * kernel, fan_out=out_channels * kernel * kernel)
        self.weight = torch.nn.Parameter(
            _init([out_channels, in_channels, kernel, kernel], **fans) * init_weight) if kernel else None
        self.bias = torch.nn.Parameter(_init([out_channels], **fans) * init_bias) if kernel and bias else None
        f = torch.as_tensor(list(resample_filter), dtype=torch.float32)
        f = torch.outer(f, f)[None, None] / f.sum().square()
        self.register_buffer("resample_filter", f if up or down else None)

    def forward(self, x):
        F = torch.nn.functional
        w = None if self.weight is None else self.weight.to(x.dtype)
        b = None if self.bias is None else self.bias.to(x.dtype)
        f = None if self.resample_filter is None else self.resample_filter.to(x.dtype)
        w_pad = 0 if w is None else w.shape[-1] // 2
        f_pad = 0 if f is None else (f.shape[-1] - 1) // 2
        if self.fused_resample and self.up and w is not None:
            x = F.conv_transpose2d(x, f.mul(4).tile([self.in_channels, 1, 1, 1]), groups=self.in_channels, stride=2,
                                   padding=w_pad + f_pad)
            x = F.conv2d(x, w)
        elif self.fused_resample and self.down and w is not None:
            x = F.conv2d(x, w, padding=w_pad + f_pad)
            x = F.conv2d(x, f.tile([self.out_channels, 1, 1, 1]), groups=self.out_channels, stride=2)
        else:
            if self.up:
                x = F.conv_transpose2d(x, f.mul(4).tile([self.in_channels, 1, 1, 1]), groups=self.in_channels,
                                       stride=2, padding=f_pad)
            if self.down:
                x = F.conv2d(x, f.tile([self.in_channels, 1, 1, 1]), groups=self.in_channels, stride=2, padding=f_pad)
            if w is not None:
                x = F.conv2d(x, w, padding=w_pad)
        return x.add_(b.reshape(1, -1, 1, 1)) if b is not None else x


class GroupNorm(torch.nn.Module):
    def __init__(self, num_channels, num_groups=32, min_channels_per_group=4, eps=1e-5):
        super().__init__()
        self.num_groups = min(num_groups, num_channels // min_channels_per_group)
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.ones(num_channels))
        self.bias = torch.nn.Parameter(torch.zeros(num_channels))

    def forward(self, x):
        return torch.nn.functional.group_norm(x, self.num_groups, self.weight.to(x.dtype), self.bias.to(x.dtype),
                                              self.eps)


def attention_weights(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``softmax(q^T k / sqrt(c))`` over keys, computed in float32 (``q``, ``k``: [N, C, L])."""
    scale = np.sqrt(k.shape[1])
    w = torch.einsum("ncq,nck->nqk", q.to(torch.float32), (k / scale).to(torch.float32))
    return w.softmax(dim=2).to(q.dtype)


class UNetBlock(torch.nn.Module):
    """The residual block shared by DDPM++, NCSN++ and ADM, with optional resampling and attention."""

    def __init__(self, in_channels, out_channels, emb_channels, up=False, down=False, attention=False, num_heads=None,
                 channels_per_head=64, dropout=0, skip_scale=1, eps=1e-5, resample_filter=(1, 1), resample_proj=False,
                 adaptive_scale=True, init=None, init_zero=None, init_attn=None):
        super().__init__()
        init = dict(init or {})
        init_zero = dict(init_weight=0) if init_zero is None else dict(init_zero)
        self.in_channels, self.out_channels, self.emb_channels = in_channels, out_channels, emb_channels
        if not attention:
            self.num_heads = 0
        else:
            self.num_heads = num_heads if num_heads is not None else out_channels // channels_per_head
        self.dropout, self.skip_scale, self.adaptive_scale = dropout, skip_scale, adaptive_scale
        self.norm0 = GroupNorm(num_channels=in_channels, eps=eps)
        self.conv0 = Conv2d(in_channels, out_channels, kernel=3, up=up, down=down, resample_filter=resample_filter,
                            **init)
        self.affine = Linear(emb_channels, out_channels * (2 if adaptive_scale else 1), **init)
        self.norm1 = GroupNorm(num_channels=out_channels, eps=eps)
        self.conv1 = Conv2d(out_channels, out_channels, kernel=3, **init_zero)
        self.skip = None
        if out_channels != in_channels or up or down:
            kernel = 1 if resample_proj or out_channels != in_channels else 0
            self.skip = Conv2d(in_channels, out_channels, kernel=kernel, up=up, down=down,
                               resample_filter=resample_filter, **init)
        if self.num_heads:
            self.norm2 = GroupNorm(num_channels=out_channels, eps=eps)
            self.qkv = Conv2d(out_channels, out_channels * 3, kernel=1, **(init if init_attn is None else init_attn))
            self.proj = Conv2d(out_channels, out_channels, kernel=1, **init_zero)

    def forward(self, x, emb):
        orig = x
        x = self.conv0(silu(self.norm0(x)))
        params = self.affine(emb)[:, :, None, None].to(x.dtype)
        if self.adaptive_scale:
            scale, shift = params.chunk(2, dim=1)
            x = silu(torch.addcmul(shift, self.norm1(x), scale + 1))
        else:
            x = silu(self.norm1(x.add_(params)))
        x = self.conv1(torch.nn.functional.dropout(x, p=self.dropout, training=self.training))
        x = x.add_(orig if self.skip is None else self.skip(orig)) * self.skip_scale
        if self.num_heads:
            n, c = x.shape[0], x.shape[1]
            q, k, v = self.qkv(self.norm2(x)).reshape(n * self.num_heads, c // self.num_heads, 3, -1).unbind(2)
            a = torch.einsum("nqk,nck->ncq", attention_weights(q, k), v)
            x = self.proj(a.reshape(*x.shape)).add_(x) * self.skip_scale
        return x


class PositionalEmbedding(torch.nn.Module):
    """Sinusoidal noise-level embedding (DDPM++, ADM): ``[cos(x f), sin(x f)]``."""

    def __init__(self, num_channels, max_positions=10000, endpoint=False):
        super().__init__()
        self.num_channels, self.max_positions, self.endpoint = num_channels, max_positions, endpoint

    def forward(self, x):
        half = self.num_channels // 2
        freqs = torch.arange(half, dtype=torch.float32, device=x.device) / (half - (1 if self.endpoint else 0))
        freqs = (1 / self.max_positions) ** freqs
        x = torch.outer(x, freqs.to(x.dtype))
        return torch.cat([x.cos(), x.sin()], dim=1)


class FourierEmbedding(torch.nn.Module):
    """Random Fourier features of the noise level (NCSN++)."""

    def __init__(self, num_channels, scale=16):
        super().__init__()
        self.register_buffer("freqs", torch.randn(num_channels // 2) * scale)

    def forward(self, x):
        x = torch.outer(x, (2 * np.pi * self.freqs).to(x.dtype))
        return torch.cat([x.cos(), x.sin()], dim=1)


def _decoder_level_entry(dec: torch.nn.ModuleDict, res: int, deepest: bool, channels: int, block: dict) -> None:
    """The first blocks of a decoder level: two blocks (the first with attention) at the deepest
    level, else an upsampling block; both U-Nets of EDM share this."""
    if deepest:
        dec[f"{res}x{res}_in0"] = UNetBlock(channels, channels, attention=True, **block)
        dec[f"{res}x{res}_in1"] = UNetBlock(channels, channels, **block)
    else:
        dec[f"{res}x{res}_up"] = UNetBlock(channels, channels, up=True, **block)


class SongUNet(torch.nn.Module):
    """DDPM++ (``embedding_type='positional'``, standard encoder) and NCSN++ (``'fourier'``,
    residual encoder, ``resample_filter=[1,3,3,1]``), as in EDM."""

    def __init__(self, img_resolution, in_channels, out_channels, label_dim=0, augment_dim=0, model_channels=128,
                 channel_mult=(1, 2, 2, 2), channel_mult_emb=4, num_blocks=4, attn_resolutions=(16,), dropout=0.10,
                 label_dropout=0, embedding_type="positional", channel_mult_noise=1, encoder_type="standard",
                 decoder_type="standard", resample_filter=(1, 1)):
        if embedding_type not in ("fourier", "positional"):
            raise ValueError(f"SongUNet: embedding_type {embedding_type!r} is not fourier or positional")
        if encoder_type not in ("standard", "skip", "residual") or decoder_type not in ("standard", "skip"):
            raise ValueError(f"SongUNet: encoder_type {encoder_type!r} / decoder_type {decoder_type!r} unknown")
        super().__init__()
        self.label_dropout = label_dropout
        emb_channels = model_channels * channel_mult_emb
        noise_channels = model_channels * channel_mult_noise
        init = dict(init_mode="xavier_uniform")
        init_zero = dict(init_mode="xavier_uniform", init_weight=1e-5)
        init_attn = dict(init_mode="xavier_uniform", init_weight=np.sqrt(0.2))
        block = dict(emb_channels=emb_channels, num_heads=1, dropout=dropout, skip_scale=np.sqrt(0.5), eps=1e-6,
                     resample_filter=resample_filter, resample_proj=True, adaptive_scale=False, init=init,
                     init_zero=init_zero, init_attn=init_attn)

        if embedding_type == "positional":
            self.map_noise = PositionalEmbedding(num_channels=noise_channels, endpoint=True)
        else:
            self.map_noise = FourierEmbedding(num_channels=noise_channels)
        self.map_label = Linear(label_dim, noise_channels, **init) if label_dim else None
        self.map_augment = Linear(augment_dim, noise_channels, bias=False, **init) if augment_dim else None
        self.map_layer0 = Linear(noise_channels, emb_channels, **init)
        self.map_layer1 = Linear(emb_channels, emb_channels, **init)

        self.enc = torch.nn.ModuleDict()
        cout = caux = in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                cin, cout = cout, model_channels
                self.enc[f"{res}x{res}_conv"] = Conv2d(cin, cout, kernel=3, **init)
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(cout, cout, down=True, **block)
                if encoder_type == "skip":
                    self.enc[f"{res}x{res}_aux_down"] = Conv2d(caux, caux, kernel=0, down=True,
                                                               resample_filter=resample_filter)
                    self.enc[f"{res}x{res}_aux_skip"] = Conv2d(caux, cout, kernel=1, **init)
                if encoder_type == "residual":
                    self.enc[f"{res}x{res}_aux_residual"] = Conv2d(caux, cout, kernel=3, down=True,
                                                                   resample_filter=resample_filter,
                                                                   fused_resample=True, **init)
                    caux = cout
            for idx in range(num_blocks):
                cin, cout = cout, model_channels * mult
                self.enc[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=res in attn_resolutions, **block)
        skips = [m.out_channels for name, m in self.enc.items() if "aux" not in name]

        self.dec = torch.nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            _decoder_level_entry(self.dec, res, level == len(channel_mult) - 1, cout, block)
            for idx in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), model_channels * mult
                attn = idx == num_blocks and res in attn_resolutions
                self.dec[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=attn, **block)
            if decoder_type == "skip" or level == 0:
                if decoder_type == "skip" and level < len(channel_mult) - 1:
                    self.dec[f"{res}x{res}_aux_up"] = Conv2d(out_channels, out_channels, kernel=0, up=True,
                                                             resample_filter=resample_filter)
                self.dec[f"{res}x{res}_aux_norm"] = GroupNorm(num_channels=cout, eps=1e-6)
                self.dec[f"{res}x{res}_aux_conv"] = Conv2d(cout, out_channels, kernel=3, **init_zero)

    def forward(self, x, noise_labels, class_labels, augment_labels=None):
        emb = self.map_noise(noise_labels)
        emb = emb.reshape(emb.shape[0], 2, -1).flip(1).reshape(*emb.shape)  # sin first, then cos
        if self.map_label is not None:
            emb = emb + self.map_label(class_labels * np.sqrt(self.map_label.in_features))
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        emb = silu(self.map_layer1(silu(self.map_layer0(emb))))

        skips, aux = [], x
        for name, m in self.enc.items():
            if "aux_down" in name:
                aux = m(aux)
            elif "aux_skip" in name:
                x = skips[-1] = x + m(aux)
            elif "aux_residual" in name:
                x = skips[-1] = aux = (x + m(aux)) / np.sqrt(2)
            else:
                x = m(x, emb) if isinstance(m, UNetBlock) else m(x)
                skips.append(x)

        aux = tmp = None
        for name, m in self.dec.items():
            if "aux_up" in name:
                aux = m(aux)
            elif "aux_norm" in name:
                tmp = m(x)
            elif "aux_conv" in name:
                tmp = m(silu(tmp))
                aux = tmp if aux is None else tmp + aux
            else:
                if x.shape[1] != m.in_channels:
                    x = torch.cat([x, skips.pop()], dim=1)
                x = m(x, emb)
        return aux


class DhariwalUNet(torch.nn.Module):
    """ADM (Dhariwal and Nichol 2021), as in EDM."""

    def __init__(self, img_resolution, in_channels, out_channels, label_dim=0, augment_dim=0, model_channels=192,
                 channel_mult=(1, 2, 3, 4), channel_mult_emb=4, num_blocks=3, attn_resolutions=(32, 16, 8),
                 dropout=0.10, label_dropout=0):
        super().__init__()
        self.label_dropout = label_dropout
        emb_channels = model_channels * channel_mult_emb
        init = dict(init_mode="kaiming_uniform", init_weight=np.sqrt(1 / 3), init_bias=np.sqrt(1 / 3))
        init_zero = dict(init_mode="kaiming_uniform", init_weight=0, init_bias=0)
        block = dict(emb_channels=emb_channels, channels_per_head=64, dropout=dropout, init=init, init_zero=init_zero)

        self.map_noise = PositionalEmbedding(num_channels=model_channels)
        self.map_augment = Linear(augment_dim, model_channels, bias=False, **init_zero) if augment_dim else None
        self.map_layer0 = Linear(model_channels, emb_channels, **init)
        self.map_layer1 = Linear(emb_channels, emb_channels, **init)
        self.map_label = Linear(label_dim, emb_channels, bias=False, init_mode="kaiming_normal",
                                init_weight=np.sqrt(label_dim)) if label_dim else None

        self.enc = torch.nn.ModuleDict()
        cout = in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                cin, cout = cout, model_channels * mult
                self.enc[f"{res}x{res}_conv"] = Conv2d(cin, cout, kernel=3, **init)
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(cout, cout, down=True, **block)
            for idx in range(num_blocks):
                cin, cout = cout, model_channels * mult
                self.enc[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=res in attn_resolutions, **block)
        skips = [m.out_channels for m in self.enc.values()]

        self.dec = torch.nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            _decoder_level_entry(self.dec, res, level == len(channel_mult) - 1, cout, block)
            for idx in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), model_channels * mult
                self.dec[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=res in attn_resolutions, **block)
        self.out_norm = GroupNorm(num_channels=cout)
        self.out_conv = Conv2d(cout, out_channels, kernel=3, **init_zero)

    def forward(self, x, noise_labels, class_labels, augment_labels=None):
        emb = self.map_noise(noise_labels)
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        emb = self.map_layer1(silu(self.map_layer0(emb)))
        if self.map_label is not None:
            emb = emb + self.map_label(class_labels)
        emb = silu(emb)
        skips = []
        for m in self.enc.values():
            x = m(x, emb) if isinstance(m, UNetBlock) else m(x)
            skips.append(x)
        for m in self.dec.values():
            if x.shape[1] != m.in_channels:
                x = torch.cat([x, skips.pop()], dim=1)
            x = m(x, emb)
        return self.out_conv(silu(self.out_norm(x)))


ARCHITECTURES = {"SongUNet": SongUNet, "DhariwalUNet": DhariwalUNet}


class _Precond(torch.nn.Module):
    """What the four preconditionings share: the wrapped model and the call ``D(x, sigma, y)``."""

    out_factor = 1  # iDDPM's model also predicts variances: twice the channels

    def __init__(self, img_resolution, img_channels, label_dim, use_fp16, model_type, model_kwargs):
        super().__init__()
        if model_type not in ARCHITECTURES:
            raise ValueError(f"model_type {model_type!r} is not one of {', '.join(ARCHITECTURES)}")
        self.img_resolution, self.img_channels, self.label_dim = img_resolution, img_channels, label_dim
        self.use_fp16 = use_fp16
        self.model = ARCHITECTURES[model_type](img_resolution=img_resolution, in_channels=img_channels,
                                               out_channels=img_channels * self.out_factor, label_dim=label_dim,
                                               **model_kwargs)

    def coefficients(self, sigma):
        """(c_skip, c_out, c_in, c_noise) for noise levels ``sigma`` [N, 1, 1, 1]."""
        raise NotImplementedError

    def forward(self, x, sigma, class_labels=None, force_fp32=False, **model_kwargs):
        x = x.to(torch.float32)
        sigma = sigma.to(torch.float32).reshape(-1, 1, 1, 1)
        if self.label_dim == 0:
            class_labels = None
        elif class_labels is None:
            class_labels = torch.zeros([1, self.label_dim], device=x.device)
        else:
            class_labels = class_labels.to(torch.float32).reshape(-1, self.label_dim)
        dtype = torch.float16 if (self.use_fp16 and not force_fp32 and x.device.type == "cuda") else torch.float32
        c_skip, c_out, c_in, c_noise = self.coefficients(sigma)
        F_x = self.model((c_in * x).to(dtype), c_noise.flatten(), class_labels=class_labels, **model_kwargs)
        return c_skip * x + c_out * F_x[:, :self.img_channels].to(torch.float32)

    def round_sigma(self, sigma):
        return torch.as_tensor(sigma)


class VPPrecond(_Precond):
    def __init__(self, img_resolution, img_channels, label_dim=0, use_fp16=False, beta_d=19.9, beta_min=0.1, M=1000,
                 epsilon_t=1e-5, model_type="SongUNet", **model_kwargs):
        super().__init__(img_resolution, img_channels, label_dim, use_fp16, model_type, model_kwargs)
        self.beta_d, self.beta_min, self.M, self.epsilon_t = beta_d, beta_min, M, epsilon_t
        self.sigma_min = float(self.sigma(epsilon_t))
        self.sigma_max = float(self.sigma(1))

    def coefficients(self, sigma):
        return 1, -sigma, 1 / (sigma ** 2 + 1).sqrt(), (self.M - 1) * self.sigma_inv(sigma)

    def sigma(self, t):
        t = torch.as_tensor(t)
        return ((0.5 * self.beta_d * (t ** 2) + self.beta_min * t).exp() - 1).sqrt()

    def sigma_inv(self, sigma):
        sigma = torch.as_tensor(sigma)
        return ((self.beta_min ** 2 + 2 * self.beta_d * (1 + sigma ** 2).log()).sqrt() - self.beta_min) / self.beta_d


class VEPrecond(_Precond):
    def __init__(self, img_resolution, img_channels, label_dim=0, use_fp16=False, sigma_min=0.02, sigma_max=100,
                 model_type="SongUNet", **model_kwargs):
        super().__init__(img_resolution, img_channels, label_dim, use_fp16, model_type, model_kwargs)
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def coefficients(self, sigma):
        return 1, sigma, 1, (0.5 * sigma).log()


class iDDPMPrecond(_Precond):  # noqa: N801  (the released checkpoints' class name)
    out_factor = 2

    def __init__(self, img_resolution, img_channels, label_dim=0, use_fp16=False, C_1=0.001, C_2=0.008, M=1000,
                 model_type="DhariwalUNet", **model_kwargs):
        super().__init__(img_resolution, img_channels, label_dim, use_fp16, model_type, model_kwargs)
        self.C_1, self.C_2, self.M = C_1, C_2, M
        u = torch.zeros(M + 1)
        for j in range(M, 0, -1):
            u[j - 1] = ((u[j] ** 2 + 1) / (self.alpha_bar(j - 1) / self.alpha_bar(j)).clip(min=C_1) - 1).sqrt()
        self.register_buffer("u", u)
        self.sigma_min, self.sigma_max = float(u[M - 1]), float(u[0])

    def coefficients(self, sigma):
        c_noise = self.M - 1 - self.round_sigma(sigma, return_index=True).to(torch.float32)
        return 1, -sigma, 1 / (sigma ** 2 + 1).sqrt(), c_noise

    def alpha_bar(self, j):
        j = torch.as_tensor(j)
        return (0.5 * np.pi * j / self.M / (self.C_2 + 1)).sin() ** 2

    def round_sigma(self, sigma, return_index=False):
        """The nearest of the network's discrete levels ``u`` (or its index)."""
        sigma = torch.as_tensor(sigma)
        index = torch.cdist(sigma.to(self.u.device).to(torch.float32).reshape(1, -1, 1),
                            self.u.reshape(1, -1, 1)).argmin(2)
        result = index if return_index else self.u[index.flatten()].to(sigma.dtype)
        return result.reshape(sigma.shape).to(sigma.device)


class EDMPrecond(_Precond):
    def __init__(self, img_resolution, img_channels, label_dim=0, use_fp16=False, sigma_min=0, sigma_max=float("inf"),
                 sigma_data=0.5, model_type="DhariwalUNet", **model_kwargs):
        super().__init__(img_resolution, img_channels, label_dim, use_fp16, model_type, model_kwargs)
        self.sigma_min, self.sigma_max, self.sigma_data = sigma_min, sigma_max, sigma_data

    def coefficients(self, sigma):
        sd = self.sigma_data
        return (sd ** 2 / (sigma ** 2 + sd ** 2), sigma * sd / (sigma ** 2 + sd ** 2).sqrt(),
                1 / (sd ** 2 + sigma ** 2).sqrt(), sigma.log() / 4)


PRECONDITIONINGS = {"VPPrecond": VPPrecond, "VEPrecond": VEPrecond, "iDDPMPrecond": iDDPMPrecond,
                    "EDMPrecond": EDMPrecond}
