"""Halo catalogues: reading, validation and mock generation.

A catalogue is an :class:`xarray.Dataset` with dimension ``halo`` (integer ids as its
coordinate), data variables ``z`` (redshift) and ``lum_obs`` (observed luminosity, > 0),
optional ``mass_true`` (M_sun) and ``sigma_obs`` (per-halo observational scatter, natural
log), and sky positions ``ra``, ``dec`` in degrees stored as coordinates along ``halo`` so that
they ride along with every per-halo result (posteriors, samples, summaries).
"""

from __future__ import annotations

import warnings
from importlib import resources
from pathlib import Path

import numpy as np
import xarray as xr

from massmap_xr.errors import CatalogError, CatalogWarning, format_offenders
from massmap_xr.relation import HYPER_NAMES, mean_log_luminosity

__all__ = [
    "REQUIRED",
    "DEFAULT_FIELD",
    "make_catalog",
    "read_catalog",
    "validate_catalog",
    "mock_catalog",
    "seed_field",
    "seed_redshifts",
    "uniform_field_positions",
]

REQUIRED = ("z", "lum_obs", "ra", "dec")
#: Default field of mocks: centre (ra, dec) in degrees and side in arcmin.  The original
#: light cone has no sky position; this centre is an arbitrary equatorial field.
DEFAULT_FIELD = {"ra": 150.0, "dec": 2.0, "size_arcmin": 40.0}

_VAR_ATTRS = {
    "z": {"long_name": "redshift", "units": "1"},
    "lum_obs": {"long_name": "observed luminosity", "units": "solLum"},
    "ra": {"long_name": "right ascension", "units": "deg"},
    "dec": {"long_name": "declination", "units": "deg"},
    "mass_true": {"long_name": "true halo mass", "units": "solMass"},
    "sigma_obs": {"long_name": "observational log-normal scatter of L_obs (natural log)", "units": "1"},
}
#: the original study's text layout
ORIGINAL_COLUMNS = ("z", "lum_obs", "mass_true", "ra_arcmin", "dec_arcmin")


def make_catalog(z, lum_obs, ra, dec, *, halo=None, mass_true=None, sigma_obs=None, attrs=None) -> xr.Dataset:
    """Assemble a catalogue Dataset from arrays (validated).

    Parameters
    ----------
    z, lum_obs : array_like
        Redshift and observed luminosity per halo.
    ra, dec : array_like
        Sky position in degrees.
    halo : array_like of int, optional
        Halo ids (default 0..n-1).
    mass_true : array_like, optional
        True mass in M_sun (mocks).
    sigma_obs : array_like, optional
        Per-halo observational scatter (natural log).
    """
    z = np.asarray(z)
    n = z.shape[0] if z.ndim else 0
    halo = np.arange(n, dtype=np.int64) if halo is None else np.asarray(halo)
    data = {"z": z, "lum_obs": lum_obs}
    if mass_true is not None:
        data["mass_true"] = mass_true
    if sigma_obs is not None:
        data["sigma_obs"] = np.broadcast_to(np.asarray(sigma_obs, dtype=float), (n,)).copy()
    ds = xr.Dataset(
        {k: ("halo", np.asarray(v), dict(_VAR_ATTRS[k])) for k, v in data.items()},
        coords={"halo": halo, "ra": ("halo", np.asarray(ra), dict(_VAR_ATTRS["ra"])),
                "dec": ("halo", np.asarray(dec), dict(_VAR_ATTRS["dec"]))},
        attrs=dict(attrs or {}),
    )
    validate_catalog(ds)
    return ds


def _numeric(ds, name):
    return np.issubdtype(ds[name].dtype, np.number) and not np.issubdtype(ds[name].dtype, np.complexfloating)


