"""Mass samples from a posterior cube: counter-based random streams and inverse-CDF draws.

Random draws are counter-based: halo ``h`` (by id) uses its own Philox stream keyed by the
seed, and the choice of realization per sample another stream, so a seeded call gives the same
numbers whatever the dask chunking, and a subset of halos gets the same draws as in the full
cube.  ``method="grid"`` draws invert the piecewise-linear CDF of the gridded posterior
(:func:`massmap_xr.analysis.reductions.invert_cdf`); ``method="normal"`` draws from the
moment-matched normal in log10 M.
"""

from __future__ import annotations

import numbers
import os

import dask.array as da
import numpy as np
import xarray as xr
from scipy import special

from massmap_xr.analysis.halo_draws import evidence_draws, only_block
from massmap_xr.analysis.inverse_cdf import grid_draws
from massmap_xr.analysis.philox import philox_uniforms
from massmap_xr.analysis.reductions import log10_grid, marginalize, moments, rows_per_batch
from massmap_xr.analysis.weights import needs_evidence, normalised_weights, realization_labels, realization_weights
from massmap_xr.cube import validate_cube
from massmap_xr.errors import AnalysisError
from massmap_xr.log import compute_once

__all__ = ["philox_key", "pick_realizations", "sample", "memory_limit", "check_memory"]

#: fraction of physical memory one result (or one dask block of it) may take
MEMORY_FRACTION = 0.5


