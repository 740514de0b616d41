"""Realization weights and the weighted sum over realizations.

The hyperparameter-marginal posterior is the ``weight``-weighted mean over ``realization``
(uniform weights when the cube has no ``weight``).  Weights must be finite and >= 0 with a
positive sum; otherwise an :class:`~massmap_xr.errors.AnalysisError` names the offending
realizations (raised when the result is computed if ``weight`` is dask-backed).  The weighted
sum is accumulated one realization at a time in a fixed order, so it is bitwise the same
whatever the dask chunking.

Prior draws and evidence weighting
----------------------------------
Averaging the per-draw posteriors P(M_k | L_k, θ_r) with weights w_r is right when the draws
θ_r come from this catalogue's hyper-posterior (``hyper_kind = "posterior"``, the default).
When they are draws from a prior P(θ) (``hyper_kind = "prior"``, e.g.
:func:`~massmap_xr.model.hyper.reddick2013`), each draw must also be weighted by how well it
explains the halo, its evidence E_kr = P(L_obs,k | θ_r):

    P(M_k | L_k) = Σ_r w_r E_kr P(M_k | L_k, θ_r) / Σ_r w_r E_kr,

    E_kr = ∫ p(ln L_obs,k | M, z_k, θ_r) p(M | z_k) dM

(the cube variable ``log_evidence(halo, realization)`` = ln E_kr, with the prior normalised over
the mass grid).  This treats each halo on its own: the prior over θ is updated by that halo
alone (P(θ | L_k) ∝ P(L_k | θ) P(θ)), not by the whole catalogue, which would give one shared
weight ∝ w_r Π_k E_kr (for that, infer the hyper-posterior with
:func:`~massmap_xr.inference.infer_hyperparameters` and use its draws).  The weights
W_kr = w_r E_kr / Σ_r w_r E_kr then depend on the halo: :func:`marginal_weights` returns them as
a ``(halo, realization)`` array and :func:`weighted_realization_sum` folds with them per halo.
A halo whose ``log_evidence`` is NaN (an unwritten region of a store) gets NaN weights, hence a
NaN marginal, as an unwritten posterior does.
"""

from __future__ import annotations

import dask.array as da
import numba
import numpy as np
import xarray as xr

from massmap_xr.errors import AnalysisError, describe_offenders, format_offenders

__all__ = ["evidence_weights", "marginal_weights", "normalised_weights", "realization_labels", "realization_weights",
           "weighted_realization_sum", "uses_evidence", "needs_evidence"]

#: the cube variable holding ln P(L_obs,k | θ_r) per (halo, realization)
EVIDENCE_NAME = "log_evidence"


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


def uses_evidence(ds: xr.Dataset) -> bool:
    """True when the cube's draws are prior draws (``hyper_kind == "prior"``), whose marginal needs
    each halo's evidence; False for posterior draws and cubes without the attribute."""
    from massmap_xr.model.hyper import hyper_kind

    try:
        return hyper_kind(ds) == "prior"
    except ValueError as exc:
        raise AnalysisError(f"the cube's {exc}") from None


def needs_evidence(ds: xr.Dataset) -> bool:
    """True when the marginal of ``ds`` needs per-halo evidence weights: prior draws
    (:func:`uses_evidence`) and more than one realization (with one, every halo's weight is 1)."""
    return uses_evidence(ds) and ds.sizes.get("realization", 0) > 1


def evidence_weights(log_evidence, weight, ids=None) -> np.ndarray:
    """Per-halo weights W[k, r] = w_r E_kr / Σ_r w_r E_kr from ``log_evidence`` (n_halo, n_r) = ln E_kr.

    ``weight`` (n_r,) are the normalised realization weights.  Computed in logs (the largest term
    of each halo is factored out), so evidences of any magnitude neither overflow nor underflow.
    Rows with a NaN come out NaN; ``+inf`` anywhere, or a halo whose every term is zero (E = 0
    for each draw of positive weight), raises an :class:`AnalysisError` naming the halos.
    """
    le = np.asarray(log_evidence, dtype=np.float64)
    w = np.asarray(weight, dtype=np.float64).ravel()
    ids = np.arange(le.shape[0]) if ids is None else np.asarray(ids).ravel()
    if np.any(np.isposinf(le)):
        bad = np.any(np.isposinf(le), axis=1)
        raise AnalysisError(f"{EVIDENCE_NAME}: must be finite or -inf (a zero evidence), but is +inf for "
                            f"{describe_offenders(ids, bad, noun='halo')}; the store or cube is damaged: rebuild it")
    with np.errstate(divide="ignore", invalid="ignore"):
        lw = le + np.log(w)[None, :]
        nan_row = np.isnan(lw).any(axis=1)
        top = np.max(np.where(np.isnan(lw), -np.inf, lw), axis=1) if lw.shape[1] else np.full(lw.shape[0], -np.inf)
        dead = ~np.isfinite(top) & ~nan_row
        if dead.any():
            raise AnalysisError(
                f"{EVIDENCE_NAME}: the evidence P(L_obs | θ_r) is zero for every realization of positive weight for "
                f"{describe_offenders(ids, dead, noun='halo')}: no prior draw can produce their L_obs on the mass "
                "grid, so the evidence-weighted marginal is undefined; widen the mass grid, check their lum_obs, "
                "or drop them with ds.drop_sel(halo=[...])"
            )
        out = np.exp(lw - top[:, None])
        out /= out.sum(axis=1, keepdims=True)
    out[nan_row] = np.nan
    return out


