"""Mock catalogues drawn from the model, mock sky positions, and the original study's shipped seed field.

The seed field's (z, lum_obs) are in ``massmap_xr/data/seed_field.npz``.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import xarray as xr

from massmap_xr.catalog.schema import DEFAULT_FIELD, check_field_center, make_catalog, offsets_to_radec
from massmap_xr.errors import CatalogError, PriorError, format_offenders
from massmap_xr.model.relation import HYPER_NAMES, mean_log_luminosity

__all__ = ["mock_catalog", "seed_field", "seed_redshifts", "uniform_field_positions"]


def uniform_field_positions(n, rng, *, center=None, size_arcmin=None):
    """Positions uniform in a square tangent-plane field (ra, dec in degrees)."""
    c = center or (DEFAULT_FIELD["ra"], DEFAULT_FIELD["dec"])
    size = DEFAULT_FIELD["size_arcmin"] if size_arcmin is None else float(size_arcmin)
    x = rng.uniform(-size / 2, size / 2, n)
    y = rng.uniform(-size / 2, size / 2, n)
    return offsets_to_radec(x, y, c)


def seed_redshifts() -> np.ndarray:
    """Redshifts of the original study's 115,919-halo field (shipped with the package)."""
    return _seed()["z"]


def _seed():
    with resources.files("massmap_xr").joinpath("data/seed_field.npz").open("rb") as f:
        d = np.load(f)
        return {k: d[k] for k in d.files}


def seed_field(*, seed: int = 0, center=None, size_arcmin=None, sigma_obs: float = 0.05) -> xr.Dataset:
    """The original study's field: 115,919 halos with (z, lum_obs), shipped with the package.

    Each halo carries ``sigma_obs`` = 0.05, the scatter the field's luminosities were drawn with
    (``sigma_obs=`` changes it; ``None`` leaves the variable out).

    The original positions are lost; positions are drawn uniform in the 40′ × 40′ window (the
    study's own assumption) with ``seed``, and ``attrs["positions"]`` says so.
    """
    d = _seed()
    rng = np.random.default_rng(seed)
    ra, dec = uniform_field_positions(d["z"].size, rng, center=center, size_arcmin=size_arcmin)
    c = center or (DEFAULT_FIELD["ra"], DEFAULT_FIELD["dec"])
    return make_catalog(
        d["z"], d["lum_obs"], ra, dec, sigma_obs=sigma_obs,
        attrs={"source": "seed field of the original mass-luminosity study (115,919 halos)",
               "positions": f"mock, uniform in the field (seed={seed})",
               "field_center_ra": float(c[0]), "field_center_dec": float(c[1]),
               "field_size_arcmin": float(DEFAULT_FIELD["size_arcmin"] if size_arcmin is None else size_arcmin)},
    )


