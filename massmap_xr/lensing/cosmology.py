"""Lensing geometry: the cosmology, angular-diameter distances and the critical surface density.

The cosmology is that of the mass prior (:class:`massmap_xr.prior.TinkerPrior`): astropy's
``WMAP5`` realisation by default (H0 = 70.2 km/s/Mpc, i.e. h = 0.702 as in the prior,
Om0 = 0.277), given by name (an attribute of :mod:`astropy.cosmology`) or as an astropy
cosmology object.  Distances are physical (proper) angular-diameter distances in Mpc, and

    Sigma_crit(z_l, z_s) = c**2 D_s / (4 pi G D_l D_ls)        [M_sun Mpc^-2, physical]

with ``D_ls = angular_diameter_distance(z_l, z_s)`` (astropy >= 7 spelling of
``angular_diameter_distance_z1z2``).  A lens at or behind the source
(``z_l >= z_s``) does not lens it: its ``1 / Sigma_crit`` is 0 (``Sigma_crit`` is ``inf``).
For a distribution of source redshifts n(z_s), the lensing efficiency ``1 / Sigma_crit`` is
averaged over n(z_s) (it is what the convergence is linear in).
"""

from __future__ import annotations

import math

import numpy as np

from massmap_xr.lensing.validation import LensingError

__all__ = [
    "C2_OVER_4PIG",
    "get_cosmology",
    "cosmology_name",
    "sigma_crit",
    "sigma_crit_inverse",
    "SourceRedshifts",
    "rho_mean",
]

#: c^2 / (4 pi G) in M_sun / Mpc (CODATA 2018 constants and IAU 2015 solar mass, as astropy)
C2_OVER_4PIG = 1.6629165401756014e18


def get_cosmology(cosmology=None):
    """An astropy cosmology: ``None`` (WMAP5, the prior's), a name of :mod:`astropy.cosmology`, or an object."""
    import astropy.cosmology

    if cosmology is None:
        cosmology = "WMAP5"
    if isinstance(cosmology, str):
        obj = getattr(astropy.cosmology, cosmology, None)
        if not isinstance(obj, astropy.cosmology.Cosmology):
            raise LensingError(
                f"cosmology: {cosmology!r} is not an astropy cosmology realisation; use e.g. 'WMAP5' "
                "(the prior's), 'Planck18', or pass an astropy.cosmology object"
            )
        return obj
    if isinstance(cosmology, astropy.cosmology.Cosmology):
        return cosmology
    raise LensingError(
        f"cosmology must be None (WMAP5), a name such as 'WMAP5' or an astropy cosmology, got {type(cosmology).__name__}"
    )


def cosmology_name(cosmology) -> str:
    """Short description of a cosmology for attrs, e.g. ``"WMAP5 (H0=70.2, Om0=0.277)"``."""
    cosmo = get_cosmology(cosmology)
    return f"{cosmo.name or type(cosmo).__name__} (H0={cosmo.H0.value:g}, Om0={cosmo.Om0:g})"


def rho_mean(z, cosmology=None) -> np.ndarray:
    """Mean matter density at redshift ``z`` in M_sun Mpc^-3 (physical): Om0 rho_crit0 (1 + z)^3."""
    cosmo = get_cosmology(cosmology)
    rho_c0 = cosmo.critical_density0.to_value("solMass / Mpc3")
    return cosmo.Om0 * rho_c0 * (1.0 + np.asarray(z, dtype=float)) ** 3


def _as_redshift(value, name, *, allow_zero=True):
    try:
        if isinstance(value, (str, bytes)):
            raise TypeError
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise LensingError(f"{name} must be redshift numbers, got {value!r}") from None
    bad = ~np.isfinite(arr) | ((arr < 0) if allow_zero else (arr <= 0))
    if bad.any():
        rule = ">= 0" if allow_zero else "> 0"
        raise LensingError(
            f"{name} must be finite and {rule}; {int(bad.sum())} of {arr.size} value(s) are not "
            f"(first: {arr[bad].ravel()[:5].tolist()}); give redshifts, not distances"
        )
    return arr


class SourceRedshifts:
    """A source plane or a distribution n(z_s), validated.

    Parameters
    ----------
    z_source : float, or (z_s, weights)
        One source redshift (> 0), or a pair of 1-D arrays: redshifts (> 0) and non-negative
        weights (any normalisation, at least one > 0) of the source distribution.
    """

    def __init__(self, z_source):
        if isinstance(z_source, SourceRedshifts):
            self.z, self.w = z_source.z, z_source.w
            return
        if isinstance(z_source, tuple) and len(z_source) == 2:
            z = np.atleast_1d(_as_redshift(z_source[0], "z_source[0] (source redshifts)", allow_zero=False))
            try:
                w = np.atleast_1d(np.asarray(z_source[1], dtype=float))
            except (TypeError, ValueError):
                raise LensingError(f"z_source[1] (weights of n(z_s)) must be numbers, got {z_source[1]!r}") from None
            if z.ndim != 1 or w.shape != z.shape:
                raise LensingError(
                    f"z_source: redshifts and weights of n(z_s) must be 1-D of equal length, got shapes {z.shape} and "
                    f"{w.shape}; pass z_source=(z_s, weights)"
                )
            if not np.all(np.isfinite(w)) or np.any(w < 0) or not w.sum() > 0:
                raise LensingError("z_source: weights of n(z_s) must be finite, >= 0 and not all 0")
            self.z, self.w = z, w / w.sum()
            return
        z = _as_redshift(z_source, "z_source", allow_zero=False)
        if z.ndim != 0:
            raise LensingError(
                f"z_source must be one redshift or a pair (z_s, weights) for a distribution, got an array of shape "
                f"{z.shape}; pass z_source=(z_s, weights)"
            )
        self.z, self.w = np.array([float(z)]), np.array([1.0])

    @property
    def single(self) -> bool:
        return self.z.size == 1

    def describe(self) -> dict:
        if self.single:
            return {"z_source": float(self.z[0])}
        zm = float(np.sum(self.w * self.z))
        return {"z_source": "distribution", "z_source_mean": zm, "z_source_min": float(self.z.min()),
                "z_source_max": float(self.z.max()), "z_source_n": int(self.z.size)}


