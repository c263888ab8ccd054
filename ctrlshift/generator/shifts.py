"""Latent shift families and their intensity measures (docs/methods.md section 1).

A family maps standard Gaussian noise ``eps ~ N(0, I_d)`` and a control value ``v`` to latents
``z``. Train and test sets are decoded by the same generator from the family at different values;
the distance between those latent distributions is the shift's intensity.

Determinism: the noise of sample ``i`` of a split comes from its own generator, seeded by
:func:`sample_seed` from ``(split seed, i)`` alone, so it is independent of batch size, process
count, resume point, family and value. The same noise is thus decoded at every value, which makes
per-image comparisons across intensities possible. Labels are likewise a pure function of
``(split seed, i, number of classes, label mode)``.

Every family is registered in :data:`FAMILIES`; ``create_family(name, dim, targets, params,
train_value)`` builds one, which knows its train value. To add a family (in ctrlshift or in a
plugin), subclass :class:`ShiftFamily`, implement ``transform``, ``axis`` and ``statistics``, and
decorate it with ``@FAMILIES.register("name")``.
"""

from __future__ import annotations

import logging
import math
import zlib
from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np
import torch

from ..config import build, meta
from ..errors import ConfigError
from ..registry import Registry

log = logging.getLogger(__name__)

FAMILIES: Registry["ShiftFamily"] = Registry("shift family")

PAPER_TARGET_SEED = 45678


# ----------------------------------------------------------------------------------------------
# Per-sample randomness


def sample_seed(split_seed: int, index: int) -> int:
    """The 63-bit seed of sample ``index`` of a split: ``torch.Generator().manual_seed(seed)``
    followed by ``torch.randn(d)`` regenerates its noise."""
    state = np.random.SeedSequence(entropy=int(split_seed), spawn_key=(int(index),)).generate_state(2)
    return ((int(state[0]) << 32) | int(state[1])) & ((1 << 63) - 1)


def draw_noise(seeds: Sequence[int], dim: int) -> torch.Tensor:
    """Standard Gaussian noise ``[len(seeds), dim]`` (float32), one generator per sample."""
    out = torch.empty(len(seeds), dim, dtype=torch.float32)
    gen = torch.Generator()
    for row, seed in enumerate(seeds):
        gen.manual_seed(int(seed))
        torch.randn(dim, generator=gen, out=out[row])
    return out


def draw_labels(split_seed: int, indices: Sequence[int], num_classes: int,
                mode: Literal["balanced", "uniform"]) -> torch.Tensor:
    """Labels of samples ``indices``.

    ``uniform``: i.i.d. uniform (as the reference code). ``balanced``: every consecutive block of
    ``num_classes`` indices holds each class exactly once, in an order drawn per block, so any split
    of ``n`` samples is balanced to within one sample per class, whatever ``n``.
    """
    labels = np.empty(len(indices), dtype=np.int64)
    perms: dict[int, np.ndarray] = {}
    for row, i in enumerate(indices):
        i = int(i)
        if mode == "uniform":
            word = np.random.SeedSequence(int(split_seed), spawn_key=(i, 1)).generate_state(2, np.uint64)[0]
            labels[row] = int(word) % num_classes
        elif mode == "balanced":
            block = i // num_classes
            if block not in perms:
                seq = np.random.SeedSequence(int(split_seed), spawn_key=(block, 2))
                perms[block] = np.random.Generator(np.random.PCG64(seq)).permutation(num_classes)
            labels[row] = perms[block][i % num_classes]
        else:
            raise ConfigError(f"labels: {mode!r} is not allowed; expected 'balanced' or 'uniform'")
    return torch.from_numpy(labels)


