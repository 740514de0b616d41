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

from massmap_xr.errors import CatalogError, CatalogWarning, PriorError, describe_offenders, format_offenders
from massmap_xr.geometry import tan_inverse, wrap_ra_degrees
from massmap_xr.model.relation import HYPER_NAMES, mean_log_luminosity

__all__ = [
    "REQUIRED",
    "DEFAULT_FIELD",
    "make_catalog",
    "read_catalog",
    "check_position_units",
    "wrap_ra_degrees",
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
        {k: ("halo", v, dict(_VAR_ATTRS[k])) for k, v in arrays.items() if k not in ("halo", "ra", "dec")},
        coords={"halo": arrays["halo"], "ra": ("halo", arrays["ra"], dict(_VAR_ATTRS["ra"])),
                "dec": ("halo", arrays["dec"], dict(_VAR_ATTRS["dec"]))},
        attrs=dict(attrs or {}),
    )
    validate_catalog(ds)
    return ds


def _numeric(ds, name):
    return ds[name].dtype.kind in "iuf"


#: units strings accepted for positions, and the conversion to suggest for other angle units
_DEG_UNITS = {"deg", "degree", "degrees", "°", "degree_east", "degree_north", "degrees_east", "degrees_north"}
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
    ``sigma_obs`` > 0; ``mass_true`` > 0.  Each broken rule is reported once, with the number
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
    for k in (*required, *(v for v in ("sigma_obs", "mass_true") if v in cat.variables)):
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
    if problems:
        raise CatalogError(
            f"invalid catalogue ({n} halos), {len(problems)} problem(s):\n  - " + "\n  - ".join(problems),
            problems=problems,
        )
    if warn and require_positions:
        check_position_units(values["ra"], values["dec"], stacklevel=3)


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


def read_catalog(
    path,
    *,
    columns=None,
    center=None,
    sigma_obs=None,
    validate: bool = True,
    wrap_ra: bool = False,
) -> xr.Dataset:
    """Read a halo catalogue from CSV, whitespace text, NetCDF or Zarr.

    Parameters
    ----------
    path : str or path-like
        ``.csv`` (header with variable names), ``.txt``/``.dat`` (whitespace; header optional),
        ``.nc`` or ``.zarr``.
    columns : sequence of str or str, optional
        Column names for text files without a header (or to replace the header); a string is
        split at commas or whitespace.  ``"original"`` is the original study's layout
        ``z lum_obs mass_true ra_arcmin dec_arcmin``.  Columns named ``ra_arcmin`` /
        ``dec_arcmin`` are tangent-plane offsets in arcmin, converted to ra/dec (degrees) about
        ``center``; a ``mass`` column is read as ``mass_true``; a ``halo``/``id`` column as ids.
    center : (float, float), optional
        Field centre (ra, dec) in degrees for arcmin offsets (default :data:`DEFAULT_FIELD`).
    sigma_obs : float, optional
        Constant observational scatter to attach as ``sigma_obs``.
    validate : bool, default True
        Run :func:`validate_catalog` on the result.
    wrap_ra : bool, default False
        Wrap ``ra`` into [0, 360) degrees (for longitudes given in (-180, 180]).

    Raises
    ------
    CatalogError
        If the file does not exist, cannot be parsed, or (with ``validate``) the catalogue
        breaks a rule of :func:`validate_catalog`.
    """
    path_s = str(path)
    p = Path(path_s)
    suffix = p.suffix.lower()
    if suffix == ".zarr" or suffix in (".nc", ".nc4", ".h5"):
        if not p.exists() and "://" not in path_s:
            raise CatalogError(f"catalogue file {path_s!r} does not exist")
        kind = "Zarr" if suffix == ".zarr" else "NetCDF"
        try:
            with warnings.catch_warnings():  # Zarr 3 stores usually have no consolidated metadata
                warnings.filterwarnings("ignore", "Failed to open Zarr store with consolidated", RuntimeWarning)
                ds = xr.open_zarr(path_s, consolidated=None).load() if suffix == ".zarr" else xr.load_dataset(path_s)
        except Exception as exc:  # any reader failure is a bad input file
            raise CatalogError(
                f"catalogue {p.name!r} cannot be read as {kind} ({type(exc).__name__}: {exc}); check the path "
                "and the format (.csv/.txt text, .nc NetCDF, .zarr Zarr)"
            ) from exc
        if "halo" not in ds.dims:
            dims = list(ds.dims)
            if len(dims) == 1:
                ds = ds.rename({dims[0]: "halo"})
            else:
                raise CatalogError(
                    f"catalogue {p.name!r} has dims {tuple(dims)}; a catalogue has one row dimension named "
                    "'halo': rename it (e.g. ds.rename({'index': 'halo'})) and keep per-halo variables only"
                )
        cols = {k: ds[k].values for k in ds.variables if ds[k].dims == ("halo",) and k != "halo"}
        halo = ds["halo"].values if "halo" in ds.coords else None
        attrs = dict(ds.attrs)
    else:
        if not p.exists():
            raise CatalogError(f"catalogue file {path_s!r} does not exist")
        if p.is_dir():
            raise CatalogError(
                f"catalogue {path_s!r} is a directory; a Zarr catalogue needs the suffix .zarr, a text one is a file"
            )
        cols, halo = _read_text(p, columns)
        attrs = {}
    attrs.setdefault("source", p.name)
    return _assemble(cols, halo, center=center, sigma_obs=sigma_obs, attrs=attrs, validate=validate, wrap_ra=wrap_ra)


