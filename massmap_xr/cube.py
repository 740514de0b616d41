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

from massmap_xr._version import KERNEL_VERSION, SCHEMA_VERSION, __version__
from massmap_xr.catalog import check_sigma_obs, validate_catalog
from massmap_xr.errors import AnalysisError, CatalogWarning, EdgeWarning, MassmapError, StoreError, format_offenders
from massmap_xr.kernels.edges import EDGE_THRESHOLD, collapsed_halos, edge_check
from massmap_xr.kernels.posterior import (
    ZERO_PRIOR_LOG,
    check_prior_nonzero,
    check_prior_redshifts,
    edge_fraction,
    log_prior_norm,
    posterior_outputs,
    prior_row_max,
    prior_rows,
    trapezoid_weights,
)
from massmap_xr.model.hyper import as_hyper, hyper_hash, hyper_kind
from massmap_xr.model.prior import as_prior, check_mass_grid, default_mass_grid, log_dndm
from massmap_xr.model.redshift import (
    DEFAULT_N_NODES,
    DEFAULT_N_SIGMA,
    LOST_TOL,
    PZ_DIM,
    PZ_VAR,
    redshift_nodes,
    warn_truncated,
)
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
            "0.05)) with the scatter the luminosities have)"
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
    """SHA-256 over the catalogue variables the posterior depends on (ids, z, lum_obs, sigma_obs; z_err, pz, pz_z
    where present, so spectroscopic catalogues keep their hashes)."""
    h = hashlib.sha256()
    for k in ("halo", "z", "lum_obs", "sigma_obs", "z_err", PZ_VAR, PZ_DIM):
        if k in cat.variables:
            h.update(k.encode())
            h.update(np.ascontiguousarray(cat[k].values).astype("<f8" if k != "halo" else "<i8").tobytes())
    return h.hexdigest()


def _check_prior_at_halos(z, ids, z_nodes, log_table) -> None:
    """Refuse, before any graph is built, halos the prior cannot give a posterior to.

    The redshift nodes must increase and cover every ``z``, and at each halo's redshift the
    prior must be non-zero somewhere on the mass grid (:class:`PriorError` naming the halos).
    Only each halo's largest prior value is computed (memory: one float per halo).
    """
    check_prior_redshifts(z, z_nodes, ids=ids, who="build_posterior")
    check_prior_nonzero(z, prior_row_max(z, z_nodes, log_table), ids=ids, who="build_posterior")


def _mc_block(log_lobs, z, sig, ids, *, z_nodes, log_table, mass, hyp, n_lum, seed):
    """Monte Carlo posterior block (float64 internally, float32 out); per-halo seeded streams.

    Returns (posterior, log_evidence, edge_fraction) like
    :func:`~massmap_xr.kernels.posterior.posterior_outputs` (the evidence from the Monte Carlo likelihood)."""
    x = np.log(mass)
    w = trapezoid_weights(x / np.log(10.0))
    lnp = prior_rows(z, z_nodes, log_table, x, ids=ids, who="build_posterior")
    out = np.empty((z.size, mass.size, hyp["alpha1"].size), dtype=np.float32)
    log_ev = np.empty((z.size, hyp["alpha1"].size))
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
        log_ev[k] = np.log(norm) - log_prior_norm(lnp[k:k + 1], w)[0]
    return out, log_ev, edge_fraction(out, x / np.log(10.0))


