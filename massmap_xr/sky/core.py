"""Sky maps of halo masses: flat (gnomonic) and HEALPix projections, statistics, export.

Inputs are halo masses in M_sun as a :class:`xarray.DataArray` with dims ``(halo, sample)``
(posterior draws, e.g. from ``ds.massmap.sample(n)``) or ``(halo,)`` (point values such as
``mass_true`` or a posterior summary), numpy- or dask-backed.  Sky positions ``ra``/``dec``
in degrees (ICRS) are read from the coordinates of that array along ``halo``, or given
explicitly with ``ra=``/``dec=``.

Projection is done once per halo: every halo gets one pixel (or HEALPix cell) index, and
the masses of all samples are then summed into their pixels in one vectorised pass, a
sparse ``(pixel, halo)`` incidence matrix times the ``(halo, sample)`` mass matrix.  Under
dask the product is evaluated per block of the mass array (one task per halo chunk and
sample chunk) and the partial maps of the halo chunks are summed with dask's tree
reduction, so a map never needs the whole ``(halo, sample)`` array in memory.

Flat maps
---------
:func:`project_flat` returns ``(sample, y, x)`` maps on a gnomonic (``RA---TAN`` /
``DEC--TAN``) grid.  The pixel-centre coordinates ``x`` and ``y`` are tangent-plane offsets
from the tangent point in arcmin, ``x`` towards the east (increasing ra) and ``y`` towards
the north.  As in astronomical images, east is to the left by default: columns run towards
decreasing ra, so ``CDELT1 < 0`` and the ``x`` coordinate *decreases* along the ``x``
dimension (select with ``.sel(x=slice(5, -5))``; pass ``east_left=False`` for the opposite).
The FITS WCS cards are stored as attrs, and ``astropy.wcs.WCS(flat_header(map))`` rebuilds
the projection exactly, also for a map centred on a celestial pole (``LONPOLE = 180`` is
written explicitly); :func:`flat_header` recomputes ``CRPIX`` from the coordinates, so a
sliced map is still described correctly.

Pixel areas are exact solid angles of the gnomonic pixels (not the flat-sky approximation
``pixel_scale**2``; the two differ by less than 1e-4 relative within 0.5 deg of the tangent
point) and are attached as the 2-D coordinate ``pixel_area``, so that
``surface_density * pixel_area == mass`` holds pixel by pixel.

HEALPix maps
------------
:func:`project_healpix` returns ``(sample, cells)`` maps with a sorted ``cell_ids`` (int64)
coordinate whose attrs are exactly ``{"grid_name": "healpix", "level": log2(nside),
"indexing_scheme": "nested" | "ring"}``, so ``xdggs.decode`` opens them unchanged.  Units,
frame (``coordsys="C"``, equatorial) and the cell area live on the data variable.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import xarray as xr

from massmap_xr.errors import OutputExistsError, ProjectionError, format_offenders
from massmap_xr.geometry import field_center, tan_forward, tan_inverse

__all__ = [
    "WCS_KEYS",
    "FlatGrid",
    "field_center",
    "flat_header",
    "flat_wcs",
    "map_statistics",
    "project_flat",
    "project_healpix",
    "read_fits",
    "to_fits",
    "write_map",
]

#: FITS cards of a flat map's celestial WCS stored in its attrs.
WCS_KEYS = (
    "WCSAXES", "CTYPE1", "CTYPE2", "CUNIT1", "CUNIT2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2",
    "CDELT1", "CDELT2", "LONPOLE", "LATPOLE", "RADESYS", "NAXIS1", "NAXIS2",
)
#: native longitude of the celestial pole of every flat grid: north is up (+y) at the tangent
#: point, also when the tangent point is a celestial pole (where the FITS default would be 0)
_LONPOLE = 180.0

_ARCMIN_PER_RAD = 180.0 * 60.0 / math.pi
_AREA_UNITS = {"arcmin2": _ARCMIN_PER_RAD**2, "sr": 1.0}
_QUANTITIES = ("mass", "surface_density")
_MAX_PIXELS = 2**31 - 1
_MASS_UNITS = ("solMass", "Msun", "M_sun", "solar_mass")
_FLAT_DIMS = ("y", "x")
_CELL_DIM = "cells"
_QUANT_DIM = "quantile"


# --------------------------------------------------------------------------------------
# gnomonic grid
# --------------------------------------------------------------------------------------
def _rect_solid_angle(x, y):
    """Solid angle (sr) of the tangent-plane rectangle [0, x] x [0, y] (x, y in radians of tan)."""
    return np.arctan(x * y / np.sqrt(1.0 + x * x + y * y))


@dataclass(frozen=True)
class FlatGrid:
    """A gnomonic (TAN) pixel grid, equivalent to a two-axis FITS celestial WCS.

    Parameters
    ----------
    crval1, crval2 : float
        Tangent point (ra, dec) in degrees, ICRS.
    cdelt1, cdelt2 : float
        Pixel size along columns and rows in degrees per pixel; ``cdelt1 < 0`` puts east to
        the left (the astronomical convention).
    crpix1, crpix2 : float
        1-based pixel position of the tangent point (FITS convention).
    nx, ny : int
        Number of columns and rows.

    Examples
    --------
    >>> g = FlatGrid.centered((150.0, 2.0), pixel_scale=0.5, shape=(80, 80))
    >>> g.crpix1, round(g.cdelt1 * 60, 6)
    (40.5, -0.5)
    >>> FlatGrid.from_dict(g.to_dict()) == g
    True
    """

    crval1: float
    crval2: float
    cdelt1: float
    cdelt2: float
    crpix1: float
    crpix2: float
    nx: int
    ny: int

    def __post_init__(self):
        problems = []
        for k in ("crval1", "crval2", "cdelt1", "cdelt2", "crpix1", "crpix2"):
            v = getattr(self, k)
            if not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(float(v)):
                problems.append(f"{k} must be a finite number, got {v!r}")
        if not problems:
            if not -90.0 <= float(self.crval2) <= 90.0:
                problems.append(f"crval2 (tangent-point dec) must be in [-90, 90] deg, got {self.crval2!r}")
            for k in ("cdelt1", "cdelt2"):
                if float(getattr(self, k)) == 0.0:
                    problems.append(f"{k} (pixel size) must be non-zero")
        for k in ("nx", "ny"):
            v = getattr(self, k)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                problems.append(f"{k} must be a positive integer, got {v!r}")
        if problems:
            raise ProjectionError("invalid flat grid:\n  - " + "\n  - ".join(problems))
        for k in ("crval1", "crval2", "cdelt1", "cdelt2", "crpix1", "crpix2"):
            object.__setattr__(self, k, float(getattr(self, k)))
        object.__setattr__(self, "crval1", self.crval1 % 360.0)
        object.__setattr__(self, "nx", int(self.nx))
        object.__setattr__(self, "ny", int(self.ny))

    @classmethod
    def centered(
        cls,
        center: tuple[float, float],
        pixel_scale: float,
        shape: tuple[int, int],
        *,
        east_left: bool = True,
    ) -> FlatGrid:
        """A grid of ``shape = (ny, nx)`` pixels of ``pixel_scale`` arcmin centred on ``center``."""
        ny, nx = shape
        sign = -1.0 if east_left else 1.0
        return cls(
            crval1=float(center[0]), crval2=float(center[1]),
            cdelt1=sign * pixel_scale / 60.0, cdelt2=pixel_scale / 60.0,
            crpix1=(nx + 1) / 2.0, crpix2=(ny + 1) / 2.0, nx=int(nx), ny=int(ny),
        )

    # -- coordinates -------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        """``(ny, nx)``."""
        return (self.ny, self.nx)

    @property
    def x(self) -> np.ndarray:
        """Pixel-centre offsets towards east in arcmin, one per column."""
        return (np.arange(self.nx) + 1.0 - self.crpix1) * self.cdelt1 * 60.0

    @property
    def y(self) -> np.ndarray:
        """Pixel-centre offsets towards north in arcmin, one per row."""
        return (np.arange(self.ny) + 1.0 - self.crpix2) * self.cdelt2 * 60.0

    def radec(self) -> tuple[np.ndarray, np.ndarray]:
        """ra, dec (degrees) of the pixel centres, each of shape ``(ny, nx)``."""
        xi = np.broadcast_to(self.x[None, :] / 60.0, self.shape)
        eta = np.broadcast_to(self.y[:, None] / 60.0, self.shape)
        return tan_inverse(xi, eta, self.crval1, self.crval2)

    def pixel_area(self, unit: str = "arcmin2") -> np.ndarray:
        """Exact solid angle of every pixel, shape ``(ny, nx)``, in ``unit`` ("arcmin2" or "sr")."""
        _validate_area_unit(unit)
        xe = np.radians((np.arange(self.nx + 1) + 0.5 - self.crpix1) * self.cdelt1)
        ye = np.radians((np.arange(self.ny + 1) + 0.5 - self.crpix2) * self.cdelt2)
        f = _rect_solid_angle(xe[None, :], ye[:, None])
        omega = np.abs(f[1:, 1:] - f[1:, :-1] - f[:-1, 1:] + f[:-1, :-1])
        return omega * _AREA_UNITS[unit]

    def world_to_index(self, ra, dec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row, column and inside-mask of positions (degrees), rounding as astropy does.

        Pixel ``(row, col)`` covers pixel coordinates ``[col - 0.5, col + 0.5)``; positions on
        the far hemisphere or beyond the grid are ``inside == False`` (their indices are -1).
        """
        xi, eta, front = tan_forward(ra, dec, self.crval1, self.crval2)
        with np.errstate(invalid="ignore"):
            col = np.floor(self.crpix1 - 1.0 + xi / self.cdelt1 + 0.5)
            row = np.floor(self.crpix2 - 1.0 + eta / self.cdelt2 + 0.5)
            inside = front & (col >= 0) & (col < self.nx) & (row >= 0) & (row < self.ny)
        col = np.where(inside, col, -1).astype(np.int64)
        row = np.where(inside, row, -1).astype(np.int64)
        return row, col, inside

    # -- FITS --------------------------------------------------------------------------
    def header(self) -> dict[str, Any]:
        """FITS celestial WCS cards as plain Python scalars (see :data:`WCS_KEYS`).

        ``LONPOLE = 180`` is written explicitly: it is the FITS default except for a tangent
        point at dec = +90, where the default (0) would turn the grid by 180 degrees relative
        to :meth:`world_to_index`.  ``LATPOLE`` (= ``CRVAL2``, what astropy writes) has no
        effect on a zenithal projection such as TAN and is given for completeness.
        """
        return {
            "WCSAXES": 2, "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CUNIT1": "deg", "CUNIT2": "deg",
            "CRVAL1": self.crval1, "CRVAL2": self.crval2, "CRPIX1": self.crpix1, "CRPIX2": self.crpix2,
            "CDELT1": self.cdelt1, "CDELT2": self.cdelt2, "LONPOLE": _LONPOLE, "LATPOLE": self.crval2,
            "RADESYS": "ICRS", "NAXIS1": self.nx, "NAXIS2": self.ny,
        }

    @classmethod
    def from_header(cls, header: Mapping) -> FlatGrid:
        """Rebuild from FITS cards (a header or a map's attrs); only TAN without rotation.

        ``LONPOLE`` must be 180 (the grids :func:`project_flat` makes).  When it is absent the
        FITS default applies: 180, except for a grid centred exactly on the north celestial
        pole (``CRVAL2 = 90``), where the default is 0, a rotated grid, which is refused.  ``LATPOLE``
        is ignored (it does not affect a TAN projection).  ``CUNIT1``/``CUNIT2``, when present,
        must be ``deg``; a ``PC``/``CD`` rotation matrix or ``CROTA2`` is not supported.

        Raises
        ------
        ProjectionError
            If a card is missing or not a number, ``NAXIS1``/``NAXIS2`` are not positive
            integers, or the header describes another projection, unit or a rotated grid.
        """
        if not (hasattr(header, "get") and hasattr(header, "__contains__") and hasattr(header, "__getitem__")):
            raise ProjectionError(
                f"flat map header: expected a mapping of FITS cards (a FITS header or a map's attrs), "
                f"got {type(header).__name__}"
            )
        missing = [k for k in ("CRVAL1", "CRVAL2", "CDELT1", "CDELT2", "CRPIX1", "CRPIX2", "NAXIS1", "NAXIS2")
                   if k not in header]
        if missing:
            raise ProjectionError(f"flat map header: missing WCS card(s) {missing}; is this a map made by project_flat?")
        ctype = (str(header.get("CTYPE1", "RA---TAN")).strip(), str(header.get("CTYPE2", "DEC--TAN")).strip())
        if ctype != ("RA---TAN", "DEC--TAN"):
            raise ProjectionError(f"flat map header: only RA---TAN/DEC--TAN grids are supported, got CTYPE {ctype}")
        problems = []
        values: dict[str, float] = {}
        for k in ("CRVAL1", "CRVAL2", "CDELT1", "CDELT2", "CRPIX1", "CRPIX2", "NAXIS1", "NAXIS2", "LONPOLE", "LATPOLE"):
            if k not in header:
                continue
            v = header[k]
            try:
                if isinstance(v, (bool, np.bool_, str, bytes)):
                    raise TypeError
                f = float(v)
            except (TypeError, ValueError):
                problems.append(f"{k} must be a number, got {v!r}")
                continue
            if not math.isfinite(f):
                problems.append(f"{k} must be finite, got {v!r}")
                continue
            values[k] = f
        for k in ("NAXIS1", "NAXIS2"):
            if k in values and (not values[k].is_integer() or values[k] < 1):
                problems.append(f"{k} (pixels along axis {k[-1]}) must be a positive integer, got {header[k]!r}")
        if "LONPOLE" in values and not math.isclose(values["LONPOLE"], _LONPOLE, rel_tol=0, abs_tol=1e-9):
            problems.append(
                f"LONPOLE must be 180 (north up at the tangent point), got {header['LONPOLE']!r}; "
                "rotated grids are not supported"
            )
        if "LONPOLE" not in header and values.get("CRVAL2") == 90.0:
            problems.append(
                "LONPOLE is absent and the grid is centred on the north pole (CRVAL2 = 90), where the "
                "FITS default LONPOLE is 0 (a grid rotated by 180 deg), which is not supported; "
                "add LONPOLE = 180 if the map was made with project_flat"
            )
        for k in ("CUNIT1", "CUNIT2"):
            if k in header and str(header[k]).strip().lower() not in ("deg", ""):
                problems.append(f"{k} must be 'deg', got {header[k]!r}")
        identity = {"PC1_1": 1.0, "PC2_2": 1.0, "PC1_2": 0.0, "PC2_1": 0.0, "CROTA2": 0.0}
        rotation = [k for k, v in identity.items() if k in header and _as_float_or_nan(header[k]) != v]
        rotation += [k for k in ("CD1_1", "CD1_2", "CD2_1", "CD2_2") if k in header]
        if rotation:
            problems.append(f"rotation/CD-matrix cards {rotation} are not supported; use CDELT1/CDELT2 without rotation")
        if problems:
            raise ProjectionError("flat map header: invalid WCS cards:\n  - " + "\n  - ".join(problems))
        return cls(
            crval1=values["CRVAL1"], crval2=values["CRVAL2"],
            cdelt1=values["CDELT1"], cdelt2=values["CDELT2"],
            crpix1=values["CRPIX1"], crpix2=values["CRPIX2"],
            nx=int(values["NAXIS1"]), ny=int(values["NAXIS2"]),
        )

    @classmethod
    def from_coords(cls, obj: xr.DataArray | xr.Dataset) -> FlatGrid:
        """Rebuild the grid of a (possibly sliced) flat map from its ``x``/``y`` coordinates.

        The tangent point (``CRVAL``) comes from the attrs; ``CRPIX`` and the pixel size come
        from the coordinates, so a header copied unchanged after slicing is not trusted.
        """
        attrs = obj.attrs
        for d in _FLAT_DIMS:
            if d not in obj.dims or d not in obj.coords:
                raise ProjectionError(f"flat map: needs dimension coordinates 'y' and 'x' (arcmin), got dims {tuple(obj.dims)}")
        if "CRVAL1" not in attrs or "CRVAL2" not in attrs:
            raise ProjectionError("flat map: attrs CRVAL1/CRVAL2 (tangent point) missing; is this a map made by project_flat?")
        out = {}
        for d, n in (("x", "1"), ("y", "2")):
            c = np.asarray(obj[d].values, dtype=float)
            known = float(attrs[f"CDELT{n}"]) if f"CDELT{n}" in attrs else None
            if c.size >= 2:
                step = np.diff(c)
                if not np.allclose(step, step[0], rtol=1e-9, atol=0):
                    raise ProjectionError(f"flat map: coordinate {d!r} is not evenly spaced; cannot describe it with a WCS")
                delta = float(c[-1] - c[0]) / (c.size - 1) / 60.0
                if known is not None and math.isclose(delta, known, rel_tol=1e-9):
                    delta = known  # the exact value the grid was made with
            elif known is not None:
                delta = known
            else:
                raise ProjectionError(f"flat map: cannot infer the pixel size along {d!r} from one pixel without CDELT{n}")
            out[f"cdelt{n}"] = delta
            # rounded to 1e-9 pixel so that a sliced grid keeps exact half-integer CRPIX
            out[f"crpix{n}"] = round(1.0 - float(c[0]) / 60.0 / delta, 9)
            out["nx" if d == "x" else "ny"] = int(c.size)
        return cls(crval1=float(attrs["CRVAL1"]), crval2=float(attrs["CRVAL2"]), **out)

    def to_wcs(self):
        """The equivalent :class:`astropy.wcs.WCS`."""
        from astropy.wcs import WCS

        return WCS(self.header())

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping of the fields (round-trips through :meth:`from_dict`)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, mapping: Mapping) -> FlatGrid:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: mapping[k] for k in cls.__dataclass_fields__})