# ----------------------------------------------------------------------------------------------
# Geometry


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation over the whole flattened vector (rows of ``a`` and ``b``)::

        slerp(a, b; t) = sin((1-t) w) / sin(w) * a + sin(t w) / sin(w) * b,  w = angle(a, b)

    Computed in float64. Returns the dtype of ``b``.
    """
    a64, b64 = a.double(), b.double()
    if a64.dim() == 1:
        a64 = a64.expand_as(b64)
    cos = (a64 * b64).sum(-1) / (a64.norm(dim=-1) * b64.norm(dim=-1))
    w = torch.arccos(cos.clamp(-1.0, 1.0))
    sw = torch.sin(w)
    # Parallel vectors: fall back to linear interpolation (the limit of the formula as w -> 0).
    safe = sw.abs() > 1e-12
    ca = torch.where(safe, torch.sin((1 - t) * w) / torch.where(safe, sw, 1.0), torch.full_like(w, 1 - t))
    cb = torch.where(safe, torch.sin(t * w) / torch.where(safe, sw, 1.0), torch.full_like(w, t))
    return (ca[:, None] * a64 + cb[:, None] * b64).to(b.dtype)


def angle(a: torch.Tensor, b: torch.Tensor) -> float:
    """Angle in radians between two vectors."""
    a, b = a.double().flatten(), b.double().flatten()
    return float(torch.arccos((a @ b / (a.norm() * b.norm())).clamp(-1, 1)))


@dataclass
class Targets:
    """The fixed anchor directions of the families (``u1``, ``u2``).

    ``paper``: numpy's legacy generator seeded ``seed`` (45678 in the reference code) draws
    ``u1 = randn(d)`` then ``u2 = randn(d)``, cast to float32; every family shares them, so
    extend(50) and overlap(0) are the same distribution. ``independent``: each family draws its own
    pair from a generator seeded by ``(seed, family name)``.
    """

    dim: int
    mode: Literal["paper", "independent"] = "paper"
    seed: int = PAPER_TARGET_SEED

    def anchors(self, family: str, count: int = 2) -> list[torch.Tensor]:
        if self.mode == "paper":
            rng = np.random.RandomState(self.seed)
        else:
            rng = np.random.RandomState([self.seed, zlib.crc32(family.encode())])
        return [torch.from_numpy(rng.randn(self.dim).astype(np.float32)) for _ in range(count)]


# ----------------------------------------------------------------------------------------------
# Families


def norm_and_cosines(z: torch.Tensor, anchors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``[N, 1 + len(anchors)]``: ``|z|/sqrt(d)`` and the cosine of ``z`` with each anchor."""
    z64 = z.double()
    norm = z64.norm(dim=-1)
    cols = [norm / math.sqrt(z.shape[-1])]
    cols += [z64 @ u.double() / (norm * u.double().norm()) for u in anchors]
    return torch.stack(cols, dim=1)


@dataclass
class NoParams:
    pass


class ShiftFamily:
    """A latent distribution indexed by a control value ``v``.

    Subclasses set ``Params`` (a dataclass of their parameters), ``default_train_value`` and
    ``default_values``, and implement:

    - ``transform(eps, value)``: ``[N, d]`` noise -> ``[N, d]`` latents (float32);
    - ``axis_name`` and ``axis(value)``: the intensity of ``value`` on a physical axis, measured
      from the family's ``train_value`` where the axis is relative;
    - ``statistics(z)``: ``[N, k]`` summary statistics used by :func:`outside_fraction`.
    """

    Params: type = NoParams
    value_range: tuple[float, float] = (-math.inf, math.inf)
    default_train_value: float = 0.0
    default_values: tuple[float, ...] = ()
    axis_name: str = "value"
    axis_unit: str = ""

    def __init__(self, name: str, dim: int, targets: Targets, params: object, train_value: float | None = None):
        self.name = name
        self.dim = dim
        self.targets = targets
        self.params = params
        self.train_value = float(self.default_train_value if train_value is None else train_value)

    # -- to implement -----------------------------------------------------------------------
    def transform(self, eps: torch.Tensor, value: float) -> torch.Tensor:
        raise NotImplementedError

    def axis(self, value: float) -> float:
        raise NotImplementedError

    def statistics(self, z: torch.Tensor) -> torch.Tensor:
        return (z.double().norm(dim=-1) / math.sqrt(self.dim))[:, None]

    def shift_statistic(self, z: torch.Tensor) -> torch.Tensor:
        """``[N]``: the one statistic the family's shift moves (its norm for truncation, the cosine
        to its anchor or train centre for the angular families); :func:`total_variation` compares
        its train and test distributions."""
        return self.statistics(z)[:, 0]

    def total_variation_exact(self, value: float) -> float | None:
        """The closed-form total variation between train and test distributions, where one exists."""
        return None

    # -- shared ------------------------------------------------------------------------------
    def check_value(self, value: float, where: str) -> None:
        lo, hi = self.value_range
        if not (lo <= value <= hi):
            raise ConfigError(f"{where}: {value!r} is out of range for family {self.name!r}; "
                              f"expected a value in [{lo}, {hi}]")

    def latents(self, eps: torch.Tensor, labels: torch.Tensor, value: float,
                classes: Sequence[int] | None = None) -> torch.Tensor:
        """Latents at ``value``; when ``classes`` is given, only samples of those classes are
        shifted and the rest are drawn at the train value (a class-conditional shift)."""
        z = self.transform(eps, value)
        if classes is not None and value != self.train_value:
            keep = ~torch.isin(labels, torch.as_tensor(list(classes), dtype=labels.dtype))
            if keep.any():
                z[keep] = self.transform(eps[keep], self.train_value)
        return z