def _first_data_line(p: Path) -> list[str] | None:
    """Tokens of the first line that is neither blank nor a ``#`` comment (None if there is none)."""
    with open(p, encoding="utf-8") as f:
        for line in f:
            s = line.split("#", 1)[0].strip()
            if s:
                return s.replace(",", " ").split()
    return None


def _read_text(p: Path, columns):
    import pandas as pd

    sep = "," if p.suffix.lower() == ".csv" else r"\s+"
    if isinstance(columns, str) and columns != "original":
        columns = columns.replace(",", " ").split()
    if columns == "original":
        columns = ORIGINAL_COLUMNS
    if columns is not None:
        columns = [str(c).strip() for c in columns]
        if len(set(columns)) != len(columns):
            raise CatalogError(f"{p.name}: column names must be unique, got {columns}")
    try:
        first = _first_data_line(p)
    except UnicodeDecodeError as exc:
        raise CatalogError(
            f"{p.name}: not a text file ({exc.reason} at byte {exc.start}); catalogues are read from "
            ".csv/.txt text, .nc NetCDF or .zarr Zarr"
        ) from None
    if first is None:
        raise CatalogError(f"catalogue file {p.name!r} is empty (no data lines): nothing to compute")
    try:
        [float(x) for x in first]
        has_header = False
    except ValueError:
        has_header = True
    try:
        if has_header:
            df = pd.read_csv(p, sep=sep, comment="#", skip_blank_lines=True)
            if columns is not None:
                if df.shape[1] != len(columns):
                    raise CatalogError(
                        f"{p.name}: {df.shape[1]} columns in the file but {len(columns)} names given: {columns}"
                    )
                df.columns = columns
        else:
            if columns is None:
                raise CatalogError(
                    f"{p.name}: no header line; pass columns=[...] (e.g. columns='original' for "
                    f"{' '.join(ORIGINAL_COLUMNS)})"
                )
            df = pd.read_csv(p, sep=sep, header=None, comment="#", skip_blank_lines=True)
            if df.shape[1] != len(columns):
                raise CatalogError(
                    f"{p.name}: {df.shape[1]} columns in the file but {len(columns)} names given: {columns}"
                )
            df.columns = columns
    except CatalogError:
        raise
    except Exception as exc:  # pandas parser errors: ragged rows, bad quoting, ...
        raise CatalogError(
            f"{p.name}: cannot be parsed as a {'comma' if sep == ',' else 'whitespace'}-separated table "
            f"({type(exc).__name__}: {str(exc).strip()}); every row needs the same number of columns"
        ) from exc
    names = [str(c).strip() for c in df.columns]
    if len(set(names)) != len(names):
        raise CatalogError(f"{p.name}: column names must be unique, got {names}")
    cols = {name: df[c].to_numpy() for name, c in zip(names, df.columns, strict=True)}
    halo = None
    for key in ("halo", "id", "halo_id"):
        if key in cols:
            halo = cols.pop(key)
            break
    if "mass" in cols and "mass_true" not in cols:
        cols["mass_true"] = cols.pop("mass")
    return cols, halo


def _check_center(center) -> tuple[float, float]:
    if center is None:
        return DEFAULT_FIELD["ra"], DEFAULT_FIELD["dec"]
    try:
        ra0, dec0 = (float(v) for v in center)
    except (TypeError, ValueError):
        raise CatalogError(f"center must be (ra, dec) in degrees, got {center!r}") from None
    if not (np.isfinite(ra0) and np.isfinite(dec0) and -90.0 <= dec0 <= 90.0):
        raise CatalogError(f"center must be finite with dec in [-90, 90] degrees, got (ra, dec) = ({ra0}, {dec0})")
    return ra0 % 360.0, dec0