def _as_float_or_nan(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def flat_header(obj: xr.DataArray | xr.Dataset) -> dict[str, Any]:
    """FITS WCS cards of a flat map, with ``CRPIX``/``NAXIS`` rebuilt from its coordinates.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> m = project_flat(xr.DataArray([1e12, 2e12], dims="halo"), ra=[150.0, 150.01],
    ...                  dec=[2.0, 2.0], center=(150.0, 2.0), size=2.0, pixel_scale=0.5)
    >>> h = flat_header(m.isel(x=slice(1, None)))
    >>> h["CRPIX1"], h["NAXIS1"]
    (1.5, 3)
    """
    return FlatGrid.from_coords(obj).header()


def flat_wcs(obj: xr.DataArray | xr.Dataset):
    """:class:`astropy.wcs.WCS` of a flat map (from :func:`flat_header`)."""
    return FlatGrid.from_coords(obj).to_wcs()


# --------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------
def _validate_area_unit(area_unit):
    if area_unit not in _AREA_UNITS:
        raise ProjectionError(f"unknown area_unit {area_unit!r}; use 'arcmin2' or 'sr'")


def _validate_quantity(quantity, area_unit):
    if quantity not in _QUANTITIES:
        raise ProjectionError(f"unknown quantity {quantity!r}; use 'mass' (M_sun per pixel) or 'surface_density'")
    _validate_area_unit(area_unit)


def _validate_masses(masses) -> tuple[xr.DataArray, Hashable | None]:
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


def _validate_positions(masses: xr.DataArray, ra, dec) -> tuple[np.ndarray, np.ndarray]:
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


def _project(masses: xr.DataArray, index: np.ndarray, n_cells: int):
    """(sample, n_cells) array (numpy or dask) of ``masses`` (halo, sample) summed by ``index``."""
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
        )
        return parts.sum(axis=0) if len(hchunks) > 1 else parts[0]
    return _accumulate(index, ids, np.asarray(data), n_cells)


