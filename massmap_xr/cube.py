"""Building the (halo, mass, realization) posterior cube.

:func:`build_posterior` combines a catalogue, hyperparameter samples and a mass prior into a
lazy (dask) :class:`xarray.Dataset` whose ``posterior`` variable is P(M_k | L_obs,k, z_k, r), a
float32 density per unit log10 M normalised to 1 (trapezoid rule over ``log10_mass``) for every
(halo, realization).  Nothing is computed until asked: ``.compute()``, a store write
(``ds.massmap.to_store``) or an analysis reduction pulls the blocks it needs.
"""

from __future__ import annotations

import hashlib
import warnings

import dask
import dask.array as da
import numpy as np
import xarray as xr

from massmap_xr._version import SCHEMA_VERSION, __version__
from massmap_xr.catalog import validate_catalog
from massmap_xr.errors import AnalysisError, CatalogError, CatalogWarning, MassmapError, StoreError, format_offenders
from massmap_xr.kernels.posterior import (
    ZERO_PRIOR_LOG,
    check_prior_redshifts,
    posterior_block,
    prior_rows,
    trapezoid_weights,
)
from massmap_xr.model.hyper import as_hyper, hyper_hash
from massmap_xr.model.prior import as_prior, check_mass_grid, default_mass_grid
from massmap_xr.model.relation import HYPER_NAMES, lobs_likelihood_montecarlo

__all__ = ["build_posterior", "validate_cube", "default_halo_chunk", "catalog_hash", "CUBE_ATTRS", "CUBE_DIMS",
           "STORE_VARIABLES", "STORE_COORDS"]

METHODS = ("analytic", "montecarlo")
#: target size of one computed block (halo slab × all masses × all realizations), bytes
_BLOCK_BYTES = 64 * 2**20

CUBE_ATTRS = {
    "long_name": "halo mass posterior P(M | L_obs, z, hyperparameters)",
    "units": "dex-1",
    "normalisation": "trapezoid integral over log10_mass equals 1 for every (halo, realization)",
}