def build_posterior(
    catalog: xr.Dataset,
    hyper=None,
    *,
    prior=None,
    mass=None,
    sigma_obs: float | None = None,
    method: str = "analytic",
    n_lum: int = 100,
    seed: int = 0,
    chunks: int | None = None,
    check_edges: bool = True,
    n_z_nodes: int = DEFAULT_N_NODES,
    z_sigma_window: float = DEFAULT_N_SIGMA,
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
        Mass grid in M_sun; default :func:`~massmap_xr.model.prior.default_mass_grid`.
    sigma_obs : float, optional
        Observational log-normal scatter of L_obs (natural log), for a catalogue without a per-halo
        ``sigma_obs`` variable.  Never assumed: a catalogue without ``sigma_obs`` and no value here
        is a :class:`~massmap_xr.errors.CatalogError`; giving both is one too.  The values used are
        the cube's ``sigma_obs`` variable, and ``attrs["sigma_obs_source"]`` says where they came
        from.
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
        every μ_L on the mass grid that their posterior piles up on a grid edge, and about halos
        whose estimated ``edge_fraction`` exceeds :data:`~massmap_xr.kernels.edges.EDGE_THRESHOLD`
        (1e-3) for some realization (see :mod:`massmap_xr.kernels.edges`; cheap: a coarse
        evaluation in blocks of halos, memory independent of the catalogue size).
    n_z_nodes : int, default 20
        Quadrature nodes per halo for a Gaussian redshift error ``z_err`` (see
        :mod:`massmap_xr.model.redshift`).
    z_sigma_window : float, default 8
        Half-width, in units of ``z_err``, of the redshift window integrated over.

    Returns
    -------
    xarray.Dataset
        ``posterior(halo, mass, realization)`` float32 (dask), coordinates ``halo``, ``mass``,
        ``log10_mass``, ``realization``, ``ra``, ``dec``; catalogue variables along ``halo``,
        hyperparameters (with normalised ``weight``) along ``realization``, the prior table
        ``prior_dndm(prior_z, mass)``, and per (halo, realization), computed by the same kernel
        pass as the posterior (dask shares it: computing several of them runs the kernel once per
        block): ``log_evidence`` (float64, ln P(ln L_obs | α, S) with the prior normalised to unit
        integral over the mass grid at each z, z-marginalised for photometric halos; see
        :func:`~massmap_xr.kernels.posterior.posterior_outputs`) and ``edge_fraction`` (float32, the
        posterior probability in the first and last trapezoid cells of the grid, summed).

    Redshift uncertainty: a catalogue variable ``z_err(halo)`` (Gaussian σ_z, 0 = spectroscopic)
    or a tabulated ``pz(halo, pz_z)`` makes the posterior the mass marginal over the halo's
    redshift distribution, each redshift node weighted by p(z) times the evidence there
    (:mod:`massmap_xr.kernels.photoz`); spectroscopic halos are bit-identical to a catalogue
    without these variables.  The quadrature settings are recorded in ``attrs``
    (``redshift_*``).

    The cube's attribute ``hyper_kind`` (``"prior"`` or ``"posterior"``, from the hyperparameters,
    see :func:`~massmap_xr.model.hyper.hyper_kind`) says how analyses weight the realizations.

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
    prior = as_prior(prior)
    hyper = as_hyper(100 if hyper is None else hyper)
    validate_catalog(catalog, z_range=prior.z_range)
    mass = check_mass_grid(default_mass_grid() if mass is None else mass, "build_posterior", error=MassmapError)
    sigma_obs = check_sigma_obs(sigma_obs, catalog, "build_posterior")
    # the kernel reads the table the cube records (prior_dndm): a TablePrior rebuilt from that table
    # (a recipe store, computed on read) gives the same posterior bit for bit
    prior_da = prior.table(mass).rename("prior_dndm")
    z_nodes = np.asarray(prior_da["prior_z"].values, dtype=float)
    log_table = log_dndm(prior_da.values)
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
    sig = np.asarray(catalog["sigma_obs"].values, dtype=float) if sigma_obs is None else np.full(n, sigma_obs)
    ids = np.asarray(catalog["halo"].values)
    _check_prior_at_halos(z, ids, z_nodes, log_table)
    zerr, pz, pz_z = photoz_inputs(catalog)
    photo = zerr is not None or pz is not None
    if photo and method != "analytic":
        raise MassmapError(
            "build_posterior: the catalogue has redshift uncertainties (z_err or pz) but method='montecarlo' "
            "handles spectroscopic redshifts only; use method='analytic' (exact), or drop z_err / pz"
        )
    qz = {"z_range": prior.z_range, "n_nodes": int(n_z_nodes), "n_sigma": float(z_sigma_window)}
    settings = _check_redshift_nodes(z, zerr, pz, pz_z, ids, qz) if photo else {}
    if check_edges:
        _warn_edge_collapse(ids, log_lobs, z, sig, hyper, mass, z_nodes, log_table)

    hyp = {k: np.asarray(hyper[k].values, dtype=float) for k in HYPER_NAMES}
    halo_chunks = (tuple(min(chunk, n - i) for i in range(0, n, chunk)),)
    starts = np.cumsum((0,) + halo_chunks[0])
    if method == "analytic":

        def block(ll, zz, ss, ii, ze, pzb):
            nodes = None
            if photo:
                nodes = tuple(redshift_nodes(zz, ze, pzb, pz_z, ids=ii, warn=False, **qz))
            return _run_block(ll, zz, ss, z_nodes=z_nodes, log_table=log_table, mass=mass, ids=ii, nodes=nodes,
                              **hyp)

    else:

        def block(ll, zz, ss, ii, ze, pzb):
            return _mc_block(ll, zz, ss, ii, z_nodes=z_nodes, log_table=log_table, mass=mass, hyp=hyp,
                             n_lum=int(n_lum), seed=seed)

    def inputs(i):
        sl = slice(int(starts[i]), int(starts[i + 1]))
        return (log_lobs[sl], z[sl], sig[sl], ids[sl], None if zerr is None else zerr[sl],
                None if pz is None else pz[sl])

    # the graph name is a token of every input the blocks read (not of descriptions of them), so two
    # builds share dask keys only when they compute the same values with the same chunks
    token = dask.base.tokenize(
        log_lobs, z, sig, ids, halo_chunks, hyp, z_nodes, log_table, mass, method,
        int(n_lum) if method == "montecarlo" else 0, int(seed) if method == "montecarlo" else 0,
        *((zerr, pz, pz_z, qz) if photo else ()),
    )
    post, log_ev, edge = _kernel_arrays(block, inputs, token, halo_chunks[0], mass.size, n_r)

    cat_vars = {k: catalog[k] for k in catalog.data_vars if catalog[k].dims == ("halo",) and k not in ("ra", "dec")}
    if "sigma_obs" not in cat_vars:
        attrs = {"long_name": "observational log-normal scatter of L_obs (natural log)", "units": "1"}
        cat_vars["sigma_obs"] = xr.DataArray(sig, dims="halo", attrs=attrs)
    ds = xr.Dataset(
        {
            "posterior": (("halo", "mass", "realization"), post, dict(CUBE_ATTRS)),
            **{k: ("halo", np.asarray(v.values), dict(v.attrs)) for k, v in cat_vars.items()},
            **{k: ("realization", hyper[k].values, dict(hyper[k].attrs)) for k in (*HYPER_NAMES, "weight")},
            "prior_dndm": (("prior_z", "mass"), prior_da.values, dict(prior_da.attrs)),
            "log_evidence": (("halo", "realization"), log_ev, dict(LOG_EVIDENCE_ATTRS)),
            "edge_fraction": (("halo", "realization"), edge, dict(EDGE_FRACTION_ATTRS)),
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
            "kernel_version": KERNEL_VERSION,
            "method": method,
            "n_lum": int(n_lum) if method == "montecarlo" else 0,
            "mc_seed": int(seed),
            # the number given, or "catalogue" when every halo carries its own value
            "sigma_obs_default": "catalogue" if sigma_obs is None else float(sigma_obs),
            "sigma_obs_source": "catalogue variable sigma_obs" if sigma_obs is None else
            f"sigma_obs={sigma_obs:g} given to build_posterior",
            "normalisation": CUBE_ATTRS["normalisation"],
            "model": "ln mu_L = alpha1 + alpha2 ln(M/alpha3) + alpha4 ln(1+z); ln L ~ N(ln mu_L, S^2); "
            "ln L_obs ~ N(ln L, sigma_obs^2); prior dn/dM(z)",
            "catalog_hash": catalog_hash(catalog),
            "edge_threshold": float(EDGE_THRESHOLD),
            **settings,
            "hyper_hash": hyper_hash(hyper),
            **{f"prior_{k}" if not k.startswith("prior") else k: v for k, v in prior.describe().items()},
            **{k: v for k, v in catalog.attrs.items() if isinstance(v, (str, int, float)) and not k.startswith("massmap")},
        },
    )
    ds.attrs["hyper_kind"] = hyper_kind(hyper)  # prior draws are weighted by each halo's evidence in the analysis
    for c in ("chain", "draw"):
        if c in hyper.coords:
            ds = ds.assign_coords({c: ("realization", hyper[c].values)})
    return ds


