"""Inferring the hyperparameters (α, S) of the mass–luminosity relation from a catalogue.

Likelihood
----------
With the closed-form convolution over the unobserved true luminosity (see
:mod:`massmap_xr.model.relation`), the likelihood of one halo is a one-dimensional integral over mass::

    P(L_obs,k | z_k, α, S) = ∫ N(ln L_obs,k; ln μ_L(M, z_k), S² + σ_obs,k²) P(ln M | z_k) d ln M

with P(ln M | z) the mass prior normalised to integrate to 1 over the mass grid at each halo's
redshift (trapezoid rule in ln M; ln dn/dM interpolated linearly in z between the prior's
nodes, as everywhere in the package).  The density is per unit ln L_obs (a constant Jacobian
away from the density in L_obs).  The catalogue log-likelihood is the sum over halos,
accumulated in float64.

:class:`CatalogLikelihood` precomputes, once per catalogue, every halo's normalised prior row
with the quadrature weights folded in (``n_halo × n_mass`` float64), and then evaluates the
sum for any number of hyperparameter points in one compiled pass (numba, parallel over
fixed blocks of halos, so the result does not depend on the number of threads; small problems
run serially, where starting threads would cost more than it saves).  Three
devices make one evaluation cheap:

- *window*: the Gaussian factor of a halo, as a function of ln M, has width
  √(S² + σ_obs²)/α2 (about 0.45 for the Reddick values); only cells within ``window``
  (default 8) widths of its peak are summed.  The cells left out hold at most
  exp(-window²/2) of the Gaussian's peak value times the prior mass outside the window
  (≤ 1), so the relative error of the halo's likelihood is at most
  ``exp(-window²/2) / S_w`` with ``S_w`` the window's sum in units of the peak.  When that
  bound exceeds ``rel_tol`` (default 1e-12) the whole grid is summed instead, so every
  halo's likelihood carries a relative truncation error below ``rel_tol``;
- *recurrence*: on a log-uniform mass grid the Gaussian argument is linear in the cell
  index, so successive Gaussian values differ by a ratio that itself changes by the constant
  factor exp(-β²) (β = α2 Δln M / √(S² + σ_obs²)); the Gaussian is evaluated exactly with
  ``exp`` every 128 cells (fewer where u changes by more than 6 within a run) and by two
  multiplications per cell in between, in four
  interleaved lanes that keep the multipliers busy (per-halo relative error ≲ 1e-12, against
  ~2e-13 measured; other grids take one ``exp`` per cell);
- *log-space fallback*: halos whose window sum underflows (a luminosity far from every
  mean luminosity on the grid, or a prior that is numerically zero there) are recomputed in
  log space from the prior's node table, with the smallest ½u² on the grid taken out before
  the prior is added, so the log-likelihood is never NaN, and -inf only where it lies below
  the float64 range (½u² overflowing at every grid mass, e.g. α1 = 1e300).  The width
  √(S² + σ_obs²) is formed with ``hypot``, so a huge S (1e200) gives its finite, tiny
  likelihood rather than -inf, and hyperparameters beyond 2^500 are scaled by a power of two
  so that ln L_obs - ln μ_L does not overflow on the way.

Checks: a prior that is zero at every grid mass at some halo's redshift, or redshift nodes that
are not increasing or do not cover the catalogue, raise :class:`~massmap_xr.errors.PriorError`
naming the halos.

Optionally (``group_tol``) halos close in (z, ln L_obs) are grouped: each group's sum of
log-likelihoods is replaced by the exact integral of the quadratic that interpolates the
per-halo log-likelihood at six points inside the group's cell (cells never straddle a
redshift node of the prior, where ln dn/dM has a kink).  This error is not bounded a priori;
:meth:`CatalogLikelihood.grouping_error` measures it against the exact sum, and the package
default is no grouping.

Analytic gradients with respect to (α1, α2, α3, α4, S) come out of the same pass at little
extra cost and drive the optimiser of the Laplace method.

Inference
---------
:func:`infer_hyperparameters` samples the hyper-posterior P(α, S | catalogue) ∝
P(catalogue | α, S) P(α, S) for the free hyperparameters (default α1, α2, α4, S; the pivot
α3 is fixed) with either

- ``method="laplace"`` (default): find the maximum a posteriori point (BFGS with analytic
  gradients, polished by Newton steps with a Hessian from central differences of the
  gradient, in an unconstrained parametrisation: ln S, logit for bounded flat priors), build
  a Student-t proposal from the Hessian there, and importance-sample it: ``n`` proposal
  draws with normalised importance ``weight`` and the effective sample size in the attrs.
  For catalogues of thousands of halos the posterior is close to normal and the effective
  sample size close to ``n``;
- ``method="emcee"``: the affine-invariant ensemble sampler (:mod:`emcee`), walkers started
  from the Laplace approximation, with acceptance fraction, integrated autocorrelation time,
  effective sample size and split-R̂ across walkers in the attrs.

The result is a hyperparameter Dataset along ``realization`` (with ``chain`` and ``draw``
coordinates) that :func:`massmap_xr.cube.build_posterior` takes directly;
:func:`to_arviz` turns it into ArviZ's layout and :func:`infer_to_file` writes it to NetCDF
for :func:`massmap_xr.model.hyper.read_hyper` (and the ``massmap infer`` command).
"""

from __future__ import annotations

import math
import sys
import time
import types
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numba
import numpy as np
import xarray as xr

from massmap_xr.errors import InferenceError, MassmapWarning, OutputExistsError, PriorError, format_offenders
from massmap_xr.kernels.posterior import (
    ZERO_PRIOR_LOG,
    _half_u2_excess,
    _inverse_width,
    _nearest_index,
    check_prior_nonzero,
    check_prior_redshifts,
    hyper_scale,
)
from massmap_xr.model.hyper import REDDICK2013
from massmap_xr.model.prior import LOG_ZERO, check_mass_grid, default_mass_grid
from massmap_xr.model.relation import HYPER_NAMES

__all__ = [
    "DEFAULT_FREE",
    "FLAT_BOUNDS",
    "CatalogLikelihood",
    "HyperPrior",
    "infer_hyperparameters",
    "infer_to_file",
    "log_likelihood",
    "to_arviz",
]

#: Hyperparameters inferred by default (the pivot mass α3 is held fixed).
DEFAULT_FREE = ("alpha1", "alpha2", "alpha4", "S")
#: Bounds of the ``"flat"`` hyperprior: name -> (low, high).
FLAT_BOUNDS = {
    "alpha1": (5.0, 20.0),
    "alpha2": (0.01, 2.0),
    "alpha3": (1e12, 1e16),
    "alpha4": (-5.0, 5.0),
    "S": (1e-3, 2.0),
}
METHODS = ("laplace", "emcee")

_LN_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
#: halos per partial sum; fixed so that results do not depend on the number of threads
_HALO_BLOCK = 256
#: cells between exact evaluations of the Gaussian in the recurrence
_RESTART = 128
#: a window (or grid) sum below this is recomputed in log space
_TINY = 1e-280


# --------------------------------------------------------------------------------------------
# compiled kernel
# --------------------------------------------------------------------------------------------


@numba.njit(cache=True)
def _halo_logspace(k, l_k, zf_k, sig_k, x, lnw, lt, zi, zw, lognorm, a1, a2, lna3, a4, s, c, grad):  # pragma: no cover
    """ln L of one halo and its gradient pieces (E[u], E[u²], E[u x]), in log space over the whole grid.

    The width √(S² + σ_obs²) is formed with ``hypot`` (no overflow for huge S, no underflow for
    tiny ones); ln L_obs - ln μ_L is formed from the hyperparameters times the power of two
    ``c`` (:func:`massmap_xr.kernels.posterior.hyper_scale`, 1 for any realistic relation), so no partial
    sum overflows; and the smallest ½u² on the grid — at the grid point b nearest the relation's
    inverse — is taken out before the prior is added, as ½(u_m² - u_b²) computed from the
    difference of ln μ_L between the cells (see :mod:`massmap_xr.kernels.posterior`), so neither a huge
    common ½u² nor a huge α1 swallows the prior or the mass dependence.  The result is -inf
    (gradient pieces 0) only where ½u_b² itself overflows, i.e. where the log-likelihood is below
    the float64 range; it is never NaN.
    """
    n_m = x.shape[0]
    sd = math.hypot(s, sig_k)
    wc = sd * c  # the width in the scaled units (may underflow to 0)
    slope = a2 * c
    off = l_k * c - a1 * c - (a4 * c) * zf_k + slope * lna3  # (ln L_obs - ln μ_L(x)) c = off - slope x
    b = 0
    if slope != 0.0:
        b = _nearest_index(x, off / slope)
    d_b = off - slope * x[b]
    u_b = 0.0 if d_b == 0.0 else d_b / wc
    h_b = 0.5 * u_b * u_b
    if not h_b < math.inf:
        grad[0] = 0.0
        grad[1] = 0.0
        grad[2] = 0.0
        return -math.inf
    e = np.empty(n_m)
    emax = -np.inf
    iw = _inverse_width(wc)
    i = zi[k]
    w = zw[k]
    for m in range(n_m):
        lp = (1.0 - w) * lt[i, m] + w * lt[i + 1, m] + x[m] + lnw[m] - lognorm[k]
        e[m] = lp - _half_u2_excess(slope, x[b] - x[m], off - slope * x[m], d_b, wc, iw)
        emax = max(emax, e[m])
    a0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    for m in range(n_m):
        v = math.exp(e[m] - emax)
        if v == 0.0:  # also where u itself overflows
            continue
        dm = off - slope * x[m]
        u = 0.0 if dm == 0.0 else dm / wc
        a0 += v
        s1 += v * u
        s2 += v * u * u
        s3 += v * u * x[m]
    ll = (emax - h_b) + math.log(a0) - math.log(sd) - _LN_SQRT_2PI
    grad[0] = s1 / a0
    grad[1] = s2 / a0
    grad[2] = s3 / a0
    return ll


