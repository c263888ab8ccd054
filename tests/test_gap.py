"""Gap metrics against closed forms; correction invariances; robustness by hand; the toy theory."""

from __future__ import annotations


import json

import pytest
import torch

from ctrlshift.gap import metrics as gm
from ctrlshift.gap.corrections import Correction, fit, predict
from ctrlshift.gap.robustness import noise_robustness, quantize, robustness_curves, unchanged
from ctrlshift.gap.toy import ToyConfig, simulate


def clusters(n=50, k=5, d=16, gap=1.0, seed=0):
    """Images and class texts with a planted gap along the last axis, orthogonal to both spans."""
    g = torch.Generator().manual_seed(seed)
    T = torch.zeros(k, d, dtype=torch.float64)
    T[:, :k] = torch.eye(k, dtype=torch.float64) * 0.8
    labels = torch.arange(n) % k
    X = T[labels] + 0.3 * torch.randn(n, d, generator=g, dtype=torch.float64)
    X[:, -1] = 0.0  # inside the span of the first d-1 axes
    T = T.clone()
    T[:, -1] = gap
    return X, T, labels


def test_gap_vector_l2m_l2i_closed_forms():
    X = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    Y = torch.tensor([[1.0, 2.0], [0.0, 3.0]], dtype=torch.float64)
    assert torch.allclose(gm.gap_vector(X, Y), torch.tensor([0.0, 2.0], dtype=torch.float64))
    assert gm.l2m(X, Y) == pytest.approx(2.0)
    assert gm.l2i(X, Y) == pytest.approx(2.0)


