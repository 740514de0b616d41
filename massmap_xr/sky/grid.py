"""The pixel grids of sky maps: the flat gnomonic grid (:class:`FlatGrid`) and the map kinds.

Flat maps have dims ``(y, x)`` (:data:`FLAT_DIMS`) on a gnomonic (``RA---TAN`` /
``DEC--TAN``) grid.  The pixel-centre coordinates ``x`` and ``y`` are tangent-plane offsets
from the tangent point in arcmin, ``x`` towards the east (increasing ra) and ``y`` towards
the north.  As in astronomical images, east is to the left by default: columns run towards
decreasing ra, so ``CDELT1 < 0`` and the ``x`` coordinate *decreases* along the ``x``
dimension.  The FITS WCS cards (:data:`WCS_KEYS`) are stored as attrs, and
``astropy.wcs.WCS(flat_header(map))`` rebuilds the projection exactly, also for a map
centred on a celestial pole (``LONPOLE = 180`` is written explicitly); :func:`flat_header`
recomputes ``CRPIX`` from the coordinates, so a sliced map is still described correctly.

Pixel areas are exact solid angles of the gnomonic pixels (:meth:`FlatGrid.pixel_area`;
not the flat-sky approximation ``pixel_scale**2``, which differs by less than 1e-4 relative
within 0.5 deg of the tangent point).

HEALPix maps have the dim ``cells`` (:data:`CELL_DIM`) with a ``cell_ids`` coordinate;
:func:`map_kind` tells the two kinds apart and :func:`spatial_dims` gives their map dims.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import xarray as xr

from massmap_xr.errors import ProjectionError
from massmap_xr.geometry import tan_forward, tan_inverse

__all__ = [
    "AREA_UNITS",
    "CELL_DIM",
    "FLAT_DIMS",
    "QUANTILE_DIM",
    "WCS_KEYS",
    "FlatGrid",
    "attrs_scalar",
    "flat_header",
    "flat_wcs",
    "map_kind",
    "offset_coords",
    "radec_coords",
    "spatial_dims",
    "validate_area_unit",
    "validate_nside",
]

WCS_KEYS = (
    "WCSAXES", "CTYPE1", "CTYPE2", "CUNIT1", "CUNIT2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2",
    "CDELT1", "CDELT2", "LONPOLE", "LATPOLE", "RADESYS", "NAXIS1", "NAXIS2",
)
#: native longitude of the celestial pole of every flat grid: north is up (+y) at the tangent
#: point, also when the tangent point is a celestial pole (where the FITS default would be 0)
_LONPOLE = 180.0

_ARCMIN_PER_RAD = 180.0 * 60.0 / math.pi
#: solid-angle units of pixel areas: their size in sr**-1
AREA_UNITS = {"arcmin2": _ARCMIN_PER_RAD**2, "sr": 1.0}
#: dims of a flat map (rows towards north, columns towards east or west)
FLAT_DIMS = ("y", "x")
#: dim of a HEALPix map (its cells, labelled by the ``cell_ids`` coordinate)
CELL_DIM = "cells"
#: dim of the quantile levels in map statistics
QUANTILE_DIM = "quantile"


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
        validate_area_unit(unit)
        xe = np.radians((np.arange(self.nx + 1) + 0.5 - self.crpix1) * self.cdelt1)
        ye = np.radians((np.arange(self.ny + 1) + 0.5 - self.crpix2) * self.cdelt2)
        f = _rect_solid_angle(xe[None, :], ye[:, None])
        omega = np.abs(f[1:, 1:] - f[1:, :-1] - f[:-1, 1:] + f[:-1, :-1])
        return omega * AREA_UNITS[unit]

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
        for d in FLAT_DIMS:
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
    >>> from massmap_xr.sky import project_flat
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


def offset_coords(grid: FlatGrid) -> dict[str, tuple]:
    """The ``y`` and ``x`` coordinates (pixel-centre tangent-plane offsets, arcmin) of a flat map."""
    return {
        "y": ("y", grid.y, {"units": "arcmin", "axis": "Y", "long_name": "tangent-plane offset towards north"}),
        "x": ("x", grid.x, {"units": "arcmin", "axis": "X", "long_name": "tangent-plane offset towards east"}),
    }


def radec_coords(grid: FlatGrid) -> dict[str, tuple]:
    """The 2-D ``ra`` and ``dec`` coordinates (pixel centres, degrees) of a flat map."""
    ra, dec = grid.radec()
    return {
        "ra": (FLAT_DIMS, ra, {"units": "deg", "long_name": "right ascension of pixel centre (ICRS)"}),
        "dec": (FLAT_DIMS, dec, {"units": "deg", "long_name": "declination of pixel centre (ICRS)"}),
    }


# --------------------------------------------------------------------------------------
# HEALPix resolution, map kinds, attrs
# --------------------------------------------------------------------------------------
def validate_area_unit(area_unit):
    """Raise unless ``area_unit`` is one of :data:`AREA_UNITS` ("arcmin2" or "sr")."""
    if area_unit not in AREA_UNITS:
        raise ProjectionError(f"unknown area_unit {area_unit!r}; use 'arcmin2' or 'sr'")


def validate_nside(nside) -> int:
    """``nside`` as an int, checked to be a power of 2 between 1 and 2**29."""
    if isinstance(nside, bool) or not isinstance(nside, (int, np.integer)):
        if isinstance(nside, (float, np.floating)) and float(nside).is_integer():
            nside = int(nside)
        else:
            raise ProjectionError(f"nside must be an integer power of 2, got {nside!r}")
    nside = int(nside)
    if nside < 1 or nside & (nside - 1) or nside > 2**29:
        raise ProjectionError(f"nside must be a power of 2 between 1 and 2**29, got {nside}")
    return nside


def map_kind(obj) -> str:
    """``"flat"`` for a map with dims ``(y, x)``, ``"healpix"`` for one with dim ``cells``."""
    if CELL_DIM in obj.dims:
        return "healpix"
    if set(FLAT_DIMS) <= set(obj.dims):
        return "flat"
    raise ProjectionError(
        f"not a sky map: expected dims ('y', 'x') or ('cells',) from project_flat/project_healpix, "
        f"got {tuple(obj.dims)}"
    )


def spatial_dims(kind) -> tuple[str, ...]:
    """The map dims of a map kind (see :func:`map_kind`)."""
    return FLAT_DIMS if kind == "flat" else (CELL_DIM,)


def attrs_scalar(v):
    """A numpy scalar attr as the plain Python scalar (for netCDF/FITS attrs); others unchanged."""
    if isinstance(v, np.generic):
        return v.item()
    return v
