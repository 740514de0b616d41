"""Reading halo catalogues from CSV, whitespace text (incl. the original study's layout), NetCDF or Zarr."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import xarray as xr

from massmap_xr.catalog.schema import VAR_ATTRS, check_field_center, offsets_to_radec, validate_catalog
from massmap_xr.errors import CatalogError
from massmap_xr.geometry import wrap_ra_degrees

__all__ = ["ORIGINAL_COLUMNS", "read_catalog"]

#: the original study's text layout
ORIGINAL_COLUMNS = ("z", "lum_obs", "mass_true", "ra_arcmin", "dec_arcmin")


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
    halo = None
    for key in ("halo", "id", "halo_id"):
        if key in cols:
            halo = cols.pop(key)
            break
    if "mass" in cols and "mass_true" not in cols:
        cols["mass_true"] = cols.pop("mass")
    return cols, halo


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

