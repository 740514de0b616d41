"""Reductions of a posterior cube over mass: the marginal, CDFs, summaries, quantiles, normal fits.

Every function takes the cube (an :class:`xarray.Dataset` with ``posterior(halo, mass,
realization)``, see :mod:`massmap_xr.cube`) as first argument and returns labelled xarray
objects with units in ``attrs``.  On a dask-backed cube the results are dask-backed too and
nothing is computed until ``.compute()``; the work runs one halo slab at a time, so no step
loads the whole cube.

Conventions:

- Log masses are log10(M / M_sun), units ``dex(solMass)``; widths of log masses are in ``dex``.
- Integrals over mass use the trapezoid rule in log10 M on the cube's grid, the rule that
  normalises the cube.  Cumulative distributions are the cumulative trapezoid sums at the grid
  points, interpolated linearly between them: quantiles (and the ``method="grid"`` samples of
  :mod:`massmap_xr.analysis.sampling`) invert that piecewise-linear CDF exactly, so they are
  continuous, not snapped to the grid.
- The hyperparameter-marginal posterior is the ``weight``-weighted mean over ``realization``
  (see :mod:`massmap_xr.analysis.weights`).

The numpy row kernels (mass on the last axis) that the xarray functions map over dask blocks
live here too; :func:`cdf_kernel`, :func:`invert_cdf` and :func:`moments` also serve the
sampler and the calibration.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr
from scipy import special

from massmap_xr.analysis.checks import as_float_array, validate_levels
from massmap_xr.analysis.weights import marginal_weights, needs_evidence, weighted_realization_sum
from massmap_xr.cube import CUBE_DIMS, validate_cube
from massmap_xr.errors import AnalysisError
from massmap_xr.kernels.posterior import prior_rows, trapezoid_weights
from massmap_xr.log import compute_once
from massmap_xr.model.prior import LOG_ZERO

__all__ = [
    "BATCH_ELEMENTS",
    "LOG10_MASS_UNITS",
    "cdf",
    "cdf_kernel",
    "fit_normal",
    "halo_prior",
    "invert_cdf",
    "log10_grid",
    "marginalize",
    "moments",
    "quantile",
    "rows_per_batch",
    "single_mass_chunk",
    "summary",
]

#: units of log10(M / M_sun)
LOG10_MASS_UNITS = "dex(solMass)"
_WIDTH_UNITS = "dex"
_DENSITY_UNITS = "dex-1"

_SUMMARY_STATS = ("mean", "std", "median", "mode")
_FIT_STATS = ("mu", "sigma", "ks", "kl")
#: float64 elements per temporary array when a kernel works through a block a batch of rows at a time
BATCH_ELEMENTS = 4_000_000


def rows_per_batch(row_elements: int) -> int:
    """How many rows of ``row_elements`` float64 values fit in :data:`BATCH_ELEMENTS` (at least 1).

    Read at call time, so every batched loop of the analysis (row kernels, sampling, sample
    writing) follows a change of :data:`BATCH_ELEMENTS`.
    """
    return max(1, BATCH_ELEMENTS // row_elements)


# --------------------------------------------------------------------------------------------
# numpy kernels (the mass axis is the last axis)
# --------------------------------------------------------------------------------------------
def log10_grid(ds: xr.Dataset) -> np.ndarray:
    """log10(M / M_sun) of the cube's mass grid (from the in-memory ``mass`` index)."""
    return np.log10(np.asarray(ds["mass"].values, dtype=np.float64))


def cdf_kernel(p: np.ndarray, x: np.ndarray) -> np.ndarray:
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