def validate_catalog(
    cat: xr.Dataset,
    *,
    z_range: tuple[float, float] | None = None,
    require_positions: bool = True,
    warn: bool = True,
) -> None:
    """Check a catalogue; raise :class:`CatalogError` listing every rule broken.

    Rules: required variables present (``z``, ``lum_obs``, ``ra``, ``dec``) along ``halo``;
    numeric; finite; ``lum_obs`` > 0; ``z`` >= 0 (and inside ``z_range`` if given);
    ``ra`` in [0, 360); ``dec`` in [-90, 90]; ``sigma_obs`` > 0; halo ids unique; at least one
    halo.  Positions whose spread looks like arcmin or radians given as degrees produce a
    :class:`CatalogWarning`.

    Parameters
    ----------
    cat : xarray.Dataset
        The catalogue.
    z_range : (float, float), optional
        Redshift range of the prior that will be used; halos outside it are errors.
    require_positions : bool, default True
        Whether ``ra``/``dec`` are required.
    warn : bool, default True
        Emit warnings for suspicious (not invalid) positions.
    """
    if not isinstance(cat, xr.Dataset):
        raise CatalogError(f"catalogue must be an xarray.Dataset with dim 'halo', got {type(cat).__name__}")
    if "halo" not in cat.dims:
        raise CatalogError(f"catalogue: no 'halo' dimension (dims are {tuple(cat.dims)}); rename the row dimension to 'halo'")
    if cat.sizes["halo"] == 0:
        raise CatalogError("catalogue is empty (0 halos); nothing to compute")
    required = REQUIRED if require_positions else ("z", "lum_obs")
    missing = [k for k in required if k not in cat.variables]
    if missing:
        raise CatalogError(
            f"catalogue: missing required variable(s) {missing}; a catalogue needs {list(required)} "
            f"along 'halo' (ra/dec in degrees), found {sorted(map(str, cat.variables))}"
        )
    ids = cat["halo"].values
    problems = []

    def offenders(mask):
        return f"{int(mask.sum())} halo(s), first ids: {format_offenders(ids[mask])}"

    values = {}
    for k in (*required, *(v for v in ("sigma_obs", "mass_true") if v in cat.variables)):
        if cat[k].dims != ("halo",):
            problems.append(f"{k}: must be 1-D along 'halo', has dims {cat[k].dims}")
            continue
        if not _numeric(cat, k):
            problems.append(f"{k}: must be numeric, has dtype {cat[k].dtype}")
            continue
        a = np.asarray(cat[k].values, dtype=float)
        bad = ~np.isfinite(a)
        if bad.any():
            problems.append(f"{k}: NaN or inf in {offenders(bad)}; drop or fix these halos")
            continue
        values[k] = a
    rules = [
        ("lum_obs", lambda a: a <= 0, "lum_obs must be > 0 (linear luminosity, not a magnitude or log)"),
        ("z", lambda a: a < 0, "z must be >= 0"),
        ("ra", lambda a: (a < 0) | (a >= 360), "ra must be in [0, 360) degrees; wrap with ra % 360"),
        ("dec", lambda a: (a < -90) | (a > 90), "dec must be in [-90, 90] degrees"),
        ("sigma_obs", lambda a: a <= 0, "sigma_obs must be > 0"),
        ("mass_true", lambda a: a <= 0, "mass_true must be > 0 (M_sun, not log10)"),
    ]
    for k, rule, text in rules:
        if k in values:
            bad = rule(values[k])
            if bad.any():
                problems.append(f"{k}: {text}; broken by {offenders(bad)}")
    if z_range is not None and "z" in values:
        lo, hi = z_range
        bad = (values["z"] < lo) | (values["z"] > hi)
        if bad.any():
            problems.append(
                f"z: outside the prior's redshift range [{lo:g}, {hi:g}] for {offenders(bad)}; "
                "use a prior tabulated to higher redshift (e.g. TinkerPrior(z_max=...)) or drop them"
            )
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1]
        problems.append(f"halo: ids must be unique; {dup.size} id(s) repeated: {format_offenders(dup)}")
    if problems:
        raise CatalogError("invalid catalogue:\n  - " + "\n  - ".join(problems))
    if warn and require_positions and cat.sizes["halo"] > 1:
        _warn_positions(values["ra"], values["dec"])