def _assemble(cols, halo, *, center, sigma_obs, attrs, validate, wrap_ra=False):
    if "ra_arcmin" in cols or "dec_arcmin" in cols:
        if not ("ra_arcmin" in cols and "dec_arcmin" in cols):
            raise CatalogError("catalogue: ra_arcmin and dec_arcmin must be given together")
        for k in ("ra_arcmin", "dec_arcmin"):
            if np.asarray(cols[k]).dtype.kind not in "iuf":
                raise CatalogError(
                    f"{k}: must be numeric (arcmin), has dtype {np.asarray(cols[k]).dtype}; fix the non-numeric rows"
                )
        c = _check_center(center)
        with np.errstate(invalid="ignore"):
            ra, dec = offsets_to_radec(cols.pop("ra_arcmin"), cols.pop("dec_arcmin"), c)
        cols["ra"], cols["dec"] = ra, dec
        attrs.setdefault("field_center_ra", float(c[0]))
        attrs.setdefault("field_center_dec", float(c[1]))
    n = len(next(iter(cols.values()))) if cols else 0
    if sigma_obs is not None:
        try:
            s = float(sigma_obs)
        except (TypeError, ValueError):
            raise CatalogError(f"sigma_obs must be a number, got {sigma_obs!r}") from None
        cols["sigma_obs"] = np.full(n, s)
    if wrap_ra and "ra" in cols:
        cols["ra"] = wrap_ra_degrees(cols["ra"])
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
    """Sky positions (deg) of tangent-plane offsets in arcmin (x east, y north) about ``center`` (deg)."""
    return tan_inverse(np.asarray(x_arcmin, dtype=float) / 60.0, np.asarray(y_arcmin, dtype=float) / 60.0,
                       center[0], center[1])


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
        Mass grid (M_sun) the prior is drawn on (default 400 points, 1e10 to 10^15.5).
    sigma_obs : float, default 0.05
        Observational scatter of ln L_obs (natural log, finite and > 0) used to draw L_obs and
        stored as the per-halo variable ``sigma_obs``.
    z : array_like, optional
        Redshifts to resample from (finite, inside the prior's redshift range).
    center, size_arcmin : optional
        Field centre (ra, dec) in degrees and side in arcmin (default (150, 2) and 40′).

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
    from massmap_xr.kernels.posterior import ZERO_PRIOR_LOG
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
    c = _check_center(center)
    prior = as_prior(prior)
    if mass is None:
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
    log_m = np.log(mass)
    log_p = prior.log_density(zs, mass)
    zero = log_p.max(axis=1) <= ZERO_PRIOR_LOG
    if zero.any():
        zz = np.unique(zs[zero])
        raise PriorError(
            f"mock_catalog: the prior is zero on the whole mass grid ({mass[0]:.3g} to {mass[-1]:.3g} M_sun) at "
            f"{zz.size} of the redshifts drawn (first: {', '.join(f'{v:.6g}' for v in zz[:5])}); masses cannot be "
            "drawn there: use a mass grid inside the prior's mass range or drop these redshifts from z"
        )
    log_p += log_m  # density per unit ln M
    masses = _draw_from_log_density(log_m, log_p, rng.uniform(size=zs.size))
    mu = mean_log_luminosity(masses, zs, truth["alpha1"], truth["alpha2"], truth["alpha3"], truth["alpha4"])
    log_l = mu + truth["S"] * rng.standard_normal(zs.size)
    log_lobs = log_l + sigma_obs * rng.standard_normal(zs.size)
    ra, dec = uniform_field_positions(zs.size, rng, center=c, size_arcmin=size_arcmin)
    attrs = {f"true_{k}": float(v) for k, v in truth.items()}
    attrs.update(
        source="mock_catalog", seed=str(seed), sigma_obs=float(sigma_obs),
        field_center_ra=float(c[0]), field_center_dec=float(c[1]),
        field_size_arcmin=float(DEFAULT_FIELD["size_arcmin"] if size_arcmin is None else size_arcmin),
        mass_min=float(mass[0]), mass_max=float(mass[-1]),
    )
    return make_catalog(zs, np.exp(log_lobs), ra, dec, mass_true=masses, sigma_obs=sigma_obs, attrs=attrs)


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


def _draw_from_log_density(x, log_p, u):
    """Inverse-CDF draws, one per row of ``log_p`` (density in x, piecewise linear), as exp(x)."""
    p = np.exp(log_p - log_p.max(axis=1, keepdims=True))
    cdf = np.concatenate([np.zeros((p.shape[0], 1)), np.cumsum(0.5 * (p[:, 1:] + p[:, :-1]) * np.diff(x), axis=1)], axis=1)
    cdf /= cdf[:, -1:]
    out = np.empty(p.shape[0])
    for i in range(p.shape[0]):  # rows differ; np.interp is fast per row
        out[i] = np.interp(u[i], cdf[i], x)
    return np.exp(out)
