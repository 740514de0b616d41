"""Compiled inverse-CDF draws on the mass grid: the CDF of each used posterior row built once and
inverted for every sample that uses it, in one pass over the slab.

Each routine performs the float64 operations of the numpy pair
:func:`~massmap_xr.analysis.reductions.cdf_kernel` (cumulative trapezoid of the clipped density,
divided by its total) and :func:`~massmap_xr.analysis.reductions.invert_cdf` (binary search and
linear interpolation within the bin) in the same order, so the draws are bitwise those of the
numpy functions; only the (halo, realization) rows some sample uses are integrated, and nothing
is copied to float64 first.

:func:`grid_draws` takes the realization of every (halo, sample): the same for all halos with
posterior draws (one choice per sample), the halo's own with prior draws and evidence weights
(:mod:`massmap_xr.analysis.halo_draws`).
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["grid_draws"]


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _cdf_row(p, x, row):  # pragma: no cover - compiled
    """``row`` = the CDF of density row ``p`` on ``x``; True when the row has none (total zero or
    not finite), in which case ``row`` holds the stand-in 0 .. 1 ramp of ``invert_cdf``."""
    m = x.size
    row[0] = 0.0
    prev = np.float64(p[0])
    if prev < 0:
        prev = 0.0
    acc = 0.0
    for j in range(1, m):
        v = np.float64(p[j])
        if v < 0:
            v = 0.0
        acc += 0.5 * (v + prev) * (x[j] - x[j - 1])
        row[j] = acc
        prev = v
    tot = row[m - 1]
    for j in range(m):
        row[j] = row[j] / tot
    last = row[m - 1]
    if not np.isfinite(last):
        for j in range(m):
            row[j] = j / (m - 1) if m > 1 else 0.0
    return not (np.isfinite(last) and last > 0)


@numba.njit(nogil=True, cache=True, error_model="numpy")
def _invert_row(row, x, uu, steps):  # pragma: no cover - compiled
    """x where the piecewise-linear CDF ``row`` reaches ``uu`` (``steps`` = bisection steps)."""
    m = x.size
    right = not (uu >= 1.0)
    lo, hi = 0, m
    for _ in range(steps):
        if lo < hi:
            mid = (lo + hi) // 2
            v = row[min(mid, m - 1)]
            below = (v <= uu) if right else (v < uu)
            if below:
                lo = mid + 1
            else:
                hi = mid
    j = min(max(lo, 1), m - 1)
    c0 = row[j - 1]
    den = row[j] - c0
    frac = (uu - c0) / den if den > 0 else 0.0
    frac = min(max(frac, 0.0), 1.0)
    return x[j - 1] + frac * (x[j] - x[j - 1])


@numba.njit(cache=True)
def _bisection_steps(m):  # pragma: no cover - compiled
    steps = 0
    while (1 << steps) < m + 1:
        steps += 1
    return steps


@numba.njit(nogil=True, cache=True, error_model="numpy")
def grid_draws(p, x, pick, u):  # pragma: no cover - compiled
    """log10-mass draws (n_halo, n_sample): halo h, sample s inverts the CDF of ``p[h, pick[h, s]]``
    at ``u[h, s]``.

    ``p`` (n_halo, n_realization, n_mass) densities (any strides), ``pick`` (n_halo, n_sample)
    int64 realization positions, ``u`` (n_halo, n_sample) uniforms.  Each halo integrates only
    the realizations its samples use, once each."""
    n_h, n_r, m = p.shape
    n_s = pick.shape[1]
    out = np.empty((n_h, n_s))
    c = np.empty((n_r, m))
    bad = np.zeros(n_r, dtype=np.bool_)
    done = np.full(n_r, -1, dtype=np.int64)  # the halo whose CDF row k holds
    steps = _bisection_steps(m)
    for h in range(n_h):
        for s in range(n_s):
            k = pick[h, s]
            if done[k] != h:
                bad[k] = _cdf_row(p[h, k], x, c[k])
                done[k] = h
            uu = u[h, s]
            val = _invert_row(c[k], x, uu, steps)
            out[h, s] = np.nan if (bad[k] or np.isnan(uu)) else val
    return out