@FAMILIES.register("truncation")
class Truncation(ShiftFamily):
    """``z = (v/100) * eps``: a scaled Gaussian (the reference's name; not a true truncation).

    Axis: ``R = v/100``, the standard deviation of every latent coordinate, as the paper plots.
    """

    value_range = (1e-6, math.inf)
    default_train_value = 90.0
    default_values = (90.0, 95.0, 100.0, 105.0, 110.0)
    axis_name = "R"
    axis_unit = "latent std"

    def transform(self, eps, value):
        return (eps.double() * (value / 100.0)).float()

    def axis(self, value):
        return value / 100.0

    def total_variation_exact(self, value):
        """``|z|^2 / s^2`` is chi-square with d degrees of freedom, so the two densities of ``|z|^2``
        cross once, at ``x* = d ln(b/a) / (1/a - 1/b)`` (``a``, ``b`` the two variances), and the
        total variation is the difference of the chi-square CDFs there. The norm is sufficient, so
        this is also the total variation between the latent distributions themselves."""
        a, b = (self.train_value / 100.0) ** 2, (value / 100.0) ** 2
        if a == b:
            return 0.0
        x = self.dim * math.log(b / a) / (1 / a - 1 / b)
        k = torch.tensor(self.dim / 2, dtype=torch.float64)
        cdf = [torch.special.gammainc(k, torch.tensor(x / v / 2, dtype=torch.float64)) for v in (a, b)]
        return float((cdf[0] - cdf[1]).abs())  # the chi-square CDF is the regularised lower gamma


@FAMILIES.register("extend")
class Extend(ShiftFamily):
    """``z = slerp(u, eps; v/100)`` with a fixed ``u = u1``.

    Latents sit at an angle of about ``(v/100) pi/2`` from ``u`` in high dimension. Axis: the
    papers' ``theta = (v - v_train)/100 * pi`` (0 ... 0.5 pi for v = 50 ... 100).
    """

    value_range = (0.0, 100.0)
    default_train_value = 50.0
    default_values = (50.0, 60.0, 70.0, 80.0, 90.0, 100.0)
    axis_name = "theta"
    axis_unit = "rad"

    def __init__(self, *args):
        super().__init__(*args)
        self.u = self.targets.anchors(self.name, 1)[0]

    def transform(self, eps, value):
        return slerp(self.u, eps, value / 100.0)

    def axis(self, value):
        return (value - self.train_value) / 100.0 * math.pi

    def statistics(self, z):
        return norm_and_cosines(z, [self.u])

    def shift_statistic(self, z):
        return self.statistics(z)[:, 1]


@dataclass
class OverlapParams:
    mix: float = field(default=0.5, metadata=meta("slerp weight of the fresh noise: z = slerp(c, eps; mix)",
                                                   min=0.0, max=1.0))


@FAMILIES.register("overlap")
class Overlap(ShiftFamily):
    """``c = slerp(u1, u2; v/100)``, ``z = slerp(c, eps; mix)`` (mix = 0.5 in the paper).

    The centre ``c`` turns from ``u1`` towards ``u2``. Axis: the papers' ``theta = (v - v_train)/100
    * pi`` (0 ... 0.4 pi for v = 0 ... 40); the exact angle between the train and test centres is
    recorded beside it (about half of theta, since u1 and u2 are nearly orthogonal).
    """

    Params = OverlapParams
    value_range = (0.0, 100.0)
    default_train_value = 0.0
    default_values = (0.0, 10.0, 20.0, 30.0, 40.0)
    axis_name = "theta"
    axis_unit = "rad"

    def __init__(self, *args):
        super().__init__(*args)
        self.u1, self.u2 = self.targets.anchors(self.name, 2)

    def centre(self, value: float) -> torch.Tensor:
        return slerp(self.u1[None], self.u2[None], value / 100.0)[0]

    def transform(self, eps, value):
        return slerp(self.centre(value), eps, self.params.mix)

    def axis(self, value):
        return (value - self.train_value) / 100.0 * math.pi

    def centre_angle(self, value):
        return angle(self.centre(value), self.centre(self.train_value))

    def statistics(self, z):
        return norm_and_cosines(z, [self.u1, self.u2])

    def shift_statistic(self, z):
        return norm_and_cosines(z, [self.centre(self.train_value)])[:, 1]


