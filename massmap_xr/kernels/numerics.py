"""Compiled numerics shared by the posterior kernel and the catalogue-likelihood kernel.

- :func:`trapezoid_weights`: quadrature weights of the trapezoid rule on any grid;
- :func:`hyper_scale`: the power of two that keeps ln L_obs - ln μ_L from overflowing for
  hyperparameters beyond 2^500;
- :func:`nearest_index`, :func:`inverse_width`, :func:`half_u2_excess` (numba, inlined): the
  pieces of the log-space path, which takes the smallest ½u² on the grid out before the prior
  is added (see :mod:`massmap_xr.kernels.posterior`).
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = [
    "LN_SQRT_2PI",
    "half_u2_excess",
    "hyper_scale",
    "inverse_width",
    "nearest_index",
    "trapezoid_weights",
]

#: ln √(2π), the normalisation of a unit Gaussian
LN_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def trapezoid_weights(x: np.ndarray) -> np.ndarray:
    """Weights w with ``sum(w * f)`` equal to the trapezoid integral of f over the points ``x``.

    Parameters
    ----------
    x : numpy.ndarray (n,)
        Increasing abscissae (e.g. log10 M in dex).

    Returns
    -------
    numpy.ndarray (n,)
        float64 weights, in the units of ``x``.

    Examples
    --------
    >>> trapezoid_weights(np.array([0.0, 1.0, 3.0])).tolist()
    [0.5, 1.5, 1.0]
    """
    x = np.asarray(x, dtype=float)
    w = np.zeros_like(x)
    dx = np.diff(x)
    w[:-1] += 0.5 * dx
    w[1:] += 0.5 * dx
    return w


def hyper_scale(a1, a2, a4) -> np.ndarray:
    """Power-of-two factor c per realization with c·max(|α1|, |α2|, |α4|) < 1 when that exceeds 2^500, else 1.

    The log-space paths form ln L_obs - ln μ_L from hyperparameters multiplied by c, so that
    no partial sum overflows even for α's near the float64 limit (c = 1, i.e. exact, for every
    realistic relation).
    """
    mx = np.maximum(np.maximum(np.abs(a1), np.abs(a2)), np.abs(a4))
    _, e = np.frexp(mx)
    return np.where(mx > 2.0**500, np.ldexp(1.0, -e), 1.0)



@numba.njit(cache=True, inline="always")
def nearest_index(x, xs):  # pragma: no cover - compiled
    """Index of the point of the increasing grid ``x`` nearest to ``xs`` (may be ±inf)."""
    n = x.shape[0]
    if not xs > x[0]:
        return 0
    if not xs < x[n - 1]:
        return n - 1
    lo = 0
    hi = n - 1
    while hi - lo > 1:  # x[lo] < xs < x[hi]
        mid = (lo + hi) // 2
        if x[mid] <= xs:
            lo = mid
        else:
            hi = mid
    return lo if xs - x[lo] <= x[hi] - xs else hi



@numba.njit(cache=True, inline="always")
def inverse_width(w):  # pragma: no cover - compiled
    """1/w where that is safe to multiply by (w not tiny), else 0 (meaning: divide by w)."""
    return 1.0 / w if w > 1e-290 else 0.0



@numba.njit(cache=True, inline="always")
def half_u2_excess(slope, dx_bm, d_m, d_b, w, iw):  # pragma: no cover - compiled
    """½(u_m² - u_b²) = ½ · slope(x_b - x_m)/w · (d_m + d_b)/w, ≥ 0, never NaN (may be +inf).

    ``dx_bm`` = x_b - x_m, d = ln L_obs - ln μ_L, u = d / w (d, slope and w may all carry the
    same scale factor); b is the grid point nearest the relation's inverse, so the excess is
    ≥ 0 up to round-off (clipped at 0).  ``iw`` is :func:`inverse_width` of ``w`` (``w`` may
    have underflowed to 0).
    """
    num_p = slope * dx_bm
    num_q = d_m + d_b
    if num_p == 0.0 or num_q == 0.0:
        return 0.0
    if iw > 0.0:
        h = 0.5 * (num_p * iw) * (num_q * iw)
    else:
        h = 0.5 * (num_p / w) * (num_q / w)
    return h if h > 0.0 else 0.0