def default_halo_chunk(n_mass: int, n_realization: int, n_halo: int) -> int:
    """Halo slab size so that one float32 block is about 64 MiB (at least 1, at most n_halo)."""
    h = int(_BLOCK_BYTES // (4 * n_mass * n_realization))
    h = max(1, h - h % 8) if h >= 8 else max(1, h)
    return int(min(max(h, 1), max(n_halo, 1)))


#: variables and coordinates every stored cube has
STORE_VARIABLES = ("posterior", "z", "lum_obs", "alpha1", "alpha2", "alpha3", "alpha4", "S", "weight")
STORE_COORDS = ("halo", "mass", "log10_mass", "realization")
CUBE_DIMS = ("halo", "mass", "realization")


def validate_cube(ds, *, what: str | None = None, for_store: bool = False, error: type[MassmapError] | None = None):
    """Check that ``ds`` is a posterior cube; return it with ``posterior`` in (halo, mass, realization) order.

    The one cube validator, used by the analysis (cheap, metadata-only rules) and by the store
    writers (``for_store=True``: the stricter rules a cube must meet to be written).

    Rules, always: ``ds`` is a Dataset with a ``posterior`` of dims halo, mass, realization (any
    order); a ``mass`` coordinate of at least 2 finite, positive, increasing masses (M_sun); a
    ``weight``, if present, along ``realization``.  For a store, also: the variables
    :data:`STORE_VARIABLES`, coordinates :data:`STORE_COORDS` and the ``massmap_schema_version``
    attribute are present, ``sigma_obs`` lies along ``halo``, halo ids are integers, and halo ids
    and realization labels are unique.

    Parameters
    ----------
    ds : xarray.Dataset
        The cube.
    what : str, optional
        The caller's name, which starts every message (e.g. ``"to_store"``).
    for_store : bool, default False
        Apply the store rules too.
    error : type, optional
        The exception class; :class:`~massmap_xr.errors.StoreError` for stores,
        :class:`~massmap_xr.errors.AnalysisError` otherwise.
    """
    error = error or (StoreError if for_store else AnalysisError)
    pre = f"{what}: " if what else ""
    if not isinstance(ds, xr.Dataset):
        raise error(f"{pre}expected a posterior cube (xarray.Dataset with a 'posterior' variable), got {type(ds).__name__}")
    if for_store:
        missing = [k for k in (*STORE_VARIABLES, *STORE_COORDS) if k not in ds.variables]
        if missing or "massmap_schema_version" not in ds.attrs:
            raise error(
                f"{pre}not a massmap cube (missing {missing or ['attribute massmap_schema_version']}); "
                "build one with build_posterior()"
            )
    if "posterior" not in ds.data_vars:
        raise error(
            f"{pre}the dataset has no 'posterior' variable; build a cube with massmap_xr.build_posterior "
            "or open one with massmap_xr.store.open_store"
        )
    dims = ds["posterior"].dims
    if sorted(dims) != sorted(CUBE_DIMS):
        raise error(f"{pre}'posterior' must have dims ('halo', 'mass', 'realization'), got {dims}")
    if "mass" not in ds.coords:
        raise error(f"{pre}the cube has no 'mass' coordinate (M_sun); it is needed to integrate over mass")
    mass = np.asarray(ds["mass"].values, dtype=float)
    if mass.size < 2 or not np.all(np.isfinite(mass)) or np.any(mass <= 0) or np.any(np.diff(mass) <= 0):
        raise error(
            f"{pre}the cube's 'mass' coordinate must hold at least 2 finite, positive, strictly increasing masses (M_sun)"
        )
    if "weight" in ds and ds["weight"].dims != ("realization",):
        raise error(f"{pre}'weight' must have dims ('realization',), got {ds['weight'].dims}")
    if for_store:
        _store_rules(ds, pre, error)
    if dims != CUBE_DIMS:
        ds = ds.assign(posterior=ds["posterior"].transpose(*CUBE_DIMS))
    return ds


def _store_rules(ds: xr.Dataset, pre: str, error) -> None:
    if "sigma_obs" not in ds.variables or ds["sigma_obs"].dims != ("halo",):
        raise error(
            f"{pre}the cube has no 'sigma_obs' variable along 'halo' (the per-halo scatter of ln L_obs the "
            "posterior was built with, part of the catalogue hash); build the cube with build_posterior(), "
            "or add it, e.g. cube.assign(sigma_obs=('halo', numpy.full(cube.sizes['halo'], "
            "cube.attrs['sigma_obs_default'])))"
        )
    ids = np.asarray(ds["halo"].values)
    if ids.dtype.kind not in "iu":
        raise error(
            f"{pre}halo ids must be integers, got dtype {ids.dtype} (first ids: {format_offenders(ids)}); "
            "renumber the catalogue, e.g. cube.assign_coords(halo=numpy.arange(cube.sizes['halo']))"
        )
    for dim, noun in (("halo", "halo id"), ("realization", "realization label")):
        labels = np.asarray(ds[dim].values)
        uniq, counts = np.unique(labels, return_counts=True)
        if uniq.size != labels.size:
            dup = uniq[counts > 1]
            raise error(
                f"{pre}{dim} labels must be unique; {dup.size} {noun}(s) occur more than once "
                f"({format_offenders(dup)}); drop the duplicates or relabel, e.g. "
                f"cube.assign_coords({dim}=numpy.arange(cube.sizes['{dim}']))"
            )


def catalog_hash(cat: xr.Dataset) -> str:
    """SHA-256 over the catalogue variables the posterior depends on (ids, z, lum_obs, sigma_obs)."""
    h = hashlib.sha256()
    for k in ("halo", "z", "lum_obs", "sigma_obs"):
        if k in cat.variables:
            h.update(k.encode())
            h.update(np.ascontiguousarray(cat[k].values).astype("<f8" if k != "halo" else "<i8").tobytes())
    return h.hexdigest()


def _check_prior_at_halos(z, ids, z_nodes, log_table, mass, *, batch: int = 8192) -> None:
    """Refuse, before any graph is built, halos the prior cannot give a posterior to.

    The redshift nodes must increase and cover every ``z``, and at each halo's redshift the
    prior must be non-zero somewhere on the mass grid (:class:`PriorError` naming the halos).
    Batched, so memory stays at ``batch`` rows of the mass grid.
    """
    check_prior_redshifts(z, z_nodes, ids=ids, who="build_posterior")
    log_mass = np.log(mass)
    for s in range(0, z.size, batch):
        prior_rows(z[s:s + batch], z_nodes, log_table, log_mass, ids=ids[s:s + batch], who="build_posterior")


def _mc_block(log_lobs, z, sig, ids, *, z_nodes, log_table, mass, hyp, n_lum, seed):
    """Monte Carlo posterior block (float64 internally, float32 out); per-halo seeded streams."""
    x = np.log(mass)
    w = trapezoid_weights(x / np.log(10.0))
    lnp = prior_rows(z, z_nodes, log_table, x, ids=ids, who="build_posterior")
    out = np.empty((z.size, mass.size, hyp["alpha1"].size), dtype=np.float32)
    for k in range(z.size):
        rng = np.random.default_rng([int(seed), int(ids[k]) & 0x7FFFFFFFFFFFFFFF])
        like = lobs_likelihood_montecarlo(
            np.exp(log_lobs[k]), mass[:, None], z[k], hyp["alpha1"], hyp["alpha2"], hyp["alpha3"],
            hyp["alpha4"], hyp["S"], sig[k], n_lum=n_lum, rng=rng,
        )
        p = np.exp(lnp[k])[:, None] * like
        norm = w @ p
        if np.any(~(norm > 0)):
            raise MassmapError(
                f"montecarlo: halo {ids[k]} has an all-zero Monte Carlo likelihood on the mass grid; "
                "increase n_lum or use method='analytic'"
            )
        out[k] = p / norm
    return out


def build_posterior(
    catalog: xr.Dataset,
    hyper=None,
    *,
    prior=None,
    mass=None,
    sigma_obs: float = 0.05,
    method: str = "analytic",
    n_lum: int = 100,
    seed: int = 0,
    chunks: int | None = None,
    check_edges: bool = True,
) -> xr.Dataset:
    """Per-halo mass posteriors for every hyperparameter realization, as a lazy cube.

    Parameters
    ----------
    catalog : xarray.Dataset
        Halo catalogue (dim ``halo``; ``z``, ``lum_obs``, ``ra``, ``dec``; optional ``mass_true``,
        ``sigma_obs``), see :mod:`massmap_xr.catalog`.
    hyper : Dataset, InferenceData, mapping, path or int, optional
        Hyperparameter realizations (see :func:`massmap_xr.model.hyper.as_hyper`); default 100 draws of
        :func:`~massmap_xr.model.hyper.reddick2013` with seed 0.
    prior : MassPrior or DataArray (z, mass), optional
        Mass prior; default :class:`~massmap_xr.model.prior.TinkerPrior` (Tinker 2010, WMAP5).
    mass : array_like, optional
        Mass grid in M_sun; default 400 log-spaced points from 1e10 to 10^15.5.
    sigma_obs : float, default 0.05
        Observational log-normal scatter of L_obs, used where the catalogue has no ``sigma_obs``.
    method : {"analytic", "montecarlo"}
        Closed-form convolution (exact) or the original Monte Carlo estimator with ``n_lum``
        luminosity draws per mass point (seeded per halo with ``seed``).
    n_lum : int, default 100
        Draws per mass point for ``method="montecarlo"``.
    seed : int, default 0
        Seed of the Monte Carlo draws (a non-negative integer).
    chunks : int, optional
        Halos per block (default: blocks of about 64 MiB).
    check_edges : bool, default True
        Warn (:class:`~massmap_xr.errors.CatalogWarning`) about halos whose L_obs lies so far from
        every μ_L on the mass grid that their posterior piles up on a grid edge.

    Returns
    -------
    xarray.Dataset
        ``posterior(halo, mass, realization)`` float32 (dask), coordinates ``halo``, ``mass``,
        ``log10_mass``, ``realization``, ``ra``, ``dec``; catalogue variables along ``halo``,
        hyperparameters (with normalised ``weight``) along ``realization``, and the prior table
        ``prior_dndm(prior_z, mass)``.

    Examples
    --------
    >>> from massmap_xr import mock_catalog, reddick2013, build_posterior
    >>> cube = build_posterior(mock_catalog(20, seed=1), reddick2013(5, seed=2))
    >>> cube.posterior.dims, cube.posterior.dtype
    (('halo', 'mass', 'realization'), dtype('float32'))
    """
    if method not in METHODS:
        raise MassmapError(f"method must be one of {METHODS}, got {method!r}")
    if method == "montecarlo" and (not isinstance(n_lum, (int, np.integer)) or n_lum < 1):
        raise MassmapError(f"n_lum must be a positive integer, got {n_lum!r}")
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise MassmapError(
            f"seed must be a non-negative integer (it seeds numpy's random generator for method='montecarlo'), "
            f"got {seed!r}; pass e.g. seed=0"
        )
    try:
        sigma_obs = float(sigma_obs)
    except (TypeError, ValueError):
        raise CatalogError(
            f"sigma_obs must be one number (the default scatter of ln L_obs), got {sigma_obs!r}; give per-halo "
            "values as the catalogue variable 'sigma_obs'"
        ) from None
    if not (np.isfinite(sigma_obs) and sigma_obs > 0):
        raise CatalogError(f"sigma_obs must be > 0 and finite, got {sigma_obs!r}")
    prior = as_prior(prior)
    hyper = as_hyper(100 if hyper is None else hyper)
    validate_catalog(catalog, z_range=prior.z_range)
    mass = check_mass_grid(default_mass_grid() if mass is None else mass, "build_posterior", error=MassmapError)
    z_nodes, log_table = prior.log_table(mass)
    if np.all(log_table <= ZERO_PRIOR_LOG):
        raise MassmapError("the prior is zero on the whole mass grid; choose a mass grid inside the prior's range")

    n = catalog.sizes["halo"]
    n_r = hyper.sizes["realization"]
    try:
        chunk = default_halo_chunk(mass.size, n_r, n) if chunks is None else int(chunks)
    except (TypeError, ValueError):
        raise MassmapError(f"chunks must be a positive number of halos, got {chunks!r}") from None
    if chunk < 1:
        raise MassmapError(f"chunks must be a positive number of halos, got {chunks!r}")

    z = np.asarray(catalog["z"].values, dtype=float)
    log_lobs = np.log(np.asarray(catalog["lum_obs"].values, dtype=float))
    sig = (
        np.asarray(catalog["sigma_obs"].values, dtype=float)
        if "sigma_obs" in catalog
        else np.full(n, float(sigma_obs))
    )
    ids = np.asarray(catalog["halo"].values)
    _check_prior_at_halos(z, ids, z_nodes, log_table, mass)
    if check_edges:
        _warn_edge_collapse(ids, log_lobs, z, sig, hyper, mass)

    hyp = {k: np.asarray(hyper[k].values, dtype=float) for k in HYPER_NAMES}
    halo_chunks = (tuple(min(chunk, n - i) for i in range(0, n, chunk)),)
    arrays = [da.from_array(a, chunks=halo_chunks) for a in (log_lobs, z, sig, ids)]
    if method == "analytic":

        def block(ll, zz, ss, ii):
            return posterior_block(ll, zz, ss, z_nodes=z_nodes, log_table=log_table, mass=mass, ids=ii, **hyp)

    else:

        def block(ll, zz, ss, ii):
            return _mc_block(ll, zz, ss, ii, z_nodes=z_nodes, log_table=log_table, mass=mass, hyp=hyp,
                             n_lum=int(n_lum), seed=seed)

    # the graph name is a token of every input the blocks read (not of descriptions of them), so two
    # builds share dask keys only when they compute the same values with the same chunks
    token = dask.base.tokenize(
        log_lobs, z, sig, ids, halo_chunks, hyp, z_nodes, log_table, mass, method,
        int(n_lum) if method == "montecarlo" else 0, int(seed) if method == "montecarlo" else 0,
    )
    post = da.map_blocks(
        block, *arrays, dtype=np.float32, new_axis=[1, 2],
        chunks=(halo_chunks[0], (mass.size,), (n_r,)),
        name=f"massmap-posterior-{token}",
    )

    cat_vars = {k: catalog[k] for k in catalog.data_vars if catalog[k].dims == ("halo",) and k not in ("ra", "dec")}
    if "sigma_obs" not in cat_vars:
        attrs = {"long_name": "observational log-normal scatter of L_obs (natural log)", "units": "1"}
        cat_vars["sigma_obs"] = xr.DataArray(sig, dims="halo", attrs=attrs)
    prior_da = prior.table(mass).rename("prior_dndm")
    ds = xr.Dataset(
        {
            "posterior": (("halo", "mass", "realization"), post, dict(CUBE_ATTRS)),
            **{k: ("halo", np.asarray(v.values), dict(v.attrs)) for k, v in cat_vars.items()},
            **{k: ("realization", hyper[k].values, dict(hyper[k].attrs)) for k in (*HYPER_NAMES, "weight")},
            "prior_dndm": (("prior_z", "mass"), prior_da.values, dict(prior_da.attrs)),
        },
        coords={
            "halo": ("halo", ids, {"long_name": "halo id"}),
            "mass": ("mass", mass, {"long_name": "halo mass", "units": "solMass"}),
            "log10_mass": ("mass", np.log10(mass), {"long_name": "log10 halo mass", "units": "dex(solMass)"}),
            "realization": ("realization", hyper["realization"].values, {"long_name": "hyperparameter realization"}),
            "prior_z": ("prior_z", z_nodes, {"long_name": "redshift nodes of the prior table", "units": "1"}),
            **{c: ("halo", catalog[c].values, dict(catalog[c].attrs)) for c in ("ra", "dec")},
        },
        attrs={
            "title": "massmap_xr halo mass posterior cube",
            "massmap_schema_version": SCHEMA_VERSION,
            "massmap_version": __version__,
            "method": method,
            "n_lum": int(n_lum) if method == "montecarlo" else 0,
            "mc_seed": int(seed),
            "sigma_obs_default": float(sigma_obs),
            "normalisation": CUBE_ATTRS["normalisation"],
            "model": "ln mu_L = alpha1 + alpha2 ln(M/alpha3) + alpha4 ln(1+z); ln L ~ N(ln mu_L, S^2); "
            "ln L_obs ~ N(ln L, sigma_obs^2); prior dn/dM(z)",
            "catalog_hash": catalog_hash(catalog),
            "hyper_hash": hyper_hash(hyper),
            **{f"prior_{k}" if not k.startswith("prior") else k: v for k, v in prior.describe().items()},
            **{k: v for k, v in catalog.attrs.items() if isinstance(v, (str, int, float)) and not k.startswith("massmap")},
        },
    )
    for c in ("chain", "draw"):
        if c in hyper.coords:
            ds = ds.assign_coords({c: ("realization", hyper[c].values)})
    return ds


def _warn_edge_collapse(ids, log_lobs, z, sig, hyper, mass):
    """Warn about halos whose L_obs lies > 5σ beyond μ_L at both ends of the grid, on the same side,
    for every realization: u = (ln L_obs - ln μ_L) / √(S² + σ_obs²) is linear in ln M, so this is
    the inverted mass lying > 5σ outside the grid.  No division by α2 (α2 = 0 is a flat
    likelihood, not a collapse) and no overflow warnings for degenerate hyperparameters: u
    overflowing to ±inf (e.g. α1 = 1e308) is a collapse, and is reported as one."""
    a = {k: np.asarray(hyper[k].values, dtype=float)[None, :] for k in HYPER_NAMES}
    with np.errstate(all="ignore"):
        inv = 1.0 / np.hypot(a["S"], sig[:, None])
        base = log_lobs[:, None] - a["alpha1"] - a["alpha4"] * np.log1p(z)[:, None]
        lna3 = np.log(a["alpha3"])
        u_lo = (base - a["alpha2"] * (np.log(mass[0]) - lna3)) * inv
        u_hi = (base - a["alpha2"] * (np.log(mass[-1]) - lna3)) * inv
        # same side: compared by sign, not by the product (which overflows); a flat likelihood is
        # told by α2 = 0, not by u_lo == u_hi (both overflow to the same infinity for extreme α1, α4, S)
        far = np.all((np.minimum(np.abs(u_lo), np.abs(u_hi)) > 5) & (np.sign(u_lo) == np.sign(u_hi))
                     & (a["alpha2"] != 0), axis=1)
    if far.any():
        warnings.warn(
            f"{int(far.sum())} halo(s) have L_obs so far from every mean luminosity on the mass grid "
            f"[{mass[0]:.3g}, {mass[-1]:.3g}] M_sun that their posterior collapses onto a grid edge "
            f"(first ids: {format_offenders(ids[far])}); widen the mass grid or check their lum_obs"
            " and the hyperparameters (alpha1..alpha4, S)",
            CatalogWarning,
            stacklevel=3,
        )