LOG_EVIDENCE_ATTRS = {
    "long_name": "log evidence ln P(ln L_obs | hyperparameters, prior) of each halo",
    "units": "1",
    "definition": "ln of the integral over log10 M (trapezoid on the mass grid) of p(ln L_obs | M, z) P(M | z), with "
                  "p a normal density per unit ln L_obs and the prior normalised to unit integral over the mass grid "
                  "at z; averaged over p(z) (redshift nodes) for halos with redshift uncertainty",
}
EDGE_FRACTION_ATTRS = {
    "long_name": "posterior probability in the outermost trapezoid cell at each end of the mass grid, summed",
    "units": "1",
    "threshold": float(EDGE_THRESHOLD),
}


def photoz_inputs(catalog: xr.Dataset):
    """``(z_err, pz, pz_z)`` of a catalogue as float64 arrays (None where absent)."""
    zerr = np.asarray(catalog["z_err"].values, dtype=float) if "z_err" in catalog.variables else None
    if PZ_VAR in catalog.variables:
        v = catalog[PZ_VAR].transpose("halo", PZ_DIM)
        return zerr, np.asarray(v.values, dtype=float), np.asarray(catalog[PZ_DIM].values, dtype=float)
    return zerr, None, None


def _check_redshift_nodes(z, zerr, pz, pz_z, ids, qz, *, batch: int = 8192) -> dict:
    """Validate the redshift inputs by building the nodes in batches; warn once about truncated p(z).

    Returns the quadrature settings for the cube's attributes.
    """
    lost_ids, lost_vals, count, settings, n_photo = [], [], 0, {}, 0
    for s0 in range(0, z.size, batch):
        sl = slice(s0, s0 + batch)
        r = redshift_nodes(z[sl], None if zerr is None else zerr[sl], None if pz is None else pz[sl], pz_z,
                           ids=ids[sl], warn=False, **qz)
        settings, n_photo = r.settings, n_photo + int(r.photometric.sum())
        far = r.lost > LOST_TOL
        count += int(far.sum())
        if len(lost_ids) < 5:
            lost_ids.extend(ids[sl][far][:5].tolist())
            lost_vals.extend(r.lost[far][:5].tolist())
    if count:
        lo, hi = qz["z_range"]
        warn_truncated(np.asarray(lost_ids[:5]), np.asarray(lost_vals[:5]), lo, hi, stacklevel=3, count=count)
    settings = dict(settings, n_photometric=n_photo)
    if qz["z_range"][1] == np.inf:
        settings["redshift_truncation"] = settings["redshift_truncation"].replace("inf", "infinity")
    return settings


