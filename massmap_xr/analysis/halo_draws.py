"""Correlated mass draws when the realization weights depend on the halo (prior draws, evidence weights).

With posterior draws, correlated sampling picks one realization r_s per sample for all halos
(:func:`massmap_xr.analysis.sampling.sample`).  With prior draws each halo k has its own weights
W_kr = w_r E_kr / Σ_r w_r E_kr (:func:`massmap_xr.analysis.weights.marginal_weights`), so one
shared choice would give every halo the wrong marginal.  Here every sample s draws one uniform
v_s (the same realization-choice stream as the shared case) and halo k uses the realization
where its own cumulative weights pass v_s ("common random numbers"): each halo's draws follow its
evidence-weighted marginal exactly, and halos whose weights agree pick the same realization, so
the hyperparameter uncertainty still moves them together.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
from scipy import special

from massmap_xr.analysis.inverse_cdf import grid_draws
from massmap_xr.analysis.reductions import moments, rows_per_batch

__all__ = ["choice_uniforms", "pick_per_halo", "draw_per_halo", "only_block"]


def choice_uniforms(n: int, key: np.ndarray, stream: int) -> np.ndarray:
    """The ``n`` uniforms of the realization-choice Philox stream (counter word 3 = ``stream``)."""
    bitgen = np.random.Philox(key=key, counter=[0, 0, 0, stream])
    return np.random.Generator(bitgen).random(n)


def pick_per_halo(weights: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(n_halo, n) realization positions: halo k takes the first r with cumsum(W_k)[r] > v_s.

    Rows of NaN weights (unwritten store regions) pick position 0; their densities are NaN
    anyway, so their draws come out NaN.
    """
    w = np.asarray(weights, dtype=np.float64)
    cw = np.cumsum(np.where(np.isfinite(w), w, 0.0), axis=1)
    top = cw[:, -1:]
    cw = np.divide(cw, top, out=np.ones_like(cw), where=top > 0)
    pick = np.empty((w.shape[0], v.size), dtype=np.int64)
    for k in range(w.shape[0]):
        pick[k] = np.searchsorted(cw[k], v, side="right")
    return np.minimum(pick, w.shape[1] - 1)


def _draw_rows(p, u, pick, *, x, method):
    """Draws (n_halo, n) of halo k from ``p[k, pick[k, s], :]`` with uniforms ``u[k, s]``.

    Only the (halo, realization) rows some sample uses are integrated: on the grid in one
    compiled pass over the block (:func:`~massmap_xr.analysis.inverse_cdf.grid_draws`, no
    copies); for ``"normal"`` a batch of halos at a time (bounded float64 temporaries).
    """
    if method == "grid":
        return grid_draws(p, x, np.ascontiguousarray(pick, dtype=np.int64), np.ascontiguousarray(u, dtype=np.float64))
    n_h, n_r = p.shape[0], p.shape[1]
    out = np.empty(u.shape)
    step = rows_per_batch(n_r * x.size)  # the batch of halos is copied whole (float32)
    for i0 in range(0, n_h, step):
        nb = min(step, n_h - i0)
        keys = (np.arange(nb)[:, None] * n_r + pick[i0:i0 + nb]).ravel()
        used, inv = np.unique(keys, return_inverse=True)
        rows = np.asarray(p[i0:i0 + nb]).reshape(nb * n_r, x.size)[used].astype(np.float64)
        _, mean, std = moments(rows, x)
        out[i0:i0 + nb] = (mean[inv] + std[inv] * special.ndtri(u[i0:i0 + nb].ravel())).reshape(nb, -1)
    return out


def only_block(block):
    """The one block of a dimension dask did not concatenate (``concatenate=False``: nested lists)."""
    while isinstance(block, list):
        if len(block) != 1:
            raise ValueError(f"expected one block along the realization and mass axes, got {len(block)}")
        block = block[0]
    return block


def _block(p, u, w, v, *, x, method):
    return _draw_rows(only_block(p), u, pick_per_halo(only_block(w), v), x=x, method=method)


def draw_per_halo(post, uniforms, weights, v, *, x, method):
    """log10-mass draws (n_halo, n) from ``post`` (n_halo, n_r, n_mass) with per-halo weights.

    ``uniforms`` (n_halo, n) are the halos' own uniforms, ``weights`` (n_halo, n_r) their
    realization weights, ``v`` (n,) the shared realization-choice uniforms.  numpy or dask
    (one task per halo block, every realization of the block at once).
    """
    if isinstance(post, da.Array):
        post = post.rechunk({1: -1, 2: -1})
        hch = post.chunks[0]
        u = uniforms.rechunk((hch, -1)) if isinstance(uniforms, da.Array) else da.from_array(uniforms, chunks=(hch, -1))
        w = da.asarray(weights).rechunk((hch, -1))
        return da.blockwise(_block, "hs", post, "hrm", u, "hs", w, "hr", v, "s", x=x, method=method,
                            dtype=np.float64, concatenate=False, meta=np.empty((0, 0), dtype=np.float64),
                            token="massmap-draw-log10-mass")
    return _block(np.asarray(post), np.asarray(uniforms), np.asarray(weights), v, x=x, method=method)


def evidence_draws(ds, ids, *, x, n, key, method, halo_uniforms, stream):
    """Correlated draws of a prior-draw cube: ``(log10 masses (n_halo, n), realization labels (n,))``.

    ``halo_uniforms(ids, n=, key=)`` gives the halos' own uniforms and ``stream`` is the
    realization-choice stream of :func:`massmap_xr.analysis.sampling.sample`; the labels are all
    -1, since the realization used differs from halo to halo.
    """
    from massmap_xr.analysis.weights import marginal_weights

    post = ds["posterior"].transpose("halo", "realization", "mass").data
    weights = marginal_weights(ds).data
    v = choice_uniforms(n, key, stream)
    if isinstance(post, da.Array):
        hch = post.chunks[0]
        u = da.from_array(np.asarray(ids), chunks=(hch,)).map_blocks(
            halo_uniforms, n=n, key=key, new_axis=1, chunks=(hch, (n,)), dtype=np.float64, token="massmap-uniforms")
        log_m = draw_per_halo(post, u, weights, da.from_array(v, chunks=-1), x=x, method=method)
    else:
        log_m = draw_per_halo(post, halo_uniforms(ids, n=n, key=key), np.asarray(weights), v, x=x, method=method)
    return log_m, np.full(n, -1, dtype=np.int64)