@numba.njit(cache=True, inline="always")
def _window_sum_uniform(rows, k, m_lo, m_hi, off, slope, beta, x, want_grad):  # pragma: no cover - compiled
    """Σ rows[k, m] exp(-u_m²/2) over m_lo..m_hi (and u-moments) on a log-uniform grid.

    u_m = off - slope·x_m decreases by ``beta`` per cell.  Four interleaved lanes (cells
    m, m+1, m+2, m+3 of every group of four) each follow the recurrence g ← g·R, R ← R·C with
    R the ratio four cells ahead and C = exp(-16β²); the lanes are independent, which keeps
    the multiplier pipelines busy.  Every lane restarts from exact ``exp`` values at the start
    of each run of ``_RESTART`` cells.
    """
    c = math.exp(-beta * beta)
    c4 = c * c * c * c
    c16 = c4 * c4 * c4 * c4
    a0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    m = m_lo
    while m <= m_hi:
        nb = min(_RESTART, m_hi + 1 - m)
        if abs(beta) * nb > 6.0:  # a run must not start so far out that its peak underflows
            nb = max(1, min(nb, int(6.0 / abs(beta))))
        n4 = nb // 4
        u = 0.0
        if n4 > 0:
            u = off - slope * x[m]
            g0 = math.exp(-0.5 * u * u)
            r1 = math.exp(beta * u - 0.5 * beta * beta)
            g1 = g0 * r1
            r2 = r1 * c
            g2 = g1 * r2
            g3 = g2 * (r2 * c)
            q0 = math.exp(4.0 * beta * u - 8.0 * beta * beta)
            q1 = q0 * c4
            q2 = q1 * c4
            q3 = q2 * c4
            acc0 = 0.0
            acc1 = 0.0
            acc2 = 0.0
            acc3 = 0.0
            if want_grad:
                u0 = u
                u1 = u - beta
                u2 = u1 - beta
                u3 = u2 - beta
                b4 = 4.0 * beta
                for j in range(n4):
                    mm = m + 4 * j
                    v0 = rows[k, mm] * g0
                    v1 = rows[k, mm + 1] * g1
                    v2 = rows[k, mm + 2] * g2
                    v3 = rows[k, mm + 3] * g3
                    acc0 += v0
                    acc1 += v1
                    acc2 += v2
                    acc3 += v3
                    t0 = v0 * u0
                    t1 = v1 * u1
                    t2 = v2 * u2
                    t3 = v3 * u3
                    s1 += (t0 + t1) + (t2 + t3)
                    s2 += (t0 * u0 + t1 * u1) + (t2 * u2 + t3 * u3)
                    s3 += (t0 * x[mm] + t1 * x[mm + 1]) + (t2 * x[mm + 2] + t3 * x[mm + 3])
                    u0 -= b4
                    u1 -= b4
                    u2 -= b4
                    u3 -= b4
                    g0 *= q0
                    g1 *= q1
                    g2 *= q2
                    g3 *= q3
                    q0 *= c16
                    q1 *= c16
                    q2 *= c16
                    q3 *= c16
            else:
                for j in range(n4):
                    mm = m + 4 * j
                    acc0 += rows[k, mm] * g0
                    acc1 += rows[k, mm + 1] * g1
                    acc2 += rows[k, mm + 2] * g2
                    acc3 += rows[k, mm + 3] * g3
                    g0 *= q0
                    g1 *= q1
                    g2 *= q2
                    g3 *= q3
                    q0 *= c16
                    q1 *= c16
                    q2 *= c16
                    q3 *= c16
            a0 += (acc0 + acc1) + (acc2 + acc3)
        for mm in range(m + 4 * n4, m + nb):
            u = off - slope * x[mm]
            v = rows[k, mm] * math.exp(-0.5 * u * u)
            a0 += v
            if want_grad:
                t0 = v * u
                s1 += t0
                s2 += t0 * u
                s3 += t0 * x[mm]
        m += nb
    return a0, s1, s2, s3


def _loglike_impl(
    lobs, zfac, sig, coef, rows, x, lnw, lt, zi, zw, lognorm,
    a1, a2, a3, a4, s, scale, window, rel_tol, uniform, want_grad, block, out_ll, out_grad, out_fallback,
):  # pragma: no cover - compiled
    n_h, n_m = rows.shape
    n_r = a1.shape[0]
    n_blocks = out_ll.shape[0]
    dx = x[1] - x[0]
    x0 = x[0]
    tail = math.exp(-0.5 * window * window)
    accept = tail / rel_tol
    ln_a3 = np.log(a3)
    for b in numba.prange(n_blocks):
        k0 = b * block
        k1 = min(k0 + block, n_h)
        pieces = np.empty(3)
        for k in range(k0, k1):
            l_k = lobs[k]
            zf_k = zfac[k]
            sig_k = sig[k]
            c_k = coef[k]
            for r in range(n_r):
                lna3 = ln_a3[r]
                sd = math.hypot(s[r], sig_k)  # √(S² + σ_obs²) without over- or underflow
                inv = 1.0 / sd  # inf for sd < 5.6e-309: the sums below are then NaN and fall back
                off = l_k - a1[r] - a4[r] * zf_k + a2[r] * lna3  # u(x) = (off - a2 x) / sd
                if abs(a2[r]) * (x[n_m - 1] - x0) > 1e-300:
                    xs = off / a2[r]
                    half = window * sd / abs(a2[r])
                    lo_x = xs - half
                    hi_x = xs + half
                    if uniform:
                        # clamp in floating point before converting (the ends may be huge, ±inf or NaN)
                        f_lo = (lo_x - x0) / dx - 1e-9
                        f_hi = (hi_x - x0) / dx + 1e-9
                        if not f_lo > 0.0:
                            m_lo = 0
                        elif f_lo < n_m:
                            m_lo = math.ceil(f_lo)
                        else:
                            m_lo = n_m
                        if not f_hi < n_m - 1:
                            m_hi = n_m - 1
                        elif f_hi >= 0.0:
                            m_hi = math.floor(f_hi)
                        else:
                            m_hi = -1
                    else:
                        m_lo = np.searchsorted(x, lo_x)
                        m_hi = np.searchsorted(x, hi_x, side="right") - 1
                        m_lo = max(0, m_lo)
                        m_hi = min(n_m - 1, m_hi)
                else:
                    m_lo = 0
                    m_hi = n_m - 1
                done = False
                a0 = 0.0
                s1 = 0.0
                s2 = 0.0
                s3 = 0.0
                for attempt in range(2):
                    if attempt == 1:
                        if m_lo == 0 and m_hi == n_m - 1:
                            break
                        m_lo = 0
                        m_hi = n_m - 1
                    a0 = 0.0
                    s1 = 0.0
                    s2 = 0.0
                    s3 = 0.0
                    if m_hi >= m_lo:
                        if uniform:
                            a0, s1, s2, s3 = _window_sum_uniform(rows, k, m_lo, m_hi, off * inv, a2[r] * inv,
                                                                 a2[r] * dx * inv, x, want_grad)
                        else:
                            for mm in range(m_lo, m_hi + 1):
                                u = (off - a2[r] * x[mm]) * inv
                                v = rows[k, mm] * math.exp(-0.5 * u * u)
                                a0 += v
                                if want_grad:
                                    vu = v * u
                                    s1 += vu
                                    s2 += vu * u
                                    s3 += vu * x[mm]
                    if attempt == 0:
                        if a0 >= accept:
                            done = True
                            break
                    elif a0 > _TINY:
                        done = True
                if done:
                    ll = math.log(a0) - math.log(sd) - _LN_SQRT_2PI
                    e1 = s1 / a0
                    e2 = s2 / a0
                    e3 = s3 / a0
                else:
                    out_fallback[b] += 1
                    ll = _halo_logspace(k, l_k, zf_k, sig_k, x, lnw, lt, zi, zw, lognorm,
                                        a1[r], a2[r], lna3, a4[r], s[r], scale[r], pieces)
                    e1 = pieces[0]
                    e2 = pieces[1]
                    e3 = pieces[2]
                if ll == -math.inf:
                    # below the float64 range: the total is -inf whatever the term's coefficient
                    # (grouped coefficients may be negative), and its gradient is not defined
                    out_ll[b, r] = -math.inf
                    continue
                out_ll[b, r] += c_k * ll
                if want_grad:
                    # d u / d(alpha1, alpha2, alpha3, alpha4) = -(1, x - ln a3, -a2 / a3, zf) / sd
                    t1 = e1 / sd
                    out_grad[b, r, 0] += c_k * t1
                    out_grad[b, r, 1] += c_k * (e3 / sd - lna3 * t1)
                    out_grad[b, r, 2] += c_k * (-(a2[r] / a3[r]) * t1)
                    out_grad[b, r, 3] += c_k * zf_k * t1
                    out_grad[b, r, 4] += c_k * (s[r] / sd) * ((e2 - 1.0) / sd)


def _renamed(fn, name: str):
    """A copy of the plain function ``fn`` under another name.

    numba names its on-disk cache entries after the function's qualified name and first line
    and keys them by signature only, not by compile options: two ``njit(cache=True)``
    dispatchers of the *same* function share one entry, and whichever compiles first is loaded
    by the other (a "parallel" kernel running serial code, no faster on 2 threads than on 1).
    Distinct names give distinct cache entries.
    """
    g = types.FunctionType(fn.__code__, fn.__globals__, name, fn.__defaults__, fn.__closure__)
    g.__qualname__ = name
    g.__doc__ = fn.__doc__
    return g


