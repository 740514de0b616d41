"""Compiled kernel of the selection normalisation of the catalogue likelihood (flux limits).

For every term k and hyperparameter point r the kernel subtracts ``coef[k] · ln D_k`` from the
log-likelihood, with the selection probability of a halo at the term's redshift::

    D_k = Σ_m rows[k, m] P_sel(M_m, z_k),    P_sel(M, z) = ∫ S(L, z) N(ln L; ln μ_L(M, z), sd²) d ln L

(``rows`` the term's normalised prior row, sd = √(S² + σ_obs,k²)), and optionally its gradient
with respect to (α1, α2, α3, α4, S).  Two forms of P_sel:

- *hard limit* (``mode=0``): S = 1 above ln L_min,k, else 0, so P_sel = ½ erfc(v/√2) with
  v = (ln L_min,k − ln μ_L)/sd, in closed form per mass point.  Cells with v < −9 count
  fully (erfc = 2 to 1e-19) and cells with v > 9 not at all;
- *tabulated* (``mode=1``): P_sel and its derivatives with respect to ln μ_L and sd tabulated
  per hyperparameter point on a uniform grid of ln μ_L at the nodes of a redshift grid
  (``tab[r, q, g, j]``, q = value, ∂/∂ln μ, ∂/∂sd), interpolated linearly in both; used for a
  user completeness function (see :mod:`massmap_xr.inference.selection`).

A halo whose selection probability underflows (D ≤ 1e-300: the relation predicts it far
below the limit) makes the total -inf.  Runs over fixed blocks of terms like
:mod:`massmap_xr.kernels.likelihood` (results independent of the number of threads).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from massmap_xr.kernels.likelihood import _renamed

__all__ = ["selection_parallel", "selection_serial"]

_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _selection_impl(zfac, sig, coef, rows, x, lmin, zsel_i, zsel_w, tab_mu0, tab_dmu, tab,
                    a1, a2, a3, a4, s, mode, want_grad, block, out_ll, out_grad):  # pragma: no cover - compiled
    n_h, n_m = rows.shape
    n_r = a1.shape[0]
    n_blocks = out_ll.shape[0]
    n_mu = tab.shape[3]
    for b in numba.prange(n_blocks):
        k0 = b * block
        k1 = min(k0 + block, n_h)
        for k in range(k0, k1):
            zf_k = zfac[k]
            c_k = coef[k]
            for r in range(n_r):
                lna3 = math.log(a3[r])
                sd = math.hypot(s[r], sig[k])
                base = a1[r] - a2[r] * lna3 + a4[r] * zf_k  # ln mu_L(x) = base + a2 x
                d = 0.0
                g_mu = 0.0  # sum rows * dP/dln mu
                g_mux = 0.0  # sum rows * dP/dln mu * x
                g_sd = 0.0  # sum rows * dP/dsd
                if mode == 0:
                    lm = lmin[k]
                    for m in range(n_m):
                        v = (lm - (base + a2[r] * x[m])) / sd
                        w = rows[k, m]
                        if v < -9.0:
                            d += w
                        elif v <= 9.0:
                            d += w * 0.5 * math.erfc(v * _SQRT_HALF)
                            if want_grad:
                                ph = w * _INV_SQRT_2PI * math.exp(-0.5 * v * v) / sd
                                g_mu += ph
                                g_mux += ph * x[m]
                                g_sd += ph * v
                else:
                    gi = zsel_i[k]
                    gw = zsel_w[k]
                    for m in range(n_m):
                        t = (base + a2[r] * x[m] - tab_mu0) / tab_dmu
                        if t <= 0.0:
                            j = 0
                            f = 0.0
                        elif t >= n_mu - 1:
                            j = n_mu - 2
                            f = 1.0
                        else:
                            j = int(t)
                            f = t - j
                        w = rows[k, m]
                        for q in range(3 if want_grad else 1):
                            val = ((1.0 - gw) * ((1.0 - f) * tab[r, q, gi, j] + f * tab[r, q, gi, j + 1])
                                   + gw * ((1.0 - f) * tab[r, q, gi + 1, j] + f * tab[r, q, gi + 1, j + 1]))
                            if q == 0:
                                d += w * val
                            elif q == 1:
                                g_mu += w * val
                                g_mux += w * val * x[m]
                            else:
                                g_sd += w * val
                if not d > 1e-300:
                    out_ll[b, r] = -math.inf
                    continue
                out_ll[b, r] -= c_k * math.log(d)
                if want_grad:
                    # d ln mu / d(alpha1, alpha2, alpha3, alpha4) = (1, x - ln a3, -a2/a3, zf); d sd/dS = S/sd
                    e_mu = g_mu / d
                    out_grad[b, r, 0] -= c_k * e_mu
                    out_grad[b, r, 1] -= c_k * (g_mux / d - lna3 * e_mu)
                    out_grad[b, r, 2] -= c_k * (-(a2[r] / a3[r]) * e_mu)
                    out_grad[b, r, 3] -= c_k * zf_k * e_mu
                    out_grad[b, r, 4] -= c_k * (s[r] / sd) * (g_sd / d)


#: the selection kernel, threaded over blocks of terms and serial
selection_parallel = numba.njit(parallel=True, cache=True)(_renamed(_selection_impl, "_selection_impl_parallel"))
selection_serial = numba.njit(cache=True)(_renamed(_selection_impl, "_selection_impl_serial"))


def empty_table() -> np.ndarray:
    """A placeholder (1, 3, 2, 2) table for the hard-limit mode."""
    return np.zeros((1, 3, 2, 2))