def _run_block(log_lobs, z, sig, **kw):
    """One kernel pass over a halo block: (posterior, log_evidence, edge_fraction)."""
    return posterior_outputs(log_lobs, z, sig, **kw)


def _kernel_arrays(block, inputs, token: str, halo_chunks: tuple, n_mass: int, n_r: int):
    """Three dask arrays (posterior, log_evidence, edge_fraction) sharing one kernel task per halo block."""
    import operator

    from dask.highlevelgraph import HighLevelGraph

    kname = f"massmap-kernel-{token}"
    names = (f"massmap-posterior-{token}", f"massmap-log-evidence-{token}", f"massmap-edge-fraction-{token}")
    layers = {kname: {(kname, i): (block, *inputs(i)) for i in range(len(halo_chunks))}}
    deps = {kname: set()}
    out = []
    specs = (((halo_chunks, (n_mass,), (n_r,)), np.float32, (0, 0)), ((halo_chunks, (n_r,)), np.float64, (0,)),
             ((halo_chunks, (n_r,)), np.float32, (0,)))
    for j, (name, (_, _, tail)) in enumerate(zip(names, specs, strict=True)):
        layers[name] = {(name, i, *tail): (operator.getitem, (kname, i), j) for i in range(len(halo_chunks))}
        deps[name] = {kname}
    graph = HighLevelGraph(layers, deps)
    for name, (chunks, dtype, _) in zip(names, specs, strict=True):
        out.append(da.Array(graph, name, chunks=chunks, dtype=dtype))
    return tuple(out)