def test_rmg_limits():
    X = gm.normalize(torch.randn(20, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    assert gm.rmg(X, X) == pytest.approx(0.0, abs=1e-12)
    far = gm.normalize(X * 0.01 + torch.tensor([0.0] * 7 + [1.0], dtype=torch.float64))
    assert gm.rmg(X * 0.01 + torch.eye(8, dtype=torch.float64)[0], far) > 0.9


def test_span_fraction_and_variance_along_gap():
    X, T, _ = clusters()
    g = gm.gap_vector(X, T)
    V = gm.centred_span(X)
    assert V.shape[1] == 15  # d - 1 directions
    rep = gm.gap_report(X, T)
    assert rep["l2m"] == pytest.approx(float(g.norm()))
    assert rep["var_along_gap_image"] < rep["var_total_image"]
    e = torch.zeros(16, dtype=torch.float64)
    e[-1] = 1
    assert gm.span_fraction(e, V) == pytest.approx(0.0, abs=1e-10)
    assert gm.span_fraction(V[:, 0], V) == pytest.approx(1.0)
    assert gm.variance_along(X, e) == pytest.approx(0.0)


def test_moving_one_modality_orthogonally_to_the_others_span_keeps_every_ranking():
    """Property: shifting the images along any direction orthogonal to the centred span of the
    texts leaves every image's ranking of the texts unchanged."""
    g = torch.Generator().manual_seed(1)
    for trial in range(20):
        d, k = 12, 4
        T = gm.normalize(torch.randn(k, d, generator=g, dtype=torch.float64))
        X = gm.normalize(torch.randn(30, d, generator=g, dtype=torch.float64))
        V = gm.centred_span(T)
        r = torch.randn(d, generator=g, dtype=torch.float64)
        r = r - V @ (V.T @ r)
        scale = float(torch.rand(1, generator=g)) * 5
        before = (X @ T.T).argsort(1)
        after = ((X + scale * r) @ T.T).argsort(1)
        assert torch.equal(before, after)


@pytest.mark.parametrize("renormalize", [False, True])
def test_projected_correction_keeps_image_rankings(renormalize):
    g = torch.Generator().manual_seed(2)
    T = gm.normalize(torch.randn(6, 32, generator=g, dtype=torch.float64) + 2 * torch.eye(32)[0])
    X = gm.normalize(torch.randn(100, 32, generator=g, dtype=torch.float64) - 2 * torch.eye(32)[0])
    c = fit("projected", X, T, alpha=1.0, renormalize=renormalize)
    assert gm.span_fraction(c.vector, gm.centred_span(T)) < 1e-10
    for a in (0.25, 0.5, 1.0, 1.5):
        ca = c.with_alpha(a)
        assert torch.equal((ca.images(X) @ T.T).argsort(1), (X @ T.T).argsort(1))
    # the plain mean shift does change rankings on the same data
    m = fit("mean", X, T, alpha=1.0, renormalize=renormalize)
    assert not torch.equal(predict(m.images(X), T), predict(X, T))


def test_renormalised_shift_keeps_text_queries_only_when_orthogonal_to_the_images():
    """Text -> image retrieval after a re-normalised shift: images are rescaled by different
    factors, so a text query's ranking of images is kept when the shift is orthogonal to the
    images' (unit-norm) span, and can change when it is not."""
    g = torch.Generator().manual_seed(3)
    d = 10
    X = torch.zeros(40, d, dtype=torch.float64)
    X[:, : d - 1] = torch.randn(40, d - 1, generator=g, dtype=torch.float64)
    X = gm.normalize(X)  # unit images in the first d-1 axes
    T = gm.normalize(torch.randn(5, d, generator=g, dtype=torch.float64))
    ortho = torch.zeros(d, dtype=torch.float64)
    ortho[-1] = 0.8
    inside = torch.zeros(d, dtype=torch.float64)
    inside[0] = 0.8
    for vec, kept in ((ortho, True), (inside, False)):
        c = Correction("projected", 1.0, vec, renormalize=True)
        same = torch.equal((T @ c.images(X).T).argsort(1), (T @ X.T).argsort(1))
        assert same == kept
        assert torch.equal(predict(c.images(X), T), predict(X + vec, T))  # image queries: always kept


def test_liang_shift_moves_both_modalities_towards_each_other():
    X, T, _ = clusters()
    X, T = gm.normalize(X), gm.normalize(T)
    c = fit("liang", X, T, alpha=0.5)
    assert gm.l2m(c.images(X), c.texts(T)) < gm.l2m(X, T)
    assert torch.allclose(c.images(X).norm(dim=1), torch.ones(len(X), dtype=torch.float64))


def test_correction_saves_and_applies_to_new_embeddings(tmp_path):
    X, T, _ = clusters()
    c = fit("projected", X, T, alpha=0.7, source={"model": "m", "data": "d"})
    c.save(tmp_path / "corr")
    back = Correction.load(tmp_path / "corr")
    new = torch.randn(5, 16, dtype=torch.float64)
    assert back.kind == "projected" and back.alpha == 0.7 and back.source == {"model": "m", "data": "d"}
    assert torch.allclose(back.images(new), c.images(new))


def test_robustness_by_hand():
    assert unchanged(torch.tensor([0, 1, 2, 3]), torch.tensor([0, 1, 0, 0])) == 0.5
    q = quantize(torch.tensor([[-1.0, -0.2, 0.0, 0.99]]), 4)
    assert q.tolist() == [[-0.75, -0.25, 0.25, 0.75]]
    T = torch.eye(2, dtype=torch.float64)
    X = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert noise_robustness(X, T, 1e-6) == 1.0  # tiny noise changes nothing
    assert 0.3 < noise_robustness(X, T, 100.0, trials=200) < 0.7  # huge noise: a coin flip


def test_robustness_curves_rows_carry_clean_accuracy():
    X, T, labels = clusters()
    X, T = gm.normalize(X), gm.normalize(T)
    c = fit("projected", X, T)
    rows = robustness_curves(X, T, labels, c, alphas=[0, 0.5, 1], sigma2s=[0.01], bins=[16],
                             reworded={"alt": gm.normalize(T + 0.05)})
    assert [r["alpha"] for r in rows] == [0, 0.5, 1]
    assert len({r["clean_top1"] for r in rows}) == 1  # the projected shift keeps clean accuracy
    assert set(rows[0]["noise"]) == {"0.01"} and "alt" in rows[0]["templates"]


def test_toy_ends_with_a_gap_orthogonal_to_both_modalities():
    r = simulate(ToyConfig(n=4, dim=8, steps=1500, lr=0.05, temperature=0.05))
    first, last = r["history"][0], r["history"][-1]
    assert last["loss"] < 0.01 < first["loss"]
    assert last["gap_norm"] > 0.5  # the gap froze instead of closing
    assert last["var_share_x"] < 1e-3 and last["var_share_y"] < 1e-3
    assert last["gap_in_span_x"] < 0.05 and last["gap_in_span_y"] < 0.05


@pytest.mark.parametrize("renormalize", [True, False])
@pytest.mark.parametrize("kind", ["projected", "mean", "liang"])
def test_alpha_one_closes_the_gap_for_every_kind(kind, renormalize):
    """One scale for all corrections: at alpha = 1 the gap along the moved direction is zero on
    the fitting embeddings, below it some gap is left, above it the gap is reversed."""
    X, T, _ = clusters(gap=0.6)
    X, T = gm.normalize(X), gm.normalize(T)
    c = fit(kind, X, T, alpha=1.0, renormalize=renormalize)
    assert abs(c.residual(X, T, c.step)) < 1e-9
    assert c.with_alpha(0.5).residual(X, T, c.with_alpha(0.5).step) > 0
    assert c.with_alpha(1.5).residual(X, T, c.with_alpha(1.5).step) < 0
    if kind != "liang" and not renormalize:
        assert c.scale == pytest.approx(1.0, abs=1e-12)  # the plain shift needs no calibration
    if kind == "liang":  # the L2M is smallest near alpha = 1, not at Liang's lambda = 1
        l2m = {a: gm.l2m(c.with_alpha(a).images(X), c.with_alpha(a).texts(T)) for a in (0.0, 0.8, 1.0, 1.2)}
        assert l2m[1.0] < min(l2m[0.8], l2m[1.2], l2m[0.0])
        assert c.lam == pytest.approx(c.scale)
        assert c.with_lambda(0.3).lam == pytest.approx(0.3)
        assert gm.l2m(c.with_lambda(1.0).images(X), c.with_lambda(1.0).texts(T)) > l2m[1.0]


def test_liang_lambda_is_saved_and_old_files_keep_their_meaning(tmp_path):
    X, T, _ = clusters()
    X, T = gm.normalize(X), gm.normalize(T)
    c = fit("liang", X, T, alpha=0.5)
    c.save(tmp_path / "c")
    meta = json.loads((tmp_path / "c.json").read_text())
    assert meta["lambda"] == pytest.approx(0.5 * c.scale) and meta["scale"] == pytest.approx(c.scale)
    del meta["scale"]  # a file from before the scale: its alpha was Liang's lambda
    (tmp_path / "c.json").write_text(json.dumps(meta))
    old = Correction.load(tmp_path / "c")
    assert old.lam == 0.5


def test_rmg_uses_the_distinct_class_texts_for_the_within_text_term():
    X, T, labels = clusters(n=40, k=4)
    X, T = gm.normalize(X), gm.normalize(T)
    d = lambda a, b: (1 - a @ b.T) / 2  # noqa: E731
    m = float(torch.diagonal(d(X, T[labels])).mean())
    off = lambda z: float((d(z, z).sum() - d(z, z).diagonal().sum()) / (len(z) * (len(z) - 1)))  # noqa: E731
    expected = m / (0.5 * (off(X) + off(T)) + m)
    assert gm.rmg(X, T[labels], texts=T) == pytest.approx(expected, rel=1e-12)
    assert gm.rmg(X, T[labels]) != pytest.approx(expected, rel=1e-3)  # copies lower the text spread
    report = gm.gap_report(X, T[labels], paired=True, texts=T)
    assert report["rmg"] == pytest.approx(expected) and report["rmg_text_set"] == "distinct class texts"
