"""Classifier zoo: the paper's 32px architectures, and any timm model by name.

``create_model(name, num_classes, img_size, in_chans)`` builds one. Names registered in
:data:`MODELS` are CIFAR-style networks that work from 8 to 64 pixels (a plugin registers more with
``@MODELS.register("name")`` on a factory ``f(num_classes, in_chans=3, img_size=32, **kwargs)``);
any other name is passed to
``timm.create_model`` (with ``pretrained=True``, weights that cannot be had online or from the cache
are an error: random weights are never substituted). ``list_models('*mixer*')`` lists both.
"""

from __future__ import annotations

import fnmatch
import inspect
import logging

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from ..plugins import import_object, load_weights
from ..registry import Registry

log = logging.getLogger(__name__)

MODELS: Registry[nn.Module] = Registry("model")


# -- ResNet-20 (He et al. 2016, CIFAR variant) ---------------------------------------------------


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.short = nn.Sequential()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.b1(self.c1(x)))
        return F.relu(self.b2(self.c2(out)) + self.short(x))


class PreActBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.b1 = nn.BatchNorm2d(cin)
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        out = F.relu(self.b1(x))
        short = self.short(out) if self.short is not None else x
        out = self.c1(out)
        return self.c2(F.relu(self.b2(out))) + short


class ResNet(nn.Module):
    def __init__(self, block, depths, widths, num_classes, in_chans, preact=False):
        super().__init__()
        self.stem = nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False)
        self.stem_bn = nn.Identity() if preact else nn.BatchNorm2d(widths[0])
        layers, cin = [], widths[0]
        for i, (d, w) in enumerate(zip(depths, widths)):
            for j in range(d):
                layers.append(block(cin, w, 2 if (j == 0 and i > 0) else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.final_bn = nn.BatchNorm2d(cin) if preact else nn.Identity()
        self.head = nn.Linear(cin, num_classes)

    def forward_features(self, x):
        x = self.stem_bn(self.stem(x))
        if isinstance(self.stem_bn, nn.BatchNorm2d):
            x = F.relu(x)
        x = self.layers(x)
        if isinstance(self.final_bn, nn.BatchNorm2d):
            x = F.relu(self.final_bn(x))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def forward(self, x):
        return self.head(self.forward_features(x))


@MODELS.register("resnet20")
def resnet20(num_classes, in_chans=3, img_size=32, width=1.0):
    w = [max(4, int(c * width)) for c in (16, 32, 64)]
    return ResNet(BasicBlock, [3, 3, 3], w, num_classes, in_chans)


@MODELS.register("preact_resnet18")
def preact_resnet18(num_classes, in_chans=3, img_size=32, width=1.0):
    w = [max(4, int(c * width)) for c in (64, 128, 256, 512)]
    return ResNet(PreActBlock, [2, 2, 2, 2], w, num_classes, in_chans, preact=True)


# -- VGG-19-BN ------------------------------------------------------------------------------------


class VGG(nn.Module):
    def __init__(self, plan, num_classes, in_chans):
        super().__init__()
        layers, cin = [], in_chans
        for item in plan:
            if item == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))  # 1x1 maps stay 1x1 on small inputs
            else:
                layers += [nn.Conv2d(cin, item, 3, padding=1, bias=False), nn.BatchNorm2d(item), nn.ReLU(inplace=True)]
                cin = item
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(cin, num_classes)

    def forward_features(self, x):
        return F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)

    def forward(self, x):
        return self.head(self.forward_features(x))


@MODELS.register("vgg19_bn")
def vgg19_bn(num_classes, in_chans=3, img_size=32, width=1.0):
    c = lambda n: max(4, int(n * width))
    plan = [c(64), c(64), "M", c(128), c(128), "M", *[c(256)] * 4, "M", *[c(512)] * 4, "M", *[c(512)] * 4, "M"]
    return VGG(plan, num_classes, in_chans)


# -- DenseNet-BC (Huang et al. 2017) ------------------------------------------------------------


class DenseLayer(nn.Module):
    def __init__(self, cin, growth):
        super().__init__()
        self.net = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, 4 * growth, 1, bias=False),
                                 nn.BatchNorm2d(4 * growth), nn.ReLU(inplace=True),
                                 nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False))

    def forward(self, x):
        return torch.cat([x, self.net(x)], 1)


class DenseNet(nn.Module):
    def __init__(self, depth, growth, num_classes, in_chans, reduction=0.5):
        super().__init__()
        n = (depth - 4) // 6
        c = 2 * growth
        layers = [nn.Conv2d(in_chans, c, 3, padding=1, bias=False)]
        for stage in range(3):
            for _ in range(n):
                layers.append(DenseLayer(c, growth))
                c += growth
            if stage < 2:
                out = int(c * reduction)
                layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.Conv2d(c, out, 1, bias=False), nn.AvgPool2d(2)]
                c = out
        layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, num_classes)

    def forward_features(self, x):
        return F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)

    def forward(self, x):
        return self.head(self.forward_features(x))


@MODELS.register("densenet_bc")
def densenet_bc(num_classes, in_chans=3, img_size=32, depth=100, growth=12):
    return DenseNet(depth, growth, num_classes, in_chans)


# -- ResNeXt-29 (Xie et al. 2017) ----------------------------------------------------------------