def _warn_positions(ra, dec):
    span_ra = float(np.ptp(ra))
    span_dec = float(np.ptp(dec))
    if span_dec > 10 and np.all(dec >= 0) and np.all(ra >= 0) and min(span_ra, span_dec) > 10 and ra.max() <= 60 and dec.max() <= 60:
        warnings.warn(
            f"catalogue positions span {span_ra:.3g} x {span_dec:.3g} deg starting near 0: they look like "
            "arcmin offsets given as degrees; convert with /60 and add the field centre",
            CatalogWarning,
            stacklevel=3,
        )
    elif ra.max() <= 2 * np.pi + 1e-9 and np.all(np.abs(dec) <= np.pi / 2 + 1e-9) and span_ra > 0.2 and span_ra < 2 * np.pi:
        warnings.warn(
            f"catalogue ra spans [{ra.min():.3g}, {ra.max():.3g}], dec [{dec.min():.3g}, {dec.max():.3g}]: "
            "they look like radians given as degrees; convert with numpy.degrees",
            CatalogWarning,
            stacklevel=3,
        )


def read_catalog(
    path,
    *,
    columns=None,
    center=None,
    sigma_obs=None,
    validate: bool = True,
) -> xr.Dataset:
    """Read a halo catalogue from CSV, whitespace text, NetCDF or Zarr.

    Parameters
    ----------
    path : str or path-like
        ``.csv`` (header with variable names), ``.txt``/``.dat`` (whitespace; header optional),
        ``.nc`` or ``.zarr``.
    columns : sequence of str or "original", optional
        Column names for text files without a header.  ``"original"`` is the original study's
        layout ``z lum_obs mass_true ra_arcmin dec_arcmin``.  Columns named ``ra_arcmin`` /
        ``dec_arcmin`` are tangent-plane offsets in arcmin, converted to ra/dec (degrees) about
        ``center``; a ``mass`` column is read as ``mass_true``; a ``halo``/``id`` column as ids.
    center : (float, float), optional
        Field centre (ra, dec) in degrees for arcmin offsets (default :data:`DEFAULT_FIELD`).
    sigma_obs : float, optional
        Constant observational scatter to attach as ``sigma_obs``.
    validate : bool, default True
        Run :func:`validate_catalog` on the result.
    """
    path_s = str(path)
    p = Path(path_s)
    suffix = p.suffix.lower()
    if suffix == ".zarr" or suffix in (".nc", ".nc4", ".h5"):
        if not p.exists() and "://" not in path_s:
            raise CatalogError(f"catalogue file {path_s!r} does not exist")
        ds = xr.open_zarr(path_s, consolidated=None).load() if suffix == ".zarr" else xr.load_dataset(path_s)
        if "halo" not in ds.dims:
            dims = list(ds.dims)
            if len(dims) == 1:
                ds = ds.rename({dims[0]: "halo"})
        cols = {k: ds[k].values for k in ds.variables if ds[k].dims == ("halo",) and k != "halo"}
        halo = ds["halo"].values if "halo" in ds.coords else None
        attrs = dict(ds.attrs)
    else:
        if not p.exists():
            raise CatalogError(f"catalogue file {path_s!r} does not exist")
        cols, halo = _read_text(p, columns)
        attrs = {}
    attrs.setdefault("source", p.name)
    return _assemble(cols, halo, center=center, sigma_obs=sigma_obs, attrs=attrs, validate=validate)