def memory_limit() -> int:
    """Bytes one operation may allocate: ``MEMORY_FRACTION`` of physical memory, or the
    ``MASSMAP_MEMORY_LIMIT`` environment variable (bytes) when set."""
    env = os.environ.get("MASSMAP_MEMORY_LIMIT")
    if env:
        try:
            return int(float(env))
        except ValueError:
            raise AnalysisError(f"MASSMAP_MEMORY_LIMIT must be a number of bytes, got {env!r}") from None
    try:
        return int(MEMORY_FRACTION * os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # no sysconf: 8 GiB
        return 8 << 30


def check_memory(nbytes: float, what: str, hint: str, error: type = AnalysisError) -> None:
    """Refuse, before allocating, an operation estimated to need more than :func:`memory_limit`."""
    limit = memory_limit()
    if nbytes > limit:
        raise error(f"{what} would need about {nbytes / 1e9:.3g} GB of memory, more than the limit of "
                    f"{limit / 1e9:.3g} GB (half the physical memory, or MASSMAP_MEMORY_LIMIT); {hint}")

#: Philox counter word 3 separates the per-halo streams from the realization-choice stream
_HALO_STREAM = 1
_REALIZATION_STREAM = 2


def _validate_n(n) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n <= 0:
        raise AnalysisError(f"n (number of samples per halo) must be a positive integer, got {n!r}")
    return int(n)


def _validate_seed(seed) -> int:
    if seed is None:
        return int(np.random.SeedSequence().generate_state(1, np.uint64)[0] >> np.uint64(1))
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise AnalysisError(f"seed must be None or a non-negative integer, got {seed!r}")
    return int(seed)


def philox_key(seed: int) -> np.ndarray:
    """Philox key (two 64-bit words) of a seed, shared by all the streams of one ``sample`` call."""
    return np.random.SeedSequence(seed).generate_state(2, np.uint64)


def _halo_uniforms(ids: np.ndarray, *, n: int, key: np.ndarray) -> np.ndarray:
    """(n_halo, n) uniforms in (0, 1): halo id h uses Philox counter (0, 0, h, _HALO_STREAM)."""
    ids = np.asarray(ids).astype(np.int64).view(np.uint64)
    if ids.size and int(ids.max()) < 2**63:  # non-negative ids: all streams in one compiled pass
        out = philox_uniforms(key, ids, n=n, stream=_HALO_STREAM)
    else:  # negative ids: numpy's own conversion of such counters, one generator per halo
        out = np.empty((ids.size, n))
        for i, h in enumerate(ids):
            bitgen = np.random.Philox(key=key, counter=[0, 0, int(h), _HALO_STREAM])
            out[i] = np.random.Generator(bitgen).random(n)
    out += 2.0**-54  # random() is in [0, 1); shift into the open interval (0, 1)
    return out


def pick_realizations(weight: np.ndarray, *, n: int, key: np.ndarray, labels=None) -> np.ndarray:
    """Position of the realization used by each of ``n`` samples, drawn with probability ``weight``.

    The weights are checked first (finite, >= 0, positive sum): an :class:`AnalysisError`
    names the offending realizations by ``labels`` (default: positions).
    """
    weight = normalised_weights(weight, labels)
    bitgen = np.random.Philox(key=key, counter=[0, 0, 0, _REALIZATION_STREAM])
    v = np.random.Generator(bitgen).random(n)
    cw = np.cumsum(weight)
    return np.minimum(np.searchsorted(cw / cw[-1], v, side="right"), cw.size - 1).astype(np.int64)


def _draw_block(p, u, rpos, pick, *, x, method):
    """Draws for one (halo slab, realization slab) block.

    ``p`` (n_halo, n_r, n_mass) densities of the realizations at positions ``rpos``; ``u``
    (n_halo, n) uniforms; ``pick`` (n,) realization position of every sample.  Returns
    (n_halo, 1, n) log10 masses, zero for samples whose realization is not in this block (the
    caller sums blocks over realizations).
    """
    p = only_block(p)  # one block along the mass axis (dask hands it over as a list)
    n_h = p.shape[0]
    out = np.zeros((n_h, 1, pick.size))
    sel = (pick >= rpos[0]) & (pick <= rpos[-1])
    if n_h == 0 or not sel.any():
        return out
    used, local = np.unique(pick[sel] - rpos[0], return_inverse=True)
    step = rows_per_batch(used.size * x.size)
    for i0 in range(0, n_h, step):  # bound the float64 temporaries
        us = u[i0:i0 + step, sel]
        if method == "grid":
            rows = p[i0:i0 + step]
            block_pick = np.broadcast_to(used[local].astype(np.int64), (rows.shape[0], local.size))
            vals = grid_draws(rows, x, np.ascontiguousarray(block_pick), np.ascontiguousarray(us))
        else:
            pu = np.asarray(p[i0:i0 + step, used, :], dtype=np.float64)
            _, mean, std = moments(pu, x)
            vals = mean[:, local] + std[:, local] * special.ndtri(us)
        out[i0:i0 + step, 0, sel] = vals
    return out


def _draw(post, ids, pick, *, x, n, key, method):
    """log10-mass draws (n_halo, n) from ``post`` (n_halo, n_r, n_mass), numpy or dask."""
    if isinstance(post, da.Array):
        post = post.rechunk({2: -1})
        hchunks = post.chunks[0]
        u = da.from_array(np.asarray(ids), chunks=(hchunks,)).map_blocks(
            _halo_uniforms, n=n, key=key, new_axis=1, chunks=(hchunks, (n,)), dtype=np.float64,
            token="massmap-uniforms",
        )
        rpos = da.from_array(np.arange(post.shape[1]), chunks=(post.chunks[1],))
        pick = da.asarray(pick).rechunk(-1)
        blocks = da.blockwise(
            _draw_block, "hks", post, "hkm", u, "hs", rpos, "k", pick, "s",
            x=x, method=method, adjust_chunks={"k": 1}, dtype=np.float64, concatenate=False,
            token="massmap-draw-log10-mass",
        )
        return blocks.sum(axis=1)
    post = np.asarray(post)
    n_r = post.shape[1]
    batch = rows_per_batch(n)  # bounds the uniforms; _draw_block bounds the rest
    out = np.empty((post.shape[0], n))
    for i0 in range(0, post.shape[0], batch):
        sl = slice(i0, i0 + batch)
        u = _halo_uniforms(ids[sl], n=n, key=key)
        out[sl] = _draw_block(post[sl], u, np.arange(n_r), pick, x=x, method=method)[:, 0, :]
    return out


def _label_of(pick, labels):
    """The realization labels of the picked positions."""
    return labels[pick]


def _pow10(log_m):
    """Masses 10**log_m."""
    return 10.0**log_m


def _check_sample_memory(ds: xr.Dataset, n: int) -> None:
    """The output (n_halo × n float64) in memory, or for a dask cube its largest halo block, plus
    the per-sample vectors (choices, labels, index: 3 × n × 8 bytes); twice that for draws in flight."""
    n_halo = ds.sizes["halo"]
    chunks = ds["posterior"].chunks
    lazy = chunks is not None
    rows = max(chunks[ds["posterior"].dims.index("halo")], default=0) if lazy else n_halo
    need = 2 * 8.0 * rows * n + 3 * 8.0 * n
    where = f"a block of {rows} halos" if lazy else f"{n_halo} halos"
    check_memory(need, f"sample({n}) of {where}",
                 f"the output alone is {n_halo} halos x {n} samples x 8 bytes = {8.0 * n_halo * n / 1e9:.3g} GB. "
                 "Use fewer samples, or write samples with `massmap sample STORE -n N -o samples.zarr` in chunks"
                 + ("" if lazy else " (open the cube lazily, e.g. open_store(path), so that it is drawn slab by slab)"))


def sample(
    ds: xr.Dataset,
    n: int,
    *,
    method: str = "grid",
    correlated: bool = True,
    seed: int | None = None,
    progress: bool = False,
) -> xr.DataArray:
    """Draw halo masses from the posteriors.

    Parameters
    ----------
    ds : xarray.Dataset
        Posterior cube.
    n : int
        Number of samples per halo (> 0).
    method : {"grid", "normal"}, default "grid"
        ``"grid"``: exact inverse-CDF draws from the gridded posterior (linear interpolation of
        the CDF within each bin, so draws are continuous, not grid points).  ``"normal"``:
        draws from the moment-matched normal in log10 M (:func:`~massmap_xr.analysis.fit_normal`; per realization
        when ``correlated``).
    correlated : bool, default True
        True: sample ``s`` first picks one realization ``r_s`` with probability ``weight`` and
        every halo then draws from its posterior given ``r_s``, so the hyperparameter
        uncertainty moves all halos together (the right choice for field totals or maps).
        False: every halo draws independently from its marginal posterior.  For prior draws
        (``hyper_kind = "prior"``) the weights are per halo (``weight`` × the halo's evidence,
        see :func:`~massmap_xr.analysis.marginalize`): sample ``s`` draws one uniform v_s and each
        halo takes the realization where its own cumulative weights pass v_s, so every halo
        follows its evidence-weighted marginal and halos with similar weights move together;
        ``realization(sample)`` is then -1 (the realization differs from halo to halo).
    seed : int, optional
        Non-negative seed.  Halo ``h`` draws from its own counter-based stream (Philox keyed by
        the seed, counter set by the halo id) and the realization choices from another, so the
        result does not depend on the chunking, and a subset of halos gets the same values as
        in the full cube.  ``None`` draws a fresh seed (recorded in ``attrs["seed"]``).
    progress : bool, default False
        Draw now, in one ``dask.compute``, with a progress bar on standard error, and return the
        samples in memory (same values as computing the lazy result).  False: lazy on a dask cube.

    Raises
    ------
    AnalysisError
        Before allocating anything, if the draws would need more than :func:`memory_limit`
        (half the physical memory): ``2 × 8 × rows × n`` bytes, where ``rows`` is the number of
        halos of an in-memory cube or of the largest halo block of a dask cube; the message gives
        the estimate in GB.

    Returns
    -------
    xarray.DataArray
        ``mass(halo, sample)`` in M_sun (units ``solMass``), float64, with the halo coordinates
        (``ra``, ``dec``) and a coordinate ``realization(sample)``: the realization label each
        sample used, or -1 when ``correlated=False`` (draws from the marginal).  Dask-backed on a
        dask cube: each halo slab is drawn from its own posterior block.

    Examples
    --------
    >>> from massmap_xr import mock_catalog, reddick2013, build_posterior
    >>> cube = build_posterior(mock_catalog(20, seed=1), reddick2013(5, seed=2, kind="posterior"))
    >>> s = sample(cube, 100, seed=3)
    >>> s.dims, s.attrs["units"], s["realization"].dims
    (('halo', 'sample'), 'solMass', ('sample',))
    """
    validate_cube(ds)
    n = _validate_n(n)
    if method not in ("grid", "normal"):
        raise AnalysisError(f"method must be 'grid' (inverse-CDF on the mass grid) or 'normal' (normal fit), got {method!r}")
    if not isinstance(correlated, (bool, np.bool_)):
        raise AnalysisError(f"correlated must be True or False, got {correlated!r}")
    seed = _validate_seed(seed)
    _check_sample_memory(ds, n)
    key = philox_key(seed)
    x = log10_grid(ds)
    ids = np.asarray(ds["halo"].values)
    evidence = correlated and needs_evidence(ds)
    if evidence:  # prior draws: per-halo evidence weights, one shared uniform per sample
        log_m, used = evidence_draws(ds, ids, x=x, n=n, key=key, method=method, halo_uniforms=_halo_uniforms,
                                     stream=_REALIZATION_STREAM)
    elif correlated:
        post = ds["posterior"].transpose("halo", "realization", "mass").data
        weight = realization_weights(ds).data
        if not isinstance(post, da.Array):  # in-memory cube: read the few weights now
            weight = np.asarray(weight)
        labels = realization_labels(ds)
        if isinstance(weight, da.Array):
            pick = weight.rechunk(-1).map_blocks(
                pick_realizations, n=n, key=key, labels=labels, chunks=((n,),), dtype=np.int64,
                token="massmap-pick-realizations",
            )
            used = pick.map_blocks(_label_of, labels, dtype=labels.dtype, token="massmap-realization-labels")
        else:
            pick = pick_realizations(weight, n=n, key=key, labels=labels)
            used = labels[pick]
    else:
        post = marginalize(ds).data[:, None, :]
        pick = np.zeros(n, dtype=np.int64)
        used = np.full(n, -1, dtype=np.int64)
    if not evidence:
        log_m = _draw(post, ids, pick, x=x, n=n, key=key, method=method)
    coords = {c: ds[c].variable for c in ds.coords if ds[c].dims == ("halo",)}
    coords["sample"] = ("sample", np.arange(n), {"long_name": "sample index"})
    coords["realization"] = (
        "sample", used,
        {"long_name": "hyperparameter realization used by each sample (-1: drawn from the marginal posterior)"},
    )
    mass = log_m.map_blocks(_pow10, dtype=np.float64, token="massmap-sample-mass") if isinstance(log_m, da.Array) \
        else _pow10(log_m)
    out = xr.DataArray(
        mass, dims=("halo", "sample"), coords=coords, name="mass",
        attrs={
            "long_name": "halo mass drawn from the posterior",
            "units": "solMass",
            "sampling_method": method,
            "realization_sampling": ("correlated per halo (evidence weights, shared uniforms)" if evidence
                                     else "correlated" if correlated else "independent"),
            "seed": seed,
        },
    )
    if progress:
        out = compute_once(out, progress=True, what=f"drawing {n} samples of {out.sizes['halo']} halos")
    return out
