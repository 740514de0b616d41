"""Reading halo catalogues: FITS, Parquet, HDF5, NetCDF, Zarr, ECSV, VOTable, CSV and whitespace text
(incl. the original study's layout), or an astropy Table, pandas DataFrame, xarray Dataset, numpy
structured array or dict of columns; one column mapping and one unit conversion for all of them."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import xarray as xr

from massmap_xr.catalog.schema import VAR_ATTRS, check_field_center, offsets_to_radec, validate_catalog
from massmap_xr.catalog.tables import (
    apply_column_map,
    columns_from_source,
    parse_column_map,
    read_table_file,
    table_suffix,
    to_package_units,
)
from massmap_xr.errors import CatalogError
from massmap_xr.geometry import wrap_ra_degrees

__all__ = ["ORIGINAL_COLUMNS", "read_catalog"]

#: the original study's text layout
ORIGINAL_COLUMNS = ("z", "lum_obs", "mass_true", "ra_arcmin", "dec_arcmin")


def read_catalog(
    source,
    *,
    columns=None,
    center=None,
    sigma_obs=None,
    validate: bool = True,
    wrap_ra: bool = False,
    hdu=None,
) -> xr.Dataset:
    """Read a halo catalogue from a file or an in-memory table.

    Parameters
    ----------
    source : path-like, astropy Table, pandas DataFrame, xarray Dataset, numpy structured array or dict
        A file: ``.fits``/``.fit``/``.fits.gz`` (a FITS binary table; its ``TUNIT`` units are
        honoured), ``.parquet`` (needs the ``parquet`` extra), ``.hdf5``/``.h5`` (NetCDF-4, or an
        astropy HDF5 table), ``.nc``, ``.zarr``, ``.ecsv``, ``.vot``, ``.csv`` (header with names)
        or ``.txt``/``.dat`` (whitespace; header optional).  Or the table itself: an astropy
        ``Table``/``QTable`` (column units honoured), a pandas ``DataFrame``, an xarray
        ``Dataset`` (``units`` attributes honoured), a numpy structured array, or a dict of
        column arrays.
    columns : mapping, sequence of str or str, optional
        A **mapping** from the package's names to the table's, e.g.
        ``{"z": "ZPHOT", "lum_obs": "LUM_R", "halo": "ID"}`` (the CLI's ``--columns
        z=ZPHOT,lum_obs=LUM_R``; a string with ``=`` is read as such a mapping).  Names not
        mapped are also found case-insensitively (``Z``, ``RA``, ``DEC``).  A **sequence** (or a
        comma/space separated string) names the columns of a text file without a header (or
        replaces its header); ``"original"`` is the original study's layout
        ``z lum_obs mass_true ra_arcmin dec_arcmin``.  Columns named ``ra_arcmin`` /
        ``dec_arcmin`` are tangent-plane offsets in arcmin, converted to ra/dec (degrees) about
        ``center``; a ``mass`` column is read as ``mass_true``; a ``halo``/``id`` column as ids.
    center : (float, float), optional
        Field centre (ra, dec) in degrees for arcmin offsets (default :data:`DEFAULT_FIELD`).
    sigma_obs : float, optional
        Constant observational scatter (natural log of L_obs) to attach as ``sigma_obs`` where the
        table has none (a table's own ``sigma_obs`` column wins; giving both is an error).
    validate : bool, default True
        Run :func:`validate_catalog` on the result.
    wrap_ra : bool, default False
        Wrap ``ra`` into [0, 360) degrees (for longitudes given in (-180, 180]).
    hdu : int or str, optional
        The FITS HDU holding the table (default: the first table HDU).

    Notes
    -----
    Units: where the source states a unit (FITS ``TUNIT``, astropy column units, Parquet/HDF5
    files written by astropy, ``units`` attributes of a Dataset) it is converted to the package's
    (ra/dec in degrees, e.g. from rad; ``lum_obs`` in L_sun, also from ``erg/s`` or
    ``dex(solLum)``; ``mass_true`` in M_sun; a ``sigma_obs`` in ``dex`` becomes the natural-log
    scatter, × ln 10); an impossible conversion is a :class:`CatalogError`.  A column without a
    unit is taken to be in the package's unit.  The conversions done are recorded in the
    attribute ``unit_conversions``.  Only 1-D (per-halo) columns are read.

    Raises
    ------
    CatalogError
        If the file does not exist, cannot be parsed, a mapped column is missing, a unit cannot be
        converted, or (with ``validate``) the catalogue breaks a rule of :func:`validate_catalog`.

    Examples
    --------
    >>> from astropy.table import Table
    >>> t = Table({"ZPHOT": [0.3, 0.5], "LUM": [1e10, 2e10], "RA": [150.0, 150.1], "DEC": [2.0, 2.1]})
    >>> cat = read_catalog(t, columns={"z": "ZPHOT", "lum_obs": "LUM"}, sigma_obs=0.05)
    >>> sorted(cat.data_vars)
    ['lum_obs', 'sigma_obs', 'z']
    """
    column_map, names = _split_columns(columns)
    from_memory = columns_from_source(source)
    units: dict = {}
    if from_memory is not None:
        if names is not None:
            raise CatalogError(
                "columns= as a list of names is for text files without a header; for a table give a mapping "
                "from the package's names to the table's, e.g. columns={'z': 'ZPHOT', 'lum_obs': 'LUM_R'}"
            )
        cols, units, attrs, halo = from_memory
        label = f"catalogue ({type(source).__name__})"
        attrs = dict(attrs)
        attrs.setdefault("source", type(source).__name__)
    else:
        cols, units, attrs, halo, label = _read_path(source, names, hdu)
    cols, units = apply_column_map(cols, units, column_map, label)
    if halo is None:
        for key in ("halo", "id", "halo_id"):
            if key in cols:
                halo = cols.pop(key)
                units.pop(key, None)
                break
    if "mass" in cols and "mass_true" not in cols:
        cols["mass_true"] = cols.pop("mass")
        if "mass" in units:
            units["mass_true"] = units.pop("mass")
    cols, done = to_package_units(cols, units, label)
    if done:
        attrs["unit_conversions"] = "; ".join(f"{k}: {v}" for k, v in done.items())
    if sigma_obs is not None and "sigma_obs" in cols:
        raise CatalogError(
            f"{label}: has its own sigma_obs column and sigma_obs={sigma_obs!r} was given as well; drop one "
            "(the column gives each halo its own scatter)"
        )
    return _assemble(cols, halo, center=center, sigma_obs=sigma_obs, attrs=attrs, validate=validate, wrap_ra=wrap_ra)


def _split_columns(columns):
    """(column mapping or None, header names or None) from ``columns=``."""
    if columns is None:
        return None, None
    if isinstance(columns, Mapping):
        bad = [k for k, v in columns.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            raise CatalogError(f"columns= mapping must be from names to column names (strings), got {dict(columns)}")
        return dict(columns), None
    if isinstance(columns, str) and "=" in columns:
        return parse_column_map(columns), None
    return None, columns


def _read_path(path, names, hdu):
    """(columns, units, attrs, halo ids or None, label) of a catalogue file."""
    path_s = str(path)
    p = Path(path_s)
    suffix = p.suffix.lower()
    remote = "://" in path_s
    fmt = table_suffix(path_s)
    if fmt is None and suffix in (".csv",) and p.is_file() and _is_ecsv(p):
        fmt = "ascii.ecsv"
    if fmt is None and suffix in (".h5",):
        fmt = "hdf5-or-netcdf"
    if not p.exists() and not remote:
        raise CatalogError(f"catalogue file {path_s!r} does not exist")
    units: dict = {}
    halo = None
    if fmt is not None and names is not None:
        raise CatalogError(
            f"{p.name}: columns= as a list of names is for text files without a header; map the package's "
            "names to the table's instead, e.g. columns={'z': 'ZPHOT'}"
        )
    if fmt == "hdf5-or-netcdf":
        try:
            ds = xr.load_dataset(path_s)
        except Exception:
            cols, units, attrs = read_table_file(path_s, "hdf5")
        else:
            cols, units, attrs, halo = columns_from_source(ds)
    elif fmt is not None:
        cols, units, attrs = read_table_file(path_s, fmt, hdu=hdu)
    elif suffix == ".zarr" or suffix in (".nc", ".nc4"):
        kind = "Zarr" if suffix == ".zarr" else "NetCDF"
        try:
            with warnings.catch_warnings():  # Zarr 3 stores usually have no consolidated metadata
                warnings.filterwarnings("ignore", "Failed to open Zarr store with consolidated", RuntimeWarning)
                ds = xr.open_zarr(path_s, consolidated=None).load() if suffix == ".zarr" else xr.load_dataset(path_s)
        except Exception as exc:  # any reader failure is a bad input file
            raise CatalogError(
                f"catalogue {p.name!r} cannot be read as {kind} ({type(exc).__name__}: {exc}); check the path "
                "and the format (.csv/.txt text, .fits, .parquet, .nc NetCDF, .zarr Zarr)"
            ) from exc
        cols, units, attrs, halo = columns_from_source(ds)
        if names is not None:
            raise CatalogError(f"{p.name}: columns= as a list of names is for text files without a header")
    else:
        if p.is_dir():
            raise CatalogError(
                f"catalogue {path_s!r} is a directory; a Zarr catalogue needs the suffix .zarr, a text one is a file"
            )
        if hdu is not None:
            raise CatalogError(f"{p.name}: hdu= is for FITS files only")
        cols, halo = _read_text(p, names)
        attrs = {}
    attrs = dict(attrs)
    attrs.setdefault("source", p.name)
    return cols, units, attrs, halo, p.name


def _is_ecsv(p: Path) -> bool:
    try:
        with open(p, encoding="utf-8") as f:
            return f.readline().startswith("# %ECSV")
    except (OSError, UnicodeDecodeError):
        return False


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
            # pandas renames a repeated header name (z, z.1): read the header line as written
            raw = [str(c).strip() for c in pd.read_csv(p, sep=sep, comment="#", skip_blank_lines=True, header=None,
                                                       nrows=1, dtype=str).iloc[0].tolist()]
            repeated = sorted({c for c in raw if raw.count(c) > 1})
            if repeated and columns is None:
                raise CatalogError(
                    f"{p.name}: column name(s) {repeated} occur more than once in the header line "
                    f"({raw}); which copy is meant is ambiguous. Rename or delete the repeated column(s)"
                )
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
    return cols, None


def _assemble(cols, halo, *, center, sigma_obs, attrs, validate, wrap_ra=False):
    if "ra_arcmin" in cols or "dec_arcmin" in cols:
        if not ("ra_arcmin" in cols and "dec_arcmin" in cols):
            raise CatalogError("catalogue: ra_arcmin and dec_arcmin must be given together")
        for k in ("ra_arcmin", "dec_arcmin"):
            if np.asarray(cols[k]).dtype.kind not in "iuf":
                raise CatalogError(
                    f"{k}: must be numeric (arcmin), has dtype {np.asarray(cols[k]).dtype}; fix the non-numeric rows"
                )
        c = check_field_center(center)
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
            coords[k] = ("halo", np.asarray(cols.pop(k)), dict(VAR_ATTRS[k]))
    ds = xr.Dataset(
        {k: ("halo", np.asarray(v), dict(VAR_ATTRS.get(k, {}))) for k, v in cols.items()},
        coords=coords,
        attrs=attrs,
    )
    if validate:
        validate_catalog(ds)
    return ds

