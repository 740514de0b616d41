"""Numerical kernels for the posterior cube.

:func:`posterior_block` fills a (halo, mass, realization) float32 block with the normalised
posterior density per unit log10 M.  For halo k and realization r::

    post[k, m, r] ∝ P_k[m] · exp(-½ u_{k r m}²),   u = (ln L_obs - ln μ_L(M_m, z_k)) / √(S² + σ_obs²)

with P_k the prior per unit log10 M at the halo's redshift (one row per halo, shared by every
realization).  On a log-uniform mass grid u is linear in the mass index, so the Gaussian
factor obeys a two-term recurrence: successive cells differ by a ratio that itself changes by
the constant factor exp(-β²), β = α2 Δln M / √(S² + σ_obs²).  The kernel evaluates the Gaussian
exactly (one ``exp``) at the start of every block of ``_BLOCK`` cells and uses the recurrence
(two multiplications) in between, vectorised across realizations.  Arithmetic is float64
(relative error ≲ 1e-13 before the float32 store, i.e. the stored values carry float32
rounding, ≤ 6e-8 relative); rows whose normalisation under- or overflows (L_obs far from every
μ_L on the grid, or a prior that vanishes where the likelihood peaks) are recomputed in log
space with the maximum subtracted, so no row is ever NaN or silently zero.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["posterior_block", "posterior_reference", "trapezoid_weights"]

_BLOCK = 32
_LN10 = float(np.log(10.0))


def trapezoid_weights(x: np.ndarray) -> np.ndarray:
    """Weights w with sum(w * f) = trapezoid integral of f over the points ``x``."""
    x = np.asarray(x, dtype=float)
    w = np.zeros_like(x)
    dx = np.diff(x)
    w[:-1] += 0.5 * dx
    w[1:] += 0.5 * dx
    return w


def prior_rows(z, z_nodes, log_table, log_mass):
    """ln prior per unit log10 M for each halo: (n_halo, n_mass), max-subtracted per row."""
    from massmap_xr.prior import z_weights

    i, w = z_weights(z_nodes, z)
    rows = (1.0 - w)[:, None] * log_table[i] + w[:, None] * log_table[i + 1] + log_mass[None, :]
    return rows - rows.max(axis=1, keepdims=True)


@numba.njit(parallel=True, fastmath=False, cache=True)
def _kernel_uniform(log_lobs, zfac, sig2, lnp, x, wts, a1, a2, lna3, a4, s2, out):  # pragma: no cover - compiled
    n_h, n_m = lnp.shape
    n_r = a1.shape[0]
    dx = x[1] - x[0]
    bad = np.zeros(n_h, dtype=np.bool_)
    for k in numba.prange(n_h):
        row = np.exp(lnp[k])
        inv = np.empty(n_r)
        beta = np.empty(n_r)
        c = np.empty(n_r)
        u0 = np.empty(n_r)
        g = np.empty(n_r)
        ratio = np.empty(n_r)
        norm = np.zeros(n_r)
        for r in range(n_r):
            inv[r] = 1.0 / np.sqrt(s2[r] + sig2[k])
            beta[r] = a2[r] * dx * inv[r]
            c[r] = np.exp(-beta[r] * beta[r])
            u0[r] = (log_lobs[k] - a1[r] - a4[r] * zfac[k] - a2[r] * (x[0] - lna3[r])) * inv[r]
        for m0 in range(0, n_m, _BLOCK):
            m1 = min(m0 + _BLOCK, n_m)
            for r in range(n_r):
                u = u0[r] - m0 * beta[r]
                g[r] = np.exp(-0.5 * u * u)
                ratio[r] = np.exp(beta[r] * u - 0.5 * beta[r] * beta[r])
            for m in range(m0, m1):
                pm = row[m]
                wm = wts[m]
                for r in range(n_r):
                    v = g[r] * pm
                    out[k, m, r] = v
                    norm[r] += wm * v
                    g[r] *= ratio[r]
                    ratio[r] *= c[r]
        for r in range(n_r):
            if not (norm[r] > 1e-250 and norm[r] < 1e300):
                bad[k] = True
        if not bad[k]:
            for r in range(n_r):
                norm[r] = 1.0 / norm[r]
            for m in range(n_m):
                for r in range(n_r):
                    out[k, m, r] = out[k, m, r] * norm[r]
    return bad


@numba.njit(parallel=True, cache=True)
def _kernel_logspace(rows_idx, log_lobs, zfac, sig2, lnp, x, wts, a1, a2, lna3, a4, s2, out):  # pragma: no cover
    n_m = lnp.shape[1]
    n_r = a1.shape[0]
    for j in numba.prange(rows_idx.shape[0]):
        k = rows_idx[j]
        e = np.empty(n_m)
        for r in range(n_r):
            inv = 1.0 / np.sqrt(s2[r] + sig2[k])
            emax = -np.inf
            for m in range(n_m):
                u = (log_lobs[k] - a1[r] - a4[r] * zfac[k] - a2[r] * (x[m] - lna3[r])) * inv
                e[m] = lnp[k, m] - 0.5 * u * u
                if e[m] > emax:
                    emax = e[m]
            norm = 0.0
            for m in range(n_m):
                e[m] = np.exp(e[m] - emax)
                norm += wts[m] * e[m]
            for m in range(n_m):
                out[k, m, r] = e[m] / norm


def _is_log_uniform(x: np.ndarray) -> bool:
    d = np.diff(x)
    return bool(np.allclose(d, d[0], rtol=1e-9, atol=0.0))


def posterior_block(
    log_lobs, z, sigma_obs, *, z_nodes, log_table, mass, alpha1, alpha2, alpha3, alpha4, S, out=None
) -> np.ndarray:
    """Normalised posterior density per unit log10 M, float32 (halo, mass, realization).

    Parameters
    ----------
    log_lobs, z, sigma_obs : numpy.ndarray (n_halo,)
        ln L_obs, redshift and observational scatter of each halo.
    z_nodes, log_table : numpy.ndarray
        The prior: ln(dn/dM) (n_z, n_mass) on ``mass`` at redshift nodes ``z_nodes``.
    mass : numpy.ndarray (n_mass,)
        Mass grid in M_sun (increasing; log-uniform grids use the fast recurrence).
    alpha1, alpha2, alpha3, alpha4, S : numpy.ndarray (n_realization,)
        Hyperparameters.
    out : numpy.ndarray, optional
        Preallocated float32 output of shape (n_halo, n_mass, n_realization).
    """
    log_lobs = np.ascontiguousarray(log_lobs, dtype=np.float64)
    z = np.ascontiguousarray(z, dtype=np.float64)
    sig2 = np.ascontiguousarray(np.broadcast_to(np.asarray(sigma_obs, dtype=np.float64), z.shape) ** 2)
    x = np.log(np.asarray(mass, dtype=np.float64))
    wts = trapezoid_weights(x / _LN10)
    lnp = np.ascontiguousarray(prior_rows(z, z_nodes, np.asarray(log_table, dtype=np.float64), x))
    hyp = [np.ascontiguousarray(a, dtype=np.float64) for a in (alpha1, alpha2, alpha3, alpha4, S)]
    a1, a2, a3, a4, s = hyp
    lna3 = np.log(a3)
    s2 = s * s
    zfac = np.log1p(z)
    shape = (z.size, x.size, a1.size)
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32:
        raise ValueError(f"out must be float32 of shape {shape}")
    if _is_log_uniform(x):
        bad = _kernel_uniform(log_lobs, zfac, sig2, lnp, x, wts, a1, a2, lna3, a4, s2, out)
        idx = np.flatnonzero(bad)
    else:
        idx = np.arange(z.size)
    if idx.size:
        _kernel_logspace(idx.astype(np.int64), log_lobs, zfac, sig2, lnp, x, wts, a1, a2, lna3, a4, s2, out)
    return out


def posterior_reference(log_lobs, z, sigma_obs, *, z_nodes, log_table, mass, alpha1, alpha2, alpha3, alpha4, S):
    """Plain float64 numpy evaluation of the same posterior (for tests and documentation)."""
    from massmap_xr.relation import lobs_log_likelihood

    x = np.log(np.asarray(mass, dtype=float))
    lnp = prior_rows(np.asarray(z, float), z_nodes, np.asarray(log_table, float), x)  # (h, m)
    ll = lobs_log_likelihood(
        np.exp(np.asarray(log_lobs, float))[:, None, None], np.exp(x)[None, :, None], np.asarray(z, float)[:, None, None],
        np.asarray(alpha1)[None, None, :], np.asarray(alpha2)[None, None, :], np.asarray(alpha3)[None, None, :],
        np.asarray(alpha4)[None, None, :], np.asarray(S)[None, None, :],
        np.broadcast_to(np.asarray(sigma_obs, float), np.shape(z))[:, None, None],
    )
    e = lnp[:, :, None] + ll
    e -= e.max(axis=1, keepdims=True)
    p = np.exp(e)
    w = trapezoid_weights(x / _LN10)
    return p / np.einsum("m,hmr->hr", w, p)[:, None, :]