@dataclass
class MeanRotationParams:
    rho: float = field(default=0.6, metadata=meta(
        "share of the latent norm carried by the mean: |mu| = rho sqrt(d), noise scaled by sqrt(1-rho^2)",
        min=0.0, max=1.0))


@FAMILIES.register("mean_rotation")
class MeanRotation(ShiftFamily):
    """A Gaussian whose mean turns by ``v`` degrees in a fixed plane (new in ctrlshift)::

        a = u1/|u1|,  b = (u2 - (u2.a) a)/|...|,  mu(v) = rho sqrt(d) (cos(v) a + sin(v) b)
        z = mu(v) + sqrt(1 - rho^2) eps

    ``E|z|^2 = d`` at every value, so only the direction of the mean moves. Axis: the exact angle
    between the train and test means, ``|v - v_train|`` in radians.
    """

    Params = MeanRotationParams
    value_range = (-360.0, 360.0)
    default_train_value = 0.0
    default_values = (0.0, 15.0, 30.0, 45.0, 60.0, 90.0)
    axis_name = "mean angle"
    axis_unit = "rad"

    def __init__(self, *args):
        super().__init__(*args)
        u1, u2 = (u.double() for u in self.targets.anchors(self.name, 2))
        self.a = u1 / u1.norm()
        b = u2 - (u2 @ self.a) * self.a
        self.b = b / b.norm()

    def mean(self, value: float) -> torch.Tensor:
        th = math.radians(value)
        return self.params.rho * math.sqrt(self.dim) * (math.cos(th) * self.a + math.sin(th) * self.b)

    def transform(self, eps, value):
        return (self.mean(value)[None] + math.sqrt(1 - self.params.rho ** 2) * eps.double()).float()

    def axis(self, value):
        return angle(self.mean(value), self.mean(self.train_value)) if self.params.rho > 0 else 0.0

    def statistics(self, z):
        z64 = z.double()
        return torch.stack([z64.norm(dim=-1) / math.sqrt(self.dim),
                            z64 @ self.a / math.sqrt(self.dim), z64 @ self.b / math.sqrt(self.dim)], dim=1)

    def shift_statistic(self, z):
        if self.params.rho <= 0:
            return self.statistics(z)[:, 0]
        return norm_and_cosines(z, [self.mean(self.train_value)])[:, 1]


@dataclass
class SubspaceScaleParams:
    fraction: float = field(default=0.25, metadata=meta(
        "dimension of the scaled subspace as a fraction of d", min=0.0, max=1.0))


@FAMILIES.register("subspace_scale")
class SubspaceScale(ShiftFamily):
    """The variance changes only inside a fixed random subspace (new in ctrlshift)::

        Q: d x k orthonormal (QR of a Gaussian matrix drawn from the targets' seed), k = fraction d
        z = eps + (v/100 - 1) Q Q^T eps

    Inside the subspace the latent std is ``s = v/100``; outside it stays 1. Axis: ``s``. The
    global norm barely moves for small ``fraction``, so a norm check alone would miss this shift.
    """

    Params = SubspaceScaleParams
    value_range = (0.0, math.inf)
    default_train_value = 100.0
    default_values = (100.0, 90.0, 80.0, 70.0, 60.0, 50.0)
    axis_name = "s"
    axis_unit = "subspace std"

    def __init__(self, *args):
        super().__init__(*args)
        k = max(1, round(self.params.fraction * self.dim))
        seq = np.random.SeedSequence([self.targets.seed, zlib.crc32(b"subspace_scale")])
        gauss = np.random.Generator(np.random.PCG64(seq)).standard_normal((self.dim, k))
        q, _ = np.linalg.qr(gauss)
        self.q = torch.from_numpy(np.ascontiguousarray(q))
        self.k = k

    def transform(self, eps, value):
        e = eps.double()
        return (e + (value / 100.0 - 1.0) * (e @ self.q) @ self.q.T).float()

    def axis(self, value):
        return value / 100.0

    def statistics(self, z):
        z64 = z.double()
        inside = (z64 @ self.q).norm(dim=-1)
        outside = (z64.norm(dim=-1) ** 2 - inside ** 2).clamp_min(0).sqrt()
        rest = max(self.dim - self.k, 1)
        return torch.stack([inside / math.sqrt(self.k), outside / math.sqrt(rest)], dim=1)