def _d12(cosmo, z1, z2):
    """Angular-diameter distance (Mpc) from z1 to z2 (astropy's two-redshift form)."""
    try:
        d = cosmo.angular_diameter_distance(z1, z2)
    except TypeError:  # astropy < 7
        d = cosmo.angular_diameter_distance_z1z2(z1, z2)
    return d.to_value("Mpc")


def _dls(cosmo, zl, zs):
    """D_ls (Mpc) for lens redshifts ``zl`` (any shape) and one source redshift, 0 where zl >= zs."""
    out = np.zeros(np.shape(zl))
    front = zl < zs
    if front.any():
        out[front] = _d12(cosmo, zl[front], zs)
    return out


def sigma_crit(z_lens, z_source, cosmology=None) -> np.ndarray:
    """Critical surface density Sigma_crit = c^2 D_s / (4 pi G D_l D_ls), M_sun Mpc^-2 (physical).

    Parameters
    ----------
    z_lens : float or array_like
        Lens redshift(s), >= 0.
    z_source : float or (array_like, array_like)
        Source redshift (broadcast against ``z_lens``), or a distribution ``(z_s, weights)``:
        then the returned value is the *effective* critical density ``1 / <1 / Sigma_crit>``
        averaged over n(z_s).
    cosmology : str or astropy cosmology, optional
        Default WMAP5 (the prior's cosmology).

    Returns
    -------
    numpy.ndarray
        Sigma_crit in M_sun Mpc^-2; ``inf`` where the lens is at or behind every source.

    Examples
    --------
    >>> float(sigma_crit(0.3, 1.0)) / 1e15   # doctest: +ELLIPSIS
    2.6...
    """
    inv = sigma_crit_inverse(z_lens, z_source, cosmology=cosmology)
    with np.errstate(divide="ignore"):
        return np.where(inv > 0, 1.0 / np.where(inv > 0, inv, 1.0), np.inf)


def sigma_crit_inverse(z_lens, z_source, cosmology=None) -> np.ndarray:
    """1 / Sigma_crit in Mpc^2 / M_sun (0 behind the sources), averaged over n(z_s) for a distribution."""
    cosmo = get_cosmology(cosmology)
    zl = _as_redshift(z_lens, "z_lens")
    if isinstance(z_source, (tuple, SourceRedshifts)):
        src = SourceRedshifts(z_source)
        dl = cosmo.angular_diameter_distance(zl).to_value("Mpc") if zl.size else np.zeros(zl.shape)
        out = np.zeros(zl.shape)
        for zs, w in zip(src.z, src.w, strict=True):
            ds = cosmo.angular_diameter_distance(zs).to_value("Mpc")
            out += w * _dls(cosmo, zl, zs) / ds
        return out * np.where(dl > 0, dl, 0.0) / C2_OVER_4PIG
    zs = _as_redshift(z_source, "z_source", allow_zero=False)
    zl, zs = np.broadcast_arrays(zl, zs)
    out = np.zeros(zl.shape)
    front = zl < zs
    if front.any():
        dl = cosmo.angular_diameter_distance(zl[front]).to_value("Mpc")
        ds = cosmo.angular_diameter_distance(zs[front]).to_value("Mpc")
        dls = _d12(cosmo, zl[front], zs[front])
        out[front] = dl * dls / ds / C2_OVER_4PIG
    return out


class LensGeometry:
    """D_l and 1 / Sigma_crit of many lens redshifts, interpolated on a fine redshift grid.

    Exact astropy distances on a grid of ``n_grid`` redshifts from 0 to max(z), then cubic
    interpolation (relative error < 1e-7 for the WMAP5 distances; the grid always contains
    the source redshifts so that 1 / Sigma_crit -> 0 at z_s is not smoothed over).
    """

    def __init__(self, z, source: SourceRedshifts, cosmology=None, n_grid: int = 1024):
        from scipy.interpolate import CubicSpline

        cosmo = get_cosmology(cosmology)
        z = np.asarray(z, dtype=float)
        zmax = float(z.max()) if z.size else 0.0
        if z.size <= n_grid:
            self.d_l = cosmo.angular_diameter_distance(z).to_value("Mpc") if z.size else np.zeros(0)
            self.sigma_crit_inv = sigma_crit_inverse(z, source, cosmology=cosmo)
            return
        knots = np.union1d(np.linspace(0.0, zmax, n_grid), source.z[source.z < zmax])
        dl = cosmo.angular_diameter_distance(knots).to_value("Mpc")
        self.d_l = CubicSpline(knots, dl)(z)
        inv = np.zeros_like(z)
        for zs, w in zip(source.z, source.w, strict=True):
            ds = cosmo.angular_diameter_distance(zs).to_value("Mpc")
            kn = knots[knots <= zs] if zs < zmax else knots
            if kn.size < 2:
                continue
            eff = _dls(cosmo, kn, zs) * cosmo.angular_diameter_distance(kn).to_value("Mpc") / ds
            front = z < zs
            inv[front] += w * CubicSpline(kn, eff)(np.minimum(z[front], kn[-1]))
        self.sigma_crit_inv = np.maximum(inv, 0.0) / C2_OVER_4PIG


def arcmin_to_rad(theta) -> np.ndarray:
    return np.asarray(theta, dtype=float) * (math.pi / 180.0 / 60.0)
