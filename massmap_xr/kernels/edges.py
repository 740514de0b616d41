"""Build-time check of posteriors that reach the ends of the mass grid.

:func:`edge_check` estimates, for every (halo, realization), the posterior probability in the
outermost trapezoid cell at each end of the mass grid (summed, as the cube's ``edge_fraction``,
see :func:`massmap_xr.kernels.posterior.edge_fraction`), without computing the cube: the log
posterior ln P(M | z) - ½u² is evaluated exactly at the two end cells (grid points 0, 1, n-2,
n-1) and on a coarse subgrid (about ``n_coarse`` = 64 points, always including those four),
whose trapezoid integral normalises it.  Most (halo, realization) pairs are settled before
that by a rigorous upper bound: the grid's trapezoid normalisation exceeds the single cell at
the grid point nearest the relation's inverse, so (end cells) / (that cell), five evaluations,
bounds the edge fraction; only pairs whose bound exceeds the threshold are evaluated on the
coarse grid (the reported fraction of the others is the bound).  The trapezoid rule converges exponentially for a
smooth peaked integrand, so the estimate is accurate whenever the coarse step (5.5 dex / 64 ≈
0.09 dex on a 400-point grid) is below the posterior's width (≈ 0.2 dex for Reddick (2013)
hyperparameters); for narrower posteriors it is an estimate within a factor of order one, which
is enough for a warning.  Photometric halos are checked at their catalogue redshift (their
z-marginalised posteriors are wider; the cube's ``edge_fraction`` is the exact value).

Memory is bounded: halos are processed in blocks of ``block`` (default 2048) × all
realizations × the coarse grid (float64), independent of the catalogue size; only the count,
the largest fraction and the first offenders are kept.
"""

from __future__ import annotations

import numba
import numpy as np

from massmap_xr.kernels.numerics import nearest_index, trapezoid_weights

__all__ = ["EDGE_THRESHOLD", "EdgeReport", "coarse_indices", "collapsed_halos", "edge_check"]

#: edge_fraction above which a halo is reported
EDGE_THRESHOLD = 1e-3
_LN10 = float(np.log(10.0))


