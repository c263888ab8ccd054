"""Modality-gap metrics: pure functions on embedding tensors (docs/methods.md section 2).

Conventions: ``X`` are image embeddings ``[N, D]``, ``Y`` text embeddings ``[M, D]``, unit norm as
the model outputs them. The gap vector points from the images to the texts::

    g = mean(Y) - mean(X)

so moving the images by ``+alpha g`` moves them towards the texts.
"""

from __future__ import annotations

import torch


def normalize(z: torch.Tensor) -> torch.Tensor:
    return z / z.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def gap_vector(X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    return Y.double().mean(0) - X.double().mean(0)


def l2m(X: torch.Tensor, Y: torch.Tensor) -> float:
    """``|mean(X) - mean(Y)|`` (Liang et al. report about 0.82 for CLIP on MS-COCO)."""
    return float(gap_vector(X, Y).norm())


def l2i(X: torch.Tensor, Y: torch.Tensor) -> float:
    """Mean distance between matched pairs ``|x_i - y_i|`` (X and Y row-aligned)."""
    if X.shape != Y.shape:
        raise ValueError(f"L2I needs matched pairs; got {tuple(X.shape)} and {tuple(Y.shape)}")
    return float((X.double() - Y.double()).norm(dim=1).mean())


def _mean_offdiag(d: torch.Tensor) -> torch.Tensor:
    n = d.shape[0]
    return (d.sum() - d.diagonal().sum()) / (n * (n - 1))


def rmg(X: torch.Tensor, Y: torch.Tensor, texts: torch.Tensor | None = None) -> float:
    """Relative modality gap, after Schrodi et al. (ICLR 2025): the mean cosine dissimilarity
    ``d(a, b) = (1 - cos(a, b)) / 2`` of matched pairs, relative to the mean within-modality
    dissimilarity plus itself::

        RMG = m / (0.5 (intra_X + intra_T) + m),  m = mean_i d(x_i, y_i)

    0 when matched pairs coincide; near 1 when pairs are far apart compared with the spread of
    each modality. X and Y must be matched pairs. ``texts`` is the text set of the within-text
    term: for classification data the K distinct class texts, as Schrodi et al. compute it (with
    the matched copies ``Y`` instead, same-class pairs would enter it at dissimilarity 0)."""
    if X.shape != Y.shape:
        raise ValueError(f"RMG needs matched pairs; got {tuple(X.shape)} and {tuple(Y.shape)}")
    x, y = normalize(X.double()), normalize(Y.double())
    t = y if texts is None else normalize(texts.double())
    m = ((1 - (x * y).sum(1)) / 2).mean()
    ix = _mean_offdiag((1 - x @ x.T) / 2)
    it = _mean_offdiag((1 - t @ t.T) / 2)
    return float(m / (0.5 * (ix + it) + m))


def centred_span(Z: torch.Tensor, rel_tol: float = 1e-6) -> torch.Tensor:
    """Orthonormal basis ``V`` ``[D, r]`` of the centred span of the rows of ``Z`` (directions with
    singular value above ``rel_tol`` times the largest)."""
    c = Z.double() - Z.double().mean(0)
    _, s, vh = torch.linalg.svd(c, full_matrices=False)
    r = int((s > rel_tol * s.max().clamp_min(1e-30)).sum()) if len(s) else 0
    return vh[:r].T


def span_fraction(g: torch.Tensor, V: torch.Tensor) -> float:
    """``|V V^T g| / |g|``: 0 when ``g`` is orthogonal to the span, 1 when inside it."""
    g = g.double()
    return float((V @ (V.T @ g)).norm() / g.norm().clamp_min(1e-30))


def variance_along(Z: torch.Tensor, direction: torch.Tensor) -> float:
    d = direction.double() / direction.double().norm().clamp_min(1e-30)
    return float((Z.double() @ d).var(unbiased=False))


def pc_cosines(Z: torch.Tensor, g: torch.Tensor, k: int = 5) -> list[float]:
    """|cos| between ``g`` and each of the top-``k`` principal components of ``Z``."""
    V = centred_span(Z)[:, :k]
    gh = g.double() / g.double().norm().clamp_min(1e-30)
    return (V.T @ gh).abs().tolist()


def gap_report(X: torch.Tensor, Y: torch.Tensor, paired: bool = False, k: int = 5,
               texts: torch.Tensor | None = None) -> dict:
    """Every gap metric as a dict of floats (lists for per-component values). For paired
    ``(X, Y)`` built from class texts, ``texts`` are the distinct class texts of RMG's within-text
    term (see :func:`rmg`)."""
    g = gap_vector(X, Y)
    total_x = float(X.double().var(0, unbiased=False).sum())
    total_y = float(Y.double().var(0, unbiased=False).sum())
    out = {
        "l2m": float(g.norm()),
        "var_along_gap_image": variance_along(X, g), "var_along_gap_text": variance_along(Y, g),
        "var_total_image": total_x, "var_total_text": total_y,
        "gap_in_span_image": span_fraction(g, centred_span(X)),
        "gap_in_span_text": span_fraction(g, centred_span(Y)),
        "pc_cos_image": pc_cosines(X, g, k), "pc_cos_text": pc_cosines(Y, g, k),
    }
    if paired:
        out["l2i"] = l2i(X, Y)
        out["rmg"] = rmg(X, Y, texts)
        out["rmg_text_set"] = "distinct class texts" if texts is not None else "the paired texts"
    return out
