"""Summaries, normal fits, mass samples and calibration of a posterior cube.

Every function takes the cube (an :class:`xarray.Dataset` with ``posterior(halo, mass,
realization)``, see :mod:`massmap_xr.cube`) as first argument and returns labelled xarray
objects with units in ``attrs``.  On a dask-backed cube (for instance one opened lazily from a
Zarr store) the results are dask-backed too and nothing is computed until ``.compute()``; the
work runs one halo slab at a time, so no step loads the whole cube.  The exception is
:func:`calibration`, whose verdict needs numbers: it computes (slab by slab) before returning.

Conventions shared by every function:

- Log masses are log10(M / M_sun), units ``dex(solMass)``; widths of log masses are in ``dex``.
- Integrals over mass use the trapezoid rule in log10 M on the cube's grid, the rule that
  normalises the cube.  Cumulative distributions are the cumulative trapezoid sums at the grid
  points, interpolated linearly between them: quantiles and ``method="grid"`` samples invert
  that piecewise-linear CDF exactly, so they are continuous, not snapped to the grid.
- The hyperparameter-marginal posterior is the ``weight``-weighted mean over ``realization``
  (uniform weights when the cube has no ``weight``).  Weights must be finite and >= 0 with a
  positive sum; otherwise an :class:`~massmap_xr.errors.AnalysisError` names the offending
  realizations (raised when the result is computed if ``weight`` is dask-backed).
- Random draws are counter-based: halo ``h`` (by id) uses its own Philox stream keyed by the
  seed, so a seeded call gives the same numbers whatever the dask chunking, and a subset of
  halos gets the same draws as in the full cube.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr
from scipy import special, stats

from massmap_xr.cube import CUBE_DIMS, validate_cube
from massmap_xr.errors import AnalysisError, OutputExistsError, describe_offenders, format_offenders
from massmap_xr.kernels.posterior import prior_rows, trapezoid_weights
from massmap_xr.model.prior import LOG_ZERO

__all__ = [
    "LOG10_MASS_UNITS",
    "calibration",
    "cdf",
    "fit_normal",
    "halo_prior",
    "marginalize",
    "quantile",
    "sample",
    "summary",
    "write_samples",
    "write_summary",
]

#: units of log10(M / M_sun)
LOG10_MASS_UNITS = "dex(solMass)"
_WIDTH_UNITS = "dex"
_DENSITY_UNITS = "dex(solMass)-1"

_SUMMARY_STATS = ("mean", "std", "median", "mode")
_FIT_STATS = ("mu", "sigma", "ks", "kl")
_CALIBRATION_LEVELS = (0.5, 0.68, 0.9, 0.95)
#: Philox counter word 3 separates the per-halo streams from the realization-choice stream
_HALO_STREAM = 1
_REALIZATION_STREAM = 2
#: float64 elements per temporary array when a kernel works through a block a batch of rows at a time
_BATCH_ELEMENTS = 4_000_000


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------
def _as_float_array(value, name: str, what: str, example: str) -> np.ndarray:
    """``value`` as a float64 array, or an :class:`AnalysisError` naming ``name`` if it is not numeric."""
    if isinstance(value, (str, bytes)):
        raise AnalysisError(f"{name} must be {what}, got the string {value!r}; pass numbers, e.g. {name}={example}")
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise AnalysisError(
            f"{name} must be {what}, got {value!r} ({type(value).__name__}); pass numbers, e.g. {name}={example}"
        ) from None


def _validate_levels(levels, name: str = "levels") -> tuple[float, ...]:
    vals = np.atleast_1d(_as_float_array(levels, name, "a probability or a sequence of probabilities in (0, 1)", "[0.68, 0.95]"))
    if vals.ndim != 1 or vals.size == 0:
        raise AnalysisError(f"{name} must be a non-empty sequence of probabilities, got {levels!r}")
    if not np.all((vals > 0) & (vals < 1)):
        raise AnalysisError(f"{name} must lie strictly between 0 and 1 (e.g. 0.68 for a 68% interval), got {levels!r}")
    if np.unique(vals).size != vals.size:
        raise AnalysisError(f"{name} must not repeat a value, got {levels!r}")
    return tuple(float(v) for v in vals)


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


# --------------------------------------------------------------------------------------------
# numpy kernels (the mass axis is the last axis)
# --------------------------------------------------------------------------------------------
def _log10_grid(ds: xr.Dataset) -> np.ndarray:
    """log10(M / M_sun) of the cube's mass grid (from the in-memory ``mass`` index)."""
    return np.log10(np.asarray(ds["mass"].values, dtype=np.float64))