#: the kernel, threaded over halo blocks (large problems) and serial (small ones, where starting
#: threads costs more than it saves, above all on a busy machine); separate functions so that
#: numba's cache cannot hand one the other's machine code
_loglike_parallel = numba.njit(parallel=True, cache=True)(_renamed(_loglike_impl, "_loglike_impl_parallel"))
_loglike_serial = numba.njit(cache=True)(_renamed(_loglike_impl, "_loglike_impl_serial"))
#: problems smaller than this many (term × point) pairs run serially
_SERIAL_BELOW = 20000


# --------------------------------------------------------------------------------------------
# the catalogue likelihood
# --------------------------------------------------------------------------------------------


def _is_log_uniform(x: np.ndarray) -> bool:
    d = np.diff(x)
    return bool(np.allclose(d, d[0], rtol=1e-9, atol=0.0))


def _catalog_arrays(catalog, sigma_obs: float, z_range) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from massmap_xr.catalog import validate_catalog

    if not (isinstance(sigma_obs, (int, float, np.floating, np.integer)) and np.isfinite(sigma_obs) and sigma_obs > 0):
        raise InferenceError(f"sigma_obs must be a finite number > 0 (natural-log scatter of L_obs), got {sigma_obs!r}")
    validate_catalog(catalog, z_range=z_range, require_positions=False, warn=False)
    z = np.asarray(catalog["z"].values, dtype=np.float64)
    log_lobs = np.log(np.asarray(catalog["lum_obs"].values, dtype=np.float64))
    sig = (
        np.asarray(catalog["sigma_obs"].values, dtype=np.float64)
        if "sigma_obs" in catalog.variables
        else np.full(z.size, float(sigma_obs))
    )
    return z, log_lobs, sig


