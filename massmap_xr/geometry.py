"""Sky geometry shared by catalogues and maps: the gnomonic projection, field centres, RA wrapping.

All angles are in degrees.  Tangent-plane offsets ``xi`` (towards east, increasing ra) and
``eta`` (towards north) are FITS intermediate world coordinates of a ``RA---TAN``/``DEC--TAN``
projection about the tangent point ``(ra0, dec0)``.
"""

from __future__ import annotations

import math

import numpy as np

from massmap_xr.errors import ProjectionError, format_offenders

__all__ = ["tan_forward", "tan_inverse", "field_center", "wrap_ra_degrees"]


def tan_forward(ra, dec, ra0, dec0):
    """Gnomonic projection of ``(ra, dec)`` about ``(ra0, dec0)``.

    ``ra0``, ``dec0`` are one tangent point, or arrays broadcasting against ``ra``, ``dec`` (a
    tangent point per position, e.g. each halo's own centre).

    Returns
    -------
    xi, eta : numpy.ndarray
        Tangent-plane offsets in degrees (east, north).
    front : numpy.ndarray of bool
        True for points on the near hemisphere, where the projection is defined.

    Examples
    --------
    >>> xi, eta, front = tan_forward([150.5], [2.0], 150.0, 2.0)
    >>> round(float(xi[0]), 6), bool(front[0])
    (0.499695, True)
    """
    a = np.radians(np.asarray(ra, dtype=np.float64))
    d = np.radians(np.asarray(dec, dtype=np.float64))
    if np.ndim(ra0) == 0 and np.ndim(dec0) == 0:
        a0, d0 = math.radians(ra0), math.radians(dec0)
        sin_d0, cos_d0 = math.sin(d0), math.cos(d0)
    else:  # one tangent point per position
        a0, d0 = np.radians(np.asarray(ra0, dtype=np.float64)), np.radians(np.asarray(dec0, dtype=np.float64))
        sin_d0, cos_d0 = np.sin(d0), np.cos(d0)
    da = a - a0
    cos_d, sin_d, cos_da = np.cos(d), np.sin(d), np.cos(da)
    cos_c = sin_d0 * sin_d + cos_d0 * cos_d * cos_da
    front = cos_c > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        xi = np.degrees(cos_d * np.sin(da) / cos_c)
        eta = np.degrees((cos_d0 * sin_d - sin_d0 * cos_d * cos_da) / cos_c)
    return xi, eta, front


def tan_inverse(xi, eta, ra0, dec0):
    """Inverse gnomonic projection of offsets ``xi`` (east), ``eta`` (north) about ``(ra0, dec0)``.

    Returns ra in [0, 360) and dec, in degrees.

    Examples
    --------
    >>> ra, dec = tan_inverse(*tan_forward([10.0, 359.0], [-5.0, 3.0], 0.5, -1.0)[:2], 0.5, -1.0)
    >>> np.round(ra, 9).tolist(), np.round(dec, 9).tolist()
    ([10.0, 359.0], [-5.0, 3.0])
    """
    ra0, dec0 = np.radians(ra0), np.radians(dec0)
    x = np.radians(np.asarray(xi, dtype=float))
    y = np.radians(np.asarray(eta, dtype=float))
    rho = np.hypot(x, y)
    c = np.arctan(rho)
    with np.errstate(invalid="ignore", divide="ignore"):
        sin_dec = np.cos(c) * np.sin(dec0) + np.where(rho > 0, y * np.sin(c) * np.cos(dec0) / rho, 0.0)
        dec = np.arcsin(np.clip(sin_dec, -1, 1))
        ra = ra0 + np.arctan2(x * np.sin(c), rho * np.cos(dec0) * np.cos(c) - y * np.sin(dec0) * np.sin(c))
    return np.degrees(ra) % 360.0, np.degrees(dec)


def wrap_ra_degrees(ra) -> np.ndarray:
    """Right ascension wrapped into [0, 360) degrees (non-numeric input is returned unchanged).

    Examples
    --------
    >>> wrap_ra_degrees([-30.0, 360.0, 725.0, -1e-20]).tolist()
    [330.0, 0.0, 5.0, 0.0]
    """
    a = np.asarray(ra)
    if a.dtype.kind not in "iuf":
        return a  # left for the catalogue validation to report
    with np.errstate(invalid="ignore"):
        w = np.mod(a.astype(float), 360.0)
    # -1e-20 % 360 rounds to 360.0 in floating point
    return np.where(w >= 360.0, 0.0, w)


def field_center(ra, dec) -> tuple[float, float]:
    """Centre of the ra/dec extent of a set of positions (degrees), wrap-aware in ra.

    The ra extent is the shortest arc containing every position (the complement of the
    largest gap between neighbouring ra values on the circle), so a field straddling
    ra = 0/360 is centred near 0, not near 180.

    Examples
    --------
    >>> field_center([359.5, 0.3, 0.1], [-1.0, 1.0, 0.0])
    (359.9, 0.0)
    """
    arrays = {}
    for name, value in (("ra", ra), ("dec", dec)):
        try:
            if isinstance(value, (str, bytes)):
                raise TypeError
            arrays[name] = np.asarray(value, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            raise ProjectionError(f"field_center: {name} must be numbers (degrees), got {value!r}") from None
    ra, dec = arrays["ra"], arrays["dec"]
    if ra.size == 0 or dec.size == 0:
        raise ProjectionError(
            f"field_center: no positions (ra has {ra.size}, dec has {dec.size} values); give one ra and one dec per halo"
        )
    if ra.size != dec.size:
        raise ProjectionError(f"field_center: ra has {ra.size} values but dec has {dec.size}; give one of each per halo")
    bad = ~(np.isfinite(ra) & np.isfinite(dec))
    if bad.any():
        raise ProjectionError(
            f"field_center: ra/dec must be finite; {int(bad.sum())} of {ra.size} positions are NaN or inf "
            f"(first positions: {format_offenders(np.flatnonzero(bad))})"
        )
    if np.any(np.abs(dec) > 90.0):
        raise ProjectionError(f"field_center: dec must be in [-90, 90] degrees, got values up to {np.abs(dec).max():g}")
    ra = np.sort(ra % 360.0)
    gaps = np.diff(np.concatenate([ra, [ra[0] + 360.0]]))
    g = int(np.argmax(gaps))
    start = ra[(g + 1) % ra.size]
    span = 360.0 - float(gaps[g])
    c_ra = round((start + span / 2.0) % 360.0, 12)
    return float(c_ra), float(0.5 * (dec.min() + dec.max()))
