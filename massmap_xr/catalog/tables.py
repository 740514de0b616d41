"""Columns and units out of the table forms survey catalogues come in.

Every source is reduced to the same three things: a dict of 1-D numpy columns (native byte
order, masked entries as NaN), the unit of each column where the source states one, and the
table's metadata.  Sources: astropy ``Table``/``QTable`` (and through astropy every file format
it reads: FITS binary tables with their ``TUNIT`` keywords, Parquet, HDF5, ECSV, VOTable), pandas
``DataFrame``, xarray ``Dataset`` (``units`` attributes), numpy structured arrays and mappings of
names to arrays.  :func:`apply_column_map` then renames the table's columns to the package's
names and :func:`to_package_units` converts stated units to the package's (degrees, arcmin for
offsets, L_sun, M_sun, dimensionless redshifts and ln-scatter).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import xarray as xr

from massmap_xr.errors import CatalogError

__all__ = [
    "PACKAGE_UNITS",
    "TABLE_SUFFIXES",
    "apply_column_map",
    "columns_from_source",
    "parse_column_map",
    "read_table_file",
    "to_package_units",
]

#: unit in which the package keeps each catalogue variable (astropy unit strings)
PACKAGE_UNITS = {
    "ra": "deg",
    "dec": "deg",
    "ra_arcmin": "arcmin",
    "dec_arcmin": "arcmin",
    "lum_obs": "solLum",
    "mass_true": "solMass",
    "z": "",
    "z_err": "",
    "sigma_obs": "",
}

#: file suffixes read through astropy's table readers, with the format name astropy uses
TABLE_SUFFIXES = {
    ".fits": "fits", ".fit": "fits", ".fts": "fits", ".fz": "fits", ".fits.gz": "fits", ".fit.gz": "fits",
    ".parquet": "parquet", ".pq": "parquet",
    ".hdf5": "hdf5", ".hdf": "hdf5", ".he5": "hdf5",
    ".ecsv": "ascii.ecsv",
    ".vot": "votable", ".votable": "votable", ".xml": "votable",
}


def _native(values: np.ndarray) -> np.ndarray:
    """A copy-free native-byte-order view where possible (FITS columns are big-endian)."""
    a = np.asarray(values)
    if a.dtype.kind in "iuf" and not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    return a


def _filled(col) -> np.ndarray:
    """A column's values with masked entries as NaN (integers with masked entries become floats)."""
    mask = getattr(col, "mask", None)
    if hasattr(col, "unmasked"):  # astropy Masked quantities
        data = col.unmasked
    elif isinstance(col, np.ma.MaskedArray):
        data = col.data
    else:
        data = col
    data = np.asarray(getattr(data, "value", data))
    if mask is not None and np.any(mask) and data.dtype.kind in "iubf":
        data = data.astype(float, copy=True)
        data[np.asarray(mask)] = np.nan
    return _native(data)


def _from_astropy(table) -> tuple[dict, dict, dict]:
    cols, units = {}, {}
    for name in table.colnames:
        col = table[name]
        if np.ndim(col) != 1:
            continue  # vector columns (e.g. a p(z) per row) are not per-halo scalars
        cols[name] = _filled(col)
        unit = getattr(col, "unit", None)
        if unit is not None:
            units[name] = unit
    meta = {str(k): v for k, v in dict(table.meta).items() if isinstance(v, (str, int, float))}
    return cols, units, meta


def _from_dataset(ds: xr.Dataset, name: str) -> tuple[dict, dict, dict, np.ndarray | None]:
    if "halo" not in ds.dims:
        dims = list(ds.dims)
        if len(dims) == 1:
            ds = ds.rename({dims[0]: "halo"})
        else:
            raise CatalogError(
                f"catalogue {name} has dims {tuple(dims)}; a catalogue has one row dimension named "
                "'halo': rename it (e.g. ds.rename({'index': 'halo'})) and keep per-halo variables only"
            )
    cols, units = {}, {}
    for k in ds.variables:
        if ds[k].dims == ("halo",) and k != "halo":
            cols[str(k)] = _native(ds[k].values)
            u = ds[k].attrs.get("units")
            if isinstance(u, str) and u.strip():
                units[str(k)] = u
    halo = ds["halo"].values if "halo" in ds.coords else None
    return cols, units, dict(ds.attrs), halo