class CatalogLikelihood:
    """The catalogue log-likelihood ln P({L_obs} | {z}, α, S), precomputed for fast evaluation.

    Parameters
    ----------
    catalog : xarray.Dataset
        Halo catalogue with ``z`` and ``lum_obs`` along ``halo`` (optional per-halo
        ``sigma_obs``); positions are not needed.
    prior : MassPrior or xarray.DataArray, optional
        Mass prior P(M | z) (default :class:`~massmap_xr.model.prior.TinkerPrior`).  It is
        normalised over the mass grid at every halo's redshift.
    mass : array_like, optional
        Mass grid in M_sun (default 400 log-spaced points from 1e10 to 10^15.5).  The integral
        over mass is the trapezoid rule in ln M on this grid.
    sigma_obs : float, default 0.05
        Observational log-normal scatter of L_obs (natural log), for catalogues without a
        ``sigma_obs`` variable.
    group_tol : float or (float, float), optional
        Group halos in cells of this width in z and in ln L_obs (one number for both, or
        ``(dz, dlnL)``); see the module notes.  Default None: every halo is summed exactly.
    window : float, default 8
        Half-width, in Gaussian standard deviations, of the mass window summed per halo.
    rel_tol : float, default 1e-12
        Bound on the relative truncation error of every halo's likelihood; windows that cannot
        guarantee it are replaced by the whole grid.

    Attributes
    ----------
    n_halo : int
        Number of halos in the catalogue.
    n_terms : int
        Number of terms summed per evaluation (``n_halo`` without grouping).
    n_evaluations : int
        Hyperparameter points evaluated so far (each point of a vectorised call counts).
    n_fallback : int
        Halo evaluations that needed the log-space fallback so far.

    Raises
    ------
    CatalogError
        For an invalid catalogue (see :func:`~massmap_xr.catalog.validate_catalog`), or
        redshifts outside the prior's ``z_range``.
    PriorError
        If the prior's redshift nodes are not strictly increasing or do not cover a halo's
        redshift, or the prior is zero at every grid mass at some halo's redshift (the
        message names the halos).
    InferenceError
        For invalid settings (window, rel_tol, group_tol, sigma_obs, mass grid).

    Examples
    --------
    >>> from massmap_xr.catalog import mock_catalog
    >>> cat = mock_catalog(200, seed=3)
    >>> like = CatalogLikelihood(cat)
    >>> ll = like(10.709, [0.35, 0.359, 0.37], 2.35e14, 1.10, 0.155)
    >>> ll.shape, bool(ll[1] > ll[0])
    ((3,), True)
    """

    def __init__(self, catalog: xr.Dataset, prior=None, mass=None, *, sigma_obs: float = 0.05, group_tol=None,
                 window: float = 8.0, rel_tol: float = 1e-12):
        from massmap_xr.kernels.posterior import trapezoid_weights
        from massmap_xr.model.prior import as_prior

        if not (np.isfinite(window) and window >= 3.0):
            raise InferenceError(f"window must be >= 3 Gaussian widths, got {window!r}")
        if not (np.isfinite(rel_tol) and 0 < rel_tol < 1e-3):
            raise InferenceError(f"rel_tol must be in (0, 1e-3), got {rel_tol!r}")
        self.prior = as_prior(prior)
        self.mass = check_mass_grid(default_mass_grid() if mass is None else mass, "CatalogLikelihood",
                                    min_size=3, error=InferenceError)
        z, log_lobs, sig = _catalog_arrays(catalog, sigma_obs, self.prior.z_range)
        self.n_halo = int(z.size)
        self.sigma_obs = float(sigma_obs)
        self.window = float(window)
        self.rel_tol = float(rel_tol)
        x = np.log(self.mass)
        self._x = np.ascontiguousarray(x)
        self._uniform = _is_log_uniform(x)
        w = trapezoid_weights(x)
        self._lnw = np.log(w)
        z_nodes, lt = self.prior.log_table(self.mass)
        lt = np.ascontiguousarray(lt, dtype=np.float64)
        z_nodes = np.asarray(z_nodes, dtype=np.float64)
        if lt.ndim != 2 or lt.shape != (z_nodes.size, self.mass.size) or np.any(np.isnan(lt) | (lt == np.inf)):
            raise PriorError(
                f"the prior's log_table must be ln dn/dM of shape (n_z={z_nodes.size}, n_mass={self.mass.size}) "
                f"without NaN or +inf, got shape {lt.shape}; check the MassPrior's log_table method"
            )
        if np.all(lt <= ZERO_PRIOR_LOG):
            raise InferenceError(
                "the prior is zero on the whole mass grid; choose a mass grid inside the prior's mass range "
                f"(grid {self.mass[0]:.3g} to {self.mass[-1]:.3g} M_sun)"
            )
        lt = np.maximum(lt, LOG_ZERO)  # -inf (zero prior) -> the package's finite log-zero
        ids = np.asarray(catalog["halo"].values)
        check_prior_redshifts(z, z_nodes, ids=ids, who="CatalogLikelihood")
        if lt.shape[0] == 1:  # a single node: duplicate it so that interpolation has a right neighbour
            lt = np.vstack([lt, lt])
            z_nodes = np.array([z_nodes[0], z_nodes[0] + 1.0])
        self._z_nodes = z_nodes
        self._lt = lt
        self.group_tol = None if group_tol is None else _check_group_tol(group_tol)
        if self.group_tol is None:
            zt, lt_obs, st, coef = z, log_lobs, sig, np.ones(z.size)
        else:
            # the halos themselves must have a prior (the grouped terms sit at stencil points)
            self._check_prior_nonzero(z, ids)
            zt, lt_obs, st, coef = _group(z, log_lobs, sig, self._z_nodes, self.group_tol)
        self._exact_terms = (z, log_lobs, sig)
        self._setup_terms(zt, lt_obs, st, coef, ids=ids if self.group_tol is None else None)
        self.n_evaluations = 0
        self.n_fallback = 0

    def _check_prior_nonzero(self, z, ids) -> None:
        """PriorError naming the halos at whose redshift the prior is zero at every grid mass."""
        from massmap_xr.model.prior import z_weights

        i, wz = z_weights(self._z_nodes, z)
        row_max = np.empty(z.size)
        step = max(1, 2**22 // self._x.size)
        for a in range(0, z.size, step):
            b = min(z.size, a + step)
            lr = (1.0 - wz[a:b, None]) * self._lt[i[a:b]] + wz[a:b, None] * self._lt[i[a:b] + 1]
            row_max[a:b] = lr.max(axis=1)
        check_prior_nonzero(z, row_max, ids=ids, who="CatalogLikelihood")

    def _setup_terms(self, z, log_lobs, sig, coef, ids=None):
        """Precompute the terms' prior rows; ``ids`` name halos in errors (None: grouped terms)."""
        from massmap_xr.model.prior import z_weights

        i, wz = z_weights(self._z_nodes, z)
        self._zi = np.ascontiguousarray(i, dtype=np.int64)
        self._zw = np.ascontiguousarray(wz, dtype=np.float64)
        n, n_m = z.size, self._x.size
        rows = np.empty((n, n_m), dtype=np.float64)
        lognorm = np.empty(n)
        row_max = np.empty(n)
        step = max(1, 2**22 // n_m)
        base = self._x + self._lnw
        for a in range(0, n, step):
            b = min(n, a + step)
            lr = (1.0 - wz[a:b, None]) * self._lt[i[a:b]] + wz[a:b, None] * self._lt[i[a:b] + 1]
            row_max[a:b] = lr.max(axis=1)
            lr += base
            mx = lr.max(axis=1, keepdims=True)
            np.subtract(lr, mx, out=lr)
            np.exp(lr, out=lr)
            tot = lr.sum(axis=1, keepdims=True)
            rows[a:b] = lr / tot
            lognorm[a:b] = mx[:, 0] + np.log(tot[:, 0])
        # a prior that is zero at every grid mass at a term's redshift would silently give a
        # featureless row (and a meaningless normalisation)
        check_prior_nonzero(z, row_max, ids=ids,
                            who="CatalogLikelihood" if ids is not None else "CatalogLikelihood (grouped terms)")
        self._rows = rows
        self._lognorm = lognorm
        self._lobs = np.ascontiguousarray(log_lobs, dtype=np.float64)
        self._zfac = np.ascontiguousarray(np.log1p(z))
        self._sig = np.ascontiguousarray(sig, dtype=np.float64)
        self._coef = np.ascontiguousarray(coef, dtype=np.float64)
        self.n_terms = int(n)

    # ---------------------------------------------------------------------------------------

    def _evaluate(self, hyper, want_grad: bool, block: int = _HALO_BLOCK):
        arrays = [np.asarray(h, dtype=np.float64) for h in hyper]
        try:
            shape = np.broadcast_shapes(*(a.shape for a in arrays))
        except ValueError as exc:
            raise InferenceError(f"hyperparameter arrays do not broadcast together: {exc}") from None
        flat = [np.ascontiguousarray(np.broadcast_to(a, shape).ravel()) for a in arrays]
        a1, a2, a3, a4, s = flat
        problems = []
        for name, a in zip(HYPER_NAMES, flat, strict=True):
            bad = ~np.isfinite(a)
            if bad.any():
                problems.append(f"{name}: {int(bad.sum())} non-finite value(s) at flat index {format_offenders(np.flatnonzero(bad))}")
        if not problems:
            for name, a in (("S", s), ("alpha3", a3)):
                bad = a <= 0
                if bad.any():
                    problems.append(f"{name}: must be > 0; {int(bad.sum())} value(s) are not, at flat index "
                                    f"{format_offenders(np.flatnonzero(bad))} (values {a[bad][:5].tolist()})")
        if problems:
            raise InferenceError("invalid hyperparameters for the likelihood:\n  - " + "\n  - ".join(problems),
                                 problems=problems)
        n_r = a1.size
        n_blocks = max(1, -(-self.n_terms // block))
        out_ll = np.zeros((n_blocks, n_r))
        out_grad = np.zeros((n_blocks, n_r, 5) if want_grad else (1, 1, 5))
        out_fb = np.zeros(n_blocks, dtype=np.int64)
        if n_r:
            serial = self.n_terms * n_r < _SERIAL_BELOW or numba.get_num_threads() == 1
            kernel = _loglike_serial if serial else _loglike_parallel
            kernel(
                self._lobs, self._zfac, self._sig, self._coef, self._rows, self._x, self._lnw, self._lt,
                self._zi, self._zw, self._lognorm, a1, a2, a3, a4, s, hyper_scale(a1, a2, a4), self.window,
                self.rel_tol, self._uniform, bool(want_grad), int(block), out_ll, out_grad, out_fb,
            )
        self.n_evaluations += int(n_r)
        self.n_fallback += int(out_fb.sum())
        if block == 1:
            return out_ll[:, 0]
        ll = out_ll.sum(axis=0).reshape(shape)
        if not want_grad:
            return ll
        g = out_grad.sum(axis=0).reshape((*shape, 5))
        return ll, g

    def __call__(self, alpha1, alpha2, alpha3, alpha4, S) -> np.ndarray:
        """Catalogue log-likelihood at hyperparameter point(s) (arrays broadcast).

        Parameters
        ----------
        alpha1, alpha2, alpha3, alpha4, S : array_like
            Hyperparameters (α3 in M_sun, S natural-log scatter > 0).

        Returns
        -------
        numpy.ndarray
            float64 log-likelihood (density per unit ln L_obs of every halo), with the
            broadcast shape of the inputs (0-d for scalars).
        """
        return self._evaluate((alpha1, alpha2, alpha3, alpha4, S), want_grad=False)

    def value_and_grad(self, alpha1, alpha2, alpha3, alpha4, S) -> tuple[np.ndarray, np.ndarray]:
        """Log-likelihood and its gradient with respect to (α1, α2, α3, α4, S).

        Returns
        -------
        (numpy.ndarray, numpy.ndarray)
            The log-likelihood (broadcast shape) and the gradient, with a trailing axis of
            length 5 in the order of :data:`massmap_xr.model.relation.HYPER_NAMES` (∂/∂α3 per M_sun).
        """
        return self._evaluate((alpha1, alpha2, alpha3, alpha4, S), want_grad=True)

    def per_halo(self, alpha1, alpha2, alpha3, alpha4, S) -> np.ndarray:
        """ln P(L_obs,k | z_k, α, S) of every halo at one hyperparameter point (no grouping).

        Parameters
        ----------
        alpha1, alpha2, alpha3, alpha4, S : float
            One hyperparameter point.

        Returns
        -------
        numpy.ndarray
            float64 of shape (n_halo,), in catalogue order.
        """
        if any(np.size(a) != 1 for a in (alpha1, alpha2, alpha3, alpha4, S)):
            raise InferenceError("per_halo takes one hyperparameter point (scalars)")
        exact = self._ungrouped()
        return exact._evaluate([np.ravel(a)[:1] for a in (alpha1, alpha2, alpha3, alpha4, S)], False, block=1)

    def _ungrouped(self) -> CatalogLikelihood:
        if self.group_tol is None:
            return self
        exact = CatalogLikelihood.__new__(CatalogLikelihood)
        exact.__dict__.update({k: v for k, v in self.__dict__.items() if k != "_rows"})
        exact.group_tol = None
        exact._setup_terms(*self._exact_terms, np.ones(self.n_halo))
        return exact

    def grouping_error(self, alpha1, alpha2, alpha3, alpha4, S) -> np.ndarray:
        """Grouped minus exact log-likelihood at hyperparameter point(s) (0 without grouping).

        Evaluates the exact (ungrouped) sum too, so it costs one full evaluation per point.
        What matters for inference is how much this difference *varies* across the
        posterior's range of hyperparameters, not its mean.
        """
        if self.group_tol is None:
            return np.zeros(np.broadcast_shapes(*(np.shape(a) for a in (alpha1, alpha2, alpha3, alpha4, S))))
        exact = self._ungrouped()
        return self(alpha1, alpha2, alpha3, alpha4, S) - exact(alpha1, alpha2, alpha3, alpha4, S)

    def __repr__(self) -> str:
        grouping = "" if self.group_tol is None else f", group_tol={self.group_tol}, terms={self.n_terms}"
        return (f"CatalogLikelihood(n_halo={self.n_halo}, n_mass={self.mass.size}, window={self.window:g}"
                f"{grouping}, prior={self.prior.describe().get('prior', type(self.prior).__name__)})")


# --------------------------------------------------------------------------------------------
# grouping halos in (z, ln L_obs) cells
# --------------------------------------------------------------------------------------------

#: stencil of the grouped quadratic, in units of a quarter cell from the cell centre
_STENCIL = np.array([(0.0, 0.0), (-1.0, 0.0), (1.0, 0.0), (0.0, -1.0), (0.0, 1.0), (1.0, 1.0)])


def _monomials(t: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.stack([np.ones_like(t), t, v, t * t, v * v, t * v], axis=-1)


def _check_group_tol(group_tol) -> tuple[float, float]:
    vals = np.atleast_1d(np.asarray(group_tol, dtype=float)) if not isinstance(group_tol, str) else np.array([np.nan])
    if vals.size == 1:
        vals = np.repeat(vals, 2)
    if vals.size != 2 or not np.all(np.isfinite(vals)) or np.any(vals <= 0):
        raise InferenceError(
            f"group_tol must be a positive cell width (or a pair (dz, dlnL)) in z and ln L_obs, got {group_tol!r}; "
            "use None to sum every halo exactly"
        )
    return float(vals[0]), float(vals[1])


def _group(z, log_lobs, sig, z_nodes, tol):
    """Terms (z, ln L_obs, sigma_obs, coefficient) replacing the halos by grouped quadratics.

    Cells are ``dz`` wide in z, subdividing each interval between the prior's redshift nodes
    (so no cell straddles a node), and ``dlnL`` wide in ln L_obs.  A cell with more than six
    halos is replaced by six stencil points whose coefficients integrate the interpolating
    quadratic over the cell's halos; other halos stay as they are.
    """
    from massmap_xr.model.prior import z_weights

    dz, dl = tol
    i, w = z_weights(z_nodes, z)
    width = np.diff(z_nodes)
    nsub = np.maximum(1, np.ceil(width / dz - 1e-9)).astype(np.int64)
    j = np.minimum((w * nsub[i]).astype(np.int64), nsub[i] - 1)
    cell_w = width[i] / nsub[i]
    z_lo = z_nodes[i] + j * cell_w
    lb = np.floor(log_lobs / dl).astype(np.int64)
    _, s_idx = np.unique(sig, return_inverse=True)
    keys = np.stack([i, j, lb, s_idx.ravel()], axis=1)
    _, inv, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inv = inv.ravel()
    grouped = counts[inv] > _STENCIL.shape[0]
    out = [(z[~grouped], log_lobs[~grouped], sig[~grouped], np.ones(int((~grouped).sum())))]
    if grouped.any():
        gi = inv[grouped]
        groups, gpos = np.unique(gi, return_inverse=True)
        zc = (z_lo + 0.5 * cell_w)[grouped]
        hz = 0.25 * cell_w[grouped]
        lc = (lb * dl + 0.5 * dl)[grouped]
        hl = 0.25 * dl
        t = (z[grouped] - zc) / hz
        v = (log_lobs[grouped] - lc) / hl
        msum = np.zeros((groups.size, 6))
        np.add.at(msum, gpos, _monomials(t, v))
        vinv_t = np.linalg.inv(_monomials(_STENCIL[:, 0], _STENCIL[:, 1])).T  # coef = V^-T sum(m)
        coef = msum @ vinv_t.T
        first = np.zeros(groups.size, dtype=np.int64)
        first[gpos[::-1]] = np.arange(gpos.size)[::-1]
        zc_g, hz_g, lc_g = zc[first], hz[first], lc[first]
        sg = sig[grouped][first]
        zs = zc_g[:, None] + _STENCIL[None, :, 0] * hz_g[:, None]
        ls = lc_g[:, None] + _STENCIL[None, :, 1] * hl
        out.append((zs.ravel(), ls.ravel(), np.repeat(sg, 6), coef.ravel()))
    return tuple(np.concatenate([o[n] for o in out]) for n in range(4))


# --------------------------------------------------------------------------------------------
# the functional form and its cache
# --------------------------------------------------------------------------------------------

_CACHE: dict = {}


def _cache_key(catalog, prior, mass, sigma_obs, group_tol):
    from massmap_xr.cube import catalog_hash

    try:
        hash(prior)
    except TypeError:
        return None
    m = None if mass is None else np.asarray(mass, dtype=np.float64)
    mkey = None if m is None else (m.shape, m.tobytes())
    gkey = None if group_tol is None else tuple(np.atleast_1d(np.asarray(group_tol, dtype=float)).tolist())
    return (catalog_hash(catalog), prior, mkey, float(sigma_obs), gkey)


def log_likelihood(catalog: xr.Dataset, alpha1, alpha2, alpha3, alpha4, S, *, prior=None, mass=None,
                   sigma_obs: float = 0.05, group_tol=None) -> np.ndarray:
    """Catalogue log-likelihood Σ_k ln P(L_obs,k | z_k, α, S) at one or many hyperparameter points.

    The per-halo likelihood integrates the closed-form P(ln L_obs | M) (log-normal of width
    √(S² + σ_obs²)) against the mass prior normalised over the mass grid at the halo's
    redshift, with the trapezoid rule in ln M; see :class:`CatalogLikelihood`, which this
    function builds (and keeps for the next call with the same catalogue and settings).

    Parameters
    ----------
    catalog : xarray.Dataset
        Halo catalogue (``z``, ``lum_obs`` along ``halo``; optional ``sigma_obs``).
    alpha1, alpha2, alpha3, alpha4, S : array_like
        Hyperparameters; arrays broadcast together (α3 in M_sun, S > 0 natural-log scatter).
    prior : MassPrior or xarray.DataArray, optional
        Mass prior (default :class:`~massmap_xr.model.prior.TinkerPrior`).
    mass : array_like, optional
        Mass grid in M_sun (default 400 log-spaced points from 1e10 to 10^15.5).
    sigma_obs : float, default 0.05
        Observational scatter of ln L_obs where the catalogue has no ``sigma_obs``.
    group_tol : float or (float, float), optional
        Group halos in (z, ln L_obs) cells of this size (approximate; see
        :meth:`CatalogLikelihood.grouping_error`).  Default: exact sum over halos.

    Returns
    -------
    numpy.ndarray
        float64 log-likelihood with the broadcast shape of the hyperparameters (0-d for scalars).

    Examples
    --------
    >>> from massmap_xr.catalog import mock_catalog
    >>> cat = mock_catalog(100, seed=2)
    >>> log_likelihood(cat, 10.709, 0.359, 2.35e14, 1.10, [0.1, 0.155, 0.3]).shape
    (3,)
    """
    key = _cache_key(catalog, prior, mass, sigma_obs, group_tol)
    like = _CACHE.get(key) if key is not None else None
    if like is None:
        like = CatalogLikelihood(catalog, prior, mass, sigma_obs=sigma_obs, group_tol=group_tol)
        _CACHE.clear()
        if key is not None:
            _CACHE[key] = like
    return like(alpha1, alpha2, alpha3, alpha4, S)


# --------------------------------------------------------------------------------------------
# hyperpriors
# --------------------------------------------------------------------------------------------


class HyperPrior:
    """Independent priors on the free hyperparameters, with an unconstrained parametrisation.

    Each free name has either a normal prior ``("normal", mean, sd)`` (S > 0 is enforced: its
    normal prior is truncated at zero) or a flat prior ``("flat", low, high)``.  Sampling and
    optimisation happen in unconstrained coordinates: ln S for S, logit((θ - low)/(high - low))
    for flat priors, the parameter itself otherwise; :meth:`log_density_unconstrained` includes
    the Jacobian of that map.

    Parameters
    ----------
    spec : str, mapping or xarray.Dataset
        ``"reddick2013"`` (normals from :data:`massmap_xr.model.hyper.REDDICK2013`), ``"flat"``
        (uniform within :data:`FLAT_BOUNDS`), a mapping name -> ``(mean, sd)`` (normal),
        ``("normal", mean, sd)`` or ``("flat", low, high)``, or a Dataset of hyperparameter
        draws along ``realization`` (e.g. :func:`~massmap_xr.model.hyper.reddick2013` output or an
        earlier inference), summarised by independent normals with the draws' weighted mean
        and standard deviation.
    free : sequence of str
        The names inferred.

    Examples
    --------
    >>> hp = HyperPrior("reddick2013", ("alpha1", "S"))
    >>> hp.kinds
    ('normal', 'normal')
    """

    def __init__(self, spec, free: Sequence[str]):
        self.free = tuple(free)
        entries = self._entries(spec)
        missing = [k for k in self.free if k not in entries]
        if missing:
            raise InferenceError(
                f"hyperprior: no entry for free hyperparameter(s) {missing}; give each free name a "
                "(mean, sd) normal or a ('flat', low, high) range, or use hyperprior='reddick2013' / 'flat'"
            )
        kinds, p1, p2, problems = [], [], [], []
        for k in self.free:
            kind, a, b = entries[k]
            if kind == "normal":
                if not (np.isfinite(a) and np.isfinite(b) and b > 0):
                    problems.append(f"{k}: normal prior needs a finite mean and sd > 0, got ({a!r}, {b!r})")
            elif kind == "flat":
                if not (np.isfinite(a) and np.isfinite(b) and b > a):
                    problems.append(f"{k}: flat prior needs finite low < high, got ({a!r}, {b!r})")
                elif k in ("S", "alpha3") and a < 0:
                    problems.append(f"{k}: must be > 0, so its flat prior needs low >= 0, got low={a!r}")
            kinds.append(kind)
            p1.append(float(a))
            p2.append(float(b))
        if problems:
            raise InferenceError("invalid hyperprior:\n  - " + "\n  - ".join(problems), problems=problems)
        self.kinds = tuple(kinds)
        self._p1 = np.array(p1)
        self._p2 = np.array(p2)
        self._log_pos = np.array([k in ("S", "alpha3") and kd == "normal" for k, kd in zip(self.free, kinds, strict=True)])
        self._flat = np.array([kd == "flat" for kd in kinds])

    @staticmethod
    def _parse(name, value):
        if isinstance(value, (tuple, list)) and len(value) == 3 and isinstance(value[0], str):
            kind = value[0].lower()
            if kind in ("uniform", "flat"):
                return "flat", float(value[1]), float(value[2])
            if kind in ("normal", "gaussian"):
                return "normal", float(value[1]), float(value[2])
            raise InferenceError(f"hyperprior {name}: unknown kind {value[0]!r}; use 'normal' or 'flat'")
        if isinstance(value, (tuple, list)) and len(value) == 2:
            try:
                return "normal", float(value[0]), float(value[1])
            except (TypeError, ValueError):
                pass
        raise InferenceError(
            f"hyperprior {name}: expected (mean, sd), ('normal', mean, sd) or ('flat', low, high), got {value!r}"
        )

    def _entries(self, spec) -> dict:
        if isinstance(spec, str):
            if spec.lower() == "reddick2013":
                return {k: ("normal", mu, sd) for k, (mu, sd) in REDDICK2013.items() if sd > 0}
            if spec.lower() == "flat":
                return {k: ("flat", lo, hi) for k, (lo, hi) in FLAT_BOUNDS.items()}
            raise InferenceError(f"hyperprior: unknown name {spec!r}; use 'reddick2013', 'flat', a mapping or a Dataset")
        if isinstance(spec, xr.Dataset):
            if "realization" not in spec.dims:
                raise InferenceError(f"hyperprior Dataset needs a 'realization' dimension, has {tuple(spec.dims)}")
            w = np.asarray(spec["weight"].values, dtype=float) if "weight" in spec else np.ones(spec.sizes["realization"])
            if not (np.all(np.isfinite(w)) and np.all(w >= 0) and w.sum() > 0):
                raise InferenceError("hyperprior Dataset: weights must be finite, >= 0 and not all zero")
            w = w / w.sum()
            out = {}
            for k in HYPER_NAMES:
                if k in spec:
                    a = np.asarray(spec[k].values, dtype=float)
                    mu = float(np.sum(w * a))
                    sd = float(np.sqrt(np.sum(w * (a - mu) ** 2)))
                    if sd > 0:
                        out[k] = ("normal", mu, sd)
            return out
        if isinstance(spec, Mapping):
            return {str(k): self._parse(k, v) for k, v in spec.items()}
        raise InferenceError(
            f"hyperprior must be 'reddick2013', 'flat', a mapping or an xarray.Dataset, got {type(spec).__name__}"
        )

    def describe(self) -> str:
        """One line per free name, e.g. ``"alpha1 ~ normal(10.709, 0.022)"``."""
        return "; ".join(f"{k} ~ {kd}({a:.6g}, {b:.6g})" for k, kd, a, b in
                         zip(self.free, self.kinds, self._p1, self._p2, strict=True))

    def center(self) -> np.ndarray:
        """A point inside the support: prior means, or the middle of flat ranges."""
        c = np.where(self._flat, 0.5 * (self._p1 + self._p2), self._p1)
        return np.where(self._log_pos & (c <= 0), self._p2, c)

    def log_density(self, theta: np.ndarray) -> np.ndarray:
        """ln prior density at natural-coordinate points ``theta`` (..., n_free); -inf outside."""
        theta = np.asarray(theta, dtype=float)
        a, b = self._p1, self._p2
        normal = -0.5 * ((theta - a) / b) ** 2 - np.log(b) - _LN_SQRT_2PI
        flat = np.where((theta > a) & (theta < b), -np.log(np.where(self._flat, b - a, 1.0)), -np.inf)
        lp = np.where(self._flat, flat, normal)
        lp = np.where(self._log_pos & (theta <= 0), -np.inf, lp)
        return lp.sum(axis=-1)

    def to_natural(self, y: np.ndarray) -> np.ndarray:
        """Map unconstrained coordinates to natural ones."""
        y = np.asarray(y, dtype=float)
        a, b = self._p1, self._p2
        with np.errstate(over="ignore"):
            flat = a + (b - a) * 0.5 * (1.0 + np.tanh(0.5 * y))
        return np.where(self._flat, flat, np.where(self._log_pos, np.exp(np.clip(y, -700, 700)), y))

    def to_unconstrained(self, theta: np.ndarray) -> np.ndarray:
        """Map natural coordinates (inside the support) to unconstrained ones."""
        theta = np.asarray(theta, dtype=float)
        a, b = self._p1, self._p2
        with np.errstate(divide="ignore", invalid="ignore"):
            f = np.clip((theta - a) / np.where(self._flat, b - a, 1.0), 1e-12, 1 - 1e-12)
            flat = np.log(f) - np.log1p(-f)
            logp = np.log(np.where(self._log_pos, theta, 1.0))
        return np.where(self._flat, flat, np.where(self._log_pos, logp, theta))

    def log_jacobian(self, y: np.ndarray) -> np.ndarray:
        """ln |dθ/dy| summed over free names, at unconstrained points ``y`` (..., n_free)."""
        y = np.asarray(y, dtype=float)
        a, b = self._p1, self._p2
        # d/dy [a + (b-a) sigmoid(y)] = (b-a) sigmoid(y) (1 - sigmoid(y))
        flat = np.log(np.where(self._flat, b - a, 1.0)) - np.logaddexp(0.0, -y) - np.logaddexp(0.0, y)
        return np.where(self._flat, flat, np.where(self._log_pos, y, 0.0)).sum(axis=-1)

    def dlog_jacobian(self, y: np.ndarray) -> np.ndarray:
        """Gradient of :meth:`log_jacobian` with respect to ``y``."""
        y = np.asarray(y, dtype=float)
        sig = 0.5 * (1.0 + np.tanh(0.5 * y))
        return np.where(self._flat, 1.0 - 2.0 * sig, np.where(self._log_pos, 1.0, 0.0))

    def dlog_density(self, theta: np.ndarray) -> np.ndarray:
        """Gradient of :meth:`log_density` (natural coordinates, inside the support)."""
        theta = np.asarray(theta, dtype=float)
        return np.where(self._flat, 0.0, -(theta - self._p1) / self._p2**2)

    def dtheta_dy(self, y: np.ndarray) -> np.ndarray:
        """dθ/dy per free name (diagonal of the Jacobian)."""
        y = np.asarray(y, dtype=float)
        a, b = self._p1, self._p2
        sig = 0.5 * (1.0 + np.tanh(0.5 * y))
        return np.where(self._flat, (b - a) * sig * (1.0 - sig), np.where(self._log_pos, np.exp(np.clip(y, -700, 700)), 1.0))

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``n`` points (n, n_free) from the prior (natural coordinates)."""
        out = np.empty((n, len(self.free)))
        for j in range(len(self.free)):
            a, b = self._p1[j], self._p2[j]
            if self._flat[j]:
                out[:, j] = rng.uniform(a, b, n)
            else:
                v = rng.normal(a, b, n)
                while self._log_pos[j] and np.any(v <= 0):
                    bad = v <= 0
                    v[bad] = rng.normal(a, b, int(bad.sum()))
                out[:, j] = v
        return out


# --------------------------------------------------------------------------------------------
# the hyper-posterior
# --------------------------------------------------------------------------------------------


class _Target:
    """ln P(α, S | catalogue) in the hyperprior's unconstrained coordinates (with Jacobian)."""

    def __init__(self, like: CatalogLikelihood, hp: HyperPrior, fixed: dict):
        self.like = like
        self.hp = hp
        self.idx = np.array([HYPER_NAMES.index(k) for k in hp.free])
        self.base = np.array([fixed[k] for k in HYPER_NAMES], dtype=float)

    def full(self, theta: np.ndarray) -> np.ndarray:
        theta = np.asarray(theta, dtype=float)
        out = np.broadcast_to(self.base, (*theta.shape[:-1], len(HYPER_NAMES))).copy()
        out[..., self.idx] = theta
        return out

    def __call__(self, y: np.ndarray, grad: bool = False, batch: int = 512):
        """ln posterior (and gradient) at unconstrained points ``y`` (n, n_free)."""
        y = np.atleast_2d(np.asarray(y, dtype=float))
        theta = self.hp.to_natural(y)
        lp = self.hp.log_density(theta) + self.hp.log_jacobian(y)
        full = self.full(theta)
        ok = np.isfinite(lp) & np.all(np.isfinite(full), axis=1) & (full[:, 4] > 0) & (full[:, 2] > 0)
        ll = np.full(y.shape[0], -np.inf)
        g = np.zeros(y.shape)
        rows = np.flatnonzero(ok)
        for a in range(0, rows.size, batch):
            r = rows[a:a + batch]
            args = [full[r, j] for j in range(len(HYPER_NAMES))]
            if grad:
                v, gv = self.like.value_and_grad(*args)
                dtheta = gv[:, self.idx] + self.hp.dlog_density(theta[r])
                g[r] = dtheta * self.hp.dtheta_dy(y[r]) + self.hp.dlog_jacobian(y[r])
            else:
                v = self.like(*args)
            ll[r] = v
        post = np.where(ok, ll + lp, -np.inf)
        post = np.where(np.isnan(post), -np.inf, post)
        return (post, g, ll) if grad else (post, ll)


def _hessian(target: _Target, y0: np.ndarray, h: np.ndarray) -> np.ndarray:
    """-∇² ln posterior at y0 by central differences of the analytic gradient (one batch)."""
    d = y0.size
    pts = np.concatenate([y0 + np.diag(h), y0 - np.diag(h)])
    _, g, _ = target(pts, grad=True)
    hess = (g[:d] - g[d:]) / (2.0 * h[:, None])
    hess = 0.5 * (hess + hess.T)
    return -hess


def _laplace(target: _Target, y_start: np.ndarray, progress: bool, maxiter: int = 1000):
    """MAP point and covariance of the normal approximation, in unconstrained coordinates."""
    from scipy.optimize import minimize

    def fun(y):
        p, g, _ = target(y[None, :], grad=True)
        if not np.isfinite(p[0]):
            return 1e300, np.zeros_like(y)
        return -p[0], -g[0]

    p0 = fun(y_start)[0]
    if not p0 < 1e300:
        raise InferenceError(
            "the hyper-posterior is zero at the starting point "
            f"{dict(zip(target.hp.free, target.hp.to_natural(y_start).tolist(), strict=True))}; "
            "give a start inside the hyperprior's support (start={...})"
        )
    with warnings.catch_warnings():  # precision-loss notices: the Newton polish below takes over
        warnings.simplefilter("ignore", RuntimeWarning)
        res = minimize(fun, y_start, jac=True, method="BFGS", options={"maxiter": maxiter, "gtol": 1e-6})
    y = res.x
    h = np.full(y.size, 1e-4)
    cov = None
    n_newton = 0
    offset = np.inf
    for _ in range(8):  # Newton steps with finite-difference Hessians of the analytic gradient
        hess = _hessian(target, y, h)
        if not np.all(np.linalg.eigvalsh(hess) > 0):
            break
        cov = np.linalg.inv(hess)
        sd = np.sqrt(np.diag(cov))
        h = np.clip(0.05 * sd, 1e-8, 1e-2)
        lp, g, _ = target(y[None, :], grad=True)
        step = np.linalg.solve(hess, g[0])
        offset = float(np.max(np.abs(step) / sd))
        if offset < 1e-3:
            break
        t = 1.0
        while t > 1e-3:
            trial = y + t * step
            if target(trial[None, :])[0][0] > lp[0]:
                y = trial
                n_newton += 1
                break
            t *= 0.5
        else:
            break
    info = {"map_log_posterior": float(target(y[None, :])[0][0]), "map_optimizer_iterations": int(res.nit),
            "map_newton_steps": n_newton, "map_offset_sd": offset}
    if progress:
        print(f"  MAP: ln posterior {info['map_log_posterior']:.8g} after {res.nit} BFGS iterations and {n_newton} "
              f"Newton steps (remaining step {offset:.1e} sd)", file=sys.stderr)
    if cov is None or not np.all(np.linalg.eigvalsh(cov) > 0):
        names = ", ".join(target.hp.free)
        raise InferenceError(
            f"the hyper-posterior of ({names}) has no positive-definite curvature at its maximum "
            f"({dict(zip(target.hp.free, target.hp.to_natural(y).tolist(), strict=True))}): a free "
            "hyperparameter is not constrained by this catalogue; fix it, give it an informative "
            "hyperprior, or use method='emcee'"
        )
    return y, cov, info


def _t_logpdf(y: np.ndarray, mean: np.ndarray, chol: np.ndarray, df: float) -> np.ndarray:
    from scipy.special import gammaln

    d = mean.size
    z = np.linalg.solve(chol, (y - mean).T).T
    q = np.sum(z * z, axis=1)
    return (gammaln(0.5 * (df + d)) - gammaln(0.5 * df) - 0.5 * d * np.log(df * np.pi)
            - np.sum(np.log(np.diag(chol))) - 0.5 * (df + d) * np.log1p(q / df))


def _split_rhat(draws: np.ndarray) -> np.ndarray:
    """Split-R̂ (Gelman et al. 2013) of draws (chain, draw, param)."""
    n_d = draws.shape[1]
    half = n_d // 2
    if half < 2:
        return np.full(draws.shape[2], np.nan)
    parts = np.concatenate([draws[:, :half], draws[:, n_d - half:]], axis=0)
    means = parts.mean(axis=1)
    w = parts.var(axis=1, ddof=1).mean(axis=0)
    b = half * means.var(axis=0, ddof=1)
    var_plus = (half - 1) / half * w + b / half
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(var_plus / w)


def _resolve_free(free) -> tuple[str, ...]:
    if isinstance(free, str):
        free = (free,)
    try:
        free = tuple(str(f) for f in free)
    except TypeError:
        raise InferenceError(f"free must be a sequence of hyperparameter names, got {free!r}") from None
    unknown = [f for f in free if f not in HYPER_NAMES]
    if unknown:
        raise InferenceError(f"free: unknown hyperparameter name(s) {unknown}; choose from {list(HYPER_NAMES)}")
    if not free:
        raise InferenceError(f"free: give at least one hyperparameter to infer, from {list(HYPER_NAMES)}")
    if len(set(free)) != len(free):
        raise InferenceError(f"free: repeated name(s) in {list(free)}")
    return tuple(k for k in HYPER_NAMES if k in free)


def _resolve_fixed(fixed, free) -> dict:
    out = {k: float(REDDICK2013[k][0]) for k in HYPER_NAMES}
    if fixed is not None:
        if not isinstance(fixed, Mapping):
            raise InferenceError(f"fixed must be a mapping name -> value, got {type(fixed).__name__}")
        unknown = [k for k in fixed if k not in HYPER_NAMES]
        if unknown:
            raise InferenceError(f"fixed: unknown hyperparameter name(s) {unknown}; choose from {list(HYPER_NAMES)}")
        clash = [k for k in fixed if k in free]
        if clash:
            raise InferenceError(f"fixed: {clash} are also free; a hyperparameter is either fixed or inferred")
        for k, v in fixed.items():
            v = float(v)
            if not np.isfinite(v) or (k in ("S", "alpha3") and v <= 0):
                raise InferenceError(f"fixed: {k} = {v!r} is not allowed ({k} must be finite" +
                                     (" and > 0)" if k in ("S", "alpha3") else ")"))
            out[k] = v
    return out


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InferenceError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def infer_hyperparameters(
    catalog: xr.Dataset,
    *,
    prior=None,
    hyperprior="reddick2013",
    free: Sequence[str] = DEFAULT_FREE,
    n: int = 100,
    method: str = "laplace",
    seed: int | None = 0,
    mass=None,
    sigma_obs: float = 0.05,
    progress: bool = False,
    fixed: Mapping[str, float] | None = None,
    group_tol=None,
    start: Mapping[str, float] | None = None,
    **options,
) -> xr.Dataset:
    """Sample the hyper-posterior P(α, S | catalogue) of the mass–luminosity relation.

    Parameters
    ----------
    catalog : xarray.Dataset
        Halo catalogue (``z``, ``lum_obs`` along ``halo``; optional ``sigma_obs``).
    prior : MassPrior or xarray.DataArray, optional
        Mass prior P(M | z) (default :class:`~massmap_xr.model.prior.TinkerPrior`).  It must be the
        distribution the catalogue's masses follow; see the notes.
    hyperprior : {"reddick2013", "flat"}, mapping or xarray.Dataset, default "reddick2013"
        Prior on the free hyperparameters, see :class:`HyperPrior`.
    free : sequence of str, default ("alpha1", "alpha2", "alpha4", "S")
        Hyperparameters to infer; the others are held at ``fixed`` values.
    n : int, default 100
        Number of realizations returned.  ``method="emcee"`` rounds it up to a multiple of the
        number of walkers.
    method : {"laplace", "emcee"}, default "laplace"
        Laplace approximation + importance sampling (fast; weighted draws), or MCMC with
        :mod:`emcee` (unweighted draws).
    seed : int, optional
        Seed of the proposal draws / walkers (reproducible results).
    mass : array_like, optional
        Mass grid in M_sun for the likelihood's integral (default 400 points, 1e10 to 10^15.5).
    sigma_obs : float, default 0.05
        Observational scatter of ln L_obs for catalogues without ``sigma_obs``.
    progress : bool, default False
        Report progress on stderr (an emcee progress bar for MCMC).
    fixed : mapping, optional
        Values of the hyperparameters that are not free (default: the Reddick 2013 central
        values, α3 = 2.35e14 M_sun).
    group_tol : float or (float, float), optional
        Group halos in (z, ln L_obs) cells to speed up the likelihood (approximate; default exact).
    start : mapping, optional
        Starting point of the MAP search (default: the Reddick 2013 central values if inside
        the hyperprior's support, else its centre).
    **options
        Method options.  Laplace: ``df`` (Student-t degrees of freedom of the proposal,
        default 5), ``scale`` (proposal scale factor, default 1.0), ``maxiter`` (optimiser, 1000).
        emcee: ``n_walkers`` (default max(16, 4 × n_free), even), ``n_burn`` (default 300
        steps), ``thin`` (default 20), ``moves`` (an emcee move).

    Returns
    -------
    xarray.Dataset
        Along ``realization`` (coordinates ``chain`` and ``draw`` for unstacking): ``alpha1`` ..
        ``alpha4``, ``S`` (fixed ones constant), ``weight`` (importance weights summing to 1;
        uniform for emcee), ``log_likelihood`` and ``log_prior`` of every realization.
        Attributes record the method, hyperprior, fixed values, MAP and Laplace standard
        deviations, the number of likelihood evaluations, the wall time and the diagnostics:
        ``ess``, ``ess_fraction``, ``max_weight`` (Laplace), or ``acceptance_fraction``,
        ``autocorr_time_<name>``, ``ess_<name>``, ``rhat_<name>``, ``rhat_max`` (emcee).
        :func:`massmap_xr.cube.build_posterior` takes it as ``hyper``.

    Raises
    ------
    InferenceError
        Unknown free names or method, n < 1, a hyperprior missing a free name, ...

    Notes
    -----
    The prior must describe how the catalogue's masses are distributed.  The seed field's
    masses were drawn with an effective prior dn/dM / M on the original table's grid (see
    ``benchmarks/bench_inference.py``), not with the Tinker density itself; fitting it with
    :class:`~massmap_xr.model.prior.TinkerPrior` biases α.

    Examples
    --------
    >>> from massmap_xr.catalog import mock_catalog
    >>> cat = mock_catalog(500, seed=4)
    >>> post = infer_hyperparameters(cat, n=50, seed=1)
    >>> post.sizes["realization"], round(float(post.weight.sum()), 6)
    (50, 1.0)
    """
    t_start = time.perf_counter()
    if method not in METHODS:
        raise InferenceError(f"method must be one of {METHODS}, got {method!r}")
    n = _check_int("n", n, 1)
    free = _resolve_free(free)
    fixed_vals = _resolve_fixed(fixed, free)
    hp = HyperPrior(hyperprior, free)
    allowed = {"laplace": {"df", "scale", "maxiter"}, "emcee": {"n_walkers", "n_burn", "thin", "moves", "maxiter"}}[method]
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise InferenceError(f"unknown option(s) {unknown} for method={method!r}; allowed: {sorted(allowed)}")
    like = CatalogLikelihood(catalog, prior, mass, sigma_obs=sigma_obs, group_tol=group_tol)
    target = _Target(like, hp, fixed_vals)
    rng = np.random.default_rng(seed)

    # starting point
    if start is not None:
        bad = [k for k in start if k not in free]
        if bad:
            raise InferenceError(f"start: {bad} are not free hyperparameters ({list(free)})")
        theta0 = np.array([float(start.get(k, REDDICK2013[k][0])) for k in free])
    else:
        theta0 = np.array([REDDICK2013[k][0] for k in free])
    if not np.isfinite(hp.log_density(theta0)):
        if start is not None:
            raise InferenceError(f"start {dict(start)} is outside the hyperprior's support ({hp.describe()})")
        theta0 = hp.center()
    y0 = hp.to_unconstrained(theta0)
    if progress:
        print(f"inferring {', '.join(free)} from {like.n_halo} halos ({method})", file=sys.stderr)
    y_map, cov, map_info = _laplace(target, y0, progress, maxiter=_check_int("maxiter", options.get("maxiter", 1000), 1))
    attrs: dict = dict(map_info)
    if method == "laplace":
        df = float(options.get("df", 5.0))
        scale = float(options.get("scale", 1.0))
        if not (df > 2 and np.isfinite(df)) or not (scale > 0 and np.isfinite(scale)):
            raise InferenceError(f"laplace options: need df > 2 and scale > 0, got df={df!r}, scale={scale!r}")
        chol = np.linalg.cholesky(cov) * scale
        zdraw = rng.standard_normal((n, y_map.size))
        chi = rng.chisquare(df, n)
        y = y_map + (zdraw @ chol.T) * np.sqrt(df / chi)[:, None]
        logp, ll = target(y)
        logq = _t_logpdf(y, y_map, chol, df)
        logw = logp - logq
        if not np.any(np.isfinite(logw)):
            raise InferenceError("importance sampling failed: every proposal draw has zero posterior density; "
                                 "try method='emcee'")
        w = np.exp(logw - np.max(logw))
        w /= w.sum()
        ess = float(1.0 / np.sum(w**2))
        theta = hp.to_natural(y)
        chain = np.zeros(n, dtype=np.int64)
        draw = np.arange(n, dtype=np.int64)
        attrs.update(ess=ess, ess_fraction=ess / n, max_weight=float(w.max()), proposal=f"Student-t (df={df:g}) x {scale:g}")
        if n >= 20 and ess < 0.1 * n:
            warnings.warn(
                f"importance sampling: effective sample size {ess:.1f} of {n} draws; the Laplace proposal fits the "
                "hyper-posterior poorly (small catalogue or a parameter near a bound): use method='emcee' or more draws",
                MassmapWarning, stacklevel=2,
            )
    else:
        import emcee

        d = y_map.size
        n_walkers = _check_int("n_walkers", options.get("n_walkers", max(16, 4 * d + (4 * d) % 2)), 2 * d)
        n_walkers += n_walkers % 2
        n_burn = _check_int("n_burn", options.get("n_burn", 300), 0)
        thin = _check_int("thin", options.get("thin", 20), 1)
        n_draw = -(-n // n_walkers)
        n_steps = n_burn + n_draw * thin
        chol = np.linalg.cholesky(cov)
        p0 = y_map + rng.standard_normal((n_walkers, d)) @ chol.T

        def log_prob(yy):
            return target(yy)[0]

        sampler = emcee.EnsembleSampler(n_walkers, d, log_prob, vectorize=True, moves=options.get("moves"))
        sampler.random_state = np.random.RandomState(int(rng.integers(2**31 - 1))).get_state()
        sampler.run_mcmc(p0, n_steps, progress=progress)
        chain_y = sampler.get_chain()  # (steps, walkers, d)
        kept = chain_y[n_burn:]
        draws_y = kept[thin - 1::thin]  # (n_draw, walkers, d)
        tau = emcee.autocorr.integrated_time(kept, quiet=True, tol=0) if kept.shape[0] > 1 else np.full(d, np.nan)
        theta_w = hp.to_natural(np.swapaxes(draws_y, 0, 1))  # (walkers, n_draw, d)
        rhat = _split_rhat(theta_w)
        acc = sampler.acceptance_fraction
        y = np.swapaxes(draws_y, 0, 1).reshape(-1, d)
        theta = hp.to_natural(y)
        logp_all = sampler.get_log_prob()[n_burn:][thin - 1::thin]
        logp = np.swapaxes(logp_all, 0, 1).ravel()
        chain = np.repeat(np.arange(n_walkers, dtype=np.int64), n_draw)
        draw = np.tile(np.arange(n_draw, dtype=np.int64), n_walkers)
        w = np.full(y.shape[0], 1.0 / y.shape[0])
        lp_nat = hp.log_density(theta)
        ll = logp - lp_nat - hp.log_jacobian(y)
        n_kept = kept.shape[0] * n_walkers
        attrs.update(
            n_walkers=n_walkers, n_burn=n_burn, thin=thin, n_steps=n_steps,
            acceptance_fraction=float(acc.mean()), acceptance_fraction_min=float(acc.min()),
            acceptance_fraction_max=float(acc.max()),
            rhat_max=float(np.nanmax(rhat)) if np.any(np.isfinite(rhat)) else float("nan"),
            autocorr_reliable=int(kept.shape[0] >= 50 * float(np.nanmax(tau))),
        )
        for j, k in enumerate(free):
            attrs[f"autocorr_time_{k}"] = float(tau[j])
            attrs[f"ess_{k}"] = float(n_kept / tau[j]) if tau[j] > 0 else float("nan")
            attrs[f"rhat_{k}"] = float(rhat[j])
        attrs["ess"] = float(min(attrs[f"ess_{k}"] for k in free))
        attrs["ess_fraction"] = attrs["ess"] / n_kept
    full = target.full(theta)
    log_prior = hp.log_density(theta)
    out = xr.Dataset(
        {k: ("realization", full[:, j]) for j, k in enumerate(HYPER_NAMES)},
        coords={"realization": np.arange(full.shape[0], dtype=np.int64), "chain": ("realization", chain),
                "draw": ("realization", draw)},
    )
    from massmap_xr.cube import catalog_hash
    from massmap_xr.model.hyper import _ATTRS

    for k in HYPER_NAMES:
        out[k].attrs = dict(_ATTRS[k])
    out["weight"] = ("realization", w, dict(_ATTRS["weight"]))
    out["log_likelihood"] = ("realization", np.asarray(ll, dtype=float),
                             {"long_name": "catalogue log-likelihood ln P(L_obs | z, hyperparameters)", "units": "1"})
    out["log_prior"] = ("realization", log_prior, {"long_name": "log hyperprior density (natural coordinates)", "units": "1"})
    theta_map = hp.to_natural(y_map)
    jac = hp.dtheta_dy(y_map)
    sd = np.sqrt(np.diag(cov)) * np.abs(jac)
    prior_desc = like.prior.describe()
    out.attrs = {
        "title": "hyper-posterior draws of the mass-luminosity relation",
        "source": "massmap_xr.inference.infer_hyperparameters",
        "method": method,
        "free": ",".join(free),
        "hyperprior": hp.describe(),
        **{f"fixed_{k}": float(fixed_vals[k]) for k in HYPER_NAMES if k not in free},
        **{f"map_{k}": float(v) for k, v in zip(free, theta_map, strict=True)},
        **{f"laplace_sd_{k}": float(v) for k, v in zip(free, sd, strict=True)},
        "n_halo": like.n_halo,
        "catalog_hash": catalog_hash(catalog),
        "sigma_obs_default": float(sigma_obs),
        "prior": str(prior_desc.get("prior", type(like.prior).__name__)),
        "prior_description": "; ".join(f"{k}={v}" for k, v in prior_desc.items()),
        "mass_min": float(like.mass[0]), "mass_max": float(like.mass[-1]), "n_mass": int(like.mass.size),
        "group_tol": "none" if like.group_tol is None else ",".join(f"{v:g}" for v in like.group_tol),
        "seed": "none" if seed is None else str(seed),
        **attrs,
        "n_likelihood_evaluations": int(like.n_evaluations),
        "n_fallback_halo_evaluations": int(like.n_fallback),
        "wall_time_s": float(time.perf_counter() - t_start),
    }
    return out


def to_arviz(result: xr.Dataset, *, seed: int | None = 0):
    """The inferred hyperparameters in ArviZ's ``(chain, draw)`` layout.

    Parameters
    ----------
    result : xarray.Dataset
        Output of :func:`infer_hyperparameters` (``realization`` with ``chain``/``draw``
        coordinates).  Importance-weighted draws (non-uniform ``weight``) are first resampled
        (systematic resampling with ``seed``) into one unweighted chain, since ArviZ has no
        notion of weights.
    seed : int, optional
        Seed of that resampling.

    Returns
    -------
    arviz.InferenceData or xarray.Dataset
        An ``InferenceData`` with a ``posterior`` group when :mod:`arviz` is importable,
        otherwise a Dataset with dims ``(chain, draw)``.  Either is accepted by
        :func:`massmap_xr.model.hyper.from_arviz` / :func:`~massmap_xr.model.hyper.as_hyper`.
    """
    if not isinstance(result, xr.Dataset) or "realization" not in result.dims:
        raise InferenceError("to_arviz expects the Dataset returned by infer_hyperparameters (dim 'realization')")
    missing = [k for k in HYPER_NAMES if k not in result]
    if missing:
        raise InferenceError(f"to_arviz: missing hyperparameter variable(s) {missing}")
    n = result.sizes["realization"]
    w = np.asarray(result["weight"].values, dtype=float) if "weight" in result else np.full(n, 1.0 / n)
    w = w / w.sum()
    names = [k for k in (*HYPER_NAMES, "log_likelihood") if k in result]
    attrs = {k: v for k, v in result.attrs.items() if isinstance(v, (str, int, float, np.integer, np.floating))}
    if not np.allclose(w, 1.0 / n, rtol=1e-9, atol=0) or "chain" not in result.coords:
        rng = np.random.default_rng(seed)
        pos = (rng.uniform() + np.arange(n)) / n
        idx = np.minimum(np.searchsorted(np.cumsum(w), pos), n - 1)
        arrays = {k: np.asarray(result[k].values)[idx][None, :] for k in names}
        attrs["resampled_from_weights"] = 1
    else:
        chain = np.asarray(result["chain"].values)
        draw = np.asarray(result["draw"].values)
        chains, ci = np.unique(chain, return_inverse=True)
        draws, di = np.unique(draw, return_inverse=True)
        if chains.size * draws.size != n:
            raise InferenceError("to_arviz: the (chain, draw) coordinates do not form a full grid")
        arrays = {}
        for k in names:
            a = np.full((chains.size, draws.size), np.nan)
            a[ci, di] = np.asarray(result[k].values)
            arrays[k] = a
    try:
        import arviz as az
    except ImportError:
        n_c, n_d = next(iter(arrays.values())).shape
        return xr.Dataset({k: (("chain", "draw"), v) for k, v in arrays.items()},
                          coords={"chain": np.arange(n_c), "draw": np.arange(n_d)}, attrs=attrs)
    post = {k: v for k, v in arrays.items() if k != "log_likelihood"}
    stats = {"lp": arrays["log_likelihood"]} if "log_likelihood" in arrays else None
    return az.from_dict(posterior=post, sample_stats=stats, attrs=attrs)


def infer_to_file(catalog: xr.Dataset, path, *, overwrite: bool = False, **kwargs) -> Path:
    """Infer the hyper-posterior and write it to NetCDF (or CSV) for :func:`~massmap_xr.model.hyper.read_hyper`.

    Parameters
    ----------
    catalog : xarray.Dataset
        Halo catalogue.
    path : str or path-like
        Output file: ``.nc`` (NetCDF4 via h5netcdf, with every diagnostic in the attributes),
        or ``.csv`` (one column per hyperparameter plus ``weight``, ``chain``, ``draw``).
    overwrite : bool, default False
        Replace an existing file (otherwise :class:`~massmap_xr.errors.OutputExistsError`,
        raised before any inference work).
    **kwargs
        Passed to :func:`infer_hyperparameters`.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".nc", ".nc4", ".netcdf", ".h5", ".csv"):
        raise InferenceError(f"{path}: unknown output type {suffix!r}; use .nc (NetCDF) or .csv")
    if not path.parent.exists():
        raise InferenceError(f"{path}: directory {str(path.parent)!r} does not exist")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; pass overwrite=True (CLI: --overwrite) to replace it")
    result = infer_hyperparameters(catalog, **kwargs)
    if suffix == ".csv":
        df = result.reset_coords()[[*HYPER_NAMES, "weight", "chain", "draw", "log_likelihood"]].to_dataframe()
        df.to_csv(path, index=False)
    else:
        result.to_netcdf(path, engine="h5netcdf")
    return path