def _cdf_kernel(p: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Cumulative trapezoid integral over ``x``, divided by the total (ends at exactly 1).

    Rows whose total is zero or not finite come out NaN.
    """
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, None)
    seg = 0.5 * (p[..., 1:] + p[..., :-1]) * np.diff(x)
    c = np.zeros(p.shape)
    np.cumsum(seg, axis=-1, out=c[..., 1:])
    with np.errstate(invalid="ignore", divide="ignore"):
        c /= c[..., -1:]
    c[~(np.isfinite(c[..., -1]) & (c[..., -1] > 0))] = np.nan
    return c


def _search_rows(c: np.ndarray, rows: np.ndarray, u: np.ndarray, *, right: bool) -> np.ndarray:
    """Per query, the first j with ``c[rows, j] > u`` (``right``) or ``>= u``; n_mass if none.

    A vectorised binary search over the (sorted) rows: exact, and each query only ever looks at
    its own row, so results do not depend on which rows share a batch or a dask block.
    """
    m = c.shape[1]
    lo = np.zeros(u.shape, dtype=np.intp)
    hi = np.full(u.shape, m, dtype=np.intp)
    for _ in range(int(np.ceil(np.log2(m + 1)))):
        active = lo < hi
        mid = (lo + hi) // 2
        v = c[rows, np.minimum(mid, m - 1)]
        below = (v <= u) if right else (v < u)
        lo = np.where(active & below, mid + 1, lo)
        hi = np.where(active & ~below, mid, hi)
    return lo


def _invert_cdf(c: np.ndarray, x: np.ndarray, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """x at which the piecewise-linear CDF of row ``rows[i]`` of ``c`` reaches ``u[i]``.

    ``c`` is (n_row, n_mass) with rows non-decreasing from 0 to 1 (NaN rows give NaN).  u = 0
    gives the start of the support (the last point where the CDF is 0), u = 1 its end (the
    first point where it is 1).
    """
    m = c.shape[1]
    rows = np.asarray(rows, dtype=np.intp)
    u = np.asarray(u, dtype=np.float64)
    bad = ~np.isfinite(c[:, -1])
    if bad.any():
        c = c.copy()
        c[bad] = np.linspace(0.0, 1.0, m)
    j = _search_rows(c, rows, u, right=True)
    top = u >= 1.0
    if top.any():
        j[top] = _search_rows(c, rows[top], u[top], right=False)
    j = np.clip(j, 1, m - 1)
    c0 = c[rows, j - 1]
    den = c[rows, j] - c0
    frac = np.divide(u - c0, den, out=np.zeros_like(u), where=den > 0)
    out = x[j - 1] + np.clip(frac, 0.0, 1.0) * (x[j] - x[j - 1])
    out[bad[rows] | np.isnan(u)] = np.nan
    return out


def _moments(p: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(normalisation, mean, standard deviation) of densities ``p`` over ``x`` (trapezoid rule)."""
    p = np.asarray(p, dtype=np.float64)
    w = trapezoid_weights(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = (p * w).sum(axis=-1)
        mean = (p * (w * x)).sum(axis=-1) / norm
        var = (p * w * (x - mean[..., None]) ** 2).sum(axis=-1) / norm
    ok = np.isfinite(norm) & (norm > 0)
    mean = np.where(ok, mean, np.nan)
    std = np.where(ok, np.sqrt(np.clip(var, 0.0, None)), np.nan)
    return norm, mean, std


def _mode(p: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Maximum of ``p`` on the grid, refined by the parabola through it and its two neighbours."""
    p = np.asarray(p, dtype=np.float64)
    m = x.size
    k = np.argmax(np.where(np.isnan(p), -np.inf, p), axis=-1)
    if m < 3:
        return x[k]
    k1 = np.clip(k, 1, m - 2)[..., None]
    y0, y1, y2 = (np.take_along_axis(p, k1 + d, axis=-1)[..., 0] for d in (-1, 0, 1))
    k1 = k1[..., 0]
    x0, x1, x2 = x[k1 - 1], x[k1], x[k1 + 1]
    num = (x1 - x0) ** 2 * (y1 - y2) - (x1 - x2) ** 2 * (y1 - y0)
    den = (x1 - x0) * (y1 - y2) - (x1 - x2) * (y1 - y0)
    with np.errstate(invalid="ignore", divide="ignore"):
        vertex = np.clip(x1 - 0.5 * num / den, x0, x2)
    return np.where((k == k1) & (den > 0), vertex, x[k])


def _quantile_kernel(p: np.ndarray, x: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Quantiles ``q`` (new last axis) of every row of densities ``p``."""
    lead = p.shape[:-1]
    c = _cdf_kernel(p, x).reshape(-1, x.size)
    n_row = c.shape[0]
    rows = np.repeat(np.arange(n_row), q.size)
    out = _invert_cdf(c, x, rows, np.tile(q, n_row))
    return out.reshape(*lead, q.size)


def _by_rows(p: np.ndarray, *, kernel, **kwargs) -> np.ndarray:
    """Apply a kernel to the rows (last axis: mass) of ``p`` a batch at a time.

    Bounds the float64 temporaries of one dask block (e.g. a per-realization slab) to a few
    tens of MB whatever the block size.
    """
    lead, m = p.shape[:-1], p.shape[-1]
    flat = p.reshape(-1, m)
    step = max(1, _BATCH_ELEMENTS // m)
    parts = [kernel(flat[i:i + step], **kwargs) for i in range(0, flat.shape[0], step)]
    out = np.concatenate(parts, axis=0) if parts else kernel(flat, **kwargs)
    return out.reshape(*lead, *out.shape[1:])


def _summary_kernel(p: np.ndarray, x: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """mean, std, median, mode and the quantiles ``probs``, stacked on a new last axis."""
    _, mean, std = _moments(p, x)
    quants = _quantile_kernel(p, x, np.concatenate([[0.5], probs]))
    mode = np.where(np.isfinite(mean), _mode(p, x), np.nan)
    return np.concatenate([mean[..., None], std[..., None], quants[..., :1], mode[..., None], quants[..., 1:]], axis=-1)


def _fit_kernel(p: np.ndarray, x: np.ndarray) -> np.ndarray:
    """mu, sigma (moment match), ks and kl of a normal fit, stacked on a new last axis."""
    p = np.asarray(p, dtype=np.float64)
    norm, mu, sigma = _moments(p, x)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (x - mu[..., None]) / sigma[..., None]
        ks = np.abs(_cdf_kernel(p, x) - special.ndtr(t)).max(axis=-1)
        # KL(p || q) = ∫ p ln(p / q) dx with ln q evaluated analytically, so a q that underflows
        # where p > 0 cannot produce inf; cells where p = 0 contribute nothing.
        pn = np.clip(p, 0.0, None) / norm[..., None]
        log_q = -0.5 * t**2 - np.log(sigma[..., None] * np.sqrt(2.0 * np.pi))
        safe = np.where(pn > 0, pn, 1.0)
        integrand = np.where(pn > 0, pn * (np.log(safe) - log_q), 0.0)
        kl = (integrand * trapezoid_weights(x)).sum(axis=-1)
    kl = np.where(np.isfinite(mu), kl, np.nan)
    return np.stack([mu, sigma, ks, kl], axis=-1)


def _pit_kernel(p: np.ndarray, mass_true: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Marginal CDF at log10(mass_true) (0 below the grid, 1 above, NaN for mass_true <= 0)."""
    c = _cdf_kernel(p, x)
    with np.errstate(invalid="ignore", divide="ignore"):
        lt = np.where(mass_true > 0, np.log10(np.where(mass_true > 0, mass_true, 1.0)), np.nan)
    j = np.clip(np.searchsorted(x, np.nan_to_num(lt, nan=x[0]), side="right"), 1, x.size - 1)
    frac = np.clip((lt - x[j - 1]) / (x[j] - x[j - 1]), 0.0, 1.0)
    c0 = np.take_along_axis(c, (j - 1)[..., None], axis=-1)[..., 0]
    c1 = np.take_along_axis(c, j[..., None], axis=-1)[..., 0]
    return np.where(np.isnan(lt), np.nan, c0 + frac * (c1 - c0))


# --------------------------------------------------------------------------------------------
# public functions
# --------------------------------------------------------------------------------------------
def _realization_labels(ds: xr.Dataset) -> np.ndarray:
    """Labels of the realizations (the ``realization`` coordinate, else positions)."""
    if "realization" in ds.coords:
        return np.asarray(ds["realization"].values)
    return np.arange(ds.sizes["realization"])


def _normalised_weights(weight, labels=None) -> np.ndarray:
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


def _weights(ds: xr.Dataset) -> xr.DataArray:
    """Realization weights normalised to sum 1 (uniform if the cube has no ``weight``).

    The weights are checked (finite, >= 0, positive sum; :class:`AnalysisError` naming the bad
    realizations otherwise).  A dask-backed ``weight`` stays lazy: it is checked and normalised
    in one task on a single chunk, so the error is raised when the result is computed.
    """
    labels = _realization_labels(ds)
    if "weight" not in ds:
        return xr.DataArray(np.full(labels.size, 1.0 / labels.size), dims="realization")
    w = ds["weight"].reset_coords(drop=True).variable
    if isinstance(w.data, da.Array):
        data = w.data.rechunk(-1).map_blocks(_normalised_weights, labels=labels, dtype=np.float64)
    else:
        data = _normalised_weights(w.values, labels)
    return xr.DataArray(data, dims="realization")


def _fold_realizations(acc, p, w):
    """``acc + sum_r w[r] * p[..., r]`` in float64, accumulated one realization at a time.

    The order of the additions is fixed (realization by realization, continuing from
    ``acc``), so the result is bitwise the same however the realizations are split into
    blocks, and however halos and masses are chunked.
    """
    w = np.asarray(w, dtype=np.float64).ravel()
    p = np.asarray(p)
    out = np.zeros(p.shape[:-1]) if acc is None else np.array(acc, dtype=np.float64, copy=True)
    for r in range(w.size):
        out += p[..., r].astype(np.float64) * w[r]
    return out


def _weighted_realization_sum(post: xr.DataArray, w: xr.DataArray):
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


def _single_mass_chunk(arr: xr.DataArray) -> xr.DataArray:
    """Rechunk a dask-backed array to one chunk along ``mass`` (every kernel integrates over it)."""
    if arr.chunks is not None and len(arr.variable.chunksizes["mass"]) > 1:
        arr = arr.chunk({"mass": -1})
    return arr


def _density(ds: xr.Dataset, per_realization: bool) -> xr.DataArray:
    """Per-realization posteriors (halo, realization, mass) or the marginal (halo, mass)."""
    if per_realization:
        validate_cube(ds)
        arr = ds["posterior"].transpose("halo", "realization", "mass")
    else:
        arr = marginalize(ds)
    return _single_mass_chunk(arr)


def marginalize(ds: xr.Dataset) -> xr.DataArray:
    """Hyperparameter-marginal posterior: the ``weight``-weighted mean over realizations.

    Parameters
    ----------
    ds : xarray.Dataset
        Posterior cube.

    Returns
    -------
    xarray.DataArray
        ``posterior(halo, mass)``, float64 density per unit log10 M (units of the cube's
        ``posterior``, ``dex(solMass)-1``), normalised like every realization; dask-backed on a
        dask cube.  ``cell_methods = "realization: mean"``.  NaN in any realization (an
        unwritten region of a store) stays NaN.  The weighted sum is accumulated one
        realization at a time in a fixed order, so the values are bitwise the same whatever
        the dask chunking (and so are the ``correlated=False`` draws of :func:`sample`).

    Raises
    ------
    AnalysisError
        If a realization weight is NaN, infinite or negative, or all are zero (the message
        names the realizations); on a dask cube when the result is computed.

    Examples
    --------
    >>> from massmap_xr import mock_catalog, reddick2013, build_posterior
    >>> cube = build_posterior(mock_catalog(20, seed=1), reddick2013(5, seed=2))
    >>> marginalize(cube).dims
    ('halo', 'mass')
    """
    validate_cube(ds)
    post = ds["posterior"]
    coords = {k: v.variable for k, v in post.coords.items() if "realization" not in v.dims}
    marg = xr.DataArray(_weighted_realization_sum(post, _weights(ds)), dims=("halo", "mass"), coords=coords)
    marg.attrs = {
        "long_name": "hyperparameter-marginal halo mass posterior",
        "units": post.attrs.get("units", _DENSITY_UNITS),
        "cell_methods": "realization: mean",
        "normalisation": "trapezoid integral over log10_mass equals 1 for every halo",
    }
    return marg.rename("posterior")


def cdf(ds: xr.Dataset, *, per_realization: bool = False) -> xr.DataArray:
    """Cumulative distribution of log10 M, from the cumulative trapezoid rule on the grid.

    Parameters
    ----------
    ds : xarray.Dataset
        Posterior cube.
    per_realization : bool, default False
        CDF of every realization's posterior instead of the marginal.

    Returns
    -------
    xarray.DataArray
        ``cdf(halo, mass)`` or ``cdf(halo, mass, realization)``, float64, 0 at the lowest grid
        mass and exactly 1 at the highest (each row is divided by its total); units ``1``.
        Between grid points the CDF is linear in log10 M.
    """
    dens = _density(ds, per_realization)
    out = xr.apply_ufunc(
        _by_rows, dens, kwargs={"kernel": _cdf_kernel, "x": _log10_grid(ds)},
        input_core_dims=[["mass"]], output_core_dims=[["mass"]],
        dask="parallelized", output_dtypes=[np.float64],
    )
    out = out.transpose(*(d for d in CUBE_DIMS if d in out.dims))
    out.attrs = {"long_name": "cumulative distribution of log10 halo mass", "units": "1"}
    if not per_realization:
        out.attrs["cell_methods"] = "realization: mean"
    return out.rename("cdf")


def _level_tag(level: float) -> str:
    """``0.68 -> "68"``, ``0.997 -> "99p7"`` (for flat column names)."""
    return f"{100 * level:g}".replace(".", "p")


def summary(
    ds: xr.Dataset, levels: Sequence[float] = (0.68, 0.95), *, per_realization: bool = False
) -> xr.Dataset:
    """Point estimates and central credible intervals of log10 M for every halo.

    Parameters
    ----------
    ds : xarray.Dataset
        Posterior cube.
    levels : sequence of float, default (0.68, 0.95)
        Probabilities of the central credible intervals (each strictly between 0 and 1).
    per_realization : bool, default False
        Summarise every realization's posterior instead of the marginal.

    Returns
    -------
    xarray.Dataset
        Along ``halo`` (and ``realization`` if ``per_realization``), all in log10(M / M_sun):

        - ``mean``, ``median`` (units ``dex(solMass)``) and ``std`` (units ``dex``): moments by
          the trapezoid rule and the 0.5 quantile of the piecewise-linear CDF;
        - ``mode``: the maximum a posteriori log mass, the grid maximum refined by the parabola
          through it and its neighbours (the grid value at an edge of the grid);
        - ``lower(level, ...)``, ``upper(level, ...)``: the (1 - level)/2 and (1 + level)/2
          quantiles, with coordinate ``level``.

        Halo coordinates (``ra``, ``dec``) ride along.  Dask-backed on a dask cube.

    Examples
    --------
    >>> from massmap_xr import mock_catalog, reddick2013, build_posterior
    >>> cube = build_posterior(mock_catalog(20, seed=1), reddick2013(5, seed=2))
    >>> s = summary(cube)
    >>> sorted(s.data_vars), s["lower"].dims
    (['lower', 'mean', 'median', 'mode', 'std', 'upper'], ('level', 'halo'))
    """
    lv = _validate_levels(levels)
    dens = _density(ds, per_realization)
    probs = np.array([(1 - v) / 2 for v in lv] + [(1 + v) / 2 for v in lv])
    n_stat = len(_SUMMARY_STATS) + probs.size
    stacked = xr.apply_ufunc(
        _by_rows, dens, kwargs={"kernel": _summary_kernel, "x": _log10_grid(ds), "probs": probs},
        input_core_dims=[["mass"]], output_core_dims=[["statistic"]],
        dask="parallelized", output_dtypes=[np.float64], keep_attrs=False,
        dask_gufunc_kwargs={"output_sizes": {"statistic": n_stat}},
    )
    attrs = {
        "mean": {"long_name": "posterior mean of log10 halo mass", "units": LOG10_MASS_UNITS},
        "std": {"long_name": "posterior standard deviation of log10 halo mass", "units": _WIDTH_UNITS},
        "median": {"long_name": "posterior median of log10 halo mass", "units": LOG10_MASS_UNITS},
        "mode": {"long_name": "maximum a posteriori log10 halo mass", "units": LOG10_MASS_UNITS},
    }
    out = xr.Dataset({k: stacked.isel(statistic=i, drop=True).assign_attrs(attrs[k]) for i, k in enumerate(_SUMMARY_STATS)})
    nl = len(lv)
    n0 = len(_SUMMARY_STATS)
    for name, sl, what in (("lower", slice(n0, n0 + nl), "lower"), ("upper", slice(n0 + nl, n0 + 2 * nl), "upper")):
        bound = stacked.isel(statistic=sl).rename(statistic="level").assign_coords(level=list(lv))
        out[name] = bound.transpose("level", ...).assign_attrs(
            long_name=f"{what} bound of the central credible interval of log10 halo mass", units=LOG10_MASS_UNITS
        )
    out["level"].attrs = {"long_name": "probability of the central credible interval", "units": "1"}
    out.attrs = {
        "title": "massmap_xr posterior summary",
        "description": "log10(M / M_sun) summaries of the "
        + ("per-realization" if per_realization else "hyperparameter-marginal")
        + " posterior; lower/upper are the (1 - level)/2 and (1 + level)/2 quantiles",
    }
    if not per_realization:
        out.attrs["cell_methods"] = "realization: mean"
    return out


def quantile(ds: xr.Dataset, q, *, per_realization: bool = False) -> xr.DataArray:
    """Quantiles of log10 M, inverting the piecewise-linear CDF (linear within grid bins).

    Parameters
    ----------
    ds : xarray.Dataset
        Posterior cube.
    q : float or sequence of float
        Probabilities in [0, 1].  ``q = 0`` and ``q = 1`` give the ends of the posterior's
        support on the grid.
    per_realization : bool, default False
        Quantiles of every realization's posterior instead of the marginal.

    Returns
    -------
    xarray.DataArray
        ``(quantile, halo[, realization])`` log10(M / M_sun), units ``dex(solMass)``; for a
        scalar ``q`` the ``quantile`` dimension is dropped and kept as a scalar coordinate (as
        :meth:`xarray.DataArray.quantile` does).
    """
    qa = _as_float_array(q, "q", "a probability or a 1-D sequence of probabilities in [0, 1]", "[0.16, 0.5, 0.84]")
    if qa.ndim > 1 or qa.size == 0 or not np.all((qa >= 0) & (qa <= 1)):
        raise AnalysisError(f"q must be a probability or a 1-D sequence of probabilities in [0, 1], got {q!r}")
    scalar = qa.ndim == 0
    qa = np.atleast_1d(qa)
    dens = _density(ds, per_realization)
    out = xr.apply_ufunc(
        _by_rows, dens, kwargs={"kernel": _quantile_kernel, "x": _log10_grid(ds), "q": qa},
        input_core_dims=[["mass"]], output_core_dims=[["quantile"]],
        dask="parallelized", output_dtypes=[np.float64],
        dask_gufunc_kwargs={"output_sizes": {"quantile": qa.size}},
    )
    out = out.assign_coords(quantile=qa).transpose("quantile", ...)
    if scalar:
        out = out.isel(quantile=0)
    out.attrs = {"long_name": "quantile of log10 halo mass", "units": LOG10_MASS_UNITS}
    return out.rename("log10_mass_quantile")


def fit_normal(ds: xr.Dataset, *, per_realization: bool = False) -> xr.Dataset:
    """Moment-matched normal in log10 M for every halo, and how well it describes the posterior.

    Parameters
    ----------
    ds : xarray.Dataset
        Posterior cube.
    per_realization : bool, default False
        Fit every realization's posterior instead of the marginal.

    Returns
    -------
    xarray.Dataset
        Along ``halo`` (and ``realization``):

        - ``mu`` (``dex(solMass)``), ``sigma`` (``dex``): mean and standard deviation of the
          posterior in log10(M / M_sun) (trapezoid rule);
        - ``ks``: max over grid points of |CDF - Φ((x - mu) / sigma)|, the Kolmogorov distance
          between posterior and fit (units ``1``);
        - ``kl``: KL(posterior || fit) in nats, ∫ p ln(p / q) d log10 M by the trapezoid rule,
          with ln q evaluated in closed form (no underflow) and cells where p = 0 contributing 0.
    """
    dens = _density(ds, per_realization)
    stacked = xr.apply_ufunc(
        _by_rows, dens, kwargs={"kernel": _fit_kernel, "x": _log10_grid(ds)},
        input_core_dims=[["mass"]], output_core_dims=[["statistic"]],
        dask="parallelized", output_dtypes=[np.float64], keep_attrs=False,
        dask_gufunc_kwargs={"output_sizes": {"statistic": len(_FIT_STATS)}},
    )
    attrs = {
        "mu": {"long_name": "mean of the normal fit to log10 halo mass", "units": LOG10_MASS_UNITS},
        "sigma": {"long_name": "standard deviation of the normal fit to log10 halo mass", "units": _WIDTH_UNITS},
        "ks": {"long_name": "max |CDF - normal CDF| on the mass grid (Kolmogorov distance)", "units": "1"},
        "kl": {"long_name": "Kullback-Leibler divergence KL(posterior || normal fit)", "units": "nat"},
    }
    out = xr.Dataset({k: stacked.isel(statistic=i, drop=True).assign_attrs(attrs[k]) for i, k in enumerate(_FIT_STATS)})
    out.attrs = {"title": "massmap_xr normal fits in log10 M"}
    if not per_realization:
        out.attrs["cell_methods"] = "realization: mean"
    return out


def halo_prior(ds: xr.Dataset) -> xr.DataArray:
    """Mass prior of every halo at its redshift, as a density per unit log10 M on the grid.

    ln(``prior_dndm``) is interpolated linearly in z between the ``prior_z`` nodes (redshifts
    beyond the nodes use the end node), converted from dn/dM to a density per unit log10 M
    (times M) and normalised by the trapezoid rule over ``log10_mass``.

    Parameters
    ----------
    ds : xarray.Dataset
        Posterior cube with ``prior_dndm(prior_z, mass)`` and ``z(halo)``.

    Returns
    -------
    xarray.DataArray
        ``prior(halo, mass)``, float64, units ``dex(solMass)-1``; dask-backed if ``z`` is.
    """
    validate_cube(ds)
    if "prior_dndm" not in ds or "z" not in ds:
        raise AnalysisError(
            "the cube has no prior table: halo_prior needs 'prior_dndm(prior_z, mass)' and 'z(halo)', "
            "which massmap_xr.build_posterior writes"
        )
    x = _log10_grid(ds)

    def kernel(z, table, z_nodes):
        table = np.asarray(table, dtype=np.float64).reshape(table.shape[-2:])
        with np.errstate(divide="ignore"):
            log_table = np.where(table > 0, np.log(np.where(table > 0, table, 1.0)), LOG_ZERO)
        z_nodes = np.asarray(z_nodes, dtype=np.float64).reshape(-1)
        rows = np.exp(prior_rows(np.asarray(z, dtype=np.float64), z_nodes, log_table, np.log(10.0) * x))
        return rows / (rows @ trapezoid_weights(x))[:, None]

    table = _single_mass_chunk(ds["prior_dndm"].reset_coords(drop=True).transpose("prior_z", "mass"))
    if table.chunks is not None:
        table = table.chunk({"prior_z": -1})
    out = xr.apply_ufunc(
        kernel, ds["z"].reset_coords(drop=True), table, ds["prior_z"].reset_coords(drop=True),
        input_core_dims=[[], ["prior_z", "mass"], ["prior_z"]], output_core_dims=[["mass"]],
        dask="parallelized", output_dtypes=[np.float64],
    )
    out = out.assign_coords({c: ds[c].variable for c in ds.coords if ds[c].dims in (("halo",), ("mass",))})
    out.attrs = {"long_name": "halo mass prior at the halo's redshift", "units": _DENSITY_UNITS}
    return out.rename("prior")


# --------------------------------------------------------------------------------------------
# sampling
# --------------------------------------------------------------------------------------------
def _philox_key(seed: int) -> np.ndarray:
    return np.random.SeedSequence(seed).generate_state(2, np.uint64)


def _halo_uniforms(ids: np.ndarray, *, n: int, key: np.ndarray) -> np.ndarray:
    """(n_halo, n) uniforms in (0, 1): halo id h uses Philox counter (0, 0, h, _HALO_STREAM)."""
    ids = np.asarray(ids).astype(np.int64).view(np.uint64)
    out = np.empty((ids.size, n))
    for i, h in enumerate(ids):
        bitgen = np.random.Philox(key=key, counter=[0, 0, int(h), _HALO_STREAM])
        out[i] = np.random.Generator(bitgen).random(n)
    out += 2.0**-54  # random() is in [0, 1); shift into the open interval (0, 1)
    return out


def _pick_realizations(weight: np.ndarray, *, n: int, key: np.ndarray, labels=None) -> np.ndarray:
    """Position of the realization used by each of ``n`` samples, drawn with probability ``weight``.

    The weights are checked first (finite, >= 0, positive sum): an :class:`AnalysisError`
    names the offending realizations by ``labels`` (default: positions).
    """
    weight = _normalised_weights(weight, labels)
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
    n_h = p.shape[0]
    out = np.zeros((n_h, 1, pick.size))
    sel = (pick >= rpos[0]) & (pick <= rpos[-1])
    if n_h == 0 or not sel.any():
        return out
    used, local = np.unique(pick[sel] - rpos[0], return_inverse=True)
    step = max(1, _BATCH_ELEMENTS // (used.size * x.size))
    for i0 in range(0, n_h, step):  # bound the float64 temporaries
        pu = np.asarray(p[i0:i0 + step, used, :], dtype=np.float64)
        us = u[i0:i0 + step, sel]
        if method == "grid":
            c = _cdf_kernel(pu, x).reshape(-1, x.size)
            rows = (np.arange(pu.shape[0])[:, None] * used.size + local[None, :]).ravel()
            vals = _invert_cdf(c, x, rows, us.ravel()).reshape(us.shape)
        else:
            _, mean, std = _moments(pu, x)
            vals = mean[:, local] + std[:, local] * special.ndtri(us)
        out[i0:i0 + step, 0, sel] = vals
    return out


def _draw(post, ids, pick, *, x, n, key, method):
    """log10-mass draws (n_halo, n) from ``post`` (n_halo, n_r, n_mass), numpy or dask."""
    if isinstance(post, da.Array):
        post = post.rechunk({2: -1})
        hchunks = post.chunks[0]
        u = da.from_array(np.asarray(ids), chunks=(hchunks,)).map_blocks(
            _halo_uniforms, n=n, key=key, new_axis=1, chunks=(hchunks, (n,)), dtype=np.float64
        )
        rpos = da.from_array(np.arange(post.shape[1]), chunks=(post.chunks[1],))
        pick = da.asarray(pick).rechunk(-1)
        blocks = da.blockwise(
            _draw_block, "hks", post, "hkm", u, "hs", rpos, "k", pick, "s",
            x=x, method=method, adjust_chunks={"k": 1}, dtype=np.float64, concatenate=True,
        )
        return blocks.sum(axis=1)
    post = np.asarray(post)
    n_r = post.shape[1]
    batch = max(1, _BATCH_ELEMENTS // n)  # bounds the uniforms; _draw_block bounds the rest
    out = np.empty((post.shape[0], n))
    for i0 in range(0, post.shape[0], batch):
        sl = slice(i0, i0 + batch)
        u = _halo_uniforms(ids[sl], n=n, key=key)
        out[sl] = _draw_block(post[sl], u, np.arange(n_r), pick, x=x, method=method)[:, 0, :]
    return out


def sample(
    ds: xr.Dataset,
    n: int,
    *,
    method: str = "grid",
    correlated: bool = True,
    seed: int | None = None,
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
        draws from the moment-matched normal in log10 M (:func:`fit_normal`; per realization
        when ``correlated``).
    correlated : bool, default True
        True: sample ``s`` first picks one realization ``r_s`` with probability ``weight`` and
        every halo then draws from its posterior given ``r_s``, so the hyperparameter
        uncertainty moves all halos together (the right choice for field totals or maps).
        False: every halo draws independently from its marginal posterior.
    seed : int, optional
        Non-negative seed.  Halo ``h`` draws from its own counter-based stream (Philox keyed by
        the seed, counter set by the halo id) and the realization choices from another, so the
        result does not depend on the chunking, and a subset of halos gets the same values as
        in the full cube.  ``None`` draws a fresh seed (recorded in ``attrs["seed"]``).

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
    >>> cube = build_posterior(mock_catalog(20, seed=1), reddick2013(5, seed=2))
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
    key = _philox_key(seed)
    x = _log10_grid(ds)
    ids = np.asarray(ds["halo"].values)
    if correlated:
        post = ds["posterior"].transpose("halo", "realization", "mass").data
        weight = _weights(ds).data
        if not isinstance(post, da.Array):  # in-memory cube: read the few weights now
            weight = np.asarray(weight)
        labels = _realization_labels(ds)
        if isinstance(weight, da.Array):
            pick = weight.rechunk(-1).map_blocks(
                _pick_realizations, n=n, key=key, labels=labels, chunks=((n,),), dtype=np.int64
            )
            used = pick.map_blocks(lambda p: labels[p], dtype=labels.dtype)
        else:
            pick = _pick_realizations(weight, n=n, key=key, labels=labels)
            used = labels[pick]
    else:
        post = marginalize(ds).data[:, None, :]
        pick = np.zeros(n, dtype=np.int64)
        used = np.full(n, -1, dtype=np.int64)
    log_m = _draw(post, ids, pick, x=x, n=n, key=key, method=method)
    coords = {c: ds[c].variable for c in ds.coords if ds[c].dims == ("halo",)}
    coords["sample"] = ("sample", np.arange(n), {"long_name": "sample index"})
    coords["realization"] = (
        "sample", used,
        {"long_name": "hyperparameter realization used by each sample (-1: drawn from the marginal posterior)"},
    )
    return xr.DataArray(
        10.0**log_m, dims=("halo", "sample"), coords=coords, name="mass",
        attrs={
            "long_name": "halo mass drawn from the posterior",
            "units": "solMass",
            "sampling_method": method,
            "realization_sampling": "correlated" if correlated else "independent",
            "seed": seed,
        },
    )


# --------------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------------
def calibration(
    ds: xr.Dataset,
    *,
    levels: Sequence[float] = _CALIBRATION_LEVELS,
    alpha: float = 0.01,
    n_sigma: float = 3.0,
) -> xr.Dataset:
    """Check the marginal posteriors against the true masses of a mock catalogue.

    For calibrated posteriors the probability integral transform (PIT, the marginal CDF at the
    true mass) is uniform on [0, 1] and a central interval of probability ``level`` contains the
    true mass for a fraction ``level`` of the halos.

    Parameters
    ----------
    ds : xarray.Dataset
        Posterior cube with ``mass_true(halo)`` in M_sun.  Halos with a NaN or non-positive
        true mass, or a NaN posterior, are left out.
    levels : sequence of float, default (0.5, 0.68, 0.9, 0.95)
        Central-interval probabilities whose coverage is measured.
    alpha : float, default 0.01
        Significance of the Kolmogorov-Smirnov test of PIT uniformity.
    n_sigma : float, default 3
        A coverage further than ``n_sigma`` binomial standard errors from its level fails.

    Returns
    -------
    xarray.Dataset
        ``pit(halo)``; ``coverage(level)``, the fraction of halos whose true mass lies in the
        central interval (|PIT - 1/2| <= level/2, the same as lying between the ``summary``
        bounds); ``coverage_err(level)`` = sqrt(level (1 - level) / N), the binomial standard
        error expected if calibrated; scalars ``ks_statistic`` and ``ks_pvalue``.  ``attrs``:
        ``verdict`` ("calibrated: ..." or "miscalibrated: <what fails and which way>"),
        ``n_halos`` used and ``n_outside_grid`` (true masses beyond the grid, PIT 0 or 1).

    Raises
    ------
    AnalysisError
        If the cube has no ``mass_true``, or no halo is usable.

    Notes
    -----
    The verdict needs numbers, so unlike the other functions this one computes before it
    returns (slab by slab on a dask cube: only the PIT, one number per halo, is gathered).
    """
    validate_cube(ds)
    if "mass_true" not in ds:
        raise AnalysisError(
            "calibration needs true halo masses: the cube has no 'mass_true' variable (M_sun, along halo); "
            "calibrate on a mock catalogue (massmap_xr.mock_catalog) or add mass_true to the catalogue"
        )
    lv = _validate_levels(levels)
    if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, numbers.Real):
        raise AnalysisError(f"alpha (KS test significance) must be a number strictly between 0 and 1 (e.g. 0.01), got {alpha!r}")
    if not 0 < alpha < 1:
        raise AnalysisError(f"alpha (KS test significance) must lie strictly between 0 and 1, got {alpha!r}")
    if isinstance(n_sigma, (bool, np.bool_)) or not isinstance(n_sigma, numbers.Real) or not 0 < n_sigma < np.inf:
        raise AnalysisError(f"n_sigma (coverage tolerance in standard errors) must be a finite positive number (e.g. 3), got {n_sigma!r}")
    x = _log10_grid(ds)
    marg = _single_mass_chunk(marginalize(ds))
    mass_true = ds["mass_true"].reset_coords(drop=True).astype(np.float64)
    pit = xr.apply_ufunc(
        _pit_kernel, marg, mass_true, kwargs={"x": x},
        input_core_dims=[["mass"], []], dask="parallelized", output_dtypes=[np.float64],
    )
    both = xr.Dataset({"pit": pit, "mass_true": mass_true}).compute()  # one pass over the cube
    pit = both["pit"]
    pit.attrs = {
        "long_name": "probability integral transform: marginal posterior CDF at the true mass",
        "units": "1",
    }
    values = pit.values
    ok = np.isfinite(values)
    n_ok = int(ok.sum())
    if n_ok == 0:
        raise AnalysisError(
            "calibration: no halo has both a finite posterior and a finite, positive mass_true; check mass_true (M_sun)"
        )
    p = values[ok]
    levels_arr = np.array(lv)
    coverage = np.array([np.mean(np.abs(p - 0.5) <= v / 2) for v in lv])
    coverage_err = np.sqrt(levels_arr * (1 - levels_arr) / n_ok)
    ks = stats.kstest(p, "uniform")
    mt = both["mass_true"].values[ok]
    n_outside = int(np.sum((np.log10(mt) < x[0]) | (np.log10(mt) > x[-1])))
    verdict = _verdict(p, levels_arr, coverage, coverage_err, float(ks.pvalue), alpha, n_sigma)
    level_attrs = {"long_name": "probability of the central credible interval", "units": "1"}
    return xr.Dataset(
        {
            "pit": pit,
            "coverage": ("level", coverage, {"long_name": "fraction of true masses inside the central interval", "units": "1"}),
            "coverage_err": ("level", coverage_err, {"long_name": "binomial standard error of coverage if calibrated", "units": "1"}),
            "ks_statistic": ((), float(ks.statistic), {"long_name": "Kolmogorov-Smirnov distance of PIT from uniform", "units": "1"}),
            "ks_pvalue": ((), float(ks.pvalue), {"long_name": "Kolmogorov-Smirnov p-value of PIT uniformity", "units": "1"}),
        },
        coords={"level": ("level", levels_arr, level_attrs)},
        attrs={
            "title": "massmap_xr calibration against true masses",
            "verdict": verdict,
            "n_halos": n_ok,
            "n_outside_grid": n_outside,
            "alpha": float(alpha),
            "n_sigma": float(n_sigma),
            "cell_methods": "realization: mean",
        },
    )


def _verdict(pit, levels, coverage, coverage_err, pvalue, alpha, n_sigma) -> str:
    """One sentence: "calibrated: ..." or "miscalibrated: <which way>; <what fails>"."""
    n = pit.size
    off = np.abs(coverage - levels) > n_sigma * coverage_err
    if pvalue >= alpha and not off.any():
        return (
            f"calibrated: PIT consistent with uniform (KS p = {pvalue:.2g}) and every coverage within "
            f"{n_sigma:g} sigma of its level ({n} halos)"
        )
    problems = []
    mean_pit = float(np.mean(pit))
    if abs(mean_pit - 0.5) > n_sigma * np.sqrt(1.0 / 12.0 / n):
        where = "above" if mean_pit > 0.5 else "below"
        problems.append(f"true masses tend to lie {where} the posteriors (mean PIT {mean_pit:.2f})")
    elif off.any():
        narrow = np.mean(coverage[off] - levels[off]) < 0
        problems.append("intervals too " + ("narrow (over-confident)" if narrow else "wide (under-confident)"))
    if pvalue < alpha:
        problems.append(f"PIT not uniform (KS p = {pvalue:.2g} < {alpha:g})")
    if off.any():
        problems.append(
            "coverage "
            + ", ".join(f"{100 * c:.0f}% for the {100 * v:g}% interval" for v, c in zip(levels[off], coverage[off], strict=True))
        )
    return f"miscalibrated: {'; '.join(problems)} ({n} halos)"


# --------------------------------------------------------------------------------------------
# writers for the command line
# --------------------------------------------------------------------------------------------
def _flat_summary(summ: xr.Dataset) -> xr.Dataset:
    """Replace ``lower``/``upper(level, halo)`` by ``lower_68``, ``upper_68``, ... columns."""
    out = summ.drop_vars(["lower", "upper", "level"])
    for v in summ["level"].values:
        tag = _level_tag(float(v))
        for name in ("lower", "upper"):
            out[f"{name}_{tag}"] = summ[name].sel(level=v, drop=True)
    return out


def write_summary(ds: xr.Dataset, path, *, levels: Sequence[float] = (0.68, 0.95), overwrite: bool = False) -> str:
    """Write per-halo summaries to CSV or NetCDF.

    Parameters
    ----------
    ds : xarray.Dataset
        A posterior cube (summarised with :func:`summary` at ``levels``, plus its catalogue
        variables ``z``, ``lum_obs``, ``mass_true``, ``sigma_obs`` where present) or a Dataset
        already returned by :func:`summary` (written as it is).
    path : str or path-like
        ``.csv``: one row per halo; columns ``halo``, ``ra``, ``dec`` (deg), catalogue variables
        (``mass_true`` in M_sun), ``mean``, ``std``, ``median``, ``mode`` and ``lower_<L>``,
        ``upper_<L>`` for each level in percent (``lower_68``; ``99p7`` for 0.997), all log
        masses in log10(M / M_sun).  ``.nc``: the Dataset with its ``level`` dimension and
        units attributes (h5netcdf engine).
    levels : sequence of float, default (0.68, 0.95)
        Central credible levels, used when ``ds`` is a cube.
    overwrite : bool, default False
        Replace an existing file (otherwise :class:`~massmap_xr.errors.OutputExistsError`).

    Returns
    -------
    str
        The path written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".nc", ".nc4"):
        raise AnalysisError(f"write_summary: cannot write {str(path)!r}; use a .csv or .nc file name")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"write_summary: {str(path)!r} already exists; pass overwrite=True (CLI: --overwrite) to replace it")
    if isinstance(ds, xr.Dataset) and "posterior" in ds.data_vars:
        summ = summary(ds, levels)
        catalogue = {k: ds[k].variable for k in ("z", "lum_obs", "mass_true", "sigma_obs") if k in ds and ds[k].dims == ("halo",)}
        summ = xr.Dataset({**catalogue, **summ.data_vars}, coords=summ.coords, attrs=summ.attrs)
    elif isinstance(ds, xr.Dataset) and {"median", "lower", "upper"} <= set(ds.data_vars):
        summ = ds
    else:
        raise AnalysisError("write_summary: expected a posterior cube or a Dataset returned by summary()")
    summ = summ.compute()
    if suffix == ".csv":
        _flat_summary(summ).to_dataframe().to_csv(path)
    else:
        summ.to_netcdf(path, engine="h5netcdf")
    return str(path)


def write_samples(samples: xr.DataArray, path, *, overwrite: bool = False) -> str:
    """Write mass samples from :func:`sample` to a Zarr (format 3) store or a NetCDF file.

    The output holds variable ``mass(halo, sample)`` (M_sun) with coordinates ``halo``,
    ``sample``, ``realization(sample)``, ``ra``/``dec`` and the sampling attributes (method,
    correlated or independent, seed).  Dask-backed samples are written halo slab by halo slab.

    Parameters
    ----------
    samples : xarray.DataArray
        Output of :func:`sample`, dims ``(halo, sample)``.
    path : str or path-like
        A name ending in ``.nc`` writes NetCDF-4 (h5netcdf engine); anything else is a Zarr store
        (a directory, or any URL Zarr understands), chunked by halo slab and written without
        consolidated metadata (not part of the Zarr 3 specification).
    overwrite : bool, default False
        Replace an existing store or file instead of failing.

    Returns
    -------
    str
        The path written.
    """
    if not isinstance(samples, xr.DataArray) or set(samples.dims) != {"halo", "sample"}:
        raise AnalysisError("write_samples: expected the (halo, sample) DataArray returned by sample()")
    path = str(path)
    if not overwrite and "://" not in path and Path(path).exists():
        raise OutputExistsError(f"write_samples: {path!r} already exists; pass overwrite=True (CLI: --overwrite) to replace it")
    out = samples.transpose("halo", "sample").rename("mass").to_dataset().drop_encoding()
    if Path(path).suffix.lower() in (".nc", ".nc4"):
        out.to_netcdf(path, mode="w", engine="h5netcdf")
        return path
    chunks = out["mass"].variable.chunksizes
    size = chunks["halo"][0] if chunks else max(1, min(out.sizes["halo"], _BATCH_ELEMENTS // out.sizes["sample"]))
    out = out.chunk({"halo": size, "sample": -1})  # Zarr needs regular chunks
    out.to_zarr(path, mode="w" if overwrite else "w-", zarr_format=3, consolidated=False)
    return path
