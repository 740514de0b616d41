"""Projection of halo masses onto sky maps: :func:`project_flat` and :func:`project_healpix`.

Inputs are halo masses in M_sun as a :class:`xarray.DataArray` with dims ``(halo, sample)``
(posterior draws, e.g. from ``ds.massmap.sample(n)``) or ``(halo,)`` (point values such as
``mass_true`` or a posterior summary), numpy- or dask-backed.  Sky positions ``ra``/``dec``
in degrees (ICRS) are read from the coordinates of that array along ``halo``, or given
explicitly with ``ra=``/``dec=``.

Projection is done once per halo: every halo gets one pixel (or HEALPix cell) index, and
the masses of all samples are then summed into their pixels in one vectorised pass, a
sparse ``(pixel, halo)`` incidence matrix times the ``(halo, sample)`` mass matrix
(:func:`accumulate_cells`).  Under dask the product is evaluated per block of the mass
array (one task per halo chunk and sample chunk) and the partial maps of the halo chunks
are summed with dask's tree reduction, so a map never needs the whole ``(halo, sample)``
array in memory.

:func:`project_flat` returns ``(sample, y, x)`` maps on a :class:`~massmap_xr.sky.grid.FlatGrid`
(select along the east-left ``x`` with ``.sel(x=slice(5, -5))``; pass ``east_left=False``
for the opposite), with the exact pixel solid angles as the 2-D coordinate ``pixel_area``,
so that ``surface_density * pixel_area == mass`` holds pixel by pixel.
:func:`project_healpix` returns ``(sample, cells)`` maps with a sorted ``cell_ids`` (int64)
coordinate whose attrs are exactly ``{"grid_name": "healpix", "level": log2(nside),
"indexing_scheme": "nested" | "ring"}``, so ``xdggs.decode`` opens them unchanged.  Units,
frame (``coordsys="C"``, equatorial) and the cell area live on the data variable.

The checks of the inputs (:func:`validate_masses`, :func:`validate_positions`, ...) and the
accumulation are public for other map makers.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Literal

import numpy as np
import scipy.sparse as sp
import xarray as xr

from massmap_xr.analysis.sampling import check_memory
from massmap_xr.errors import ProjectionError, format_offenders
from massmap_xr.geometry import field_center, tan_forward
from massmap_xr.sky.grid import (
    AREA_UNITS,
    CELL_DIM,
    FLAT_DIMS,
    FlatGrid,
    offset_coords,
    radec_coords,
    validate_area_unit,
    validate_nside,
)

__all__ = [
    "accumulate_cells",
    "flat_grid_shape",
    "project_flat",
    "project_healpix",
    "sample_coords",
    "validate_masses",
    "validate_pixel_scale",
    "validate_positions",
    "validate_quantity",
]

_QUANTITIES = ("mass", "surface_density")
_MAX_PIXELS = 2**31 - 1
_MASS_UNITS = ("solMass", "Msun", "M_sun", "solar_mass")


# --------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------
def validate_quantity(quantity, area_unit):
    """Raise unless ``quantity`` is "mass" or "surface_density" and ``area_unit`` is known."""
    if quantity not in _QUANTITIES:
        raise ProjectionError(f"unknown quantity {quantity!r}; use 'mass' (M_sun per pixel) or 'surface_density'")
    validate_area_unit(area_unit)


def validate_masses(masses) -> tuple[xr.DataArray, Hashable | None]:
    """Return masses as a DataArray with dims ``(halo,)`` or ``(halo, sample_dim)``."""
    if isinstance(masses, xr.Dataset):
        raise ProjectionError(
            "masses must be a DataArray of halo masses (M_sun), not a Dataset; pick a variable, "
            "e.g. ds['mass_true'] or ds.massmap.sample(n)"
        )
    if not isinstance(masses, xr.DataArray):
        try:
            arr = np.asarray(masses)
        except (TypeError, ValueError) as exc:
            raise ProjectionError(f"masses: cannot convert {type(masses).__name__} to an array ({exc})") from None
        if arr.ndim not in (1, 2):
            raise ProjectionError(f"masses: expected a 1-D (halo,) or 2-D (halo, sample) array, got shape {arr.shape}")
        masses = xr.DataArray(arr, dims=("halo",) if arr.ndim == 1 else ("halo", "sample"))
    if "halo" not in masses.dims or masses.ndim > 2:
        raise ProjectionError(
            f"masses must have dims ('halo',) or ('halo', <sample dim>), got {tuple(masses.dims)}; "
            "select or stack the other dimensions first"
        )
    if masses.sizes["halo"] == 0:
        raise ProjectionError("masses: no halos (halo dimension has length 0)")
    if not (np.issubdtype(masses.dtype, np.floating) or np.issubdtype(masses.dtype, np.integer)):
        raise ProjectionError(f"masses must be real numbers (M_sun), got dtype {masses.dtype}")
    units = masses.attrs.get("units")
    if units is not None and str(units).strip() not in _MASS_UNITS:
        raise ProjectionError(
            f"masses have units {units!r}; projections need linear masses in solMass "
            "(convert log10 masses with 10**m)"
        )
    sample_dim = next((d for d in masses.dims if d != "halo"), None)
    if sample_dim is not None:
        masses = masses.transpose("halo", sample_dim)
    return masses, sample_dim


def _as_1d_positions(value, name, n_halo):
    if isinstance(value, xr.DataArray) and value.ndim != 1:
            raise ProjectionError(f"{name} must be 1-D along 'halo', has dims {tuple(value.dims)}")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ProjectionError(f"{name} must be numeric degrees, got {type(value).__name__}") from None
    if arr.ndim != 1 or arr.shape[0] != n_halo:
        raise ProjectionError(
            f"ra/dec shape mismatch: {name} has shape {arr.shape} but masses have {n_halo} halos"
        )
    return arr


def validate_positions(masses: xr.DataArray, ra, dec) -> tuple[np.ndarray, np.ndarray]:
    """ra, dec in degrees (numpy, computed) for every halo of ``masses``."""
    if ra is None:
        ra = masses.coords.get("ra")
    if dec is None:
        dec = masses.coords.get("dec")
    missing = [k for k, v in (("ra", ra), ("dec", dec)) if v is None]
    if missing:
        raise ProjectionError(
            f"missing ra/dec: no {' or '.join(missing)} coordinate on masses; pass ra= and dec= "
            "(degrees, one per halo) or keep the catalogue's ra/dec coordinates along 'halo'"
        )
    n = masses.sizes["halo"]
    ra = _as_1d_positions(ra, "ra", n)
    dec = _as_1d_positions(dec, "dec", n)
    ids = _halo_ids(masses)
    problems = []
    for name, arr in (("ra", ra), ("dec", dec)):
        bad = ~np.isfinite(arr)
        if bad.any():
            problems.append(f"{name}: NaN or inf for {int(bad.sum())} halo(s), first ids: {format_offenders(ids[bad])}")
    if not problems:
        bad = np.abs(dec) > 90.0
        if bad.any():
            problems.append(
                f"dec: must be in [-90, 90] degrees; {int(bad.sum())} halo(s) outside, first ids: "
                f"{format_offenders(ids[bad])}"
            )
    if problems:
        raise ProjectionError("invalid positions:\n  - " + "\n  - ".join(problems))
    return ra % 360.0, dec


def _halo_ids(masses: xr.DataArray) -> np.ndarray:
    if "halo" in masses.coords:
        return np.asarray(masses["halo"].values)
    return np.arange(masses.sizes["halo"])


def _check_mass_values(m: np.ndarray, ids: np.ndarray) -> None:
    """Raise if any mass is NaN, infinite or negative (one fast pass when all are fine)."""
    if m.size == 0:
        return
    lo, hi = m.min(), m.max()  # NaN propagates through min/max
    if lo >= 0 and np.isfinite(hi):
        return
    flat = m.reshape(m.shape[0], -1)
    problems = []
    for text, bad in (
        ("NaN or inf", ~np.isfinite(flat)),
        ("negative (masses must be >= 0 M_sun; log10 masses need 10**m)", np.isfinite(flat) & (flat < 0)),
    ):
        rows = bad.any(axis=1)
        if rows.any():
            problems.append(
                f"{text}: {int(bad.sum())} value(s) in {int(rows.sum())} halo(s), first ids: {format_offenders(ids[rows])}"
            )
    raise ProjectionError("invalid masses:\n  - " + "\n  - ".join(problems))


# --------------------------------------------------------------------------------------
# accumulation
# --------------------------------------------------------------------------------------
def _accumulate(index: np.ndarray, ids: np.ndarray, m: np.ndarray, n_cells: int) -> np.ndarray:
    """Sum ``m`` (halo, sample) into ``n_cells`` cells by ``index`` (-1 = skip): (sample, n_cells).

    One sparse ``(cell, halo)`` incidence matrix times the ``(halo, sample)`` masses; the
    result is returned as a transposed (Fortran-ordered) view, which costs no copy.
    """
    m = np.asarray(m)
    _check_mass_values(m, ids)
    keep = np.flatnonzero(index >= 0)
    w = sp.csr_array(
        (np.ones(keep.size), (index[keep], keep)), shape=(n_cells, m.shape[0])
    )
    return np.asarray(w @ m.astype(np.float64, copy=False)).T


def _accumulate_block(index, ids, m, *, n_cells):
    """(1, sample, n_cells) C-ordered partial map of one block (dask concatenates C blocks fast).

    One ``numpy.bincount`` per sample over the sample-major copy of the block writes each
    output row contiguously, which beats transposing the sparse product's result.
    """
    m = np.asarray(m)
    _check_mass_values(m, ids)
    keep = index >= 0
    idx = index[keep]
    rows = np.ascontiguousarray(m[keep].T, dtype=np.float64)
    out = np.empty((1, rows.shape[0], n_cells))
    for s, row in enumerate(rows):
        out[0, s] = np.bincount(idx, weights=row, minlength=n_cells)
    return out


def accumulate_cells(masses: xr.DataArray, index: np.ndarray, n_cells: int):
    """(sample, n_cells) array (numpy or dask) of ``masses`` (halo, sample) summed by ``index``.

    ``index`` holds one cell per halo (-1: the halo is left out); masses that are NaN,
    infinite or negative raise :class:`~massmap_xr.errors.ProjectionError` (at compute time
    for dask input).
    """
    ids = _halo_ids(masses)
    data = masses.data
    if masses.ndim == 1:
        data = data[:, None]
    if _is_dask(data):
        import dask.array as da

        hchunks = data.chunks[0]
        idx_d = da.from_array(index, chunks=(hchunks,))
        ids_d = da.from_array(ids, chunks=(hchunks,))
        parts = da.blockwise(
            _accumulate_block, "hsp",
            idx_d, "h", ids_d, "h", data, "hs",
            new_axes={"p": n_cells}, adjust_chunks={"h": 1},
            dtype=np.float64, meta=np.empty((0, 0, 0), dtype=np.float64), n_cells=n_cells,
            token="massmap-project-cells",
        )
        return parts.sum(axis=0) if len(hchunks) > 1 else parts[0]
    return _accumulate(index, ids, np.asarray(data), n_cells)


def _is_dask(data) -> bool:
    return type(data).__module__.startswith("dask")


def sample_coords(masses: xr.DataArray, sample_dim) -> dict:
    """The coordinates of ``masses`` along ``sample_dim`` (none when it is None), for the maps."""
    if sample_dim is None:
        return {}
    return {k: v.variable for k, v in masses.coords.items() if v.dims == (sample_dim,)}


# --------------------------------------------------------------------------------------
# field geometry
# --------------------------------------------------------------------------------------
def validate_pixel_scale(pixel_scale) -> float:
    """``pixel_scale`` (arcmin) as a positive finite float."""
    try:
        p = float(pixel_scale)
    except (TypeError, ValueError):
        raise ProjectionError(f"pixel_scale must be a number of arcmin, got {pixel_scale!r}") from None
    if not math.isfinite(p) or p <= 0:
        raise ProjectionError(f"pixel_scale must be a positive number of arcmin, got {pixel_scale!r}")
    return p


def flat_grid_shape(size, shape, p, xi, eta, front) -> tuple[int, int]:
    """``(ny, nx)`` of a flat grid of pixel side ``p`` arcmin from ``size`` or ``shape``.

    Without either, the grid just holds the positions, given as tangent-plane offsets
    ``xi``, ``eta`` (arcmin) with ``front`` true on the near hemisphere.
    """
    if size is not None and shape is not None:
        raise ProjectionError("give size or shape, not both (shape = (ny, nx) pixels, size in arcmin)")
    if shape is not None:
        try:
            ny, nx = (int(v) for v in shape)
        except (TypeError, ValueError):
            raise ProjectionError(f"shape must be (ny, nx) positive integers, got {shape!r}") from None
        if ny < 1 or nx < 1 or (ny, nx) != tuple(shape):
            raise ProjectionError(f"shape must be (ny, nx) positive integers, got {shape!r}")
        return ny, nx
    if size is None:
        if not front.all() or np.max(np.hypot(xi, eta)) > 60.0 * 60.0:  # arcmin
            raise ProjectionError(
                "the catalogue spans more than 60 deg from its centre: too large for one gnomonic "
                "map; give size= to map part of it, or use project_healpix"
            )
        wx = 2.0 * float(np.max(np.abs(xi)))
        wy = 2.0 * float(np.max(np.abs(eta)))
        return math.floor(wy / p) + 1, math.floor(wx / p) + 1
    try:
        if isinstance(size, (str, bytes)):
            raise TypeError
        sz = np.asarray(size, dtype=float)
        sz = np.broadcast_to(sz, (2,)) if sz.ndim == 0 or sz.shape in ((1,), (2,)) else None
    except (TypeError, ValueError):
        sz = None
    if sz is None or not np.all(np.isfinite(sz)) or np.any(sz <= 0):
        raise ProjectionError(
            f"size must be a positive side in arcmin or (width, height) in arcmin, e.g. size=30 or size=(40, 20), got {size!r}"
        )
    nx = max(1, math.ceil(sz[0] / p - 1e-9))
    ny = max(1, math.ceil(sz[1] / p - 1e-9))
    return ny, nx


# --------------------------------------------------------------------------------------
# projections
# --------------------------------------------------------------------------------------
def _check_map_memory(masses: xr.DataArray, sample_dim, n_cells: int, what: str, hint: str) -> None:
    """Refuse before allocating maps of n_sample × n_cells float64 (the result, or under dask each
    block's partial map), plus the cell index."""
    n_sample = masses.sizes[sample_dim] if sample_dim is not None else 1
    check_memory(8.0 * n_sample * n_cells + 8.0 * n_cells, f"{what} x {n_sample} sample(s)", hint,
                 error=ProjectionError)


def project_flat(
    masses: xr.DataArray,
    *,
    center: tuple[float, float] | None = None,
    size: float | tuple[float, float] | None = None,
    pixel_scale: float = 0.5,
    shape: tuple[int, int] | None = None,
    quantity: Literal["mass", "surface_density"] = "mass",
    area_unit: Literal["arcmin2", "sr"] = "arcmin2",
    ra=None,
    dec=None,
    east_left: bool = True,
) -> xr.DataArray:
    """Project halo masses onto a flat gnomonic (TAN) pixel grid.

    Each halo's pixel is computed once from its position; the masses of every sample are
    then summed per pixel in one vectorised pass (sparse matrix product).  Halos outside the
    grid are left out and counted in ``attrs["n_outside"]``.

    Parameters
    ----------
    masses : xarray.DataArray
        Halo masses in M_sun, dims ``(halo, sample)`` (any name for the sample dim, either
        order) or ``(halo,)``; numpy- or dask-backed.  Must be finite and >= 0.
    center : (float, float), optional
        Tangent point and grid centre (ra, dec) in degrees.  Default: centre of the
        catalogue's ra/dec extent (:func:`field_center`, wrap-aware at ra = 0/360).
    size : float or (float, float), optional
        Side (or width, height) of the grid in arcmin, rounded up to whole pixels.  Default:
        just large enough to hold every halo.
    pixel_scale : float, default 0.5
        Pixel side in arcmin (> 0).
    shape : (int, int), optional
        ``(ny, nx)`` pixels, instead of ``size``.
    quantity : {"mass", "surface_density"}, default "mass"
        ``"mass"``: M_sun per pixel (units ``solMass``).  ``"surface_density"``: M_sun per
        unit solid angle (``solMass arcmin-2`` or ``solMass sr-1``), the mass divided by the
        exact solid angle of each pixel (coordinate ``pixel_area``).
    area_unit : {"arcmin2", "sr"}, default "arcmin2"
        Unit of ``pixel_area`` and of the surface density.
    ra, dec : array_like, optional
        Positions in degrees, one per halo; default the ``ra``/``dec`` coordinates of
        ``masses``.  Positions are always loaded into memory (they define the grid).
    east_left : bool, default True
        Columns run towards decreasing ra (``CDELT1 < 0``), as in astronomical images.

    Returns
    -------
    xarray.DataArray
        Named ``"mass"`` or ``"surface_density"``, dims ``(sample, y, x)`` for
        ``(halo, sample)`` input and ``(y, x)`` for ``(halo,)`` input; float64; dask-backed
        (chunked like the sample dim) when ``masses`` is.  Coordinates: ``x``, ``y``
        (pixel-centre tangent-plane offsets in arcmin, east and north), 2-D ``ra``, ``dec``
        (degrees) and ``pixel_area``, plus the sample coordinates of ``masses``.  Attrs: the
        FITS WCS cards (:data:`WCS_KEYS`), ``units``, ``long_name``, ``quantity``,
        ``pixel_scale_arcmin``, ``n_halos``, ``n_outside``.

    Raises
    ------
    ProjectionError
        Missing or mismatched ra/dec, non-positive ``pixel_scale``, unknown ``quantity``,
        masses that are NaN or negative (raised at compute time for dask input), ...

    Examples
    --------
    >>> import xarray as xr
    >>> m = xr.DataArray([[1e12, 2e12], [3e12, 4e12]], dims=("halo", "sample"),
    ...                  coords={"ra": ("halo", [150.0, 150.2]), "dec": ("halo", [2.0, 2.1])})
    >>> fmap = project_flat(m, pixel_scale=1.0)
    >>> fmap.dims, fmap.sum(("y", "x")).values.tolist()
    (('sample', 'y', 'x'), [4000000000000.0, 6000000000000.0])
    """
    p = validate_pixel_scale(pixel_scale)
    if not isinstance(east_left, (bool, np.bool_)):
        raise ProjectionError(f"east_left must be True (east to the left, CDELT1 < 0) or False, got {east_left!r}")
    validate_quantity(quantity, area_unit)
    masses, sample_dim = validate_masses(masses)
    ra_v, dec_v = validate_positions(masses, ra, dec)
    if center is None:
        center = field_center(ra_v, dec_v)
    else:
        try:
            center = (float(center[0]), float(center[1]))
        except (TypeError, ValueError, IndexError):
            raise ProjectionError(f"center must be (ra, dec) in degrees, got {center!r}") from None
        if not (math.isfinite(center[0]) and math.isfinite(center[1])) or abs(center[1]) > 90:
            raise ProjectionError(f"center must be finite (ra, dec) degrees with |dec| <= 90, got {center!r}")
    xi, eta, front = tan_forward(ra_v, dec_v, center[0], center[1])
    ny, nx = flat_grid_shape(size, shape, p, xi * 60.0, eta * 60.0, front)
    if nx * ny > _MAX_PIXELS:
        raise ProjectionError(
            f"grid of {ny} x {nx} pixels is too large; increase pixel_scale (now {p} arcmin) or reduce size"
        )
    _check_map_memory(masses, sample_dim, ny * nx, f"flat maps of {ny} x {nx} pixels",
                      f"increase pixel_scale (now {p} arcmin), reduce size, or project fewer samples")
    grid = FlatGrid.centered(center, p, (ny, nx), east_left=bool(east_left))
    row, col, inside = grid.world_to_index(ra_v, dec_v)
    index = np.where(inside, row * nx + col, -1)
    flat = accumulate_cells(masses, index, ny * nx)

    area = grid.pixel_area(area_unit)
    if _is_dask(flat):
        data = flat.reshape((flat.shape[0], ny, nx))
    else:
        data = flat.reshape(flat.shape[0], ny, nx)
    if quantity == "surface_density":
        data = data / area
    if sample_dim is None:
        data = data[0]
    coords = {
        **offset_coords(grid),
        **radec_coords(grid),
        "pixel_area": (FLAT_DIMS, area, {"units": area_unit, "long_name": "solid angle of pixel"}),
        **sample_coords(masses, sample_dim),
    }
    dims = FLAT_DIMS if sample_dim is None else (sample_dim, *FLAT_DIMS)
    attrs = {
        **_quantity_attrs(quantity, area_unit),
        **grid.header(),
        "cell_measures": "area: pixel_area",  # CF: the solid angle of every pixel
        "projection": "gnomonic (TAN)",
        "pixel_scale_arcmin": p,
        "n_halos": int(masses.sizes["halo"]),
        "n_outside": int((~inside).sum()),
    }
    return xr.DataArray(data, dims=dims, coords=coords, name=quantity, attrs=attrs)


def _quantity_attrs(quantity, area_unit):
    if quantity == "mass":
        return {"units": "solMass", "long_name": "halo mass per pixel", "quantity": "mass"}
    unit = "solMass arcmin-2" if area_unit == "arcmin2" else "solMass sr-1"
    return {"units": unit, "long_name": "halo mass surface density", "quantity": "surface_density"}



def project_healpix(
    masses: xr.DataArray,
    nside: int,
    *,
    nest: bool = True,
    cells: Literal["occupied", "all"] = "occupied",
    quantity: Literal["mass", "surface_density"] = "mass",
    area_unit: Literal["arcmin2", "sr"] = "arcmin2",
    ra=None,
    dec=None,
) -> xr.DataArray:
    """Project halo masses onto HEALPix cells.

    Parameters
    ----------
    masses : xarray.DataArray
        Halo masses in M_sun, dims ``(halo, sample)`` or ``(halo,)`` (see :func:`project_flat`).
    nside : int
        HEALPix resolution, a power of 2 (level = log2(nside)).
    nest : bool, default True
        Nested (True) or ring (False) cell numbering, recorded in the ``cell_ids`` attrs.
    cells : {"occupied", "all"}, default "occupied"
        Keep only cells holding at least one halo (partial sky, sorted ids), or every cell
        of the sphere (12 nside**2: mind the memory for large nside).
    quantity, area_unit
        As in :func:`project_flat`; the HEALPix cell area is exact (all cells are equal).
    ra, dec : array_like, optional
        Positions in degrees; default the coordinates of ``masses``.

    Returns
    -------
    xarray.DataArray
        Dims ``(sample, cells)`` (or ``(cells,)`` for ``(halo,)`` input), float64, with the
        ``cell_ids`` coordinate (int64, sorted) carrying exactly the xdggs attrs and the scalar
        coordinate ``pixel_area`` (the solid angle of every cell, in ``area_unit``; data attr
        ``cell_measures = "area: pixel_area"`` as on flat maps).  Data attrs: ``units``,
        ``long_name``, ``quantity``, ``coordsys="C"``, ``nside``, ``cell_area`` and
        ``cell_area_units``.

    Examples
    --------
    >>> import xarray as xr
    >>> m = xr.DataArray([1e12, 2e12, 3e12], dims="halo",
    ...                  coords={"ra": ("halo", [10.0, 10.0, 200.0]), "dec": ("halo", [5.0, 5.0, -30.0])})
    >>> hmap = project_healpix(m, 64)
    >>> hmap.values.tolist(), dict(hmap.cell_ids.attrs)
    ([3000000000000.0, 3000000000000.0], {'grid_name': 'healpix', 'level': 6, 'indexing_scheme': 'nested'})
    """
    import healpy as hp

    nside = validate_nside(nside)
    if not isinstance(nest, (bool, np.bool_)):
        raise ProjectionError(f"nest must be True (nested numbering) or False (ring numbering), got {nest!r}")
    nest = bool(nest)
    if cells not in ("occupied", "all"):
        raise ProjectionError(f"cells must be 'occupied' or 'all', got {cells!r}")
    validate_quantity(quantity, area_unit)
    masses, sample_dim = validate_masses(masses)
    ra_v, dec_v = validate_positions(masses, ra, dec)
    if cells == "all":
        _check_map_memory(masses, sample_dim, 12 * nside * nside, f"HEALPix maps of every cell at nside {nside}",
                          "use cells='occupied' (only cells holding halos), a smaller nside, or fewer samples")
    pix = np.asarray(hp.ang2pix(nside, ra_v, dec_v, nest=nest, lonlat=True), dtype=np.int64)
    if cells == "occupied":
        cell_ids, index = np.unique(pix, return_inverse=True)
        index = index.reshape(-1).astype(np.int64)
    else:
        cell_ids = np.arange(hp.nside2npix(nside), dtype=np.int64)
        index = pix
    data = accumulate_cells(masses, index, cell_ids.size)
    area = hp.nside2pixarea(nside) * AREA_UNITS[area_unit]
    if quantity == "surface_density":
        data = data / area
    if sample_dim is None:
        data = data[0]
    level = round(math.log2(nside))
    coords = {
        "cell_ids": (CELL_DIM, cell_ids.astype(np.int64), {
            "grid_name": "healpix", "level": level, "indexing_scheme": "nested" if nest else "ring",
        }),
        **sample_coords(masses, sample_dim),
        # every HEALPix cell has the same solid angle: a scalar cell measure
        "pixel_area": ((), float(area), {"units": area_unit, "long_name": "solid angle of a HEALPix cell"}),
    }
    dims = (CELL_DIM,) if sample_dim is None else (sample_dim, CELL_DIM)
    attrs = {
        **_quantity_attrs(quantity, area_unit),
        "cell_measures": "area: pixel_area",  # CF: the solid angle of every cell
        "coordsys": "C",
        "nside": nside,
        "cell_area": float(area),
        "cell_area_units": area_unit,
        "n_halos": int(masses.sizes["halo"]),
    }
    if quantity == "mass":
        attrs["long_name"] = "halo mass per HEALPix cell"
    return xr.DataArray(data, dims=dims, coords=coords, name=quantity, attrs=attrs)