def columns_from_source(source) -> tuple[dict, dict, dict, np.ndarray | None] | None:
    """``(columns, units, meta, halo ids or None)`` of an in-memory table, or None for a path.

    Accepts astropy ``Table``/``QTable``, pandas ``DataFrame``, xarray ``Dataset``, numpy
    structured arrays and mappings of column names to 1-D arrays.
    """
    if isinstance(source, (str, Path)):
        return None
    if isinstance(source, xr.Dataset):
        return _from_dataset(source, "Dataset")
    try:
        from astropy.table import Table
    except ImportError:  # pragma: no cover - astropy is a dependency
        Table = ()
    if Table and isinstance(source, Table):
        cols, units, meta = _from_astropy(source)
        return cols, units, meta, None
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(source, pd.DataFrame):
        cols = {}
        for c in source.columns:
            s = source[c]
            v = s.to_numpy(dtype=float, na_value=np.nan) if s.hasnans and s.dtype.kind in "iub" else s.to_numpy()
            cols[str(c)] = _native(v)
        meta = {str(k): v for k, v in source.attrs.items() if isinstance(v, (str, int, float))}
        units = source.attrs.get("units", {}) if isinstance(source.attrs.get("units"), Mapping) else {}
        return cols, dict(units), meta, None
    if isinstance(source, np.ndarray) and source.dtype.names:
        cols = {n: _native(source[n]) for n in source.dtype.names if source[n].ndim == 1}
        return cols, {}, {}, None
    if isinstance(source, Mapping):
        cols = {}
        for k, v in source.items():
            a = np.asarray(v)
            if a.ndim != 1:
                raise CatalogError(f"catalogue column {k!r} must be 1-D (one value per halo), got shape {a.shape}")
            cols[str(k)] = _native(a)
        lengths = {k: v.size for k, v in cols.items()}
        if len(set(lengths.values())) > 1:
            raise CatalogError(f"catalogue columns must all have one value per halo, got lengths {lengths}")
        return cols, {}, {}, None
    raise CatalogError(
        f"cannot read a catalogue from a {type(source).__name__}; pass a file path (.csv, .txt, .fits, .parquet, "
        ".hdf5, .nc, .zarr, .ecsv, .vot), an astropy Table, a pandas DataFrame, an xarray Dataset, a numpy "
        "structured array or a dict of column arrays"
    )


def table_suffix(path: str) -> str | None:
    """The astropy format for a path's suffix (also ``.fits.gz``), or None."""
    low = path.lower()
    for suffix in sorted(TABLE_SUFFIXES, key=len, reverse=True):
        if low.endswith(suffix):
            return TABLE_SUFFIXES[suffix]
    return None


def read_table_file(path: str, fmt: str, *, hdu=None) -> tuple[dict, dict, dict]:
    """Read a FITS/Parquet/HDF5/ECSV/VOTable file through astropy: ``(columns, units, meta)``."""
    from astropy.table import Table

    name = Path(path).name
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise CatalogError(
                f"{name}: reading Parquet needs pyarrow; install it with "
                "`python3 -m pip install 'massmap_xr[parquet]'` (or save the catalogue as FITS or CSV)"
            ) from None
    if fmt == "hdf5":
        try:
            import h5py  # noqa: F401
        except ImportError:  # pragma: no cover - h5py comes with h5netcdf
            raise CatalogError(f"{name}: reading HDF5 tables needs h5py (`python3 -m pip install h5py`)") from None
    kwargs = {}
    if hdu is not None:
        if fmt != "fits":
            raise CatalogError(f"{name}: hdu= is for FITS files only (this file is read as {fmt})")
        kwargs["hdu"] = hdu
    try:
        with warnings.catch_warnings():
            # a FITS file with several table HDUs: astropy reads the first and says so; we say it below
            warnings.filterwarnings("ignore", message=".*hdu= was not specified.*")
            warnings.filterwarnings("ignore", message=".*did not parse as fits unit.*")
            table = Table.read(path, format=fmt, **kwargs)
    except CatalogError:
        raise
    except Exception as exc:
        hint = " (pass hdu= the table's HDU number or name)" if fmt == "fits" else ""
        raise CatalogError(
            f"catalogue {name!r} cannot be read as a {fmt.upper() if fmt != 'ascii.ecsv' else 'ECSV'} table "
            f"({type(exc).__name__}: {str(exc).strip()[:300]}){hint}"
        ) from exc
    cols, units, meta = _from_astropy(table)
    if fmt == "fits":
        # TUNIT strings astropy could not parse arrive as UnrecognizedUnit: say so instead of guessing
        for k, u in units.items():
            if type(u).__name__ == "UnrecognizedUnit":
                units[k] = str(u)
    return cols, units, meta


def parse_column_map(text: str) -> dict[str, str]:
    """``"z=ZPHOT,lum_obs=LUM_R"`` → ``{"z": "ZPHOT", "lum_obs": "LUM_R"}`` (the CLI's ``--columns``)."""
    out = {}
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise CatalogError(
                f"--columns: {part!r} is not NAME=COLUMN; give the mapping as e.g. z=ZPHOT,lum_obs=LUM_R "
                "(or, for a headerless text file, only names: z,lum_obs,ra,dec)"
            )
        k, v = (s.strip() for s in part.split("=", 1))
        if not k or not v:
            raise CatalogError(f"--columns: {part!r} needs a name on both sides of '=' (e.g. z=ZPHOT)")
        if k in out:
            raise CatalogError(f"--columns: {k!r} is mapped twice")
        out[k] = v
    if not out:
        raise CatalogError("--columns: empty mapping; give e.g. z=ZPHOT,lum_obs=LUM_R")
    return out