def mock_catalog(
    n_halos: int,
    seed=None,
    *,
    truth: dict | None = None,
    prior=None,
    mass=None,
    sigma_obs: float = 0.05,
    z=None,
    center=None,
    size_arcmin: float | None = None,
    z_err=None,
    lum_min=None,
) -> xr.Dataset:
    """A mock catalogue drawn from the model with known hyperparameters.

    Redshifts are resampled from ``z`` (default: the seed field's redshifts), masses drawn from
    the prior P(M | z) at each halo's redshift (continuous inverse-CDF in ln M over the mass
    grid), ln L ~ N(ln μ_L, S²), ln L_obs ~ N(ln L, σ_obs²); positions uniform in a square
    field.  The true hyperparameters are recorded in ``attrs`` as ``true_<name>``.  The
    observational scatter is stored per halo as the variable ``sigma_obs``, like a real
    catalogue's, so that :func:`~massmap_xr.cube.build_posterior` and
    :class:`~massmap_xr.inference.CatalogLikelihood` use the scatter the luminosities were
    drawn with (it is also recorded as ``attrs["sigma_obs"]``).

    Parameters
    ----------
    n_halos : int
        Number of halos (>= 1).
    seed : int or None
        Seed for every draw (a non-negative integer, or None for fresh entropy).
    truth : dict, optional
        Hyperparameters (alpha1..alpha4, S), finite numbers with alpha3 > 0 and S > 0; names not
        given take the Reddick (2013) central values.
    prior : MassPrior or DataArray, optional
        Mass prior (default :class:`~massmap_xr.model.prior.TinkerPrior`).
    mass : array_like, optional
        Mass grid (M_sun) the prior is drawn on (default
        :func:`~massmap_xr.model.prior.default_mass_grid`, the grid posteriors and the catalogue
        likelihood use by default, so that a mock and its analysis are the same model).
    sigma_obs : float, default 0.05
        Observational scatter of ln L_obs (natural log, finite and > 0) used to draw L_obs and
        stored as the per-halo variable ``sigma_obs``.
    z : array_like, optional
        Redshifts to resample from (finite, inside the prior's redshift range).
    center, size_arcmin : optional
        Field centre (ra, dec) in degrees and side in arcmin (default (150, 2) and 40′).
    z_err : float or callable, optional
        Photometric redshifts: a Gaussian redshift error σ_z (one number ≥ 0, or a function of the
        catalogue redshift, e.g. ``lambda z: 0.03 * (1 + z)``).  The redshifts resampled from ``z``
        are then the catalogue's (photometric) ``z``, stored with ``z_err``, and each halo's true
        redshift ``z_true`` is drawn from its p(z) = N(z, z_err²) truncated to the prior's range —
        the distribution :func:`~massmap_xr.cube.build_posterior` integrates over (a p(z) is the
        distribution of the true redshift given the photometry) — and the mass and luminosity are
        drawn at ``z_true``.  The truncated-normal draws come from their own stream (seeded from
        ``seed``), so the spectroscopic mocks of a seed are unchanged.  Default: spectroscopic.
    lum_min : float or callable, optional
        Flux limit: a luminosity L_min > 0 (units of ``lum_obs``) or a function of redshift
        (array) returning it.  ``n_halos`` halos are drawn and those with L_obs < L_min(z) are
        dropped, so the catalogue is smaller than ``n_halos`` and its masses follow the mass
        function *above the limit only* (P(M | z, detected)); fit it with the same ``lum_min``
        (:class:`~massmap_xr.inference.CatalogLikelihood`).  Recorded as ``attrs["lum_min"]``
        (a number, or ``"callable"``) and ``attrs["n_drawn"]``.

    Raises
    ------
    CatalogError
        For an invalid argument (the message names it, says what is wrong and what to pass).
    PriorError
        If the prior is zero on the whole mass grid at a redshift drawn.

    Examples
    --------
    >>> cat = mock_catalog(100, seed=1)
    >>> sorted(cat.data_vars)
    ['lum_obs', 'mass_true', 'sigma_obs', 'z']
    """
    from massmap_xr.model.hyper import REDDICK2013
    from massmap_xr.model.prior import as_prior, default_mass_grid

    if isinstance(n_halos, (bool, np.bool_)) or not isinstance(n_halos, (int, np.integer)) or n_halos < 1:
        raise CatalogError(f"mock_catalog: n_halos must be a positive integer, got {n_halos!r:.80}")
    if seed is not None and (isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer))
                             or seed < 0):
        raise CatalogError(
            f"mock_catalog: seed must be a non-negative integer or None, got {seed!r:.80} "
            f"({type(seed).__name__}); pass e.g. seed=1"
        )
    truth = _check_truth(truth, REDDICK2013)
    sigma_obs = _check_mock_number("sigma_obs", sigma_obs, "the observational scatter of ln L_obs (natural log)")
    if size_arcmin is not None:
        size_arcmin = _check_mock_number("size_arcmin", size_arcmin, "the side of the square field in arcmin")
    c = check_field_center(center)
    prior = as_prior(prior)
    if mass is None:
        # the posterior's own default grid: a mock drawn on another range than the one its posteriors
        # and likelihood assume is a different model (masses cut at 1e10 bias both)
        mass = default_mass_grid()
    else:
        mass = _mock_array("mass", mass)
        if mass.size < 2 or np.any(~np.isfinite(mass)) or np.any(mass <= 0) or np.any(np.diff(mass) <= 0):
            raise CatalogError(
                f"mock_catalog: mass must be a finite, positive, strictly increasing grid of >= 2 masses in M_sun, "
                f"got {mass.size} value(s) starting {mass[:3].tolist()}; pass e.g. numpy.logspace(10, 15.5, 400)"
            )
    zpool = seed_redshifts() if z is None else _mock_array("z", z)
    if zpool.size == 0:
        raise CatalogError("mock_catalog: z is empty; give at least one redshift to resample from, or None for "
                           "the seed field's redshifts")
    lo, hi = prior.z_range
    bad = ~np.isfinite(zpool) | (zpool < max(lo, 0.0)) | (zpool > hi)
    if bad.any():
        raise CatalogError(
            f"mock_catalog: z must be finite and inside the prior's redshift range [{max(lo, 0.0):g}, {hi:g}]; "
            f"{int(bad.sum())} of {zpool.size} value(s) are not (first at index {format_offenders(np.flatnonzero(bad))}"
            f": {', '.join(f'{v:.6g}' for v in zpool[bad][:5])}); drop them or use a prior tabulated over these "
            "redshifts (e.g. TinkerPrior(z_max=...))"
        )
    rng = np.random.default_rng(seed)
    zs = rng.choice(zpool, size=int(n_halos), replace=True)
    z_cat, sig_z = zs, None
    if z_err is not None:
        sig_z = _photo_errors(z_err, zs)
        zs = _draw_true_redshifts(zs, sig_z, max(lo, 0.0), hi, seed)
    masses = _draw_masses(prior, zs, mass, rng.uniform(size=zs.size))
    mu = mean_log_luminosity(masses, zs, truth["alpha1"], truth["alpha2"], truth["alpha3"], truth["alpha4"])
    log_l = mu + truth["S"] * rng.standard_normal(zs.size)
    log_lobs = log_l + sigma_obs * rng.standard_normal(zs.size)
    n_drawn = zs.size
    if lum_min is not None:
        keep = log_lobs >= _log_lum_min(lum_min, z_cat)  # the limit is a function of the catalogue's z
        if not keep.any():
            raise CatalogError(f"mock_catalog: lum_min={lum_min!r:.60} removes all {n_drawn} halos drawn; lower the "
                               "limit or draw more halos")
        zs, z_cat, masses, log_lobs = zs[keep], z_cat[keep], masses[keep], log_lobs[keep]
        sig_z = None if sig_z is None else sig_z[keep]
    ra, dec = uniform_field_positions(zs.size, rng, center=c, size_arcmin=size_arcmin)
    attrs = {f"true_{k}": float(v) for k, v in truth.items()}
    attrs.update(
        source="mock_catalog", seed=str(seed), sigma_obs=float(sigma_obs),
        field_center_ra=float(c[0]), field_center_dec=float(c[1]),
        field_size_arcmin=float(DEFAULT_FIELD["size_arcmin"] if size_arcmin is None else size_arcmin),
        mass_min=float(mass[0]), mass_max=float(mass[-1]),
    )
    if lum_min is not None:
        attrs.update(lum_min=float(lum_min) if not callable(lum_min) else "callable", n_drawn=int(n_drawn))
    cat = make_catalog(z_cat, np.exp(log_lobs), ra, dec, mass_true=masses, sigma_obs=sigma_obs, attrs=attrs)
    if sig_z is not None:
        from massmap_xr.catalog.schema import VAR_ATTRS

        cat = cat.assign(z_err=("halo", sig_z, dict(VAR_ATTRS["z_err"])), z_true=("halo", zs, dict(VAR_ATTRS["z_true"])))
    return cat