def create_family(name: str, dim: int, targets: Targets, params: dict | None = None,
                  train_value: float | None = None, where: str = "params") -> ShiftFamily:
    """Family ``name`` on ``d = dim`` latents, its ``params`` validated (errors name ``where``),
    with its train value (default: the family's reference one)."""
    cls = FAMILIES.get(name)
    parsed = build(cls.Params, dict(params or {}), where)
    return cls(name, dim, targets, parsed, train_value)


def list_families(pattern: str = "*") -> list[str]:
    return FAMILIES.list(pattern)


# ----------------------------------------------------------------------------------------------
# Intensity: fraction of the test distribution outside the training typical set


def _statistics(family: ShiftFamily, value: float, samples: int, seed: int, chunk: int = 2048,
                stat=None) -> torch.Tensor:
    """``stat`` (default: the family's summary statistics) of ``samples`` latents at ``value``."""
    stat = stat or family.statistics
    gen = torch.Generator().manual_seed(int(seed))
    parts = []
    for start in range(0, samples, chunk):
        eps = torch.randn(min(chunk, samples - start), family.dim, generator=gen)
        parts.append(stat(family.transform(eps, value)))
    return torch.cat(parts)


def typical_box(family: ShiftFamily, samples: int = 20000, alpha: float = 0.01,
                seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The training typical set (at the family's train value): per statistic, the central quantile
    interval leaving out ``alpha / (2k)`` on each side (Bonferroni over the ``k`` statistics)."""
    train = _statistics(family, family.train_value, samples, seed)
    q = alpha / (2 * train.shape[1])
    return torch.quantile(train, q, dim=0), torch.quantile(train, 1 - q, dim=0)


def outside_fraction(family: ShiftFamily, value: float, samples: int = 20000, alpha: float = 0.01,
                     seed: int = 0, box: tuple[torch.Tensor, torch.Tensor] | None = None) -> float:
    """Estimate the fraction of test latents that fall outside the training typical set.

    The training typical set (:func:`typical_box`) is the box of central ``1 - alpha`` quantile
    intervals of the family's ``k`` summary statistics (its norm, and its projections on the
    family's anchors or subspace), with the tail mass split evenly (``alpha / (2k)`` per side and
    statistic, Bonferroni). The quantiles are read from ``samples`` training latents (seed
    ``seed``) and the fraction from ``samples`` test latents (seed ``seed + 1``), so the estimate
    is deterministic; pass ``box`` to reuse one family's box across values. With no shift it is
    about ``alpha``; with disjoint supports it is 1.
    """
    lo, hi = box if box is not None else typical_box(family, samples, alpha, seed)
    test = _statistics(family, value, samples, seed + 1)
    outside = ((test < lo) | (test > hi)).any(dim=1)
    return float(outside.double().mean())


def total_variation(family: ShiftFamily, value: float, samples: int = 20000, seed: int = 0, bins: int = 100) -> float:
    """Total variation between the train and test distributions of the family's shift statistic:
    the closed form where the family has one (truncation), else a histogram estimate on ``bins``
    bins at the pooled quantiles of ``samples`` train and test latents. 0: the same distribution;
    1: disjoint. The estimate is biased upwards by sampling noise, about ``sqrt(bins / samples)/2``
    (0.035 at the defaults) for identical distributions; the value at the train value is reported
    as 0 exactly."""
    if value == family.train_value:
        return 0.0
    exact = family.total_variation_exact(value)
    if exact is not None:
        return exact
    shift_seed = seed + 7919  # not the typical-set draws
    train = _statistics(family, family.train_value, samples, shift_seed, stat=family.shift_statistic).double()
    test = _statistics(family, value, samples, shift_seed + 1, stat=family.shift_statistic).double()
    edges = torch.unique(torch.quantile(torch.cat([train, test]), torch.linspace(0, 1, bins + 1, dtype=torch.float64)))
    if len(edges) < 3:  # (almost) every sample equal: one bin holds both distributions
        return 0.0
    p, q = _hist(train, edges), _hist(test, edges)
    return float(0.5 * (p / p.sum() - q / q.sum()).abs().sum())


def _hist(x: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    idx = torch.bucketize(x, edges[1:-1], right=True)
    return torch.bincount(idx, minlength=len(edges) - 1).double()
