"""Realization weights and the weighted sum over realizations.

The hyperparameter-marginal posterior is the ``weight``-weighted mean over ``realization``
(uniform weights when the cube has no ``weight``).  Weights must be finite and >= 0 with a
positive sum; otherwise an :class:`~massmap_xr.errors.AnalysisError` names the offending
realizations (raised when the result is computed if ``weight`` is dask-backed).  The weighted
sum is accumulated one realization at a time in a fixed order, so it is bitwise the same
whatever the dask chunking.
"""

from __future__ import annotations

import dask.array as da
import numba
import numpy as np
import xarray as xr

from massmap_xr.errors import AnalysisError, describe_offenders, format_offenders

__all__ = ["normalised_weights", "realization_labels", "realization_weights", "weighted_realization_sum"]


def realization_labels(ds: xr.Dataset) -> np.ndarray:
    """Labels of the realizations (the ``realization`` coordinate, else positions)."""
    if "realization" in ds.coords:
        return np.asarray(ds["realization"].values)
    return np.arange(ds.sizes["realization"])


def normalised_weights(weight, labels=None) -> np.ndarray:
    """Check realization weights and return them divided by their sum (float64, 1-D).

    Weights must be finite and >= 0, with a positive, finite sum; otherwise an
    :class:`AnalysisError` names the offending realizations by label.
    """
    w = np.asarray(weight, dtype=np.float64).ravel()
    labels = np.arange(w.size) if labels is None else np.asarray(labels).ravel()
    problems = []
    bad = ~np.isfinite(w)
    if bad.any():
        problems.append("NaN or infinite for " + describe_offenders(labels, bad, values=w, noun="realization"))
    neg = np.isfinite(w) & (w < 0)
    if neg.any():
        problems.append("negative for " + describe_offenders(labels, neg, values=w, noun="realization"))
    if not problems:
        total = float(w.sum())
        if w.size == 0 or not total > 0:
            problems.append(
                f"all {w.size} realization weights are zero (labels: {format_offenders(labels)}); "
                "give at least one realization a positive weight"
            )
        elif not np.isfinite(total):
            problems.append(f"the weights sum to {total!r} (overflow); rescale them")
    if problems:
        raise AnalysisError(
            "weight: realization weights must be finite and >= 0 with a positive sum, but are\n  - "
            + "\n  - ".join(problems)
            + "\nfix ds['weight'], or drop the bad realizations with ds.drop_sel(realization=[...])",
            problems=problems,
        )
    return w / total


def realization_weights(ds: xr.Dataset) -> xr.DataArray:
    """Realization weights normalised to sum 1 (uniform if the cube has no ``weight``).

    The weights are checked (finite, >= 0, positive sum; :class:`AnalysisError` naming the bad
    realizations otherwise).  A dask-backed ``weight`` stays lazy: it is checked and normalised
    in one task on a single chunk, so the error is raised when the result is computed.
    """
    labels = realization_labels(ds)
    if "weight" not in ds:
        return xr.DataArray(np.full(labels.size, 1.0 / labels.size), dims="realization")
    w = ds["weight"].reset_coords(drop=True).variable
    if isinstance(w.data, da.Array):
        data = w.data.rechunk(-1).map_blocks(normalised_weights, labels=labels, dtype=np.float64)
    else:
        data = normalised_weights(w.values, labels)
    return xr.DataArray(data, dims="realization")


@numba.njit(nogil=True, cache=True)
def _fold3(out, p, w):  # pragma: no cover - compiled
    # out[h, m] += p[h, m, r] * w[h or 0, r] for r = 0, 1, ... in that order: each element's
    # additions are those of the numpy loop below, so the sums are bitwise the same
    n_h, n_m, n_r = p.shape
    per_halo = w.shape[0] > 1
    for h in range(n_h):
        wh = w[h] if per_halo else w[0]
        o = out[h]
        ph = p[h]
        m = 0
        while m + 4 <= n_m:  # four independent chains: the adds of one element stay in order
            a0, a1, a2, a3 = o[m], o[m + 1], o[m + 2], o[m + 3]
            r0, r1, r2, r3 = ph[m], ph[m + 1], ph[m + 2], ph[m + 3]
            for r in range(n_r):
                x = wh[r]
                a0 += np.float64(r0[r]) * x
                a1 += np.float64(r1[r]) * x
                a2 += np.float64(r2[r]) * x
                a3 += np.float64(r3[r]) * x
            o[m], o[m + 1], o[m + 2], o[m + 3] = a0, a1, a2, a3
            m += 4
        for k in range(m, n_m):
            acc = o[k]
            row = ph[k]
            for r in range(n_r):
                acc += np.float64(row[r]) * wh[r]
            o[k] = acc
    return out


def _fold_realizations(acc, p, w):
    """``acc + sum_r w[..., r] * p[..., r]`` in float64, accumulated one realization at a time.

    ``w`` is a (realization,) vector, or (halo, realization) weights for a (halo, mass,
    realization) ``p``.  The order of the additions is fixed (realization by realization,
    continuing from ``acc``), so the result is bitwise the same however the realizations are
    split into blocks, and however halos and masses are chunked.  A 3-D float32/float64 block
    is folded in one compiled pass (each value read once); anything else by the numpy loop.
    """
    w = np.asarray(w, dtype=np.float64)
    p = np.asarray(p)
    out = np.zeros(p.shape[:-1]) if acc is None else np.array(acc, dtype=np.float64, copy=True)
    if p.ndim == 3 and p.dtype in (np.float32, np.float64) and (w.ndim == 1 or w.shape == (p.shape[0], p.shape[2])):
        w2 = np.ascontiguousarray(w.reshape(-1, p.shape[2]))
        return _fold3(out, np.ascontiguousarray(p), w2)
    if w.ndim == 1:
        w = w.ravel()
    for r in range(w.shape[-1]):
        out += p[..., r].astype(np.float64) * (w[..., r, None] if w.ndim > 1 else w[r])
    return out


def weighted_realization_sum(post: xr.DataArray, w: xr.DataArray):
    """(halo, mass) array (numpy or dask) of ``sum_r w[r] * post[halo, mass, r]``.

    On dask the realization blocks of each (halo, mass) block are folded in sequence (one
    task per block, each adding to the previous partial sum), which keeps one block in
    memory at a time and makes the result independent of the chunking.
    """
    data = post.transpose("halo", "mass", "realization").data
    wdata = w.data
    if not isinstance(data, da.Array):
        return _fold_realizations(None, data, np.asarray(wdata))
    acc = None
    start = 0
    for size in data.chunks[2]:
        blk = data[:, :, start:start + size]
        wk = wdata[start:start + size]
        wk = wk.rechunk(-1) if isinstance(wk, da.Array) else da.from_array(np.asarray(wk), chunks=-1)
        acc = da.blockwise(
            _fold_realizations, "hm", acc, None if acc is None else "hm", blk, "hmr", wk, "r",
            dtype=np.float64, concatenate=True, meta=np.empty((0, 0), dtype=np.float64),
        )
        start += size
    return acc