def _photo_errors(z_err, z) -> np.ndarray:
    """σ_z per halo from a number or a callable of z, checked (finite, >= 0)."""
    if callable(z_err):
        v = np.broadcast_to(np.asarray(z_err(np.asarray(z)), dtype=float), z.shape).copy()
    elif isinstance(z_err, (bool, np.bool_)) or not isinstance(z_err, (int, float, np.integer, np.floating)):
        raise CatalogError(f"mock_catalog: z_err must be a number or a function of z (e.g. lambda z: 0.03 * (1 + z)), "
                           f"got {z_err!r:.80} ({type(z_err).__name__})")
    else:
        v = np.full(z.shape, float(z_err))
    if not np.all(np.isfinite(v) & (v >= 0)):
        raise CatalogError("mock_catalog: z_err must give finite values >= 0 (Gaussian redshift errors), got "
                           f"{v[~(np.isfinite(v) & (v >= 0))][:5].tolist()}")
    return v


def _draw_true_redshifts(z, sig, lo, hi, seed) -> np.ndarray:
    """z_true ~ N(z, sig²) truncated to [lo, hi] (sig = 0: z itself), from a stream of its own."""
    from scipy.stats import truncnorm

    rng = np.random.default_rng(None if seed is None else [int(seed), 0x70A0])
    out = np.array(z, dtype=float)
    g = sig > 0
    if g.any():
        a, b = (lo - z[g]) / sig[g], (hi - z[g]) / sig[g]
        out[g] = truncnorm.rvs(a, b, loc=z[g], scale=sig[g], random_state=rng)
    return out