#: package names that ``apply_column_map`` finds case-insensitively when not mapped
KNOWN_NAMES = ("z", "lum_obs", "ra", "dec", "mass_true", "sigma_obs", "z_err", "ra_arcmin", "dec_arcmin", "halo")


def apply_column_map(cols: dict, units: dict, columns: Mapping | None, source: str) -> tuple[dict, dict]:
    """Rename table columns to the package's names.

    ``columns`` maps package names to table names (``{"z": "ZPHOT"}``); a package name that is not
    mapped is looked up case-insensitively (FITS columns are often upper case: ``Z``, ``RA``).
    """
    cols, units = dict(cols), dict(units)
    if columns:
        unknown_targets = {k: v for k, v in columns.items() if v not in cols}
        if unknown_targets:
            raise CatalogError(
                f"{source}: columns= names table column(s) that do not exist: "
                f"{', '.join(f'{k}={v!r}' for k, v in unknown_targets.items())}; the table has "
                f"{', '.join(map(repr, list(cols)[:30]))}"
            )
        if len(set(columns.values())) != len(columns):
            raise CatalogError(f"{source}: columns= maps one table column to several names: {dict(columns)}")
        renamed = {}
        for k, v in columns.items():
            renamed[k] = cols.pop(v)
            if v in units:
                units[k] = units.pop(v)
        clash = sorted(set(renamed) & set(cols))
        if clash:
            raise CatalogError(
                f"{source}: columns= maps onto {clash}, which the table also has as columns of its own; "
                "map those too (or drop them) so that each name has one source"
            )
        cols.update(renamed)
    for name in KNOWN_NAMES:
        if name in cols:
            continue
        matches = [c for c in cols if c.lower() == name]
        if len(matches) == 1:
            cols[name] = cols.pop(matches[0])
            if matches[0] in units:
                units[name] = units.pop(matches[0])
    return cols, units


def _as_unit(unit, name: str, source: str):
    import astropy.units as u

    if isinstance(unit, (u.UnitBase, u.FunctionUnitBase)) and not isinstance(unit, u.UnrecognizedUnit):
        return unit
    text = str(unit).strip()
    if text in ("", "1", "dimensionless"):
        return u.dimensionless_unscaled
    for fmt in (None, "fits", "cds", "vounit"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                parsed = u.Unit(text, format=fmt) if fmt else u.Unit(text)
        except ValueError:
            continue
        if type(parsed).__name__ != "UnrecognizedUnit":
            return parsed
    raise CatalogError(
        f"{source}: column {name!r} has unit {text!r}, which astropy cannot read; convert the column to "
        f"{PACKAGE_UNITS[name] or 'a dimensionless number'} (or write a unit astropy parses, e.g. 'deg', 'solLum')"
    )


def to_package_units(cols: dict, units: dict, source: str) -> tuple[dict, dict]:
    """Convert every known column with a stated unit to the package's unit; returns columns and
    the conversions done (``{name: "rad -> deg"}``).

    A column without a unit is taken to be in the package's unit (documented for each variable).
    A luminosity given logarithmically (``dex(solLum)``, ``mag`` is refused) is turned into L_sun;
    a ``sigma_obs`` in dex is converted to the natural-log scatter the model uses (× ln 10).
    """
    import astropy.units as u

    done = {}
    for name, target in PACKAGE_UNITS.items():
        if name not in cols or name not in units:
            continue
        unit = _as_unit(units[name], name, source)
        values = np.asarray(cols[name])
        if values.dtype.kind not in "iuf":
            continue  # non-numeric columns are reported by validate_catalog
        tgt = u.Unit(target) if target else u.dimensionless_unscaled
        if unit == tgt:
            continue
        try:
            if name == "sigma_obs" and unit == u.dex:
                out = values * np.log(10.0)
            elif isinstance(unit, u.FunctionUnitBase):
                if not isinstance(unit, u.DexUnit) and not isinstance(unit, u.DecibelUnit):
                    raise u.UnitConversionError(f"{unit} is not a dex unit")
                out = u.Dex(values, unit).physical.to_value(tgt) if isinstance(unit, u.DexUnit) else \
                    u.Quantity(values, unit).physical.to_value(tgt)
            else:
                out = (values * unit).to_value(tgt)
        except (u.UnitConversionError, u.UnitsError, TypeError) as exc:
            raise CatalogError(
                f"{source}: column {name!r} is in {unit.to_string()!r}, which cannot be converted to "
                f"{target or 'a dimensionless number'} ({exc}); give {name} in {target or 'plain numbers'}"
            ) from None
        cols[name] = np.asarray(out, dtype=float)
        done[name] = f"{unit.to_string()} -> {target or 'dimensionless'}"
    return cols, done
