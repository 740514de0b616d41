"""NFW halo profiles for lensing: M200m halos, concentration-mass relations, projected profiles.

Mass definition
---------------
A halo's mass is read as **M200m**, the mass inside the radius r200m within which the mean
density is 200 times the *mean matter* density of the universe at the halo's redshift,
``M = (4 pi / 3) 200 rho_m(z) r200m**3`` with ``rho_m(z) = Om0 rho_crit,0 (1 + z)**3``: the mass
definition of the Tinker (2010) prior (hmf's ``SOMean(200)``).  Masses are in M_sun (not
M_sun/h), lengths in physical Mpc.

Profiles
--------
NFW, ``rho(r) = rho_s / ((r / r_s) (1 + r / r_s)**2)`` with ``r_s = r200m / c``.

- ``truncation="r200m"`` (default): the 3-D profile is cut sharply at r200m, so the projected
  mass of a halo equals its mass M200m.  Projected surface density and enclosed projected mass
  are analytic (Takada & Jain 2003, MNRAS 340, 580, eq. 27; the enclosed mass integrates it).
- ``truncation=None``: the untruncated NFW (Wright & Brainerd 2000, ApJ 534, 34); its projected
  mass diverges logarithmically, so maps cut the *projected* profile at ``cut`` x r200m
  (default 3, see :mod:`massmap_xr.lensing.maps`); :func:`nfw_kappa` and :func:`nfw_shear`
  evaluate the profile itself, without cut.

Concentration
-------------
Default Duffy et al. (2008, MNRAS 390, L64; Table 1, NFW, full sample z = 0-2, M200m ("mean")):
``c = 10.14 (M / M_pivot)**-0.081 (1 + z)**-1.01`` with ``M_pivot = 2e12 M_sun/h`` (computed
here, the same numbers as ``colossus``'s ``duffy08`` model).  Any other model of
:mod:`colossus.halo.concentration` by name (colossus' cosmology is set from the astropy one,
sigma8 and n_s from the astropy realisation's metadata; no network needed), a constant, or a
callable ``c(mass_msun, z)``.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from massmap_xr.lensing.cosmology import get_cosmology, rho_mean, sigma_crit_inverse
from massmap_xr.lensing.validation import LensingError

__all__ = [
    "DUFFY08_M200M",
    "concentration",
    "describe_concentration",
    "r200m",
    "nfw_kappa",
    "nfw_shear",
    "nfw_sigma",
    "nfw_mass_2d",
]

#: Duffy et al. (2008) Table 1, NFW, full sample (z = 0-2), M200m: A, B, C, pivot mass (M_sun/h)
DUFFY08_M200M = {"A": 10.14, "B": -0.081, "C": -1.01, "M_pivot_msun_h": 2.0e12}


# --------------------------------------------------------------------------------------
# concentration
# --------------------------------------------------------------------------------------
def check_truncation(truncation):
    if truncation not in ("r200m", None):
        raise LensingError(f"truncation must be 'r200m' (cut at r200m, the default) or None (untruncated NFW), got {truncation!r}")
    return truncation


def describe_concentration(concentration) -> str:
    if concentration is None or concentration == "duffy08":
        p = DUFFY08_M200M
        return f"duffy08 (Duffy et al. 2008, M200m full sample: A={p['A']}, B={p['B']}, C={p['C']}, M_pivot=2e12 M_sun/h)"
    if isinstance(concentration, str):
        return f"colossus {concentration}"
    if callable(concentration):
        return f"callable {getattr(concentration, '__name__', type(concentration).__name__)}"
    return f"constant c = {float(concentration):g}"


def _colossus_concentration(model, mass_h, z, cosmo):
    try:
        from colossus.cosmology import cosmology as ccosmo
        from colossus.halo import concentration as cconc
    except ImportError:  # pragma: no cover
        raise LensingError(f"concentration={model!r} needs colossus (pip install colossus)") from None
    if model not in cconc.models:
        raise LensingError(
            f"concentration: unknown model {model!r}; use 'duffy08' (default), one of colossus' models "
            f"{sorted(cconc.models)}, a number or a callable c(mass, z)"
        )
    name = f"massmap_{cosmo.name or 'custom'}"
    current = ccosmo.current_cosmo if hasattr(ccosmo, "current_cosmo") else None
    if current is None or getattr(current, "name", None) != name:
        sigma8 = float(cosmo.meta.get("sigma8", 0.817)) if cosmo.meta else 0.817
        ns = float(cosmo.meta.get("n", 0.962)) if cosmo.meta else 0.962
        ccosmo.fromAstropy(cosmo, sigma8, ns, cosmo_name=name, persistence="")
    out = np.empty_like(mass_h)
    for zi in np.unique(z):
        sel = z == zi
        out[sel] = cconc.concentration(mass_h[sel], "200m", float(zi), model=model, range_warning=False)
    return out


def concentration(mass, z, concentration=None, cosmology=None) -> np.ndarray:
    """Concentration c200m of halos of mass M200m ``mass`` (M_sun) at redshift ``z`` (broadcast).

    ``concentration``: None or "duffy08" (default), a colossus model name, a number or a
    callable ``c(mass_msun, z)``.
    """
    mass = np.asarray(mass, dtype=float)
    z = np.asarray(z, dtype=float)
    mass, z = np.broadcast_arrays(mass, z)
    cosmo = get_cosmology(cosmology)
    if concentration is None or concentration == "duffy08":
        p = DUFFY08_M200M
        mh = mass * cosmo.h
        with np.errstate(divide="ignore"):
            return p["A"] * (np.maximum(mh, 1e-300) / p["M_pivot_msun_h"]) ** p["B"] * (1.0 + z) ** p["C"]
    if isinstance(concentration, str):
        flat_m = np.maximum(mass.ravel() * cosmo.h, 1.0)
        return _colossus_concentration(concentration, flat_m, z.ravel(), cosmo).reshape(mass.shape)
    if callable(concentration):
        c = np.broadcast_to(np.asarray(concentration(mass, z), dtype=float), mass.shape)
    else:
        try:
            c = np.broadcast_to(np.asarray(float(concentration)), mass.shape)
        except (TypeError, ValueError):
            raise LensingError(
                f"concentration must be None/'duffy08', a colossus model name, a number or a callable, got {concentration!r}"
            ) from None
    if not (np.all(np.isfinite(c)) and np.all(c > 0)):
        raise LensingError("concentration: values must be finite and > 0")
    return np.array(c, dtype=float)


def r200m(mass, z, cosmology=None) -> np.ndarray:
    """Radius r200m (physical Mpc) of halos of mass M200m ``mass`` (M_sun) at redshift ``z``."""
    return np.cbrt(3.0 * np.asarray(mass, dtype=float) / (4.0 * math.pi * 200.0 * rho_mean(z, cosmology)))


# --------------------------------------------------------------------------------------
# dimensionless profiles (scalars, numba; also used by the map kernels)
# --------------------------------------------------------------------------------------
_EPS1 = 1e-4  # |x - 1| below which the x = 1 branch is taken by linear interpolation


@nb.njit(cache=True)
def nfw_mass_factor(c):
    """m(c) = ln(1 + c) - c / (1 + c)."""
    return math.log1p(c) - c / (1.0 + c)


@nb.njit(cache=True)
def f_untruncated(x):
    """Wright & Brainerd Sigma(x) / (2 rho_s r_s) of the untruncated NFW."""
    if x < 1.0 - _EPS1:
        s = math.sqrt(1.0 - x * x)
        return (1.0 - math.acosh(1.0 / x) / s) / (x * x - 1.0)
    if x > 1.0 + _EPS1:
        s = math.sqrt(x * x - 1.0)
        return (1.0 - math.acos(1.0 / x) / s) / (x * x - 1.0)
    a, b = 1.0 - _EPS1, 1.0 + _EPS1
    fa = (1.0 - math.acosh(1.0 / a) / math.sqrt(1.0 - a * a)) / (a * a - 1.0)
    fb = (1.0 - math.acos(1.0 / b) / math.sqrt(b * b - 1.0)) / (b * b - 1.0)
    return fa + (fb - fa) * (x - a) / (b - a)


@nb.njit(cache=True)
def h_untruncated(x):
    """Enclosed projected mass of the untruncated NFW, M_2D(<x r_s) / (4 pi rho_s r_s^3)."""
    if x <= 0.0:
        return 0.0
    if x < 1e-4:  # series: x^2/4 (2 ln(2/x) - 1) ... to leading orders
        return 0.25 * x * x * (2.0 * math.log(2.0 / x) - 1.0)
    if x < 1.0 - _EPS1:
        return math.log(0.5 * x) + math.acosh(1.0 / x) / math.sqrt(1.0 - x * x)
    if x > 1.0 + _EPS1:
        return math.log(0.5 * x) + math.acos(1.0 / x) / math.sqrt(x * x - 1.0)
    a, b = 1.0 - _EPS1, 1.0 + _EPS1
    ha = math.log(0.5 * a) + math.acosh(1.0 / a) / math.sqrt(1.0 - a * a)
    hb = math.log(0.5 * b) + math.acos(1.0 / b) / math.sqrt(b * b - 1.0)
    return ha + (hb - ha) * (x - a) / (b - a)


@nb.njit(cache=True)
def _k_term(x, c):
    """int_x^c du / ((1 + u) sqrt(u^2 - x^2)) for 0 < x < c."""
    a = (x * x + c) / (x * (1.0 + c))
    if x < 1.0 - _EPS1:
        return math.acosh(max(a, 1.0)) / math.sqrt(1.0 - x * x)
    if x > 1.0 + _EPS1:
        return math.acos(min(a, 1.0)) / math.sqrt(x * x - 1.0)
    lo, hi = 1.0 - _EPS1, 1.0 + _EPS1
    al = (lo * lo + c) / (lo * (1.0 + c))
    ah = (hi * hi + c) / (hi * (1.0 + c))
    kl = math.acosh(max(al, 1.0)) / math.sqrt(1.0 - lo * lo)
    kh = math.acos(min(ah, 1.0)) / math.sqrt(hi * hi - 1.0)
    return kl + (kh - kl) * (x - lo) / (hi - lo)


@nb.njit(cache=True)
def f_truncated(x, c):
    """Sigma(x) / (2 rho_s r_s) of the NFW truncated at r = c r_s (zero for x >= c)."""
    if x >= c:
        return 0.0
    s = math.sqrt(c * c - x * x)
    # Takada & Jain (2003) eq. 27 in the form  [ -s/(1+c) + K(x, c) ] / (1 - x^2) with the
    # x -> 1 limit handled by interpolation (K and the prefactor are smooth there)
    if abs(x - 1.0) > _EPS1:
        return (-s / (1.0 + c) + _k_term(x, c)) / (1.0 - x * x)
    lo, hi = 1.0 - _EPS1, 1.0 + _EPS1
    fl = (-math.sqrt(c * c - lo * lo) / (1.0 + c) + _k_term(lo, c)) / (1.0 - lo * lo)
    fh = (-math.sqrt(c * c - hi * hi) / (1.0 + c) + _k_term(hi, c)) / (1.0 - hi * hi)
    return fl + (fh - fl) * (x - lo) / (hi - lo)


@nb.njit(cache=True)
def h_truncated(x, c):
    """M_2D(<x r_s) / (4 pi rho_s r_s^3) of the NFW truncated at c r_s (= m(c) for x >= c)."""
    if x >= c:
        return nfw_mass_factor(c)
    if x <= 0.0:
        return 0.0
    # m(c) - int_x^c sqrt(u^2 - x^2) / (1 + u)^2 du, integrated by parts
    j = -math.sqrt(c * c - x * x) / (1.0 + c) + math.acosh(c / x) - _k_term(x, c)
    if x < 1e-4:  # cancellation: use the untruncated series plus the (smooth) truncation correction
        return h_untruncated(x) - (_h_untr_ref(c, x))
    return nfw_mass_factor(c) - j


@nb.njit(cache=True)
def _h_untr_ref(c, x):
    """Mass of the untruncated NFW inside the cylinder x but outside the sphere c, small-x form.

    For x << 1 the sphere's cap is negligible: outside-sphere cylinder mass ~ x^2 times
    int_c^inf du / (u (1+u)^2) ... written via its exact small-x limit
    (x^2 / 2) [ ln((1+c)/c) - 1/(1+c) ].
    """
    return 0.5 * x * x * (math.log((1.0 + c) / c) - 1.0 / (1.0 + c))


@nb.njit(cache=True)
def _profile_point(x, c, truncated):
    """(Sigma, M_2D) / (2 rho_s r_s, 4 pi rho_s r_s^3) at x = R / r_s."""
    if truncated:
        return f_truncated(x, c), h_truncated(x, c)
    return f_untruncated(x), h_untruncated(x)


@nb.njit(cache=True)
def _profile_arrays(x, c, truncated, f_out, h_out):
    for i in range(x.size):
        f_out[i], h_out[i] = _profile_point(x[i], c[i], truncated)


# --------------------------------------------------------------------------------------
# public single-halo profiles
# --------------------------------------------------------------------------------------
def _halo_profile(mass, z, theta_arcmin, concentration_model, truncation, cosmology):
    """Broadcast inputs; return Sigma (M_sun Mpc^-2), M_2D (M_sun), R (Mpc), shape."""
    cosmo = get_cosmology(cosmology)
    truncated = check_truncation(truncation) == "r200m"
    try:
        mass, z, theta = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (mass, z, theta_arcmin)))
    except ValueError as exc:
        raise LensingError(f"mass, z and theta_arcmin must broadcast together ({exc})") from None
    for name, v in (("mass", mass), ("z", z), ("theta_arcmin", theta)):
        if not np.all(np.isfinite(v)) or np.any(v < 0):
            raise LensingError(f"{name} must be finite and >= 0 (mass in M_sun, theta in arcmin)")
    if np.any(mass <= 0):
        raise LensingError("mass must be > 0 M_sun for a single-halo profile")
    c = concentration(mass, z, concentration_model, cosmo)
    rt = r200m(mass, z, cosmo)
    rs = rt / c
    zu, inv = np.unique(z.ravel(), return_inverse=True)
    dl = cosmo.angular_diameter_distance(zu).to_value("Mpc")[inv.ravel()].reshape(z.shape)
    R = np.radians(theta / 60.0) * dl
    rho_s = mass / (4.0 * math.pi * rs**3 * (np.log1p(c) - c / (1.0 + c)))
    x = np.ascontiguousarray((R / rs).ravel())
    f = np.empty(x.size)
    h = np.empty(x.size)
    _profile_arrays(x, np.ascontiguousarray(c.ravel()), truncated, f, h)
    sigma = 2.0 * rho_s * rs * f.reshape(mass.shape)
    m2d = 4.0 * math.pi * rho_s * rs**3 * h.reshape(mass.shape)
    return sigma, m2d, R, mass.shape, z


def _unique_inverse_sigma_crit(z, z_source, cosmology):
    zu, inv = np.unique(z.ravel(), return_inverse=True)
    return sigma_crit_inverse(zu, z_source, cosmology=cosmology)[inv.ravel()].reshape(z.shape)


def nfw_sigma(mass, z, theta_arcmin, *, concentration=None, truncation="r200m", cosmology=None) -> np.ndarray:
    """Projected surface density Sigma (M_sun Mpc^-2, physical) at angle ``theta_arcmin``."""
    return _halo_profile(mass, z, theta_arcmin, concentration, truncation, cosmology)[0]


def nfw_mass_2d(mass, z, theta_arcmin, *, concentration=None, truncation="r200m", cosmology=None) -> np.ndarray:
    """Projected mass (M_sun) inside the angle ``theta_arcmin``; tends to ``mass`` for the truncated profile."""
    return _halo_profile(mass, z, theta_arcmin, concentration, truncation, cosmology)[1]


def nfw_kappa(mass, z, theta_arcmin, *, z_source, concentration=None, truncation="r200m", cosmology=None) -> np.ndarray:
    """Convergence kappa = Sigma / Sigma_crit of NFW halos at angular radius ``theta_arcmin``.

    Parameters
    ----------
    mass : float or array_like
        Halo mass M200m in M_sun (> 0).
    z : float or array_like
        Halo (lens) redshift.
    theta_arcmin : float or array_like
        Angular distance from the halo centre in arcmin (broadcast with ``mass`` and ``z``).
    z_source : float or (array_like, array_like)
        Source redshift, or a distribution ``(z_s, weights)`` (1 / Sigma_crit averaged over it).
    concentration : None, str, float or callable
        Concentration-mass relation (default Duffy et al. 2008, M200m); see
        :func:`concentration`.
    truncation : {"r200m", None}, default "r200m"
        Cut the 3-D profile at r200m (projected mass = M200m), or the untruncated NFW.
    cosmology : str or astropy cosmology, optional
        Default WMAP5 (the prior's).

    Returns
    -------
    numpy.ndarray
        kappa (dimensionless); 0 for halos at or behind the sources.

    Examples
    --------
    >>> k = nfw_kappa(1e14, 0.3, [0.5, 1.0, 2.0], z_source=1.0)
    >>> bool(k[0] > k[1] > k[2] > 0)
    True
    """
    sigma, _, _, _, zb = _halo_profile(mass, z, theta_arcmin, concentration, truncation, cosmology)
    return sigma * _unique_inverse_sigma_crit(zb, z_source, cosmology)


def nfw_shear(mass, z, theta_arcmin, *, z_source, concentration=None, truncation="r200m", cosmology=None) -> np.ndarray:
    """Tangential shear gamma_t = mean kappa inside theta - kappa(theta) of NFW halos.

    Same arguments as :func:`nfw_kappa`; ``theta_arcmin`` must be > 0.  Outside r200m the
    truncated halo shears like a point of mass M200m: gamma_t = M / (pi R^2 Sigma_crit).
    """
    theta = np.asarray(theta_arcmin, dtype=float)
    if np.any(theta <= 0):
        raise LensingError("theta_arcmin must be > 0 for the tangential shear (it is undefined at the centre)")
    sigma, m2d, R, _, zb = _halo_profile(mass, z, theta, concentration, truncation, cosmology)
    inv = _unique_inverse_sigma_crit(zb, z_source, cosmology)
    return (m2d / (math.pi * R**2) - sigma) * inv


@nb.njit(cache=True)
def _h_untr_loop(x, out):
    for i in range(x.size):
        out[i] = h_untruncated(x[i])


def h_untruncated_vec(x):
    x = np.ascontiguousarray(x, dtype=float)
    out = np.empty(x.size)
    _h_untr_loop(x.ravel(), out)
    return out.reshape(x.shape)