def _check_mock_number(name: str, value, what: str) -> float:
    """A finite real number > 0 (not bool, not text), else CatalogError."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise CatalogError(f"mock_catalog: {name} must be one number, {what}, got {value!r:.80} "
                           f"({type(value).__name__})")
    v = float(value)
    if not (np.isfinite(v) and v > 0):
        raise CatalogError(f"mock_catalog: {name} must be finite and > 0 ({what}), got {value!r}")
    return v


def _mock_array(name: str, value) -> np.ndarray:
    """A 1-D float array from numbers, else CatalogError."""
    a = np.asarray(value)
    if a.dtype.kind not in "iuf":
        raise CatalogError(
            f"mock_catalog: {name} must be numbers, got dtype {a.dtype} ({a.ravel()[:3].tolist()!r:.80}); "
            "convert with numpy.asarray(..., dtype=float)"
        )
    a = a.astype(float)
    if a.ndim != 1:
        a = np.atleast_1d(a)
        if a.ndim != 1:
            raise CatalogError(f"mock_catalog: {name} must be 1-D, got shape {np.shape(value)}")
    return a


def _check_truth(truth, defaults) -> dict:
    """The truth hyperparameters completed with the Reddick (2013) central values, validated."""
    from collections.abc import Mapping

    if truth is None:
        truth = {}
    if not isinstance(truth, Mapping):
        raise CatalogError(
            f"mock_catalog: truth must be a dict of hyperparameters {list(HYPER_NAMES)}, got {type(truth).__name__} "
            f"({truth!r:.80}); pass e.g. truth={{'alpha1': 10.7, 'S': 0.2}}"
        )
    unknown = sorted(map(str, set(truth) - set(HYPER_NAMES)))
    if unknown:
        raise CatalogError(f"mock_catalog: unknown hyperparameter(s) {unknown}; use {list(HYPER_NAMES)}")
    out = {k: defaults[k][0] for k in HYPER_NAMES}
    problems = []
    for k, v in truth.items():
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
            problems.append(f"{k} must be one real number, got {v!r:.40} ({type(v).__name__})")
            continue
        v = float(v)
        if not np.isfinite(v):
            problems.append(f"{k} must be finite, got {v}")
        elif k in ("alpha3", "S") and not v > 0:
            problems.append(f"{k} must be > 0 ({'pivot mass in M_sun' if k == 'alpha3' else 'intrinsic scatter'}), "
                            f"got {v:g}")
        out[k] = v
    if problems:
        raise CatalogError(
            f"mock_catalog: invalid truth hyperparameter(s), {len(problems)} problem(s):\n  - "
            + "\n  - ".join(problems) + "\nfix these values in truth (names not given take the Reddick 2013 values)",
            problems=problems,
        )
    return out


#: halos whose (halo × mass) prior rows are evaluated at once by mock_catalog (bounds its memory)
MOCK_BLOCK = 16_384


def _draw_masses(prior, zs, mass, u):
    """Masses drawn from the prior at redshifts ``zs`` by inverting its CDF at ``u``, in blocks of
    :data:`MOCK_BLOCK` halos (each row is independent, so the draws equal those of one pass)."""
    from massmap_xr.kernels.posterior import ZERO_PRIOR_LOG

    log_m = np.log(mass)
    out = np.empty(zs.size)
    zero_z = []
    for i0 in range(0, zs.size, MOCK_BLOCK):
        sl = slice(i0, i0 + MOCK_BLOCK)
        log_p = prior.log_density(zs[sl], mass)
        zero = log_p.max(axis=1) <= ZERO_PRIOR_LOG
        if zero.any():
            zero_z.append(zs[sl][zero])
            continue
        log_p += log_m  # density per unit ln M
        out[sl] = _draw_from_log_density(log_m, log_p, u[sl])
    if zero_z:
        zz = np.unique(np.concatenate(zero_z))
        raise PriorError(
            f"mock_catalog: the prior is zero on the whole mass grid ({mass[0]:.3g} to {mass[-1]:.3g} M_sun) at "
            f"{zz.size} of the redshifts drawn (first: {', '.join(f'{v:.6g}' for v in zz[:5])}); masses cannot be "
            "drawn there: use a mass grid inside the prior's mass range or drop these redshifts from z"
        )
    return out


def _draw_from_log_density(x, log_p, u):
    """Inverse-CDF draws, one per row of ``log_p`` (density in x, piecewise linear), as exp(x)."""
    p = np.exp(log_p - log_p.max(axis=1, keepdims=True))
    cdf = np.concatenate([np.zeros((p.shape[0], 1)), np.cumsum(0.5 * (p[:, 1:] + p[:, :-1]) * np.diff(x), axis=1)], axis=1)
    cdf /= cdf[:, -1:]
    out = np.empty(p.shape[0])
    for i in range(p.shape[0]):  # rows differ; np.interp is fast per row
        out[i] = np.interp(u[i], cdf[i], x)
    return np.exp(out)


def _log_lum_min(lum_min, z: np.ndarray) -> np.ndarray:
    """ln L_min at redshifts ``z`` for ``mock_catalog(lum_min=...)``; CatalogError unless > 0 and finite."""
    v = lum_min(z) if callable(lum_min) else lum_min
    try:
        v = np.broadcast_to(np.asarray(v, dtype=np.float64), z.shape)
    except (TypeError, ValueError):
        v = np.full(z.shape, np.nan)
    if not np.all(np.isfinite(v) & (v > 0)):
        raise CatalogError(f"mock_catalog: lum_min must be a luminosity > 0 (units of lum_obs) or a callable of z "
                           f"returning one per redshift, got {lum_min!r:.60}")
    return np.log(v)