def coarse_indices(n_mass: int, n_coarse: int = 64) -> np.ndarray:
    """Indices of the coarse subgrid: every s-th point plus 0, 1, n-2, n-1."""
    step = max(1, n_mass // n_coarse)
    return np.unique(np.concatenate([np.arange(0, n_mass, step), [0, 1, n_mass - 2, n_mass - 1]])).astype(np.int64)


@numba.njit(parallel=True, cache=True)
def _edge_kernel(log_lobs, zfac, sig, s, lnp, x, cw, fw, d0, d1, a1, a2, lna3, a4, scale, thr,
                 out):  # pragma: no cover
    n_h, n_c = lnp.shape
    n_r = a1.shape[0]
    for k in numba.prange(n_h):
        e = np.empty(n_c)
        for r in range(n_r):
            c = scale[r]
            w = np.hypot(sig[k], s[r]) * c
            off = log_lobs[k] * c - a1[r] * c - (a4[r] * c) * zfac[k] + a2[r] * c * lna3[r]
            if a2[r] == 0.0:
                out[k, r] = 0.0
                continue
            # screen: the fine-grid normalisation exceeds the single cell at the grid point b nearest
            # the relation's inverse, so the end cells over that cell bound the edge fraction from above
            if w > 0.0:
                b = nearest_index(x, off / (a2[r] * c))
                ends = np.empty(5)
                for q, m in enumerate((0, 1, n_c - 2, n_c - 1, b)):
                    u = (off - a2[r] * c * x[m]) / w
                    ends[q] = lnp[k, m] - 0.5 * u * u
                if ends[4] > -np.inf:
                    bound = (d0 * np.exp(max(ends[0], ends[1]) - ends[4])
                             + d1 * np.exp(max(ends[2], ends[3]) - ends[4])) / fw[b]
                    if bound < thr:
                        out[k, r] = bound
                        continue
            emax = -np.inf
            for m in range(n_c):
                if w > 0.0:
                    u = (off - a2[r] * c * x[m]) / w
                    e[m] = lnp[k, m] - 0.5 * u * u
                else:
                    e[m] = lnp[k, m] if off - a2[r] * c * x[m] == 0.0 else -np.inf
                if e[m] > emax:
                    emax = e[m]
            if not emax > -np.inf and a2[r] != 0.0:
                # every term underflowed: the likelihood is a spike beyond the grid's resolution;
                # it sits at the end nearer to the relation's inverse
                out[k, r] = 1.0
                continue
            norm = 0.0
            for m in range(n_c):
                e[m] = np.exp(e[m] - emax)
                norm += cw[m] * e[m]
            f = 0.5 * d0 * (e[0] + e[1]) + 0.5 * d1 * (e[n_c - 2] + e[n_c - 1])
            # α2 = 0: the likelihood is flat in mass and the posterior is the prior; its cut by the
            # grid is not the data's doing (not reported)
            out[k, r] = f / norm if a2[r] != 0.0 else 0.0


def collapsed_halos(log_lobs, z, sig, hyp: dict, log_m0: float, log_m1: float) -> np.ndarray:
    """Bool per halo: its L_obs lies more than 5σ beyond the mean luminosity at both ends of the
    grid [ln M0, ln M1], on the same side, for every realization (the posterior collapses onto a
    grid edge).

    u = (ln L_obs - ln μ_L) / √(S² + σ_obs²) is linear in ln M, so this is the inverted mass lying
    > 5σ outside the grid.  There is no division by α2 (α2 = 0 is a flat likelihood, never a
    collapse), and a u that overflows to ±inf (e.g. α1 = 1e308) counts as a collapse; a NaN u
    does not.  ``hyp`` holds the realizations' alpha1..alpha4, S.  Memory: one bool per halo.
    """
    a1, a2, a4, s = (np.ascontiguousarray(hyp[k], dtype=float) for k in ("alpha1", "alpha2", "alpha4", "S"))
    lna3 = np.log(np.asarray(hyp["alpha3"], dtype=float))
    out = np.empty(np.size(z), dtype=np.bool_)
    with np.errstate(all="ignore"):
        _collapse_kernel(np.ascontiguousarray(log_lobs, dtype=float), np.log1p(np.asarray(z, dtype=float)),
                         np.ascontiguousarray(sig, dtype=float), a1, a2, lna3, a4, s, float(log_m0), float(log_m1), out)
    return out


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _collapse_kernel(log_lobs, zfac, sig, a1, a2, lna3, a4, s, x0, x1, out):  # pragma: no cover
    for k in numba.prange(log_lobs.size):
        far = True
        for r in range(a1.size):
            inv = 1.0 / np.hypot(s[r], sig[k])
            base = log_lobs[k] - a1[r] - a4[r] * zfac[k]
            u_lo = (base - a2[r] * (x0 - lna3[r])) * inv
            u_hi = (base - a2[r] * (x1 - lna3[r])) * inv
            # same side told by sign, not by the product (which overflows); NaN compares false
            if not (abs(u_lo) > 5.0 and abs(u_hi) > 5.0 and ((u_lo > 0.0 and u_hi > 0.0) or (u_lo < 0.0 and u_hi < 0.0))
                    and a2[r] != 0.0):
                far = False
                break
        out[k] = far


class EdgeReport:
    """Result of :func:`edge_check`: ``count`` halos above ``threshold``, their first ``ids`` and
    ``fractions`` (largest over realizations), and ``max_fraction`` over the catalogue."""

    def __init__(self, threshold: float, n_show: int = 5):
        self.threshold = float(threshold)
        self.n_show = n_show
        self.count = 0
        self.ids: list = []
        self.fractions: list[float] = []
        self.max_fraction = 0.0

    def add(self, ids, frac) -> None:
        over = frac > self.threshold
        if frac.size:
            self.max_fraction = max(self.max_fraction, float(frac.max()))
        if over.any():
            self.count += int(over.sum())
            room = self.n_show - len(self.ids)
            if room > 0:
                self.ids.extend(np.asarray(ids)[over][:room].tolist())
                self.fractions.extend(frac[over][:room].tolist())


def edge_check(ids, log_lobs, z, sig, hyp: dict, mass, lnp_rows, *, threshold: float = EDGE_THRESHOLD,
               block: int = 2048, n_coarse: int = 64, exclude=None) -> EdgeReport:
    """Estimated edge fraction (see the module docstring) of every halo, as an :class:`EdgeReport`.

    ``lnp_rows(z_block, ids_block, coarse_log_mass)`` returns the ln prior rows (halo, coarse
    mass) at the halos' redshifts (e.g. :func:`massmap_xr.kernels.posterior.prior_rows` on the
    coarse grid).  ``hyp`` holds the realizations' alpha1..alpha4, S.  ``exclude(slice)``, if
    given, returns a bool mask of halos of that block not to report (already reported otherwise).
    Realizations with α2 = 0 (flat likelihood: the posterior is the prior) are not reported.
    """
    from massmap_xr.kernels.numerics import hyper_scale

    x_full = np.log(np.asarray(mass, dtype=float))
    ci = coarse_indices(x_full.size, n_coarse)
    x = np.ascontiguousarray(x_full[ci])
    lg = x_full / _LN10
    cw = trapezoid_weights(x / _LN10)
    fw = np.ascontiguousarray(trapezoid_weights(lg)[ci])
    d0, d1 = float(lg[1] - lg[0]), float(lg[-1] - lg[-2])
    a1, a2, a4, s = (np.ascontiguousarray(hyp[k], dtype=float) for k in ("alpha1", "alpha2", "alpha4", "S"))
    lna3 = np.log(np.asarray(hyp["alpha3"], dtype=float))
    scale = hyper_scale(a1, a2, a4)
    report = EdgeReport(threshold)
    out = np.empty((min(block, len(z)), a1.size))
    for s0 in range(0, len(z), block):
        sl = slice(s0, min(s0 + block, len(z)))
        nb = sl.stop - sl.start
        lnp = np.ascontiguousarray(lnp_rows(z[sl], ids[sl], x))
        with np.errstate(all="ignore"):
            _edge_kernel(np.ascontiguousarray(log_lobs[sl]), np.log1p(z[sl]), np.ascontiguousarray(sig[sl], dtype=float),
                         s, lnp, x, cw, fw, d0, d1,
                         a1, a2, lna3, a4, scale, float(threshold), out[:nb])
        frac = out[:nb].max(axis=1)
        if exclude is not None:
            frac = np.where(exclude(sl), 0.0, frac)
        report.add(ids[sl], frac)
    return report
