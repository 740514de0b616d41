"""The catalogue schema: what a halo catalogue is, how to build one from arrays, and its checks.

A catalogue is an :class:`xarray.Dataset` with dimension ``halo`` (integer ids as its
coordinate), data variables ``z`` (redshift) and ``lum_obs`` (observed luminosity, > 0),
optional ``mass_true`` (M_sun) and ``sigma_obs`` (per-halo observational scatter, natural
log), optional redshift uncertainties (``z_err(halo)``: Gaussian σ_z, 0 for spectroscopic halos;
or ``pz(halo, pz_z)``: a tabulated p(z) per halo on the redshift coordinate ``pz_z``, a row of
NaN meaning none, see :mod:`massmap_xr.model.redshift`), and sky positions ``ra``, ``dec`` in degrees stored as coordinates along ``halo`` so that
they ride along with every per-halo result (posteriors, samples, summaries).  Positions given
as tangent-plane offsets in arcmin are converted about a field centre (:func:`offsets_to_radec`).
"""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

from massmap_xr.errors import CatalogError, CatalogWarning, describe_offenders, format_offenders
from massmap_xr.geometry import tan_inverse, wrap_ra_degrees

__all__ = [
    "REQUIRED",
    "DEFAULT_FIELD",
    "VAR_ATTRS",
    "make_catalog",
    "validate_catalog",
    "check_sigma_obs",
    "check_position_units",
    "check_field_center",
    "offsets_to_radec",
    "wrap_ra_degrees",
]

REQUIRED = ("z", "lum_obs", "ra", "dec")
#: Default field of mocks: centre (ra, dec) in degrees and side in arcmin.  The original
#: light cone has no sky position; this centre is an arbitrary equatorial field.
DEFAULT_FIELD = {"ra": 150.0, "dec": 2.0, "size_arcmin": 40.0}

#: attributes (long_name, units) of the catalogue variables
VAR_ATTRS = {
    "z": {"long_name": "redshift", "units": "1"},
    "lum_obs": {"long_name": "observed luminosity", "units": "solLum"},
    "ra": {"long_name": "right ascension", "units": "deg"},
    "dec": {"long_name": "declination", "units": "deg"},
    "mass_true": {"long_name": "true halo mass", "units": "solMass"},
    "sigma_obs": {"long_name": "observational log-normal scatter of L_obs (natural log)", "units": "1"},
    "z_err": {"long_name": "Gaussian redshift uncertainty (0 = spectroscopic)", "units": "1"},
    "z_true": {"long_name": "true redshift", "units": "1"},
    "pz": {"long_name": "redshift probability density p(z) on pz_z (any normalisation)", "units": "1"},
}