def _is_dask(data) -> bool:
    return type(data).__module__.startswith("dask")


def _sample_coords(masses: xr.DataArray, sample_dim) -> dict:
    if sample_dim is None:
        return {}
    return {k: v.variable for k, v in masses.coords.items() if v.dims == (sample_dim,)}


def _attrs_scalar(v):
    if isinstance(v, np.generic):
        return v.item()
    return v


# --------------------------------------------------------------------------------------
# field geometry
# --------------------------------------------------------------------------------------
def _pixel_scale(pixel_scale) -> float:
    try:
        p = float(pixel_scale)
    except (TypeError, ValueError):
        raise ProjectionError(f"pixel_scale must be a number of arcmin, got {pixel_scale!r}") from None
    if not math.isfinite(p) or p <= 0:
        raise ProjectionError(f"pixel_scale must be a positive number of arcmin, got {pixel_scale!r}")
    return p


def _grid_shape(size, shape, p, xi, eta, front) -> tuple[int, int]:
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
    p = _pixel_scale(pixel_scale)
    if not isinstance(east_left, (bool, np.bool_)):
        raise ProjectionError(f"east_left must be True (east to the left, CDELT1 < 0) or False, got {east_left!r}")
    _validate_quantity(quantity, area_unit)
    masses, sample_dim = _validate_masses(masses)
    ra_v, dec_v = _validate_positions(masses, ra, dec)
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
    ny, nx = _grid_shape(size, shape, p, xi * 60.0, eta * 60.0, front)
    if nx * ny > _MAX_PIXELS:
        raise ProjectionError(
            f"grid of {ny} x {nx} pixels is too large; increase pixel_scale (now {p} arcmin) or reduce size"
        )
    grid = FlatGrid.centered(center, p, (ny, nx), east_left=bool(east_left))
    row, col, inside = grid.world_to_index(ra_v, dec_v)
    index = np.where(inside, row * nx + col, -1)
    flat = _project(masses, index, ny * nx)

    area = grid.pixel_area(area_unit)
    if _is_dask(flat):
        data = flat.reshape((flat.shape[0], ny, nx))
    else:
        data = flat.reshape(flat.shape[0], ny, nx)
    if quantity == "surface_density":
        data = data / area
    if sample_dim is None:
        data = data[0]
    ra_pix, dec_pix = grid.radec()
    coords = {
        "y": ("y", grid.y, {"units": "arcmin", "axis": "Y", "long_name": "tangent-plane offset towards north"}),
        "x": ("x", grid.x, {"units": "arcmin", "axis": "X", "long_name": "tangent-plane offset towards east"}),
        "ra": (_FLAT_DIMS, ra_pix, {"units": "deg", "long_name": "right ascension of pixel centre (ICRS)"}),
        "dec": (_FLAT_DIMS, dec_pix, {"units": "deg", "long_name": "declination of pixel centre (ICRS)"}),
        "pixel_area": (_FLAT_DIMS, area, {"units": area_unit, "long_name": "solid angle of pixel"}),
        **_sample_coords(masses, sample_dim),
    }
    dims = _FLAT_DIMS if sample_dim is None else (sample_dim, *_FLAT_DIMS)
    attrs = {
        **_quantity_attrs(quantity, area_unit),
        **grid.header(),
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


def _validate_nside(nside) -> int:
    if isinstance(nside, bool) or not isinstance(nside, (int, np.integer)):
        if isinstance(nside, (float, np.floating)) and float(nside).is_integer():
            nside = int(nside)
        else:
            raise ProjectionError(f"nside must be an integer power of 2, got {nside!r}")
    nside = int(nside)
    if nside < 1 or nside & (nside - 1) or nside > 2**29:
        raise ProjectionError(f"nside must be a power of 2 between 1 and 2**29, got {nside}")
    return nside


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
        ``cell_ids`` coordinate (int64, sorted) carrying exactly the xdggs attrs.  Data attrs:
        ``units``, ``long_name``, ``quantity``, ``coordsys="C"``, ``nside``, ``cell_area``
        and ``cell_area_units``.

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

    nside = _validate_nside(nside)
    if not isinstance(nest, (bool, np.bool_)):
        raise ProjectionError(f"nest must be True (nested numbering) or False (ring numbering), got {nest!r}")
    nest = bool(nest)
    if cells not in ("occupied", "all"):
        raise ProjectionError(f"cells must be 'occupied' or 'all', got {cells!r}")
    _validate_quantity(quantity, area_unit)
    masses, sample_dim = _validate_masses(masses)
    ra_v, dec_v = _validate_positions(masses, ra, dec)
    pix = np.asarray(hp.ang2pix(nside, ra_v, dec_v, nest=nest, lonlat=True), dtype=np.int64)
    if cells == "occupied":
        cell_ids, index = np.unique(pix, return_inverse=True)
        index = index.reshape(-1).astype(np.int64)
    else:
        cell_ids = np.arange(hp.nside2npix(nside), dtype=np.int64)
        index = pix
    data = _project(masses, index, cell_ids.size)
    area = hp.nside2pixarea(nside) * _AREA_UNITS[area_unit]
    if quantity == "surface_density":
        data = data / area
    if sample_dim is None:
        data = data[0]
    level = round(math.log2(nside))
    coords = {
        "cell_ids": (_CELL_DIM, cell_ids.astype(np.int64), {
            "grid_name": "healpix", "level": level, "indexing_scheme": "nested" if nest else "ring",
        }),
        **_sample_coords(masses, sample_dim),
    }
    dims = (_CELL_DIM,) if sample_dim is None else (sample_dim, _CELL_DIM)
    attrs = {
        **_quantity_attrs(quantity, area_unit),
        "coordsys": "C",
        "nside": nside,
        "cell_area": float(area),
        "cell_area_units": area_unit,
        "n_halos": int(masses.sizes["halo"]),
    }
    if quantity == "mass":
        attrs["long_name"] = "halo mass per HEALPix cell"
    return xr.DataArray(data, dims=dims, coords=coords, name=quantity, attrs=attrs)


# --------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------
def _map_kind(obj) -> str:
    if _CELL_DIM in obj.dims:
        return "healpix"
    if set(_FLAT_DIMS) <= set(obj.dims):
        return "flat"
    raise ProjectionError(
        f"not a sky map: expected dims ('y', 'x') or ('cells',) from project_flat/project_healpix, "
        f"got {tuple(obj.dims)}"
    )


def _spatial_dims(kind):
    return _FLAT_DIMS if kind == "flat" else (_CELL_DIM,)


def _align_truth(maps: xr.DataArray, truth, kind):
    if not isinstance(truth, xr.DataArray):
        raise ProjectionError(f"truth must be a DataArray map made with the same grid, got {type(truth).__name__}")
    spatial = _spatial_dims(kind)
    extra = [d for d in truth.dims if d not in spatial]
    for d in extra:
        if truth.sizes[d] != 1:
            raise ProjectionError(
                f"truth must be a single map with dims {spatial}, got dims {tuple(truth.dims)} "
                f"({d!r} has length {truth.sizes[d]})"
            )
    truth = truth.squeeze(extra, drop=True) if extra else truth
    if set(truth.dims) != set(spatial):
        raise ProjectionError(f"truth map has dims {tuple(truth.dims)}, the maps have {spatial}: not the same grid")
    mu, tu = maps.attrs.get("units"), truth.attrs.get("units")
    if mu is not None and tu is not None and mu != tu:
        raise ProjectionError(f"truth map has units {tu!r} but the maps have {mu!r}; project both with the same quantity")
    if kind == "flat":
        for d in spatial:
            a, b = np.asarray(maps[d].values), np.asarray(truth[d].values)
            if a.shape != b.shape or not np.allclose(a, b, rtol=0, atol=1e-9 * max(1.0, np.abs(a).max())):
                raise ProjectionError(f"truth map grid differs from the maps along {d!r}; project both with the same grid")
        for k in ("CRVAL1", "CRVAL2"):
            if k in maps.attrs and k in truth.attrs and not np.isclose(maps.attrs[k], truth.attrs[k], rtol=0, atol=1e-12):
                raise ProjectionError(f"truth map has a different tangent point ({k}); project both with the same center")
        return truth.transpose(*spatial).assign_coords({d: maps[d] for d in spatial}), maps
    lv_m, lv_t = maps["cell_ids"].attrs, truth["cell_ids"].attrs
    if (lv_m.get("level"), lv_m.get("indexing_scheme")) != (lv_t.get("level"), lv_t.get("indexing_scheme")):
        raise ProjectionError(
            f"truth map is HEALPix level {lv_t.get('level')} ({lv_t.get('indexing_scheme')}), the maps are "
            f"level {lv_m.get('level')} ({lv_m.get('indexing_scheme')}); project both with the same nside/nest"
        )
    # occupied-cell maps: a cell missing from one map holds no mass in it
    ids_m = np.asarray(maps["cell_ids"].values)
    ids_t = np.asarray(truth["cell_ids"].values)
    if ids_m.shape == ids_t.shape and np.array_equal(ids_m, ids_t):
        return truth, maps
    cell_attrs = dict(maps["cell_ids"].attrs)
    union = np.union1d(ids_m, ids_t)
    maps = _reindex_cells(maps, union, cell_attrs)
    truth = _reindex_cells(truth, union, cell_attrs)
    return truth, maps


def _reindex_cells(obj, union, cell_attrs):
    out = obj.swap_dims({_CELL_DIM: "cell_ids"}).reindex(cell_ids=union, fill_value=0.0)
    out = out.swap_dims({"cell_ids": _CELL_DIM})
    out["cell_ids"].attrs = dict(cell_attrs)
    return out


def _safe_ratio(num, den):
    """num / den where den > 0; 0 where num == den == 0; NaN where den == 0 and num != 0."""
    pos = den > 0
    return xr.where(pos, num / den.where(pos), xr.where(num == 0, 0.0, np.nan))


def map_statistics(
    maps: xr.DataArray,
    *,
    truth: xr.DataArray | None = None,
    quantiles: Sequence[float] = (0.16, 0.5, 0.84),
) -> xr.Dataset:
    """Per-pixel posterior statistics of a stack of sampled maps.

    Parameters
    ----------
    maps : xarray.DataArray
        Maps from :func:`project_flat` / :func:`project_healpix` with a sample dimension
        (dims ``(sample, y, x)`` or ``(sample, cells)``), numpy- or dask-backed.
    truth : xarray.DataArray, optional
        A map of the true masses on the same grid and quantity (e.g. ``project_flat(
        ds.mass_true, ...)`` with the same center/size/pixel_scale).  HEALPix maps with
        different occupied cells are aligned on the union of their cells (missing = 0).
    quantiles : sequence of float, default (0.16, 0.5, 0.84)
        Quantile levels in [0, 1].

    Returns
    -------
    xarray.Dataset
        ``mean``, ``std`` (over samples, ddof=0; units of the maps), ``quantiles``
        (dim ``quantile``), ``snr = mean / std`` (0 where mean = std = 0, NaN where only
        std = 0) and, with ``truth``, ``truth`` and ``residual = (mean - truth) / std``
        (same rule where std = 0).  Map coordinates and grid attrs are kept; lazy for dask
        input.

    Examples
    --------
    >>> import xarray as xr
    >>> m = xr.DataArray([[1e12, 3e12]], dims=("halo", "sample"),
    ...                  coords={"ra": ("halo", [150.0]), "dec": ("halo", [2.0])})
    >>> st = map_statistics(project_flat(m, pixel_scale=1.0))
    >>> float(st["mean"].max()), float(st["std"].max()), float(st["snr"].max())
    (2000000000000.0, 1000000000000.0, 2.0)
    """
    if not isinstance(maps, xr.DataArray):
        raise ProjectionError(f"maps must be a DataArray of sampled maps, got {type(maps).__name__}")
    kind = _map_kind(maps)
    spatial = _spatial_dims(kind)
    others = [d for d in maps.dims if d not in spatial]
    if len(others) != 1:
        raise ProjectionError(
            f"map_statistics needs maps with exactly one sample dimension besides {spatial}, got dims {tuple(maps.dims)}"
        )
    sdim = others[0]
    if maps.sizes[sdim] == 0:
        raise ProjectionError(f"map_statistics: the sample dimension {sdim!r} is empty")
    try:
        if isinstance(quantiles, (str, bytes)):
            raise TypeError
        q = np.atleast_1d(np.asarray(quantiles, dtype=float))
    except (TypeError, ValueError):
        raise ProjectionError(f"quantiles must be a sequence of levels in [0, 1] (e.g. (0.16, 0.5, 0.84)), got {quantiles!r}") from None
    if q.ndim != 1 or q.size == 0 or not np.all((q >= 0) & (q <= 1)):
        raise ProjectionError(f"quantiles must be levels in [0, 1], got {quantiles!r}")
    if truth is not None:
        truth, maps = _align_truth(maps, truth, kind)
    m = maps.drop_vars([c for c in maps.coords if sdim in maps[c].dims and c != sdim])
    if m.chunks is not None:
        m = m.chunk({sdim: -1})
    units = maps.attrs.get("units", "")
    name = maps.attrs.get("long_name", "map")
    mean = m.mean(sdim)
    std = m.std(sdim)
    qs = m.quantile(q, dim=sdim)
    if qs.dims[0] != _QUANT_DIM:
        qs = qs.transpose(_QUANT_DIM, ...)
    snr = _safe_ratio(mean, std)
    out = xr.Dataset(
        {
            "mean": mean.assign_attrs(units=units, long_name=f"posterior mean of {name}", cell_methods=f"{sdim}: mean"),
            "std": std.assign_attrs(units=units, long_name=f"posterior standard deviation of {name}",
                                    cell_methods=f"{sdim}: standard_deviation"),
            "quantiles": qs.assign_attrs(units=units, long_name=f"posterior quantiles of {name}",
                                         cell_methods=f"{sdim}: quantile"),
            "snr": snr.assign_attrs(units="1", long_name="signal-to-noise ratio mean / std"),
        }
    )
    if truth is not None:
        tr = truth.drop_vars([c for c in truth.coords if c not in out.coords and c not in truth.dims], errors="ignore")
        out["truth"] = (tr.dims, tr.data, {"units": units, "long_name": f"true {name}"})
        out["residual"] = _safe_ratio(out["mean"] - out["truth"], out["std"]).assign_attrs(
            units="1", long_name="standardised residual (mean - truth) / std"
        )
    out[_QUANT_DIM].attrs = {"long_name": "quantile level", "units": "1"}
    out.attrs = {k: _attrs_scalar(v) for k, v in maps.attrs.items() if k not in ("units", "long_name")}
    out.attrs["n_samples"] = int(maps.sizes[sdim])
    return out


# --------------------------------------------------------------------------------------
# FITS export
# --------------------------------------------------------------------------------------
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
    extra = [d for d in da.dims if d not in _FLAT_DIMS]
    if len(extra) > 1:
        raise ProjectionError(f"to_fits: a flat map variable may have one extra dim besides (y, x), got {tuple(da.dims)}")
    da = da.transpose(*extra, *_FLAT_DIMS)
    h = _flat_hdu_header(da, grid)
    if extra:
        h["WCSAXES"] = 3
        _plane_cards(h, extra[0], da[extra[0]].values if extra[0] in da.coords else np.arange(da.sizes[extra[0]]))
    if "units" in da.attrs:
        h["BUNIT"] = str(da.attrs["units"])
    for key, card in (("quantity", "QUANTITY"), ("n_outside", "NOUTSIDE"), ("n_halos", "NHALOS"),
                      ("cell_methods", "CELLMETH")):
        if key in da.attrs:
            h[card] = _attrs_scalar(da.attrs[key])
    if name is not None:
        h["EXTNAME"] = str(name).upper()
    return hdu_cls(data=np.asarray(da.values, dtype=np.float64), header=h)


def _healpix_columns(obj) -> tuple[list[tuple[str, np.ndarray, str]], dict]:
    """(name, values, unit) columns and extra header cards of a HEALPix map or statistics."""
    cols = []
    cards = {}
    variables = obj.data_vars.items() if isinstance(obj, xr.Dataset) else [(obj.name or "map", obj)]
    for name, da in variables:
        if _CELL_DIM not in da.dims:
            continue
        unit = str(da.attrs.get("units", ""))
        extra = [d for d in da.dims if d != _CELL_DIM]
        if not extra:
            cols.append((str(name).upper(), np.asarray(da.values, dtype=np.float64), unit))
            continue
        if len(extra) > 1:
            raise ProjectionError(f"to_fits: HEALPix variable {name!r} has dims {tuple(da.dims)}; at most one besides 'cells'")
        d = extra[0]
        labels = da[d].values if d in da.coords else np.arange(da.sizes[d])
        vals = np.asarray(da.transpose(d, _CELL_DIM).values, dtype=np.float64)
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
    if "cell_ids" not in obj.coords or obj["cell_ids"].dims != (_CELL_DIM,):
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
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    kind = _map_kind(map)
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
        if set(_FLAT_DIMS) <= set(da.dims):
            hdus.append(_flat_image(da, grid, fits.ImageHDU, name=name))
    fits.HDUList(hdus).writeto(path, overwrite=overwrite)
    return path


def _flat_from_hdu(hdu, name_default="map"):
    h = hdu.header
    grid = FlatGrid.from_header(h)
    data = np.asarray(hdu.data, dtype=np.float64)
    coords = {
        "y": ("y", grid.y, {"units": "arcmin", "axis": "Y", "long_name": "tangent-plane offset towards north"}),
        "x": ("x", grid.x, {"units": "arcmin", "axis": "X", "long_name": "tangent-plane offset towards east"}),
    }
    dims = _FLAT_DIMS
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
        dims = (d, *_FLAT_DIMS)
    attrs = grid.header()
    if "BUNIT" in h:
        attrs["units"] = str(h["BUNIT"])
    for card, key in (("QUANTITY", "quantity"), ("NOUTSIDE", "n_outside"), ("NHALOS", "n_halos"), ("CELLMETH", "cell_methods")):
        if card in h:
            attrs[key] = h[card]
    name = str(h.get("EXTNAME", name_default)).strip().lower() or name_default
    return xr.DataArray(data, dims=dims, coords=coords, name=name, attrs=attrs), grid


def _add_radec(obj, grid: FlatGrid):
    ra, dec = grid.radec()
    return obj.assign_coords(
        ra=(_FLAT_DIMS, ra, {"units": "deg", "long_name": "right ascension of pixel centre (ICRS)"}),
        dec=(_FLAT_DIMS, dec, {"units": "deg", "long_name": "declination of pixel centre (ICRS)"}),
    )


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
        nside = _validate_nside(h["NSIDE"])
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
            variables[base.lower()] = xr.Variable(_CELL_DIM, np.asarray(hdu.data[members[0][1]], dtype=np.float64).ravel()[order], attrs)
        else:
            labels = np.array([lab for lab, _ in members])
            vals = np.stack([np.asarray(hdu.data[n], dtype=np.float64).ravel()[order] for _, n in members])
            dim = _QUANT_DIM if base == "QUANTILES" else plane_dim
            variables[base.lower()] = (xr.Variable((dim, _CELL_DIM), vals, attrs), dim, labels)
    coords = {"cell_ids": (_CELL_DIM, ids, cell)}
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


# --------------------------------------------------------------------------------------
# one-call export
# --------------------------------------------------------------------------------------
_SUFFIXES = (".zarr", ".nc", ".fits", ".fit", ".png", ".pdf", ".svg")


def write_map(maps: xr.DataArray | xr.Dataset, path, *, overwrite: bool = False, **plot_kwargs) -> Path:
    """Write maps to ``path``, choosing the format from the extension.

    ``.zarr`` (Zarr format 3, no consolidated metadata) and ``.nc`` (NetCDF4 via h5netcdf)
    store the maps as they are (a DataArray is stored as a Dataset variable named after it);
    ``.fits``/``.fit`` use :func:`to_fits`; ``.png``/``.pdf``/``.svg`` draw a figure with
    :func:`massmap_xr.mapplot.plot_maps` (posterior mean, std and truth side by side for a
    stack or statistics, a single panel for one map).

    Parameters
    ----------
    maps : xarray.DataArray or xarray.Dataset
        Output of :func:`project_flat`, :func:`project_healpix` or :func:`map_statistics`.
    path : str or path-like
        Output path; its extension picks the format.
    overwrite : bool, default False
        Replace an existing file or store.
    **plot_kwargs
        Passed to :func:`massmap_xr.mapplot.plot_maps` for image formats.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        raise ProjectionError(f"write_map: unknown output extension {suffix!r}; use one of {', '.join(_SUFFIXES)}")
    if not isinstance(maps, (xr.DataArray, xr.Dataset)):
        raise ProjectionError(f"write_map: maps must be a DataArray or Dataset, got {type(maps).__name__}")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    if suffix in (".fits", ".fit"):
        return to_fits(maps, path, overwrite=overwrite)
    if suffix in (".png", ".pdf", ".svg"):
        from massmap_xr.sky import plots as mapplot

        fig = mapplot.plot_maps(maps, **plot_kwargs)
        try:
            fig.savefig(path, dpi=150, bbox_inches="tight")
        finally:
            import matplotlib.pyplot as plt

            plt.close(fig)
        return path
    ds = maps.to_dataset(name=maps.name or "map") if isinstance(maps, xr.DataArray) else maps
    if isinstance(maps, xr.DataArray):
        ds.attrs = {}
    if suffix == ".zarr":
        ds.to_zarr(path, mode="w" if overwrite else "w-", zarr_format=3, consolidated=False)
    else:
        ds.to_netcdf(path, engine="h5netcdf", mode="w")
    return path