def _warn_edge_collapse(ids, log_lobs, z, sig, hyper, mass, z_nodes, log_table, *, block: int = 2048):
    """The build-time edge checks, in blocks of ``block`` halos (memory independent of the catalogue
    size beyond one bool per halo).

    1. Collapse: halos whose L_obs lies > 5σ beyond μ_L at both ends of the grid, on the same side,
       for every realization (:func:`massmap_xr.kernels.edges.collapsed_halos`; α2 = 0 is a flat
       likelihood, not a collapse; u overflowing to ±inf, e.g. α1 = 1e308, is reported as one).
    2. Edge fraction: the other halos whose estimated posterior probability in the end cells
       exceeds EDGE_THRESHOLD for some realization (:func:`massmap_xr.kernels.edges.edge_check`).
    """
    hyp = {k: np.asarray(hyper[k].values, dtype=float) for k in HYPER_NAMES}
    far = collapsed_halos(log_lobs, z, sig, hyp, np.log(mass[0]), np.log(mass[-1]))
    n_far = int(far.sum())
    first_far = ids[far][:5].tolist()
    if n_far:
        warnings.warn(
            f"{n_far} halo(s) have L_obs so far from every mean luminosity on the mass grid "
            f"[{mass[0]:.3g}, {mass[-1]:.3g}] M_sun that their posterior collapses onto a grid edge "
            f"(first ids: {format_offenders(np.asarray(first_far))}); widen the mass grid or check their lum_obs"
            " and the hyperparameters (alpha1..alpha4, S)",
            CatalogWarning,
            stacklevel=3,
        )

    def rows(zb, ib, xc):
        return prior_rows(zb, z_nodes, log_table[:, _coarse_of(mass, xc)], xc, ids=ib, who="build_posterior")

    rep = edge_check(ids, log_lobs, z, sig, hyp, mass, rows, block=block,
                     exclude=(lambda sl: far[sl]) if n_far else None)
    if rep.count:
        shown = ", ".join(f"{i} ({f:.2g})" for i, f in zip(rep.ids, rep.fractions, strict=True))
        warnings.warn(
            f"{rep.count} halo(s) have more than {rep.threshold:g} of their posterior probability in the outermost "
            f"cells of the mass grid [{mass[0]:.3g}, {mass[-1]:.3g}] M_sun for some realization, so the grid cuts "
            f"their posterior (first ids, with the largest edge fraction: {shown}; largest over all halos: "
            f"{rep.max_fraction:.2g}); widen the mass grid (mass=...) or check their lum_obs and the "
            "hyperparameters; the cube's edge_fraction variable has the exact values",
            EdgeWarning,
            stacklevel=3,
        )


def _coarse_of(mass, xc) -> np.ndarray:
    """Indices of the coarse log-masses ``xc`` in the grid ``mass``."""
    return np.searchsorted(np.log(mass), xc - 1e-12)