def make_catalog(
    z, lum_obs, ra, dec, *, halo=None, mass_true=None, sigma_obs=None, attrs=None, wrap_ra: bool = False
) -> xr.Dataset:
    """Assemble a catalogue Dataset from arrays (validated).

    Parameters
    ----------
    z, lum_obs : array_like
        Redshift and observed luminosity (L_sun, linear) per halo.
    ra, dec : array_like
        Sky position in degrees.
    halo : array_like of int, optional
        Halo ids (default 0..n-1).
    mass_true : array_like, optional
        True mass in M_sun (mocks).
    sigma_obs : float or array_like, optional
        Observational scatter of ln L_obs (natural log), one value or one per halo.
    attrs : dict, optional
        Dataset attributes.
    wrap_ra : bool, default False
        Wrap ``ra`` into [0, 360) degrees first (for longitudes given in (-180, 180]).

    Raises
    ------
    CatalogError
        If the arrays do not have one entry per halo, or the catalogue breaks a rule of
        :func:`validate_catalog`.

    Examples
    --------
    >>> cat = make_catalog([0.1, 0.5], [2e4, 3e4], [-10.0, 20.0], [1.0, 2.0], wrap_ra=True)
    >>> cat.ra.values.tolist()
    [350.0, 20.0]
    """
    arrays = {"z": z, "lum_obs": lum_obs, "ra": ra, "dec": dec}
    if mass_true is not None:
        arrays["mass_true"] = mass_true
    if halo is not None:
        arrays["halo"] = halo
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    not_1d = [f"{k} has shape {a.shape}" for k, a in arrays.items() if a.ndim != 1]
    if not_1d:
        raise CatalogError(
            f"make_catalog: every variable must be a 1-D array with one entry per halo; {', '.join(not_1d)}; "
            "pass one value per halo (numpy.atleast_1d for a single halo)"
        )
    n = arrays["z"].size
    lengths = {k: a.size for k, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise CatalogError(
            f"make_catalog: variables have different lengths {lengths}; every variable needs one entry per halo"
        )
    if halo is None:
        arrays["halo"] = np.arange(n, dtype=np.int64)
    if sigma_obs is not None:
        try:
            arrays["sigma_obs"] = np.broadcast_to(np.asarray(sigma_obs, dtype=float), (n,)).copy()
        except (TypeError, ValueError):
            raise CatalogError(
                f"make_catalog: sigma_obs must be a number or one number per halo ({n}), got {sigma_obs!r:.80}"
            ) from None
    if wrap_ra:
        arrays["ra"] = wrap_ra_degrees(arrays["ra"])
    ds = xr.Dataset(
        {k: ("halo", v, dict(VAR_ATTRS[k])) for k, v in arrays.items() if k not in ("halo", "ra", "dec")},
        coords={"halo": arrays["halo"], "ra": ("halo", arrays["ra"], dict(VAR_ATTRS["ra"])),
                "dec": ("halo", arrays["dec"], dict(VAR_ATTRS["dec"]))},
        attrs=dict(attrs or {}),
    )
    validate_catalog(ds)
    return ds


def _numeric(ds, name):
    return ds[name].dtype.kind in "iuf"


#: angle units that are not degrees, and the conversion to suggest for positions labelled with them
_ANGLE_FIX = {
    "rad": "numpy.degrees(...)", "radian": "numpy.degrees(...)", "radians": "numpy.degrees(...)",
    "arcmin": "divide by 60", "arcminute": "divide by 60", "'": "divide by 60",
    "arcsec": "divide by 3600", "arcsecond": "divide by 3600", '"': "divide by 3600",
    "hourangle": "multiply by 15", "h": "multiply by 15", "hour": "multiply by 15",
}


def _non_numeric_mask(values: np.ndarray) -> np.ndarray:
    """True where an entry of a non-numeric array cannot be read as a number."""
    out = np.zeros(values.shape, dtype=bool)
    for i, v in enumerate(values.tolist()):
        if isinstance(v, (bool, np.bool_)):
            out[i] = True
            continue
        try:
            float(v)
        except (TypeError, ValueError, OverflowError):
            out[i] = True
    return out


def validate_catalog(
    cat: xr.Dataset,
    *,
    z_range: tuple[float, float] | None = None,
    require_positions: bool = True,
    warn: bool = True,
) -> None:
    """Check a catalogue; raise :class:`CatalogError` listing every rule broken.

    Rules: at least one halo; required variables present (``z``, ``lum_obs``, ``ra``, ``dec``)
    along ``halo``; integer, unique halo ids; numeric (integer or float) values; finite;
    ``lum_obs`` > 0; ``z`` >= 0 (and inside ``z_range`` if given); ``ra`` in [0, 360) degrees;
    ``dec`` in [-90, 90] degrees; ``ra``/``dec`` not labelled with another angle unit;
    ``sigma_obs`` > 0; ``mass_true`` > 0; ``z_err`` >= 0 and finite; ``pz`` (halo, pz_z) finite and
    >= 0 per row (or NaN throughout) on a strictly increasing ``pz_z`` >= 0.  Each broken rule is reported once, with the number
    of halos breaking it, the first few halo ids and values, and what to do; all of them are in
    one :class:`CatalogError` (also available one by one as its ``problems``).

    A valid catalogue whose positions look like arcmin offsets or radians given as degrees
    produces a :class:`CatalogWarning` (see :func:`check_position_units`).  The catalogue is
    not modified.

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

    Raises
    ------
    CatalogError
        If any rule is broken.

    Examples
    --------
    >>> cat = make_catalog([0.1, 0.5], [2e4, 3e4], [150.0, 150.1], [2.0, 2.1])
    >>> validate_catalog(cat)  # valid: returns None
    >>> try:
    ...     validate_catalog(cat.assign(lum_obs=("halo", [2e4, -1.0])))
    ... except CatalogError as err:
    ...     print(err.problems[0])
    lum_obs: must be > 0 (a linear luminosity in L_sun, not a magnitude or a log); broken by 1 of 2 halos (first ids: 1; values: -1); drop these halos, or convert magnitudes / log luminosities to linear luminosity
    """
    if not isinstance(cat, xr.Dataset):
        raise CatalogError(
            f"catalogue must be an xarray.Dataset with dimension 'halo', got {type(cat).__name__}; "
            "build one with make_catalog(z, lum_obs, ra, dec) or read_catalog(path)"
        )
    if "halo" not in cat.dims:
        raise CatalogError(
            f"catalogue: no 'halo' dimension (dims are {tuple(cat.dims)}); rename the row dimension to 'halo', "
            "e.g. cat.rename({'index': 'halo'})"
        )
    n = cat.sizes["halo"]
    if n == 0:
        raise CatalogError(
            "catalogue is empty (0 halos): nothing to compute; check the file or the selection that produced it"
        )
    required = REQUIRED if require_positions else ("z", "lum_obs")
    missing = [k for k in required if k not in cat.variables]
    if missing:
        raise CatalogError(
            f"catalogue: missing required variable(s) {missing}; a catalogue needs {list(required)} "
            f"along 'halo' (ra/dec in degrees), found {sorted(map(str, cat.variables))}; add or rename them "
            "(read_catalog reads 'mass' as mass_true, 'id' as halo, and arcmin offsets named "
            "ra_arcmin/dec_arcmin as ra/dec)"
        )
    ids = np.asarray(cat["halo"].values)
    problems: list[str] = []

    def offenders(mask, vals=None):
        return describe_offenders(ids, mask, values=vals)

    if ids.dtype.kind not in "iu":
        problems.append(
            f"halo: ids must be integers, have dtype {ids.dtype}; assign integer ids, e.g. "
            "cat.assign_coords(halo=numpy.arange(cat.sizes['halo']))"
        )
    else:
        uniq, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():
            dup = uniq[counts > 1]
            problems.append(
                f"halo: ids must be unique; {dup.size} id(s) repeated ({int(counts[counts > 1].sum())} of {n} halos), "
                f"first: {format_offenders(dup)}; drop duplicated rows or renumber the halos"
            )

    values: dict[str, np.ndarray] = {}
    for k in (*required, *(v for v in ("sigma_obs", "mass_true", "z_err", "z_true") if v in cat.variables)):
        v = cat[k]
        if v.dims != ("halo",):
            problems.append(
                f"{k}: must be 1-D along 'halo', has dims {v.dims}; select or squeeze the extra dimension(s)"
            )
            continue
        if not _numeric(cat, k):
            raw = np.asarray(v.values)
            text = f"{k}: must be numeric (integer or float), has dtype {raw.dtype}"
            if raw.dtype.kind in "OUS":
                bad = _non_numeric_mask(raw)
                if bad.any():
                    text += f"; entries that are not numbers in {offenders(bad, raw)}; fix or drop these rows"
                else:
                    text += f"; the values are numbers stored as {raw.dtype}: convert with cat['{k}'].astype(float)"
            else:
                text += f"; convert to float (cat['{k}'].astype(float)) if the values are meant as numbers"
            problems.append(text)
            continue
        a = np.asarray(v.values, dtype=float)
        bad = ~np.isfinite(a)
        if bad.any():
            problems.append(f"{k}: must be finite; NaN or inf in {offenders(bad, a)}; drop or fix these halos")
            continue
        values[k] = a

    for k in ("ra", "dec"):
        if k in cat.variables:
            units = str(cat[k].attrs.get("units", "")).strip()
            if units.lower() in _ANGLE_FIX:
                problems.append(
                    f"{k}: labelled with units {units!r}, but positions must be in degrees; "
                    f"convert ({_ANGLE_FIX[units.lower()]}) and set units='deg'"
                )

    rules = [
        ("lum_obs", lambda a: a <= 0, "must be > 0 (a linear luminosity in L_sun, not a magnitude or a log)",
         "drop these halos, or convert magnitudes / log luminosities to linear luminosity"),
        ("z", lambda a: a < 0, "must be >= 0", "fix or drop these halos"),
        ("ra", lambda a: (a < 0) | (a >= 360), "must be in [0, 360) degrees", None),
        ("dec", lambda a: (a < -90) | (a > 90), "must be in [-90, 90] degrees", None),
        ("sigma_obs", lambda a: a <= 0, "must be > 0 (scatter of ln L_obs)",
         "give every halo a positive scatter, or drop the variable to use build_posterior's sigma_obs"),
        ("mass_true", lambda a: a <= 0, "must be > 0 (M_sun, not log10 M)", "convert log10 masses with 10**x"),
        ("z_err", lambda a: a < 0, "must be >= 0 (Gaussian redshift error; 0 = spectroscopic)",
         "fix these halos, or set 0 for spectroscopic redshifts"),
    ]
    for k, rule, text, todo in rules:
        if k not in values:
            continue
        a = values[k]
        bad = rule(a)
        if not bad.any():
            continue
        if k == "ra":
            todo = _ra_hint(a[bad])
        elif k == "dec":
            todo = _dec_hint(a, values.get("ra"))
        problems.append(f"{k}: {text}; broken by {offenders(bad, a)}; {todo}")
    if z_range is not None and "z" in values:
        lo, hi = z_range
        z = values["z"]
        bad = ((z < lo) | (z > hi)) & (z >= 0)  # negative z is reported above
        if bad.any():
            problems.append(
                f"z: outside the prior's redshift range [{lo:g}, {hi:g}] for {offenders(bad, z)}; use a prior "
                "tabulated over these redshifts (e.g. TinkerPrior(z_max=...)) or drop these halos"
            )
    if "pz" in cat.variables:
        problems.extend(_pz_problems(cat, offenders))
    if problems:
        raise CatalogError(
            f"invalid catalogue ({n} halos), {len(problems)} problem(s):\n  - " + "\n  - ".join(problems),
            problems=problems,
        )
    if warn and require_positions:
        check_position_units(values["ra"], values["dec"], stacklevel=3)


def _pz_problems(cat: xr.Dataset, offenders) -> list[str]:
    """Rules of a tabulated p(z): dims (halo, pz_z), a strictly increasing finite pz_z, rows >= 0 and finite
    (or NaN throughout: no p(z) for that halo) with some positive weight."""
    v = cat["pz"]
    if sorted(v.dims) != ["halo", "pz_z"]:
        return [f"pz: must have dims ('halo', 'pz_z') (p(z) per halo on the redshift grid pz_z), has {v.dims}; "
                "rename its redshift dimension to 'pz_z'"]
    grid = np.asarray(cat["pz_z"].values, dtype=float) if "pz_z" in cat.coords else None
    if grid is None or grid.size < 2 or not np.all(np.isfinite(grid)) or np.any(np.diff(grid) <= 0) or grid[0] < 0:
        return ["pz_z: the redshift grid of pz must be a coordinate of >= 2 finite, strictly increasing redshifts "
                ">= 0; sort the grid (and pz with it) and drop repeated values"]
    a = np.asarray(v.transpose("halo", "pz_z").values, dtype=float)
    none = np.all(np.isnan(a), axis=1)
    bad = ~none & (np.any(~np.isfinite(a) | (a < 0), axis=1) | ~(np.nansum(a, axis=1) > 0))
    if bad.any():
        return [f"pz: every row must be finite and >= 0 with some positive value (or NaN throughout for a halo "
                f"without p(z)); broken by {offenders(bad)}; fix these rows or set them to NaN"]
    return []


def _ra_hint(bad: np.ndarray) -> str:
    hints = []
    if np.all((bad >= -360) & (bad < 720)):
        hints.append(
            "these look like longitudes in another convention, e.g. (-180, 180]: pass wrap_ra=True to "
            "read_catalog / make_catalog, or use ra % 360"
        )
    if np.any(np.abs(bad) >= 720):
        hints.append("values this large are not degrees: arcmin (divide by 60) or arcsec (divide by 3600)?")
    if np.any(bad < 0):
        hints.append(
            "tangent-plane offsets in arcmin belong in columns ra_arcmin/dec_arcmin, which read_catalog "
            "converts about the field centre"
        )
    return "; ".join(hints)


def _dec_hint(dec: np.ndarray, ra: np.ndarray | None) -> str:
    text = "dec cannot be wrapped: check the units (arcmin: divide by 60; radians: numpy.degrees)"
    if ra is not None and np.all(np.abs(ra) <= 90) and np.all((dec >= 0) & (dec < 360)):
        text += "; ra and dec look swapped"
    return text + "; tangent-plane offsets in arcmin belong in columns ra_arcmin/dec_arcmin"


def _circular_range(a: np.ndarray, period: float) -> tuple[float, float]:
    """Start and length of the shortest arc (modulo ``period``) holding every value of ``a``."""
    s = np.sort(np.mod(a, period))
    gaps = np.diff(np.concatenate([s, s[:1] + period]))
    i = int(np.argmax(gaps))
    return float(s[(i + 1) % s.size]), float(period - gaps[i])


def _anchored_at_zero(lo: float, hi: float) -> bool:
    """Whether [lo, hi] starts at zero or is centred on zero (to 10 % of its length)."""
    span = hi - lo
    return bool((0.0 <= lo <= 0.1 * span) or (lo < 0.0 < hi and abs(lo + hi) / 2 <= 0.1 * span))


def check_position_units(ra, dec, *, stacklevel: int = 2) -> str | None:
    """Warn if valid ra/dec (degrees) look like arcmin offsets or radians given as degrees.

    The checks look at the field as a whole (at least 3 halos, not all at one position):

    - *arcmin offsets*: both axes span 5 to 90 "degrees" (a 5′ to 90′ field), with spans within a
      factor 4 of each other, and both start at zero or are centred on zero (to 10 % of the
      span), like tangent-plane offsets from a field corner or centre.  ``ra`` is taken on the
      circle, so a field straddling ra = 0 (e.g. 359.7 to 0.3) is a 0.6-degree field, not a
      360-degree one.
    - *radians*: every ra in [0, 2π] and |dec| <= π/2, and the field is either tiny as degrees
      (angular extent < 0.05, i.e. under 3′: a field of a few degrees in radians) or a wide
      survey in radians (ra extent > π and dec extent > π/4, ra taken on the radian circle).

    An ordinary field in degrees (e.g. 40′ at ra = 150, one straddling ra = 0, or any square field
    from 5′ to 4° wide elsewhere) or a wide survey in degrees does not trigger either check.  A
    genuine field in degrees that does (a field 5° to 90° wide with a corner at, or centred on,
    ra = dec = 0; a sub-3′ field within a few degrees of ra = dec = 0) can silence the warning
    with ``warnings.filterwarnings("ignore", category=CatalogWarning)``.

    Parameters
    ----------
    ra, dec : array_like
        Valid positions in degrees (ra in [0, 360), dec in [-90, 90]).
    stacklevel : int, default 2
        Passed to :func:`warnings.warn`.

    Returns
    -------
    str or None
        ``"arcmin"`` or ``"radians"`` if a warning was emitted, else None.
    """
    ra = np.asarray(ra, dtype=float)
    dec = np.asarray(dec, dtype=float)
    if ra.size < 3:
        return None
    ra_start, ra_span = _circular_range(ra, 360.0)
    ra_lo = ra_start if ra_start + ra_span <= 360.0 else ra_start - 360.0
    dec_lo, dec_hi = float(dec.min()), float(dec.max())
    dec_span = dec_hi - dec_lo
    if max(ra_span, dec_span) == 0.0:
        return None
    suffix = (
        "; if they really are degrees, silence this with "
        "warnings.filterwarnings('ignore', category=massmap_xr.errors.CatalogWarning)"
    )
    if (
        5.0 <= ra_span <= 90.0
        and 5.0 <= dec_span <= 90.0
        and max(ra_span, dec_span) <= 4.0 * min(ra_span, dec_span)
        and _anchored_at_zero(ra_lo, ra_lo + ra_span)
        and _anchored_at_zero(dec_lo, dec_hi)
    ):
        warnings.warn(
            f"catalogue positions span {ra_span:.3g} x {dec_span:.3g} deg from (ra, dec) = ({ra_lo:.3g}, "
            f"{dec_lo:.3g}): they look like tangent-plane offsets in arcmin given as degrees; name the columns "
            "ra_arcmin/dec_arcmin (read_catalog converts them about the field centre) or convert with "
            "massmap_xr.catalog.offsets_to_radec" + suffix,
            CatalogWarning,
            stacklevel=stacklevel,
        )
        return "arcmin"
    in_box = ra.max() <= 2 * np.pi * (1 + 1e-12) and np.abs(dec).max() <= np.pi / 2 * (1 + 1e-12)
    if in_box:
        _, ra_span_rad = _circular_range(ra, 2 * np.pi)
        extent = max(ra_span_rad * np.cos((dec_lo + dec_hi) / 2), dec_span)  # angular size, read as radians
        if extent < 0.05 or (ra_span_rad > np.pi and dec_span > np.pi / 4):
            warnings.warn(
                f"catalogue positions lie within ra [{ra.min():.4g}, {ra.max():.4g}], dec [{dec_lo:.4g}, "
                f"{dec_hi:.4g}] (extent {ra_span_rad:.3g} x {dec_span:.3g}): they look like radians given as "
                "degrees; convert with numpy.degrees" + suffix,
                CatalogWarning,
                stacklevel=stacklevel,
            )
            return "radians"
    return None


def check_field_center(center) -> tuple[float, float]:
    """A field centre (ra, dec) in degrees, ra wrapped into [0, 360); :data:`DEFAULT_FIELD`'s for None."""
    if center is None:
        return DEFAULT_FIELD["ra"], DEFAULT_FIELD["dec"]
    try:
        ra0, dec0 = (float(v) for v in center)
    except (TypeError, ValueError):
        raise CatalogError(f"center must be (ra, dec) in degrees, got {center!r}") from None
    if not (np.isfinite(ra0) and np.isfinite(dec0) and -90.0 <= dec0 <= 90.0):
        raise CatalogError(f"center must be finite with dec in [-90, 90] degrees, got (ra, dec) = ({ra0}, {dec0})")
    return ra0 % 360.0, dec0


def offsets_to_radec(x_arcmin, y_arcmin, center):
    """Sky positions (deg) of tangent-plane offsets in arcmin (x east, y north) about ``center`` (deg)."""
    return tan_inverse(np.asarray(x_arcmin, dtype=float) / 60.0, np.asarray(y_arcmin, dtype=float) / 60.0,
                       center[0], center[1])



def check_sigma_obs(sigma_obs, catalog: xr.Dataset, who: str) -> float | None:
    """The one rule for the observational scatter: stated, never assumed.

    Returns ``None`` when the catalogue carries a per-halo ``sigma_obs`` (and none is given), the
    number when one is given for a catalogue without it; a :class:`CatalogError` that says how to
    give it when neither is there, when both are, or when the number is not finite and > 0.
    """
    has = "sigma_obs" in catalog.variables
    if sigma_obs is None:
        if not has:
            raise CatalogError(
                f"{who}: the catalogue has no 'sigma_obs' variable and no sigma_obs was given; the observational "
                "scatter of ln L_obs is never assumed: pass sigma_obs=<number> (natural-log scatter, e.g. 0.05; "
                "CLI --sigma-obs 0.05), or give each halo its own (read_catalog(..., sigma_obs=...), or map a "
                "column: columns={'sigma_obs': 'SIGMA_LNL'})"
            )
        return None
    try:
        value = float(sigma_obs)
    except (TypeError, ValueError):
        raise CatalogError(
            f"{who}: sigma_obs must be one number (the scatter of ln L_obs), got {sigma_obs!r}; give per-halo "
            "values as the catalogue variable 'sigma_obs'"
        ) from None
    if not (np.isfinite(value) and value > 0):
        raise CatalogError(f"{who}: sigma_obs must be > 0 and finite (natural-log scatter of L_obs), got {sigma_obs!r}")
    if has:
        raise CatalogError(
            f"{who}: the catalogue has its own 'sigma_obs' variable and sigma_obs={value:g} was given too; "
            "which one is meant is ambiguous: drop the argument to use the catalogue's per-halo values, or drop "
            "the variable (catalog.drop_vars('sigma_obs')) to use the number"
        )
    return value
