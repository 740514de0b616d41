"""Compiled kernels of the catalogue log-likelihood (used by :class:`massmap_xr.inference.CatalogLikelihood`).

For every term k (a halo, or a stencil point of a grouped cell) and hyperparameter point r the
kernel adds ``coef[k] · ln ∫ rows[k, m] N(ln L_obs,k; ln μ_L(M_m, z_k), S² + σ_obs,k²)`` over the
mass grid, with ``rows`` the term's normalised prior row (quadrature weights folded in), and
optionally the gradient with respect to (α1, α2, α3, α4, S).  It runs over fixed blocks of
terms (partial sums per block, so the result does not depend on the number of threads), in a
threaded (:data:`loglike_parallel`) and a serial (:data:`loglike_serial`) build.  Three
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
"""

from __future__ import annotations

import math
import types

import numba
import numpy as np

from massmap_xr.kernels.numerics import LN_SQRT_2PI, half_u2_excess, inverse_width, nearest_index

__all__ = ["loglike_parallel", "loglike_serial"]

#: cells between exact evaluations of the Gaussian in the recurrence
_RESTART = 128
#: a window (or grid) sum below this is recomputed in log space
_TINY = 1e-280


@numba.njit(cache=True)
def _halo_logspace(k, l_k, zf_k, sig_k, x, lnw, lt, zi, zw, lognorm, a1, a2, lna3, a4, s, c, grad):  # pragma: no cover
    """ln L of one halo and its gradient pieces (E[u], E[u²], E[u x]), in log space over the whole grid.

    The width √(S² + σ_obs²) is formed with ``hypot`` (no overflow for huge S, no underflow for
    tiny ones); ln L_obs - ln μ_L is formed from the hyperparameters times the power of two
    ``c`` (:func:`massmap_xr.kernels.numerics.hyper_scale`, 1 for any realistic relation), so no partial
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
        b = nearest_index(x, off / slope)
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
    iw = inverse_width(wc)
    i = zi[k]
    w = zw[k]
    for m in range(n_m):
        lp = (1.0 - w) * lt[i, m] + w * lt[i + 1, m] + x[m] + lnw[m] - lognorm[k]
        e[m] = lp - half_u2_excess(slope, x[b] - x[m], off - slope * x[m], d_b, wc, iw)
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
    ll = (emax - h_b) + math.log(a0) - math.log(sd) - LN_SQRT_2PI
    grad[0] = s1 / a0
    grad[1] = s2 / a0
    grad[2] = s3 / a0
    return ll


@numba.njit(cache=True, inline="always")
def _direct_sum(rows, k, m_lo, m_hi, off, slope, inv, x, want_grad, a0, s1, s2, s3):  # pragma: no cover - compiled
    """Add Σ rows[k, m] exp(-u_m²/2) and its u-moments over m_lo..m_hi, u_m = (off - slope·x_m)·inv, one ``exp`` per cell."""
    for mm in range(m_lo, m_hi + 1):
        u = (off - slope * x[mm]) * inv
        v = rows[k, mm] * math.exp(-0.5 * u * u)
        a0 += v
        if want_grad:
            t = v * u
            s1 += t
            s2 += t * u
            s3 += t * x[mm]
    return a0, s1, s2, s3


@numba.njit(cache=True, inline="always")
def _advance_lanes(g0, g1, g2, g3, q0, q1, q2, q3, c16):  # pragma: no cover - compiled
    """One step of the four lanes of the Gaussian recurrence: g ← g·q, q ← q·c16."""
    return g0 * q0, g1 * q1, g2 * q2, g3 * q3, q0 * c16, q1 * c16, q2 * c16, q3 * c16


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
                    g0, g1, g2, g3, q0, q1, q2, q3 = _advance_lanes(g0, g1, g2, g3, q0, q1, q2, q3, c16)
            else:
                for j in range(n4):
                    mm = m + 4 * j
                    acc0 += rows[k, mm] * g0
                    acc1 += rows[k, mm + 1] * g1
                    acc2 += rows[k, mm + 2] * g2
                    acc3 += rows[k, mm + 3] * g3
                    g0, g1, g2, g3, q0, q1, q2, q3 = _advance_lanes(g0, g1, g2, g3, q0, q1, q2, q3, c16)
            a0 += (acc0 + acc1) + (acc2 + acc3)
        a0, s1, s2, s3 = _direct_sum(rows, k, m + 4 * n4, m + nb - 1, off, slope, 1.0, x, want_grad, a0, s1, s2, s3)
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
                            a0, s1, s2, s3 = _direct_sum(rows, k, m_lo, m_hi, off, a2[r], inv, x, want_grad,
                                                         0.0, 0.0, 0.0, 0.0)
                    if attempt == 0:
                        if a0 >= accept:
                            done = True
                            break
                    elif a0 > _TINY:
                        done = True
                if done:
                    ll = math.log(a0) - math.log(sd) - LN_SQRT_2PI
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
loglike_parallel = numba.njit(parallel=True, cache=True)(_renamed(_loglike_impl, "_loglike_impl_parallel"))
loglike_serial = numba.njit(cache=True)(_renamed(_loglike_impl, "_loglike_impl_serial"))