def _read_text(p: Path, columns):
    import pandas as pd

    sep = "," if p.suffix.lower() == ".csv" else r"\s+"
    with open(p) as f:
        first = f.readline().replace(",", " ").split()
    try:
        [float(x) for x in first]
        has_header = False
    except ValueError:
        has_header = True
    if columns == "original":
        columns = ORIGINAL_COLUMNS
    if has_header:
        df = pd.read_csv(p, sep=sep, comment="#")
        if columns is not None:
            df.columns = list(columns)
    else:
        if columns is None:
            raise CatalogError(
                f"{p.name}: no header line; pass columns=[...] (e.g. columns='original' for "
                f"{' '.join(ORIGINAL_COLUMNS)})"
            )
        df = pd.read_csv(p, sep=sep, header=None, comment="#")
        if df.shape[1] != len(columns):
            raise CatalogError(f"{p.name}: {df.shape[1]} columns in the file but {len(columns)} names given: {list(columns)}")
        df.columns = list(columns)
    cols = {str(c).strip(): df[c].to_numpy() for c in df.columns}
    halo = None
    for key in ("halo", "id", "halo_id"):
        if key in cols:
            halo = cols.pop(key)
            break
    if "mass" in cols and "mass_true" not in cols:
        cols["mass_true"] = cols.pop("mass")
    return cols, halo


def _assemble(cols, halo, *, center, sigma_obs, attrs, validate):
    if "ra_arcmin" in cols or "dec_arcmin" in cols:
        if not ("ra_arcmin" in cols and "dec_arcmin" in cols):
            raise CatalogError("catalogue: ra_arcmin and dec_arcmin must be given together")
        c = center or (DEFAULT_FIELD["ra"], DEFAULT_FIELD["dec"])
        ra, dec = offsets_to_radec(cols.pop("ra_arcmin"), cols.pop("dec_arcmin"), c)
        cols["ra"], cols["dec"] = ra, dec
        attrs.setdefault("field_center_ra", float(c[0]))
        attrs.setdefault("field_center_dec", float(c[1]))
    n = len(next(iter(cols.values()))) if cols else 0
    if sigma_obs is not None:
        cols["sigma_obs"] = np.full(n, float(sigma_obs))
    halo = np.arange(n, dtype=np.int64) if halo is None else np.asarray(halo)
    coords = {"halo": halo}
    for k in ("ra", "dec"):
        if k in cols:
            coords[k] = ("halo", np.asarray(cols.pop(k)), dict(_VAR_ATTRS[k]))
    ds = xr.Dataset(
        {k: ("halo", np.asarray(v), dict(_VAR_ATTRS.get(k, {}))) for k, v in cols.items()},
        coords=coords,
        attrs=attrs,
    )
    if validate:
        validate_catalog(ds)
    return ds


def offsets_to_radec(x_arcmin, y_arcmin, center):
    """Inverse gnomonic projection of tangent-plane offsets (arcmin) about ``center`` (deg).

    ``x`` increases towards east (increasing ra), ``y`` towards north.  Returns ra in [0, 360)
    and dec, in degrees.
    """
    ra0, dec0 = np.radians(center[0]), np.radians(center[1])
    x = np.radians(np.asarray(x_arcmin, dtype=float) / 60.0)
    y = np.radians(np.asarray(y_arcmin, dtype=float) / 60.0)
    rho = np.hypot(x, y)
    c = np.arctan(rho)
    with np.errstate(invalid="ignore", divide="ignore"):
        sin_dec = np.cos(c) * np.sin(dec0) + np.where(rho > 0, y * np.sin(c) * np.cos(dec0) / rho, 0.0)
        dec = np.arcsin(np.clip(sin_dec, -1, 1))
        ra = ra0 + np.arctan2(x * np.sin(c), rho * np.cos(dec0) * np.cos(c) - y * np.sin(dec0) * np.sin(c))
    return np.degrees(ra) % 360.0, np.degrees(dec)


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