def _missing_evidence(ds: xr.Dataset) -> AnalysisError:
    return AnalysisError(
        f"the cube's hyperparameters are prior draws (attribute hyper_kind='prior', e.g. reddick2013), so the "
        f"marginal over them weights each draw by each halo's evidence P(L_obs | θ_r), the variable "
        f"{EVIDENCE_NAME}(halo, realization), which this cube does not have (it was built, or its store written, "
        "before that variable was computed). Rebuild it with this version: build_posterior(catalog, hyper, ...) and "
        "to_store, or `massmap build CATALOG -o STORE --overwrite` (for a store, build_like_store(catalog, path) "
        "rebuilds the same cube). If the draws are in fact from this catalogue's hyper-posterior, declare them so: "
        "ds.attrs['hyper_kind'] = 'posterior' (or as_hyper(draws, kind='posterior') before building)"
    )


def marginal_weights(ds: xr.Dataset) -> xr.DataArray:
    """The weights of the hyperparameter marginal of cube ``ds``.

    Posterior draws, or a single realization: :func:`realization_weights`, dims ``(realization,)``
    (unchanged behaviour).
    Prior draws (``hyper_kind == "prior"``): the per-halo evidence weights of
    :func:`evidence_weights`, dims ``(halo, realization)``, each halo's row summing to 1; lazy
    (chunked along ``halo`` like ``log_evidence``) on a dask cube.

    Raises
    ------
    AnalysisError
        Prior draws without ``log_evidence`` (how to rebuild is in the message), or bad weights.
    """
    w = realization_weights(ds)
    if not needs_evidence(ds):
        return w
    if EVIDENCE_NAME not in ds.variables:
        raise _missing_evidence(ds)
    le = ds[EVIDENCE_NAME]
    if sorted(le.dims) != ["halo", "realization"]:
        raise AnalysisError(f"{EVIDENCE_NAME} must have dims ('halo', 'realization'), got {le.dims}; rebuild the cube")
    le = le.reset_coords(drop=True).transpose("halo", "realization").variable
    ids = np.asarray(ds["halo"].values) if "halo" in ds.coords else np.arange(ds.sizes["halo"])
    if isinstance(le.data, da.Array) or isinstance(w.data, da.Array):
        data = da.asarray(le.data)
        data = data.rechunk({1: -1})
        wd = da.asarray(w.data).rechunk(-1)
        hid = da.from_array(ids, chunks=(data.chunks[0],))
        out = da.blockwise(evidence_weights, "hr", data, "hr", wd, "r", hid, "h", dtype=np.float64,
                           concatenate=True, meta=np.empty((0, 0), dtype=np.float64))
    else:
        out = evidence_weights(le.values, np.asarray(w.data), ids)
    return xr.DataArray(out, dims=("halo", "realization"))


def _fold_block_list(acc, ps, ws):
    """:func:`_fold_realizations` over dask's blocks of one (halo, mass) block, realization block
    after realization block (``blockwise(..., concatenate=False)`` hands them over as lists), so
    the posterior block is folded where it lies instead of being copied into one array first."""
    ps = ps if isinstance(ps, list) else [ps]
    ws = ws if isinstance(ws, list) else [ws]
    for p, w in zip(ps, ws, strict=True):
        acc = _fold_realizations(acc, p, w)
    return acc


def weighted_realization_sum(post: xr.DataArray, w: xr.DataArray):
    """(halo, mass) array (numpy or dask) of ``sum_r w[r] * post[halo, mass, r]``.

    ``w`` is ``(realization,)`` (one weight per draw) or ``(halo, realization)`` (per-halo weights,
    e.g. the evidence weights of prior draws: ``sum_r w[halo, r] * post[halo, mass, r]``).
    On dask the realization blocks of each (halo, mass) block are folded in sequence (one
    task per block, each adding to the previous partial sum), which keeps one block in
    memory at a time and makes the result independent of the chunking.
    """
    data = post.transpose("halo", "mass", "realization").data
    per_halo = w.dims == ("halo", "realization")
    wdata = w.data
    if not isinstance(data, da.Array):
        return _fold_realizations(None, data, np.asarray(wdata))
    wdata = da.asarray(wdata)
    acc = None
    start = 0
    for size in data.chunks[2]:
        blk = data[:, :, start:start + size]
        wk = wdata[:, start:start + size].rechunk((data.chunks[0], -1)) if per_halo \
            else wdata[start:start + size].rechunk(-1)
        acc = da.blockwise(
            _fold_block_list, "hm", acc, None if acc is None else "hm", blk, "hmr", wk, "hr" if per_halo else "r",
            dtype=np.float64, concatenate=False, meta=np.empty((0, 0), dtype=np.float64),
        )
        start += size
    return acc
