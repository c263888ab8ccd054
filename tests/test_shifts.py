"""Shift families against closed forms; determinism of per-sample noise and labels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ctrlshift.errors import RegistryError
from ctrlshift.generator.shifts import (FAMILIES, Targets, angle, create_family, draw_labels, draw_noise,
                                        list_families, outside_fraction, sample_seed, slerp)
from ctrlshift.registry import Registry

D = 3072


def fam(name, dim=D, train_value=None, **params):
    return create_family(name, dim, Targets(dim), params, train_value)


def noise(n, dim=D, seed=0):
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


# -- slerp --------------------------------------------------------------------------------------

def test_slerp_endpoints_and_constant_angular_speed():
    a, b = noise(1, 64, 1)[0], noise(1, 64, 2)
    assert torch.allclose(slerp(a, b, 1.0), b, atol=1e-6)
    b = b / b.norm() * a.norm()  # constant angular speed holds between vectors of equal norm
    w = angle(a, b[0])
    assert torch.allclose(slerp(a, b, 0.0)[0], a, atol=1e-6)
    assert torch.allclose(slerp(a, b, 1.0), b, atol=1e-6)
    for t in (0.25, 0.5, 0.8):
        m = slerp(a, b, t)[0]
        assert angle(a, m) == pytest.approx(t * w, abs=1e-5)
        assert angle(m, b[0]) == pytest.approx((1 - t) * w, abs=1e-5)


def test_slerp_keeps_norm_between_equal_norm_vectors():
    a = noise(1, 100, 3)[0]
    b = noise(1, 100, 4)
    b = b / b.norm() * a.norm()
    assert slerp(a, b, 0.37)[0].norm() == pytest.approx(float(a.norm()), rel=1e-5)


# -- paper targets ------------------------------------------------------------------------------

def test_paper_targets_bit_for_bit():
    u1, u2 = Targets(D, "paper", 45678).anchors("overlap", 2)
    # The reference procedure, literally: the legacy global generator, u1 then u2, float32.
    state = np.random.get_state()
    try:
        np.random.seed(45678)
        r1 = np.random.randn(D).astype(np.float32)
        r2 = np.random.randn(D).astype(np.float32)
    finally:
        np.random.set_state(state)
    assert u1.dtype == torch.float32
    assert np.array_equal(u1.numpy(), r1) and np.array_equal(u2.numpy(), r2)
    # Frozen values of numpy's legacy MT19937 stream.
    assert u1[:4].tolist() == pytest.approx([-0.7939, 0.9013196, 0.18551704, -1.3556831], abs=1e-7)
    assert u2[:4].tolist() == pytest.approx([-0.5837595, 0.96638745, 1.6933848, -0.22341284], abs=1e-7)


def test_extend_50_equals_overlap_0_under_paper_targets():
    eps = noise(5)
    assert torch.allclose(fam("extend").transform(eps, 50), fam("overlap").transform(eps, 0), atol=1e-6)


def test_independent_targets_differ_per_family():
    t = Targets(64, "independent", 45678)
    assert not torch.equal(t.anchors("extend", 1)[0], t.anchors("overlap", 1)[0])
    assert torch.equal(t.anchors("extend", 1)[0], t.anchors("extend", 1)[0])


# -- families -----------------------------------------------------------------------------------

def test_truncation_scales_norm():
    eps = noise(200)
    z = fam("truncation").transform(eps, 110)
    assert torch.allclose(z, eps * 1.1, atol=1e-6)
    assert float(z.norm(dim=1).mean() / math.sqrt(D)) == pytest.approx(1.1, rel=0.01)
    assert fam("truncation", train_value=90).axis(105) == pytest.approx(1.05)


@pytest.mark.parametrize("v", [50, 70, 100])
def test_extend_angle_to_u_is_t_pi_over_2(v):
    f = fam("extend")
    z = f.transform(noise(100), v)
    angles = torch.tensor([angle(zi, f.u) for zi in z])
    assert float(angles.mean()) == pytest.approx(v / 100 * math.pi / 2, abs=0.02)
    assert f.axis(v) == pytest.approx((v - 50) / 100 * math.pi)


def test_overlap_centre_turns_from_u1_towards_u2():
    f = fam("overlap")
    w = angle(f.u1, f.u2)
    assert w == pytest.approx(math.pi / 2, abs=0.05)  # nearly orthogonal in high dimension
    for v in (0, 20, 40):  # exact for equal norms; |u1| and |u2| differ by O(1/sqrt(d))
        assert f.centre_angle(v) == pytest.approx(v / 100 * w, abs=0.01)
    z = f.transform(noise(100), 30)
    # z = slerp(c, eps; 0.5): about 45 degrees from the centre
    assert float(torch.tensor([angle(zi, f.centre(30)) for zi in z]).mean()) == pytest.approx(math.pi / 4, abs=0.02)


def test_mean_rotation_keeps_norm_and_turns_mean_exactly():
    f = fam("mean_rotation", rho=0.6)
    assert f.axis(30) == pytest.approx(math.radians(30), abs=1e-9)
    assert f.axis(90) == pytest.approx(math.pi / 2, abs=1e-9)
    z0, z90 = f.transform(noise(400), 0), f.transform(noise(400), 90)
    for z in (z0, z90):
        assert float((z.double() ** 2).sum(1).mean() / D) == pytest.approx(1.0, rel=0.01)
    assert angle(z0.double().mean(0), z90.double().mean(0)) == pytest.approx(math.pi / 2, abs=0.05)


def test_subspace_scale_changes_variance_only_inside_the_subspace():
    f = fam("subspace_scale", dim=256, fraction=0.25)
    z = f.transform(noise(4000, 256), 50).double()
    inside = z @ f.q
    outside = z - inside @ f.q.T
    assert f.k == 64
    assert float(inside.var()) == pytest.approx(0.25, rel=0.05)
    assert float((outside ** 2).sum(1).mean() / (256 - 64)) == pytest.approx(1.0, rel=0.03)


def test_class_conditional_shift_moves_only_chosen_classes():
    f = fam("overlap", dim=64)
    eps, labels = noise(40, 64), torch.arange(40) % 4
    z = f.latents(eps, labels, 30, classes=[1, 3])
    moved = torch.isin(labels, torch.tensor([1, 3]))
    assert torch.allclose(z[moved], f.transform(eps[moved], 30))
    assert torch.allclose(z[~moved], f.transform(eps[~moved], 0))


# -- determinism ----------------------------------------------------------------------------------

def test_noise_of_a_sample_depends_on_split_seed_and_index_only():
    seeds = [sample_seed(7, i) for i in range(10)]
    batch = draw_noise(seeds, 48)
    alone = draw_noise([seeds[6]], 48)
    assert torch.equal(batch[6], alone[0])  # independent of batch composition
    assert torch.equal(batch[6], torch.randn(48, generator=torch.Generator().manual_seed(seeds[6])))
    assert sample_seed(7, 6) != sample_seed(8, 6) and len(set(seeds)) == 10


def test_balanced_labels_are_exact_per_block_and_index_pure():
    labels = draw_labels(3, range(100), 10, "balanced")
    assert torch.bincount(labels, minlength=10).tolist() == [10] * 10
    for block in range(10):
        assert sorted(labels[block * 10:(block + 1) * 10].tolist()) == list(range(10))
    assert torch.equal(draw_labels(3, range(40, 60), 10, "balanced"), labels[40:60])


def test_uniform_labels_are_iid_and_index_pure():
    labels = draw_labels(3, range(5000), 10, "uniform")
    counts = torch.bincount(labels, minlength=10)
    assert counts.min() > 400 and counts.max() < 600
    assert torch.equal(draw_labels(3, [17, 4000], 10, "uniform"), labels[[17, 4000]])


# -- intensity estimator ----------------------------------------------------------------------

def test_outside_fraction_matches_chi_square_closed_form():
    stats = pytest.importorskip("scipy.stats", reason="needs scipy for the chi-square closed form")
    d, alpha, s0, s1 = 64, 0.05, 90.0, 100.0
    f = fam("truncation", dim=d, train_value=s0)
    est = outside_fraction(f, s1, samples=40000, alpha=alpha, seed=1)
    # |z|^2 / s^2 ~ chi2_d; the box keeps the central 1-alpha of the train norm.
    lo, hi = stats.chi2.ppf([alpha / 2, 1 - alpha / 2], d)
    r = (s0 / s1) ** 2
    exact = stats.chi2.cdf(lo * r, d) + stats.chi2.sf(hi * r, d)
    assert est == pytest.approx(exact, abs=0.015)


def test_outside_fraction_no_shift_is_alpha_and_disjoint_is_one():
    f = fam("overlap", dim=256, train_value=0)
    assert outside_fraction(f, 0, samples=20000, alpha=0.02) == pytest.approx(0.02, abs=0.006)
    assert outside_fraction(f, 100, samples=2000) == 1.0


def test_outside_fraction_grows_with_intensity():
    f = fam("subspace_scale", dim=256, train_value=100)
    fr = [outside_fraction(f, v, samples=4000) for v in (100, 90, 80, 60)]
    assert fr == sorted(fr) and fr[-1] > 0.9


# -- registry -------------------------------------------------------------------------------------

def test_registry_lists_with_wildcards_and_rejects_unknown_and_duplicates():
    assert {"truncation", "extend", "overlap", "mean_rotation", "subspace_scale"} <= set(list_families())
    assert list_families("over*") == ["overlap"]
    with pytest.raises(RegistryError, match="did you mean 'extend'"):
        FAMILIES.get("extnd")
    reg = Registry("thing")
    reg.register("a")(object)
    with pytest.raises(RegistryError, match="registered twice"):
        reg.register("a")(object)


def test_total_variation_of_truncation_has_a_closed_form_the_estimate_matches():
    from ctrlshift.generator.shifts import total_variation

    t = Targets(256, "paper", 45678)
    fam = create_family("truncation", 256, t, {}, 90.0)
    exact = [fam.total_variation_exact(v) for v in (92.0, 95.0, 100.0)]
    assert exact[0] < exact[1] < exact[2] < 1
    # the two chi-square laws by brute force: TV = 1/2 integral |f_a - f_b| on a fine grid of |z|^2
    def chi2_pdf(y, k):  # written out, independent of the implementation's incomplete gamma
        return np.exp((k / 2 - 1) * np.log(y) - y / 2 - (k / 2) * math.log(2) - math.lgamma(k / 2))

    x = np.linspace(1e-6, 256 * 2.5, 400001)
    fa, fb = chi2_pdf(x / 0.81, 256) / 0.81, chi2_pdf(x / 1.0, 256) / 1.0
    assert exact[2] == pytest.approx(0.5 * np.sum(np.abs(fa - fb)) * (x[1] - x[0]), abs=1e-4)
    est = create_family("truncation", 256, t, {}, 90.0)
    est.total_variation_exact = lambda v: None  # the histogram estimate on the same statistic
    for v, e in zip((92.0, 95.0, 100.0), exact):
        assert total_variation(est, v) == pytest.approx(e, abs=0.03)
    assert total_variation(fam, 90.0) == 0.0


def test_total_variation_grows_with_the_angular_shifts_and_saturates_only_late():
    from ctrlshift.generator.shifts import total_variation

    t = Targets(3072, "paper", 45678)
    over = create_family("overlap", 3072, t, {}, 0.0)
    tv = [total_variation(over, v, samples=8000) for v in (5.0, 10.0, 20.0)]
    assert 0.05 < tv[0] < tv[1] < tv[2]
    assert tv[1] < 0.8  # informative where the outside fraction is already 1