class NeXtBlock(nn.Module):
    def __init__(self, cin, cout, stride, cardinality, width):
        super().__init__()
        inner = cardinality * width
        self.net = nn.Sequential(nn.Conv2d(cin, inner, 1, bias=False), nn.BatchNorm2d(inner), nn.ReLU(inplace=True),
                                 nn.Conv2d(inner, inner, 3, stride, 1, groups=cardinality, bias=False),
                                 nn.BatchNorm2d(inner), nn.ReLU(inplace=True),
                                 nn.Conv2d(inner, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.short = nn.Sequential()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return F.relu(self.net(x) + self.short(x))


@MODELS.register("resnext29")
def resnext29(num_classes, in_chans=3, img_size=32, cardinality=8, base_width=16):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(in_chans, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
            blocks, cin = [], 64
            for stage, cout in enumerate((256, 512, 1024)):
                for j in range(3):
                    width = base_width * 2 ** stage
                    blocks.append(NeXtBlock(cin, cout, 2 if (j == 0 and stage > 0) else 1, cardinality, width))
                    cin = cout
            self.blocks = nn.Sequential(*blocks)
            self.head = nn.Linear(cin, num_classes)

        def forward_features(self, x):
            return F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1).flatten(1)

        def forward(self, x):
            return self.head(self.forward_features(x))

    return Net()


# -- MLP-Mixer and a small ViT (patch 4) --------------------------------------------------------


class MixerBlock(nn.Module):
    def __init__(self, tokens, dim, token_hidden, channel_hidden):
        super().__init__()
        self.n1 = nn.LayerNorm(dim)
        self.tok = nn.Sequential(nn.Linear(tokens, token_hidden), nn.GELU(), nn.Linear(token_hidden, tokens))
        self.n2 = nn.LayerNorm(dim)
        self.ch = nn.Sequential(nn.Linear(dim, channel_hidden), nn.GELU(), nn.Linear(channel_hidden, dim))

    def forward(self, x):
        x = x + self.tok(self.n1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.ch(self.n2(x))


class PatchNet(nn.Module):
    def __init__(self, blocks, dim, patch, num_classes, in_chans):
        super().__init__()
        self.patch_embed = nn.Conv2d(in_chans, dim, patch, patch)
        self.blocks = nn.Sequential(*blocks)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.pos = None

    def forward_features(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        if self.pos is not None:
            x = x + self.pos
        return self.norm(self.blocks(x)).mean(1)

    def forward(self, x):
        return self.head(self.forward_features(x))


def _tokens(img_size, patch):
    if img_size % patch:
        raise ConfigError(f"model: image size {img_size} is not a multiple of the patch size {patch}")
    return (img_size // patch) ** 2


@MODELS.register("mlp_mixer")
def mlp_mixer(num_classes, in_chans=3, img_size=32, patch=4, dim=128, depth=8, token_hidden=64, channel_hidden=512):
    t = _tokens(img_size, patch)
    return PatchNet([MixerBlock(t, dim, token_hidden, channel_hidden) for _ in range(depth)], dim, patch,
                    num_classes, in_chans)


class ViTBlock(nn.Module):
    def __init__(self, dim, heads, hidden):
        super().__init__()
        self.n1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.n2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x):
        h = self.n1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.n2(x))


@MODELS.register("vit_small")
def vit_small(num_classes, in_chans=3, img_size=32, patch=4, dim=128, depth=6, heads=4):
    t = _tokens(img_size, patch)
    net = PatchNet([ViTBlock(dim, heads, 4 * dim) for _ in range(depth)], dim, patch, num_classes, in_chans)
    net.pos = nn.Parameter(torch.randn(1, t, dim) * 0.02)
    return net


# -- factory --------------------------------------------------------------------------------------


def list_models(pattern: str = "*", timm_too: bool = True) -> list[str]:
    names = MODELS.list(pattern)
    if timm_too:
        import timm

        names += [f"timm/{n}" for n in timm.list_models(pattern)]
    return names


def create_model(name: str, num_classes: int, img_size: int = 32, in_chans: int = 3, pretrained: bool = False,
                 state_dict: str | None = None, **kwargs) -> nn.Module:
    """A registered 32px architecture, ``timm/<name>`` (or a bare timm name) from timm, or your own
    ``package.module:factory`` called with ``kwargs`` (and ``num_classes`` when it takes one).
    ``state_dict`` loads weights (``.safetensors`` or a torch file, read with ``weights_only``)."""
    model = _create(name, num_classes, img_size, in_chans, pretrained, **kwargs)
    if state_dict:
        load_weights(model, state_dict, "models.state_dict")
    return model


def _create(name: str, num_classes: int, img_size: int, in_chans: int, pretrained: bool, **kwargs) -> nn.Module:
    if ":" in name:  # a user's own architecture
        factory = import_object(name, "models.name")
        params = inspect.signature(factory).parameters if callable(factory) else {}
        if "num_classes" in params and "num_classes" not in kwargs:
            kwargs["num_classes"] = num_classes
        try:
            return factory(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"model {name!r}: bad arguments {kwargs} ({exc})") from None
    if name in MODELS:
        try:
            return MODELS.get(name)(num_classes, in_chans=in_chans, img_size=img_size, **kwargs)
        except TypeError as exc:
            raise ConfigError(f"model {name!r}: bad arguments {kwargs} ({exc})") from None
    import timm

    tname = name.removeprefix("timm/")
    if not timm.list_models(tname) and not timm.list_models(tname, pretrained=True):
        close = fnmatch.filter(MODELS.list(), f"*{tname[:3]}*")
        raise ConfigError(f"model {name!r}: not a ctrlshift model ({', '.join(MODELS.list())}) nor a timm model"
                          + (f"; did you mean {close[0]!r}?" if close else ""))
    if pretrained:
        try:
            return timm.create_model(tname, pretrained=True, num_classes=num_classes, in_chans=in_chans, **kwargs)
        except Exception as exc:  # no network and no cache, a missing tag: never substitute random weights
            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"model {name!r}: pretrained weights could not be loaded ({first}); connect to the "
                              "network, point HF_HOME at a cache that holds them, or set pretrained: false") from None
    return timm.create_model(tname, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