def seed_field(*, seed: int = 0, center=None, size_arcmin=None, sigma_obs: float | None = None) -> xr.Dataset:
    """The original study's field: 115,919 halos with (z, lum_obs), shipped with the package.

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
) -> xr.Dataset:
    """A mock catalogue drawn from the model with known hyperparameters.

    Redshifts are resampled from ``z`` (default: the seed field's redshifts), masses drawn from
    the prior P(M | z) at each halo's redshift (continuous inverse-CDF in ln M over the mass
    grid), ln L ~ N(ln μ_L, S²), ln L_obs ~ N(ln L, σ_obs²); positions uniform in a square
    field.  The true hyperparameters are recorded in ``attrs`` as ``true_<name>``.

    Parameters
    ----------
    n_halos : int
        Number of halos.
    seed : int or None
        Seed for every draw.
    truth : dict, optional
        Hyperparameters (alpha1..alpha4, S); default the Reddick (2013) central values.
    prior : MassPrior or DataArray, optional
        Mass prior (default :class:`~massmap_xr.prior.TinkerPrior`).
    mass : array_like, optional
        Mass grid (M_sun) the prior is drawn on (default 400 points, 1e10 to 10^15.5).
    sigma_obs : float, default 0.05
        Observational scatter used to draw L_obs (recorded as ``attrs["sigma_obs"]``).
    z : array_like, optional
        Redshifts to resample from.
    center, size_arcmin : optional
        Field centre (ra, dec) in degrees and side in arcmin (default (150, 2) and 40′).

    Examples
    --------
    >>> cat = mock_catalog(100, seed=1)
    >>> sorted(cat.data_vars)
    ['lum_obs', 'mass_true', 'z']
    """
    from massmap_xr.hyper import REDDICK2013
    from massmap_xr.prior import as_prior, default_mass_grid

    if not isinstance(n_halos, (int, np.integer)) or n_halos < 1:
        raise CatalogError(f"mock_catalog: n_halos must be a positive integer, got {n_halos!r}")
    truth = {k: REDDICK2013[k][0] for k in HYPER_NAMES} | dict(truth or {})
    unknown = set(truth) - set(HYPER_NAMES)
    if unknown:
        raise CatalogError(f"mock_catalog: unknown hyperparameter(s) {sorted(unknown)}; use {list(HYPER_NAMES)}")
    rng = np.random.default_rng(seed)
    prior = as_prior(prior)
    mass = default_mass_grid() if mass is None else np.asarray(mass, dtype=float)
    zpool = seed_redshifts() if z is None else np.asarray(z, dtype=float)
    zs = rng.choice(zpool, size=int(n_halos), replace=True)
    log_m = np.log(mass)
    log_p = prior.log_density(zs, mass) + log_m  # density per unit ln M
    masses = _draw_from_log_density(log_m, log_p, rng.uniform(size=zs.size))
    mu = mean_log_luminosity(masses, zs, truth["alpha1"], truth["alpha2"], truth["alpha3"], truth["alpha4"])
    log_l = mu + truth["S"] * rng.standard_normal(zs.size)
    log_lobs = log_l + sigma_obs * rng.standard_normal(zs.size)
    ra, dec = uniform_field_positions(zs.size, rng, center=center, size_arcmin=size_arcmin)
    c = center or (DEFAULT_FIELD["ra"], DEFAULT_FIELD["dec"])
    attrs = {f"true_{k}": float(v) for k, v in truth.items()}
    attrs.update(
        source="mock_catalog", seed=str(seed), sigma_obs=float(sigma_obs),
        field_center_ra=float(c[0]), field_center_dec=float(c[1]),
        field_size_arcmin=float(DEFAULT_FIELD["size_arcmin"] if size_arcmin is None else size_arcmin),
        mass_min=float(mass[0]), mass_max=float(mass[-1]),
    )
    return make_catalog(zs, np.exp(log_lobs), ra, dec, mass_true=masses, attrs=attrs)


def _draw_from_log_density(x, log_p, u):
    """Inverse-CDF draws, one per row of ``log_p`` (density in x, piecewise linear), as exp(x)."""
    p = np.exp(log_p - log_p.max(axis=1, keepdims=True))
    cdf = np.concatenate([np.zeros((p.shape[0], 1)), np.cumsum(0.5 * (p[:, 1:] + p[:, :-1]) * np.diff(x), axis=1)], axis=1)
    cdf /= cdf[:, -1:]
    out = np.empty(p.shape[0])
    for i in range(p.shape[0]):  # rows differ; np.interp is fast per row
        out[i] = np.interp(u[i], cdf[i], x)
    return np.exp(out)
