"""The entry points of hyperparameter inference: :func:`infer_hyperparameters` and :func:`infer_to_file`.

:func:`infer_hyperparameters` samples the hyper-posterior P(α, S | catalogue) ∝
P(catalogue | α, S) P(α, S) for the free hyperparameters (default α1, α2, α4, S; the pivot
α3 is fixed) with either

- ``method="laplace"`` (default): find the maximum a posteriori point (BFGS with analytic
  gradients, polished by Newton steps with a Hessian from central differences of the
  gradient, in an unconstrained parametrisation: ln S, logit for bounded flat priors), build
  a Student-t proposal from the Hessian there, and importance-sample it: ``n`` proposal
  draws with normalised importance ``weight`` and the effective sample size in the attrs.
  For catalogues of thousands of halos the posterior is close to normal and the effective
  sample size close to ``n``;
- ``method="emcee"``: the affine-invariant ensemble sampler (:mod:`emcee`), walkers started
  from the Laplace approximation, with acceptance fraction, integrated autocorrelation time,
  effective sample size and split-R̂ across walkers in the attrs.

The result is a hyperparameter Dataset along ``realization`` (with ``chain`` and ``draw``
coordinates) that :func:`massmap_xr.cube.build_posterior` takes directly;
:func:`massmap_xr.model.hyper.to_arviz` turns it into ArviZ's layout and :func:`infer_to_file` writes it to NetCDF
for :func:`massmap_xr.model.hyper.read_hyper` (and the ``massmap infer`` command).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from massmap_xr.errors import InferenceError, check_output
from massmap_xr.inference.hyperprior import HyperPrior
from massmap_xr.inference.likelihood import CatalogLikelihood
from massmap_xr.inference.samplers import MAX_STEPS, HyperPosterior, check_int, importance_sample, laplace, sample_emcee
from massmap_xr.model.hyper import HYPER_ATTRS, REDDICK2013
from massmap_xr.model.relation import HYPER_NAMES

__all__ = ["DEFAULT_FREE", "METHODS", "estimate_table", "infer_hyperparameters", "infer_to_file"]

#: Hyperparameters inferred by default (the pivot mass α3 is held fixed).
DEFAULT_FREE = ("alpha1", "alpha2", "alpha4", "S")
METHODS = ("laplace", "emcee")


def _resolve_free(free) -> tuple[str, ...]:
    if isinstance(free, str):
        free = (free,)
    try:
        free = tuple(str(f) for f in free)
    except TypeError:
        raise InferenceError(f"free must be a sequence of hyperparameter names, got {free!r}") from None
    unknown = [f for f in free if f not in HYPER_NAMES]
    if unknown:
        raise InferenceError(f"free: unknown hyperparameter name(s) {unknown}; choose from {list(HYPER_NAMES)}")
    if not free:
        raise InferenceError(f"free: give at least one hyperparameter to infer, from {list(HYPER_NAMES)}")
    if len(set(free)) != len(free):
        raise InferenceError(f"free: repeated name(s) in {list(free)}")
    return tuple(k for k in HYPER_NAMES if k in free)


def _resolve_fixed(fixed, free) -> dict:
    out = {k: float(REDDICK2013[k][0]) for k in HYPER_NAMES}
    if fixed is not None:
        if not isinstance(fixed, Mapping):
            raise InferenceError(f"fixed must be a mapping name -> value, got {type(fixed).__name__}")
        unknown = [k for k in fixed if k not in HYPER_NAMES]
        if unknown:
            raise InferenceError(f"fixed: unknown hyperparameter name(s) {unknown}; choose from {list(HYPER_NAMES)}")
        clash = [k for k in fixed if k in free]
        if clash:
            raise InferenceError(f"fixed: {clash} are also free; a hyperparameter is either fixed or inferred")
        for k, v in fixed.items():
            v = float(v)
            if not np.isfinite(v) or (k in ("S", "alpha3") and v <= 0):
                raise InferenceError(f"fixed: {k} = {v!r} is not allowed ({k} must be finite" +
                                     (" and > 0)" if k in ("S", "alpha3") else ")"))
            out[k] = v
    return out

def infer_hyperparameters(
    catalog: xr.Dataset,
    *,
    prior=None,
    hyperprior="reddick2013",
    free: Sequence[str] = DEFAULT_FREE,
    n: int = 100,
    method: str = "laplace",
    seed: int | None = 0,
    mass=None,
    sigma_obs: float | None = None,
    progress: bool = False,
    fixed: Mapping[str, float] | None = None,
    group_tol=None,
    start: Mapping[str, float] | None = None,
    lum_min=None,
    selection=None,
    **options,
) -> xr.Dataset:
    """Sample the hyper-posterior P(α, S | catalogue) of the mass–luminosity relation.

    Parameters
    ----------
    catalog : xarray.Dataset
        Halo catalogue (``z``, ``lum_obs`` along ``halo``; optional ``sigma_obs``).
    prior : MassPrior or xarray.DataArray, optional
        Mass prior P(M | z) (default :class:`~massmap_xr.model.prior.TinkerPrior`).  It must be the
        distribution the catalogue's masses follow; see the notes.
    hyperprior : {"reddick2013", "flat"}, mapping or xarray.Dataset, default "reddick2013"
        Prior on the free hyperparameters, see :class:`HyperPrior`.
    free : sequence of str, default ("alpha1", "alpha2", "alpha4", "S")
        Hyperparameters to infer; the others are held at ``fixed`` values.
    n : int, default 100
        Number of realizations returned.  ``method="emcee"`` rounds it up to a multiple of the
        number of walkers.
    method : {"laplace", "emcee"}, default "laplace"
        Laplace approximation + importance sampling (fast; weighted draws), or MCMC with
        :mod:`emcee` (unweighted draws).
    seed : int, optional
        Seed of the proposal draws / walkers (reproducible results).
    mass : array_like, optional
        Mass grid in M_sun for the likelihood's integral (default 400 points, 1e10 to 10^15.5).
    sigma_obs : float, optional
        Observational scatter of ln L_obs for a catalogue without a per-halo ``sigma_obs``
        variable; never assumed (neither given is a :class:`~massmap_xr.errors.CatalogError`).
    progress : bool, default False
        Report progress on stderr (an emcee progress bar for MCMC).
    fixed : mapping, optional
        Values of the hyperparameters that are not free (default: the Reddick 2013 central
        values, α3 = 2.35e14 M_sun).
    group_tol : float or (float, float), optional
        Group halos in (z, ln L_obs) cells to speed up the likelihood (approximate; default exact).
    start : mapping, optional
        Starting point of the MAP search (default: the Reddick 2013 central values if inside
        the hyperprior's support, else its centre).
    lum_min : float or callable, optional
        Flux limit of the catalogue (L_min in the units of ``lum_obs``, or a callable of z):
        the likelihood is normalised by every halo's selection probability (see
        :class:`CatalogLikelihood`).  Without it a flux-limited catalogue gives biased α.
    selection : callable, optional
        Completeness S(L_obs, z) in [0, 1] of the catalogue, likewise.
    **options
        Method options.  Laplace: ``df`` (Student-t degrees of freedom of the proposal,
        default 5), ``scale`` (proposal scale factor, default 1.0), ``maxiter`` (optimiser, 1000).
        emcee: ``n_walkers`` (default max(16, 4 × n_free), even), ``moves`` (an emcee move; default
        differential evolution);
        by default the run is adaptive (it stops once the kept chains span 50 autocorrelation
        times with split R-hat <= 1.01, after at most ``max_steps``, default 20,000), while
        ``n_burn`` (default 300 steps) and/or ``thin`` (default 20) fix its length instead; see
        :func:`~massmap_xr.inference.samplers.sample_emcee`.

    Returns
    -------
    xarray.Dataset
        Along ``realization`` (coordinates ``chain`` and ``draw`` for unstacking): ``alpha1`` ..
        ``alpha4``, ``S`` (fixed ones constant), ``weight`` (importance weights summing to 1;
        uniform for emcee), ``log_likelihood`` and ``log_prior`` of every realization.
        Attributes record the method, hyperprior, fixed values, MAP and Laplace standard
        deviations, the number of likelihood evaluations, the wall time and the diagnostics:
        ``ess``, ``ess_fraction``, ``max_weight`` (Laplace), or ``acceptance_fraction``,
        ``autocorr_time_<name>``, ``ess_<name>``, ``rhat_<name>``, ``rhat_max`` (emcee).
        :func:`massmap_xr.cube.build_posterior` takes it as ``hyper``.

    Raises
    ------
    InferenceError
        Unknown free names or method, n < 1, a hyperprior missing a free name, ...

    Notes
    -----
    The prior must describe how the catalogue's masses are distributed.  The seed field's
    masses were drawn with an effective prior dn/dM / M on the original table's grid (see
    ``benchmarks/bench_inference.py``), not with the Tinker density itself; fitting it with
    :class:`~massmap_xr.model.prior.TinkerPrior` biases α.

    Examples
    --------
    >>> from massmap_xr.catalog import mock_catalog
    >>> cat = mock_catalog(500, seed=4)
    >>> post = infer_hyperparameters(cat, n=50, seed=1)
    >>> post.sizes["realization"], round(float(post.weight.sum()), 6)
    (50, 1.0)
    """
    t_start = time.perf_counter()
    if method not in METHODS:
        raise InferenceError(f"method must be one of {METHODS}, got {method!r}")
    n = check_int("n", n, 1)
    free = _resolve_free(free)
    fixed_vals = _resolve_fixed(fixed, free)
    hp = HyperPrior(hyperprior, free)
    allowed = {"laplace": {"df", "scale", "maxiter"}, "emcee": {"n_walkers", "n_burn", "thin", "moves", "maxiter", "max_steps"}}[method]
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise InferenceError(f"unknown option(s) {unknown} for method={method!r}; allowed: {sorted(allowed)}")
    like = CatalogLikelihood(catalog, prior, mass, sigma_obs=sigma_obs, group_tol=group_tol, lum_min=lum_min,
                             selection=selection)
    target = HyperPosterior(like, hp, fixed_vals)
    rng = np.random.default_rng(seed)

    # starting point
    if start is not None:
        bad = [k for k in start if k not in free]
        if bad:
            raise InferenceError(f"start: {bad} are not free hyperparameters ({list(free)})")
        theta0 = np.array([float(start.get(k, REDDICK2013[k][0])) for k in free])
    else:
        theta0 = np.array([REDDICK2013[k][0] for k in free])
    if not np.isfinite(hp.log_density(theta0)):
        if start is not None:
            raise InferenceError(f"start {dict(start)} is outside the hyperprior's support ({hp.describe()})")
        theta0 = hp.center()
    y0 = hp.to_unconstrained(theta0)
    if progress:
        print(f"inferring {', '.join(free)} from {like.n_halo} halos ({method})", file=sys.stderr)
    y_map, cov, map_info = laplace(target, y0, progress, maxiter=check_int("maxiter", options.get("maxiter", 1000), 1))
    attrs: dict = dict(map_info)
    if method == "laplace":
        theta, w, ll, chain, draw, sample_attrs = importance_sample(
            target, y_map, cov, n, rng, df=float(options.get("df", 5.0)), scale=float(options.get("scale", 1.0)))
    else:
        theta, w, ll, chain, draw, sample_attrs = sample_emcee(
            target, y_map, cov, n, rng, progress=progress, n_walkers=options.get("n_walkers"),
            n_burn=options.get("n_burn"), thin=options.get("thin"), moves=options.get("moves"),
            max_steps=options.get("max_steps", MAX_STEPS))
    attrs.update(sample_attrs)
    full = target.full(theta)
    log_prior = hp.log_density(theta)
    out = xr.Dataset(
        {k: ("realization", full[:, j]) for j, k in enumerate(HYPER_NAMES)},
        coords={"realization": np.arange(full.shape[0], dtype=np.int64), "chain": ("realization", chain),
                "draw": ("realization", draw)},
    )
    from massmap_xr.cube import catalog_hash

    for k in HYPER_NAMES:
        out[k].attrs = dict(HYPER_ATTRS[k])
    out["weight"] = ("realization", w, dict(HYPER_ATTRS["weight"]))
    out["log_likelihood"] = ("realization", np.asarray(ll, dtype=float),
                             {"long_name": "catalogue log-likelihood ln P(L_obs | z, hyperparameters)", "units": "1"})
    out["log_prior"] = ("realization", log_prior, {"long_name": "log hyperprior density (natural coordinates)", "units": "1"})
    theta_map = hp.to_natural(y_map)
    jac = hp.dtheta_dy(y_map)
    sd = np.sqrt(np.diag(cov)) * np.abs(jac)
    prior_desc = like.prior.describe()
    out.attrs = {
        "title": "hyper-posterior draws of the mass-luminosity relation",
        "source": "massmap_xr.inference.infer_hyperparameters",
        "method": method,
        "free": ",".join(free),
        "hyperprior": hp.describe(),
        **{f"fixed_{k}": float(fixed_vals[k]) for k in HYPER_NAMES if k not in free},
        **{f"map_{k}": float(v) for k, v in zip(free, theta_map, strict=True)},
        **{f"laplace_sd_{k}": float(v) for k, v in zip(free, sd, strict=True)},
        "n_halo": like.n_halo,
        "catalog_hash": catalog_hash(catalog),
        "sigma_obs_default": "catalogue" if sigma_obs is None else float(sigma_obs),
        "prior": str(prior_desc.get("prior", type(like.prior).__name__)),
        "prior_description": "; ".join(f"{k}={v}" for k, v in prior_desc.items()),
        "mass_min": float(like.mass[0]), "mass_max": float(like.mass[-1]), "n_mass": int(like.mass.size),
        "group_tol": "none" if like.group_tol is None else ",".join(f"{v:g}" for v in like.group_tol),
        "selection": like.selection.describe(),
        "n_photoz": int(like.n_photoz),
        "seed": "none" if seed is None else str(seed),
        **attrs,
        "n_likelihood_evaluations": int(like.n_evaluations),
        "n_fallback_halo_evaluations": int(like.n_fallback),
        "wall_time_s": float(time.perf_counter() - t_start),
    }
    return out


def _weighted_quantile(v: np.ndarray, w: np.ndarray, q) -> np.ndarray:
    o = np.argsort(v)
    c = np.cumsum(w[o])
    c = (c - 0.5 * w[o]) / c[-1]
    return np.interp(q, c, v[o])


def estimate_table(post: xr.Dataset) -> str:
    """A plain-text, aligned table of the estimates of every free hyperparameter.

    Columns: ``parameter``, posterior ``mean`` and ``std`` (weighted by ``weight``),
    ``median``, the central 68 % interval (``q16``, ``q84``) and the ``MAP`` point of the
    Laplace step; then a line with the method's diagnostics (ESS, or R-hat and convergence).

    Examples
    --------
    >>> from massmap_xr.catalog import mock_catalog
    >>> post = infer_hyperparameters(mock_catalog(500, seed=4), n=50, seed=1)
    >>> print(estimate_table(post).splitlines()[0].split())
    ['parameter', 'mean', 'std', 'median', 'q16', 'q84', 'MAP']
    """
    free = [k for k in str(post.attrs.get("free", "")).split(",") if k]
    w = np.asarray(post["weight"].values, dtype=float)
    head = ("parameter", "mean", "std", "median", "q16", "q84", "MAP")
    rows = []
    for k in free:
        v = np.asarray(post[k].values, dtype=float)
        m = float(np.sum(w * v) / np.sum(w))
        sd = float(np.sqrt(np.sum(w * (v - m) ** 2) / np.sum(w)))
        q16, q50, q84 = _weighted_quantile(v, w, [0.16, 0.5, 0.84])
        mp = post.attrs.get(f"map_{k}", float("nan"))
        rows.append((k, *(f"{x:.6g}" for x in (m, sd, q50, q16, q84, mp))))
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)).rstrip()
             for r in [head, *rows]]
    a = post.attrs
    if a.get("method") == "emcee":
        lines.append(f"emcee: R-hat max {a.get('rhat_max', float('nan')):.4f}, ESS {a.get('ess', float('nan')):.0f}, "
                     f"converged {'yes' if a.get('converged', 0) else 'no'}")
    else:
        lines.append(f"laplace + importance sampling: ESS {a.get('ess', float('nan')):.1f} of {w.size} draws")
    return "\n".join(lines)


def infer_to_file(catalog: xr.Dataset, path, *, overwrite: bool = False, return_result: bool = False,
                  **kwargs) -> Path:
    """Infer the hyper-posterior and write it to NetCDF (or CSV) for :func:`~massmap_xr.model.hyper.read_hyper`.

    Parameters
    ----------
    catalog : xarray.Dataset
        Halo catalogue.
    path : str or path-like
        Output file: ``.nc`` (NetCDF4 via h5netcdf, with every diagnostic in the attributes),
        or ``.csv`` (one column per hyperparameter plus ``weight``, ``chain``, ``draw``).
    overwrite : bool, default False
        Replace an existing file (otherwise :class:`~massmap_xr.errors.OutputExistsError`,
        raised before any inference work).
    return_result : bool, default False
        Return ``(path, result)`` with the hyperparameter Dataset too.
    **kwargs
        Passed to :func:`infer_hyperparameters`.

    Returns
    -------
    pathlib.Path
        The file written (and the result, with ``return_result=True``).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".nc", ".nc4", ".netcdf", ".h5", ".csv"):
        raise InferenceError(f"{path}: unknown output type {suffix!r}; use .nc (NetCDF) or .csv")
    if not path.parent.exists():
        raise InferenceError(f"{path}: directory {str(path.parent)!r} does not exist")
    check_output(path, overwrite=overwrite, what="infer")
    result = infer_hyperparameters(catalog, **kwargs)
    if suffix == ".csv":
        df = result.reset_coords()[[*HYPER_NAMES, "weight", "chain", "draw", "log_likelihood"]].to_dataframe()
        df.to_csv(path, index=False)
    else:
        result.to_netcdf(path, engine="h5netcdf")
    return (path, result) if return_result else path