def invert_cdf(c: np.ndarray, x: np.ndarray, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
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


def moments(p: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    c = cdf_kernel(p, x).reshape(-1, x.size)
    n_row = c.shape[0]
    rows = np.repeat(np.arange(n_row), q.size)
    out = invert_cdf(c, x, rows, np.tile(q, n_row))
    return out.reshape(*lead, q.size)


def _by_rows(p: np.ndarray, *, kernel, **kwargs) -> np.ndarray:
    """Apply a kernel to the rows (last axis: mass) of ``p`` a batch at a time.

    Bounds the float64 temporaries of one dask block (e.g. a per-realization slab) to a few
    tens of MB whatever the block size.
    """
    lead, m = p.shape[:-1], p.shape[-1]
    flat = p.reshape(-1, m)
    step = rows_per_batch(m)
    parts = [kernel(flat[i:i + step], **kwargs) for i in range(0, flat.shape[0], step)]
    out = np.concatenate(parts, axis=0) if parts else kernel(flat, **kwargs)
    return out.reshape(*lead, *out.shape[1:])


def _named_by_rows(name: str):
    """:func:`_by_rows` under the name ``name``, so dask task keys say what they compute
    (``massmap_summary-<token>`` instead of ``by_rows-<token>``)."""
    def run(p, *, kernel, **kwargs):
        return _by_rows(p, kernel=kernel, **kwargs)

    run.__name__ = run.__qualname__ = name
    return run


_CDF_ROWS = _named_by_rows("massmap_cdf")
_SUMMARY_ROWS = _named_by_rows("massmap_summary")
_QUANTILE_ROWS = _named_by_rows("massmap_quantiles")
_FIT_ROWS = _named_by_rows("massmap_fit_normal")


def _summary_kernel(p: np.ndarray, x: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """mean, std, median, mode and the quantiles ``probs``, stacked on a new last axis."""
    _, mean, std = moments(p, x)
    quants = _quantile_kernel(p, x, np.concatenate([[0.5], probs]))
    mode = np.where(np.isfinite(mean), _mode(p, x), np.nan)
    return np.concatenate([mean[..., None], std[..., None], quants[..., :1], mode[..., None], quants[..., 1:]], axis=-1)


def _fit_kernel(p: np.ndarray, x: np.ndarray) -> np.ndarray:
    """mu, sigma (moment match), ks and kl of a normal fit, stacked on a new last axis."""
    p = np.asarray(p, dtype=np.float64)
    norm, mu, sigma = moments(p, x)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (x - mu[..., None]) / sigma[..., None]
        ks = np.abs(cdf_kernel(p, x) - special.ndtr(t)).max(axis=-1)
        # KL(p || q) = ∫ p ln(p / q) dx with ln q evaluated analytically, so a q that underflows
        # where p > 0 cannot produce inf; cells where p = 0 contribute nothing.
        pn = np.clip(p, 0.0, None) / norm[..., None]
        log_q = -0.5 * t**2 - np.log(sigma[..., None] * np.sqrt(2.0 * np.pi))
        safe = np.where(pn > 0, pn, 1.0)
        integrand = np.where(pn > 0, pn * (np.log(safe) - log_q), 0.0)
        kl = (integrand * trapezoid_weights(x)).sum(axis=-1)
    kl = np.where(np.isfinite(mu), kl, np.nan)
    return np.stack([mu, sigma, ks, kl], axis=-1)


# --------------------------------------------------------------------------------------------
# xarray functions
# --------------------------------------------------------------------------------------------
def single_mass_chunk(arr: xr.DataArray) -> xr.DataArray:
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
    return single_mass_chunk(arr)


def marginalize(ds: xr.Dataset) -> xr.DataArray:
    """Hyperparameter-marginal posterior: the ``weight``-weighted mean over realizations.

    For posterior draws (``hyper_kind = "posterior"``, the default) this is
    Σ_r w_r P(M_k | L_k, θ_r).  For prior draws (``hyper_kind = "prior"``, e.g. Reddick 2013)
    each draw is also weighted by the halo's evidence E_kr = P(L_obs,k | θ_r) (variable
    ``log_evidence``): Σ_r w_r E_kr P(M_k | L_k, θ_r) / Σ_r w_r E_kr, each halo updating the
    prior over θ on its own (see :mod:`massmap_xr.analysis.weights`).

    Parameters
    ----------
    ds : xarray.Dataset
        Posterior cube.

    Returns
    -------
    xarray.DataArray
        ``posterior(halo, mass)``, float64 density per unit log10 M (units of the cube's
        ``posterior``, ``dex-1``), normalised like every realization; dask-backed on a
        dask cube.  ``cell_methods = "realization: mean"``.  NaN in any realization (an
        unwritten region of a store) stays NaN.  The weighted sum is accumulated one
        realization at a time in a fixed order, so the values are bitwise the same whatever
        the dask chunking (and so are the ``correlated=False`` draws of :func:`sample`).

    Raises
    ------
    AnalysisError
        If a realization weight is NaN, infinite or negative, or all are zero (the message
        names the realizations); on a dask cube when the result is computed.  For prior draws,
        if the cube has no ``log_evidence`` (the message says how to rebuild it), or a halo's
        evidence is zero for every draw.

    Examples
    --------
    >>> from massmap_xr import mock_catalog, reddick2013, build_posterior
    >>> cube = build_posterior(mock_catalog(20, seed=1), reddick2013(5, seed=2, kind="posterior"))
    >>> marginalize(cube).dims
    ('halo', 'mass')
    """
    validate_cube(ds)
    post = ds["posterior"]
    coords = {k: v.variable for k, v in post.coords.items() if "realization" not in v.dims}
    marg = xr.DataArray(weighted_realization_sum(post, marginal_weights(ds)), dims=("halo", "mass"), coords=coords)
    marg.attrs = {
        "long_name": "hyperparameter-marginal halo mass posterior",
        "units": post.attrs.get("units", _DENSITY_UNITS),
        "cell_methods": "realization: mean",
        "normalisation": "trapezoid integral over log10_mass equals 1 for every halo",
    }
    if needs_evidence(ds):
        marg.attrs["weighting"] = "weight x per-halo evidence exp(log_evidence), normalised per halo (prior draws)"
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
        _CDF_ROWS, dens, kwargs={"kernel": cdf_kernel, "x": log10_grid(ds)},
        input_core_dims=[["mass"]], output_core_dims=[["mass"]],
        dask="parallelized", output_dtypes=[np.float64],
    )
    out = out.transpose(*(d for d in CUBE_DIMS if d in out.dims))
    out.attrs = {"long_name": "cumulative distribution of log10 halo mass", "units": "1"}
    if not per_realization:
        out.attrs["cell_methods"] = "realization: mean"
    return out.rename("cdf")


def summary(
    ds: xr.Dataset, levels: Sequence[float] = (0.68, 0.95), *, per_realization: bool = False,
    progress: bool = False,
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
    progress : bool, default False
        Compute now, in one ``dask.compute``, with a progress bar on standard error, and return
        the summaries in memory.  False: lazy on a dask cube.

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

        Halo coordinates (``ra``, ``dec``) ride along.  Dask-backed on a dask cube (unless
        ``progress``).  The
        marginal is the one of :func:`marginalize`: for prior draws (``hyper_kind = "prior"``)
        weighted per halo by the evidence ``log_evidence``.

    Examples
    --------
    >>> from massmap_xr import mock_catalog, reddick2013, build_posterior
    >>> cube = build_posterior(mock_catalog(20, seed=1), reddick2013(5, seed=2, kind="posterior"))
    >>> s = summary(cube)
    >>> sorted(s.data_vars), s["lower"].dims
    (['lower', 'mean', 'median', 'mode', 'std', 'upper'], ('level', 'halo'))
    """
    lv = validate_levels(levels)
    dens = _density(ds, per_realization)
    probs = np.array([(1 - v) / 2 for v in lv] + [(1 + v) / 2 for v in lv])
    n_stat = len(_SUMMARY_STATS) + probs.size
    stacked = xr.apply_ufunc(
        _SUMMARY_ROWS, dens, kwargs={"kernel": _summary_kernel, "x": log10_grid(ds), "probs": probs},
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
    if progress:
        out = compute_once(out, progress=True, what=f"summarising {out.sizes['halo']} halos")
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
    qa = as_float_array(q, "q", "a probability or a 1-D sequence of probabilities in [0, 1]", "[0.16, 0.5, 0.84]")
    if qa.ndim > 1 or qa.size == 0 or not np.all((qa >= 0) & (qa <= 1)):
        raise AnalysisError(f"q must be a probability or a 1-D sequence of probabilities in [0, 1], got {q!r}")
    scalar = qa.ndim == 0
    qa = np.atleast_1d(qa)
    dens = _density(ds, per_realization)
    out = xr.apply_ufunc(
        _QUANTILE_ROWS, dens, kwargs={"kernel": _quantile_kernel, "x": log10_grid(ds), "q": qa},
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
        _FIT_ROWS, dens, kwargs={"kernel": _fit_kernel, "x": log10_grid(ds)},
        input_core_dims=[["mass"]], output_core_dims=[["statistic"]],
        dask="parallelized", output_dtypes=[np.float64], keep_attrs=False,
        dask_gufunc_kwargs={"output_sizes": {"statistic": len(_FIT_STATS)}},
    )
    attrs = {
        "mu": {"long_name": "mean of the normal fit to log10 halo mass", "units": LOG10_MASS_UNITS},
        "sigma": {"long_name": "standard deviation of the normal fit to log10 halo mass", "units": _WIDTH_UNITS},
        "ks": {"long_name": "max |CDF - normal CDF| on the mass grid (Kolmogorov distance)", "units": "1"},
        "kl": {"long_name": "Kullback-Leibler divergence KL(posterior || normal fit) in nats", "units": "1"},
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
        ``prior(halo, mass)``, float64, units ``dex-1``; dask-backed if ``z`` is.
    """
    validate_cube(ds)
    if "prior_dndm" not in ds or "z" not in ds:
        raise AnalysisError(
            "the cube has no prior table: halo_prior needs 'prior_dndm(prior_z, mass)' and 'z(halo)', "
            "which massmap_xr.build_posterior writes"
        )
    x = log10_grid(ds)

    def kernel(z, table, z_nodes):
        table = np.asarray(table, dtype=np.float64).reshape(table.shape[-2:])
        with np.errstate(divide="ignore"):
            log_table = np.where(table > 0, np.log(np.where(table > 0, table, 1.0)), LOG_ZERO)
        z_nodes = np.asarray(z_nodes, dtype=np.float64).reshape(-1)
        rows = np.exp(prior_rows(np.asarray(z, dtype=np.float64), z_nodes, log_table, np.log(10.0) * x))
        return rows / (rows @ trapezoid_weights(x))[:, None]

    table = single_mass_chunk(ds["prior_dndm"].reset_coords(drop=True).transpose("prior_z", "mass"))
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
