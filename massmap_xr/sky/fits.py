"""FITS files of sky maps: :func:`to_fits` writes them, :func:`read_fits` reads them back.

Flat maps become images with their celestial WCS (a stack of samples or the quantiles a
cube with the labels on axis 3, map statistics one image extension per variable); HEALPix
maps become HEALPix binary tables readable by ``healpy.read_map`` (implicit indexing for
full-sky maps, explicit ``PIXEL`` indexing for occupied-cell maps).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from massmap_xr.errors import ProjectionError, check_output
from massmap_xr.sky.grid import (
    CELL_DIM,
    FLAT_DIMS,
    QUANTILE_DIM,
    WCS_KEYS,
    FlatGrid,
    attrs_scalar,
    map_kind,
    offset_coords,
    radec_coords,
    validate_nside,
)

__all__ = ["read_fits", "to_fits"]


def _plane_cards(header, dim, values):
    """Describe a third (plane) axis: linear WCS when evenly spaced, else PLANEk cards."""
    values = np.asarray(values)
    header["CTYPE3"] = str(dim).upper()[:8]
    header["CRPIX3"] = 1.0
    numeric = np.issubdtype(values.dtype, np.number)
    if numeric and values.size >= 1:
        step = np.diff(values.astype(float)) if values.size > 1 else np.array([1.0])
        if values.size == 1 or (np.allclose(step, step[0]) and step[0] != 0):
            header["CRVAL3"] = float(values[0])
            header["CDELT3"] = float(step[0])
            return
    if values.size > 999:
        header["CRVAL3"], header["CDELT3"] = 0.0, 1.0
        return
    header["CRVAL3"], header["CDELT3"] = 1.0, 1.0
    for k, v in enumerate(values.tolist(), start=1):
        header[f"PLANE{k}"] = v


def _flat_hdu_header(obj, grid: FlatGrid):
    from astropy.io import fits

    h = fits.Header()
    for k, v in grid.header().items():
        if k not in ("NAXIS1", "NAXIS2"):
            h[k] = v
    return h


def _flat_image(da: xr.DataArray, grid: FlatGrid, hdu_cls, name=None):
    extra = [d for d in da.dims if d not in FLAT_DIMS]
    if len(extra) > 1:
        raise ProjectionError(f"to_fits: a flat map variable may have one extra dim besides (y, x), got {tuple(da.dims)}")
    da = da.transpose(*extra, *FLAT_DIMS)
    h = _flat_hdu_header(da, grid)
    if extra:
        h["WCSAXES"] = 3
        _plane_cards(h, extra[0], da[extra[0]].values if extra[0] in da.coords else np.arange(da.sizes[extra[0]]))
    if "units" in da.attrs:
        h["BUNIT"] = str(da.attrs["units"])
    for key, card in (("quantity", "QUANTITY"), ("n_outside", "NOUTSIDE"), ("n_halos", "NHALOS"),
                      ("cell_methods", "CELLMETH")):
        if key in da.attrs:
            h[card] = attrs_scalar(da.attrs[key])
    if name is not None:
        h["EXTNAME"] = str(name).upper()
    return hdu_cls(data=np.asarray(da.values, dtype=np.float64), header=h)


def _healpix_columns(obj) -> tuple[list[tuple[str, np.ndarray, str]], dict]:
    """(name, values, unit) columns and extra header cards of a HEALPix map or statistics."""
    cols = []
    cards = {}
    variables = obj.data_vars.items() if isinstance(obj, xr.Dataset) else [(obj.name or "map", obj)]
    for name, da in variables:
        if CELL_DIM not in da.dims:
            continue
        unit = str(da.attrs.get("units", ""))
        extra = [d for d in da.dims if d != CELL_DIM]
        if not extra:
            cols.append((str(name).upper(), np.asarray(da.values, dtype=np.float64), unit))
            continue
        if len(extra) > 1:
            raise ProjectionError(f"to_fits: HEALPix variable {name!r} has dims {tuple(da.dims)}; at most one besides 'cells'")
        d = extra[0]
        labels = da[d].values if d in da.coords else np.arange(da.sizes[d])
        vals = np.asarray(da.transpose(d, CELL_DIM).values, dtype=np.float64)
        for lab, row in zip(labels.tolist(), vals, strict=True):
            cols.append((f"{str(name).upper()}_{lab}", row, unit))
        cards["PLANEDIM"] = str(d)
    if len(cols) > 998:
        raise ProjectionError(
            f"to_fits: {len(cols)} HEALPix columns exceed the FITS limit of 999 per table; export "
            "map_statistics(...) instead, or write .zarr/.nc"
        )
    return cols, cards


def _healpix_grid(obj) -> tuple[int, str]:
    """(level, indexing scheme) of a HEALPix map from its ``cell_ids`` attrs, validated."""
    fix = (
        "re-make the map with project_healpix, or set map['cell_ids'].attrs = {'grid_name': 'healpix', "
        "'level': log2(nside), 'indexing_scheme': 'nested' or 'ring'}"
    )
    if "cell_ids" not in obj.coords or obj["cell_ids"].dims != (CELL_DIM,):
        raise ProjectionError(f"to_fits: a HEALPix map needs a 'cell_ids' coordinate along 'cells'; {fix}")
    info = obj["cell_ids"].attrs
    missing = [k for k in ("level", "indexing_scheme") if k not in info]
    if missing:
        raise ProjectionError(f"to_fits: the 'cell_ids' coordinate lacks the HEALPix attr(s) {missing}; {fix}")
    level = info["level"]
    if isinstance(level, (bool, np.bool_)) or not isinstance(level, (int, np.integer)) or not 0 <= int(level) <= 29:
        raise ProjectionError(f"to_fits: cell_ids attr 'level' must be an integer in [0, 29] (log2 nside), got {level!r}; {fix}")
    scheme = info["indexing_scheme"]
    if scheme not in ("nested", "ring"):
        raise ProjectionError(f"to_fits: cell_ids attr 'indexing_scheme' must be 'nested' or 'ring', got {scheme!r}; {fix}")
    return int(level), str(scheme)


def _write_healpix_fits(obj, path, overwrite):
    from astropy.io import fits

    level, scheme = _healpix_grid(obj)
    nside = 2**level
    npix = 12 * nside * nside
    ids = np.asarray(obj["cell_ids"].values, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= npix):
        raise ProjectionError(
            f"to_fits: cell_ids must lie in [0, {npix}) for HEALPix level {level} (nside {nside}), "
            f"got values from {ids.min()} to {ids.max()}"
        )
    cols, cards = _healpix_columns(obj)
    if not cols:
        raise ProjectionError("to_fits: no HEALPix variable (with dim 'cells') to write")
    full = ids.size == npix and np.array_equal(ids, np.arange(npix))
    fcols = [] if full else [fits.Column(name="PIXEL", format="K", array=ids)]
    fcols += [fits.Column(name=n, format="D", unit=u or None, array=v) for n, v, u in cols]
    hdu = fits.BinTableHDU.from_columns(fcols)
    h = hdu.header
    h["PIXTYPE"] = ("HEALPIX", "HEALPIX pixelisation")
    h["ORDERING"] = ("NESTED" if scheme == "nested" else "RING", "pixel ordering scheme")
    h["COORDSYS"] = ("C", "equatorial (ICRS) coordinates")
    h["EXTNAME"] = "xtension"
    h["NSIDE"] = (nside, "resolution parameter of HEALPIX")
    h["FIRSTPIX"] = 0
    h["LASTPIX"] = npix - 1
    h["INDXSCHM"] = ("IMPLICIT" if full else "EXPLICIT", "indexing: IMPLICIT or EXPLICIT")
    h["OBJECT"] = ("FULLSKY" if full else "PARTIAL", "sky coverage")
    for k, v in cards.items():
        h[k] = v
    if "quantity" in obj.attrs or (isinstance(obj, xr.DataArray) and "quantity" in obj.attrs):
        h["QUANTITY"] = str(obj.attrs["quantity"])
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path, overwrite=overwrite)


def to_fits(map: xr.DataArray | xr.Dataset, path, overwrite: bool = False) -> Path:
    """Write a map (or map statistics) to FITS.

    Flat maps:

    - a ``(y, x)`` map becomes the primary image with its WCS (``CRPIX`` rebuilt from the
      ``x``/``y`` coordinates, so sliced maps export correctly) and ``BUNIT``;
    - a ``(sample, y, x)`` stack becomes a 3-D cube (``NAXIS3`` = samples; axis 3 is
      ``CTYPE3 = 'SAMPLE'`` with the sample labels as linear ``CRVAL3``/``CDELT3``);
    - a :func:`map_statistics` Dataset becomes an empty primary HDU plus one image HDU per
      variable (``EXTNAME`` MEAN, STD, QUANTILES, SNR, TRUTH, RESIDUAL; ``QUANTILES`` is a cube
      with the levels on axis 3, or in ``PLANEk`` cards when unevenly spaced).

    HEALPix maps are written as a HEALPix binary table readable by ``healpy.read_map``:
    full-sky maps with implicit indexing, partial (occupied-cell) maps with explicit
    indexing (``PIXEL`` column, ``OBJECT = 'PARTIAL'``; cells absent from the file read as
    ``UNSEEN``); ``ORDERING`` is NESTED or RING as in the map, ``COORDSYS = 'C'``.  One column
    per map: the variable name (``MASS``), ``MASS_<sample>`` for stacks, or one per statistic.

    Parameters
    ----------
    map : xarray.DataArray or xarray.Dataset
        Output of :func:`project_flat`, :func:`project_healpix` or :func:`map_statistics`.
    path : str or path-like
        Output file.
    overwrite : bool, default False
        Replace an existing file.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    ProjectionError
        ``map`` is not a map (e.g. a bare numpy array), or a HEALPix map lacks the
        ``cell_ids`` attrs ``level``/``indexing_scheme`` (made by :func:`project_healpix`).
    OutputExistsError
        ``path`` exists and ``overwrite`` is False.
    """
    from astropy.io import fits

    if not isinstance(map, (xr.DataArray, xr.Dataset)):
        raise ProjectionError(
            f"to_fits: map must be an xarray DataArray or Dataset made by project_flat, project_healpix or "
            f"map_statistics, got {type(map).__name__}; project the masses first"
        )
    path = Path(path)
    check_output(path, overwrite=overwrite, what="to_fits")
    kind = map_kind(map)
    if kind == "healpix":
        _write_healpix_fits(map, path, overwrite)
        return path
    grid = FlatGrid.from_coords(map)
    if isinstance(map, xr.DataArray):
        hdu = _flat_image(map, grid, fits.PrimaryHDU, name=map.name)
        fits.HDUList([hdu]).writeto(path, overwrite=overwrite)
        return path
    primary = fits.PrimaryHDU()
    for k, v in map.attrs.items():
        if k in ("n_outside", "n_halos", "n_samples", "quantity") and isinstance(v, (int, float, str)):
            primary.header[{"n_outside": "NOUTSIDE", "n_halos": "NHALOS", "n_samples": "NSAMPLES",
                            "quantity": "QUANTITY"}[k]] = v
    hdus = [primary]
    for name, da in map.data_vars.items():
        if set(FLAT_DIMS) <= set(da.dims):
            hdus.append(_flat_image(da, grid, fits.ImageHDU, name=name))
    fits.HDUList(hdus).writeto(path, overwrite=overwrite)
    return path


# --------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------
def _flat_from_hdu(hdu, name_default="map"):
    h = hdu.header
    grid = FlatGrid.from_header(h)
    data = np.asarray(hdu.data, dtype=np.float64)
    coords = offset_coords(grid)
    dims = FLAT_DIMS
    if data.ndim == 3:
        d = str(h.get("CTYPE3", "PLANE")).strip().lower()
        n = data.shape[0]
        if "PLANE1" in h:
            values = np.array([h[f"PLANE{k}"] for k in range(1, n + 1)])
        else:
            values = float(h.get("CRVAL3", 0.0)) + float(h.get("CDELT3", 1.0)) * np.arange(n)
            if np.allclose(values, np.round(values)):
                values = np.round(values).astype(np.int64)
        coords[d] = (d, values)
        dims = (d, *FLAT_DIMS)
    attrs = grid.header()
    if "BUNIT" in h:
        attrs["units"] = str(h["BUNIT"])
    for card, key in (("QUANTITY", "quantity"), ("NOUTSIDE", "n_outside"), ("NHALOS", "n_halos"), ("CELLMETH", "cell_methods")):
        if card in h:
            attrs[key] = h[card]
    name = str(h.get("EXTNAME", name_default)).strip().lower() or name_default
    return xr.DataArray(data, dims=dims, coords=coords, name=name, attrs=attrs), grid


def _add_radec(obj, grid: FlatGrid):
    return obj.assign_coords(radec_coords(grid))


def read_fits(path) -> xr.DataArray | xr.Dataset:
    """Read a map written by :func:`to_fits` back into xarray.

    Returns a DataArray for a single map or stack and a Dataset for statistics; flat maps
    get their ``x``/``y``/``ra``/``dec`` coordinates back from the WCS, HEALPix maps their
    ``cell_ids`` (with the xdggs attrs).

    Raises
    ------
    ProjectionError
        The file does not exist, is not FITS, or holds no map in the layout :func:`to_fits`
        writes.
    """
    from astropy.io import fits

    path = Path(path)
    if not path.exists():
        raise ProjectionError(f"read_fits: {path} does not exist")
    try:
        hdul = fits.open(path)
    except (OSError, ValueError) as exc:
        raise ProjectionError(
            f"read_fits: {path} is not a readable FITS file ({type(exc).__name__}: {exc}); "
            "give a file written by to_fits / write_map"
        ) from None
    with hdul:
        if len(hdul) > 1 and isinstance(hdul[1], fits.BinTableHDU) and hdul[1].header.get("PIXTYPE") == "HEALPIX":
            return _read_healpix_fits(hdul[1])
        if hdul[0].data is not None:
            da, grid = _flat_from_hdu(hdul[0])
            return _add_radec(da, grid)
        variables = {}
        grid = None
        for hdu in hdul[1:]:
            if hdu.data is None:
                continue
            da, grid = _flat_from_hdu(hdu)
            da.attrs = {k: v for k, v in da.attrs.items() if k not in WCS_KEYS}
            variables[da.name] = da
        if not variables:
            raise ProjectionError(f"read_fits: {path} holds no image")
        ds = xr.Dataset(variables)
        ds.attrs = grid.header()
        for card, key in (("NOUTSIDE", "n_outside"), ("NHALOS", "n_halos"), ("NSAMPLES", "n_samples"), ("QUANTITY", "quantity")):
            if card in hdul[0].header:
                ds.attrs[key] = hdul[0].header[card]
        return _add_radec(ds, grid)


def _read_healpix_fits(hdu):
    h = hdu.header
    try:
        nside = validate_nside(h["NSIDE"])
    except (KeyError, ProjectionError):
        raise ProjectionError(
            f"read_fits: HEALPix table has no valid NSIDE card (got {h.get('NSIDE')!r}); is this a map written by to_fits?"
        ) from None
    if str(h.get("INDXSCHM", "IMPLICIT")).strip() == "EXPLICIT" and "PIXEL" not in hdu.columns.names:
        raise ProjectionError("read_fits: explicitly indexed HEALPix table has no PIXEL column; is this a map written by to_fits?")
    nest = str(h.get("ORDERING", "RING")).strip() == "NESTED"
    names = list(hdu.columns.names)
    explicit = str(h.get("INDXSCHM", "IMPLICIT")).strip() == "EXPLICIT"
    if explicit:
        ids = np.asarray(hdu.data["PIXEL"], dtype=np.int64).ravel()
        names = [n for n in names if n != "PIXEL"]
    else:
        ids = np.arange(12 * nside * nside, dtype=np.int64)
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    cell = {"grid_name": "healpix", "level": round(math.log2(nside)), "indexing_scheme": "nested" if nest else "ring"}
    units = {n: (hdu.columns[n].unit or "") for n in names}
    plane_dim = str(h.get("PLANEDIM", "sample")).strip()
    groups: dict[str, list[tuple[Any, str]]] = {}
    for n in names:
        base, _, lab = n.rpartition("_")
        if base and lab and "PLANEDIM" in h and _label(lab) is not None:
            groups.setdefault(base, []).append((_label(lab), n))
        else:
            groups.setdefault(n, []).append((None, n))
    variables = {}
    for base, members in groups.items():
        unit = units[members[0][1]]
        attrs = {"units": unit, "coordsys": str(h.get("COORDSYS", "C")).strip(), "nside": nside}
        if members[0][0] is None:
            variables[base.lower()] = xr.Variable(CELL_DIM, np.asarray(hdu.data[members[0][1]], dtype=np.float64).ravel()[order], attrs)
        else:
            labels = np.array([lab for lab, _ in members])
            vals = np.stack([np.asarray(hdu.data[n], dtype=np.float64).ravel()[order] for _, n in members])
            dim = QUANTILE_DIM if base == "QUANTILES" else plane_dim
            variables[base.lower()] = (xr.Variable((dim, CELL_DIM), vals, attrs), dim, labels)
    coords = {"cell_ids": (CELL_DIM, ids, cell)}
    data_vars = {}
    for name, v in variables.items():
        if isinstance(v, tuple):
            var, dim, labels = v
            coords[dim] = (dim, labels)
            data_vars[name] = var
        else:
            data_vars[name] = v
    ds = xr.Dataset(data_vars, coords=coords)
    if "QUANTITY" in h:
        ds.attrs["quantity"] = str(h["QUANTITY"])
    if len(ds.data_vars) == 1:
        (name,) = ds.data_vars
        da = ds[name]
        if "quantity" in ds.attrs:
            da.attrs["quantity"] = ds.attrs["quantity"]
        return da
    return ds


def _label(text):
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            continue
    return None
