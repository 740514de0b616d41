"""Weak-lensing maps from the mass posteriors: convergence kappa and shear gamma, with uncertainty.

Sampled halo masses (``ds.massmap.sample(n)``, M200m in M_sun) become stacks of convergence
and shear maps on the flat and HEALPix grids of :mod:`massmap_xr.sky`, one map per sample, so
that :func:`massmap_xr.sky.map_statistics` gives their posterior mean, std, quantiles and S/N.

Modules: :mod:`~massmap_xr.lensing.cosmology` (distances, Sigma_crit),
:mod:`~massmap_xr.lensing.profiles` (NFW profiles, concentration), :mod:`~massmap_xr.lensing.maps`
(flat maps, Kaiser-Squires), :mod:`~massmap_xr.lensing.healpix` (HEALPix maps).
"""

from __future__ import annotations

from massmap_xr.lensing.cosmology import sigma_crit, sigma_crit_inverse
from massmap_xr.lensing.healpix import kappa_healpix, shear_healpix
from massmap_xr.lensing.maps import SHEAR_CONVENTION, kaiser_squires, kappa_flat, kappa_map, shear_flat
from massmap_xr.lensing.profiles import concentration, nfw_kappa, nfw_mass_2d, nfw_shear, nfw_sigma, r200m
from massmap_xr.lensing.validation import LensingError

__all__ = [
    "LensingError",
    "SHEAR_CONVENTION",
    "concentration",
    "kaiser_squires",
    "kappa_flat",
    "kappa_healpix",
    "kappa_map",
    "nfw_kappa",
    "nfw_mass_2d",
    "nfw_shear",
    "nfw_sigma",
    "r200m",
    "shear_flat",
    "shear_healpix",
    "sigma_crit",
    "sigma_crit_inverse",
]
