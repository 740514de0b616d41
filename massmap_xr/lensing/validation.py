"""Input checks of the lensing functions and their error type.

:class:`LensingError` is a :class:`~massmap_xr.errors.ProjectionError` (and so a
:class:`~massmap_xr.errors.MassmapError` and a :class:`ValueError`): a lensing map is a
projection of the halo masses.
"""

from __future__ import annotations

import numpy as np

from massmap_xr.errors import LensingError, format_offenders

__all__ = ["LensingError", "halo_inputs"]


def halo_inputs(masses, z=None, ra=None, dec=None):
    """Validated ``(masses, sample_dim, z, ra, dec)`` of a lensing map.

    ``masses`` is a DataArray ``(halo[, sample])`` in M_sun (e.g. ``ds.massmap.sample(n)``)
    with ``ra``/``dec`` (deg) and ``z`` coordinates along ``halo``, or a plain array with
    explicit ``ra``, ``dec`` and ``z``.  Masses stay lazy; positions and redshifts are loaded.
    """
    from massmap_xr.sky import validate_masses, validate_positions

    masses, sample_dim = validate_masses(masses)
    ra_v, dec_v = validate_positions(masses, ra, dec)
    if z is None:
        z = masses.coords.get("z")
    if z is None:
        raise LensingError(
            "missing z: no 'z' coordinate on masses; pass z= (lens redshift, one per halo) or keep the "
            "catalogue's z coordinate along 'halo'"
        )
    try:
        z_v = np.asarray(z, dtype=np.float64)
    except (TypeError, ValueError):
        raise LensingError(f"z must be redshift numbers, one per halo, got {type(z).__name__}") from None
    if z_v.ndim == 0:
        z_v = np.full(masses.sizes["halo"], float(z_v))
    if z_v.shape != (masses.sizes["halo"],):
        raise LensingError(f"z has shape {z_v.shape} but masses have {masses.sizes['halo']} halos; give one redshift per halo")
    bad = ~np.isfinite(z_v) | (z_v < 0)
    if bad.any():
        ids = np.asarray(masses["halo"].values) if "halo" in masses.coords else np.arange(z_v.size)
        raise LensingError(
            f"z: must be finite and >= 0; {int(bad.sum())} halo(s) break it, first ids: {format_offenders(ids[bad])}"
        )
    return masses, sample_dim, z_v, ra_v, dec_v


def check_mass_block(m: np.ndarray) -> None:
    """Masses of one block must be finite and >= 0 (M_sun)."""
    if m.size and not (np.isfinite(m).all() and m.min() >= 0):
        n = int((~np.isfinite(m) | (m < 0)).sum())
        raise LensingError(f"masses: {n} value(s) are NaN, inf or negative; masses must be finite and >= 0 M_sun")
