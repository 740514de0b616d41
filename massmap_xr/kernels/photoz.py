"""The posterior kernel for halos with redshift uncertainty (photometric redshifts).

For halo k with redshift nodes z_j and normalised weights w_j (from
:func:`massmap_xr.model.redshift.redshift_nodes`), and realization r::

    post[k, m, r] = Σ_j w_j p(ln L_obs | M_m, z_j) P̂(M_m | z_j) / Σ_j w_j E_j,
    E_j = Σ_m wts_m p(ln L_obs | M_m, z_j) P̂(M_m | z_j)

with p(ln L_obs | M, z) = N(ln L_obs; ln μ_L(M, z), S² + σ_obs²) (μ_L has the α4 ln(1+z_j) term
of each node), P̂(· | z_j) the prior per unit log10 M interpolated in z at the node and
normalised to unit trapezoid integral over the mass grid, and wts the trapezoid weights in
log10 M.  Nodes are therefore weighted by p(z) times the halo's evidence at that redshift: the
result is the mass marginal of the joint posterior of (M, z), not an average of per-node
normalised posteriors.  The log-evidence ln Σ_j w_j E_j is returned alongside.

The sum is accumulated in float64 in log space with a running maximum per realization (one
``exp`` per (node, mass, realization) cell), so nodes whose evidences differ by hundreds of
e-folds combine without overflow; nodes of weight 0 (log-weight -inf) are skipped.  The cost of
a photometric halo is therefore about (number of nodes) × (3–4) that of a spectroscopic one.
Accuracy: float64 arithmetic, one float32 rounding of the normalised output (relative error
≤ 2⁻²⁴ where the density is a normal float32); the redshift quadrature error is documented in
:mod:`massmap_xr.model.redshift` and tested against scipy ``dblquad`` in ``tests/test_photoz.py``.
"""

from __future__ import annotations

import numba
import numpy as np

from massmap_xr.errors import MassmapError, describe_offenders
from massmap_xr.kernels.numerics import LN_SQRT_2PI
from massmap_xr.model.prior import LOG_ZERO

__all__ = ["photoz_block"]


@numba.njit(parallel=True, cache=True)
def _kernel_photoz(log_lobs, zfac, lw, width, lnp, x, wts, a1, a2, lna3, a4, out, log_ev):  # pragma: no cover
    n_h, n_j, n_m = lnp.shape
    n_r = a1.shape[0]
    bad = np.zeros(n_h, dtype=np.bool_)
    for k in numba.prange(n_h):
        acc = np.zeros((n_r, n_m))
        top = np.full(n_r, -np.inf)
        e = np.empty(n_m)
        for j in range(n_j):
            if not lw[k, j] > -np.inf:
                continue
            for r in range(n_r):
                w = width[k, r]
                off = log_lobs[k] - a1[r] - a4[r] * zfac[k, j] + a2[r] * lna3[r]
                emax = -np.inf
                for m in range(n_m):
                    u = (off - a2[r] * x[m]) / w
                    e[m] = lnp[k, j, m] + lw[k, j] - 0.5 * u * u
                    if e[m] > emax:
                        emax = e[m]
                if not emax > -np.inf:
                    continue
                if emax > top[r]:
                    if top[r] > -np.inf:
                        f = np.exp(top[r] - emax)
                        for m in range(n_m):
                            acc[r, m] *= f
                    top[r] = emax
                t = top[r]
                for m in range(n_m):
                    acc[r, m] += np.exp(e[m] - t)
        for r in range(n_r):
            norm = 0.0
            for m in range(n_m):
                norm += wts[m] * acc[r, m]
            if not (norm > 0.0 and norm < np.inf and top[r] > -np.inf):
                bad[k] = True
                log_ev[k, r] = -np.inf
                for m in range(n_m):
                    out[k, m, r] = 0.0
                continue
            inv = 1.0 / norm
            for m in range(n_m):
                out[k, m, r] = acc[r, m] * inv
            log_ev[k, r] = np.log(norm) + top[r] - LN_SQRT_2PI - np.log(width[k, r])
    return bad


def photoz_block(a: dict, idx: np.ndarray, zj: np.ndarray, lw: np.ndarray, *, z_nodes, log_table, ids=None):
    """Posterior and log-evidence of the halos ``idx`` of prepared arguments ``a`` over redshift nodes.

    Parameters
    ----------
    a : dict
        Prepared arguments of :func:`massmap_xr.kernels.posterior.posterior_outputs` (all halos of
        the block).
    idx : numpy.ndarray of int
        Positions (in ``a``) of the photometric halos.
    zj, lw : numpy.ndarray float64 (len(idx), n_node)
        Node redshifts and normalised log-weights of those halos.
    z_nodes, log_table : numpy.ndarray
        The prior table (as for ``posterior_block``).
    ids : array_like, optional
        Halo ids of ``idx``, for messages.

    Returns
    -------
    (numpy.ndarray float32 (len(idx), n_mass, n_realization), numpy.ndarray float64 (len(idx), n_realization))

    Raises
    ------
    PriorError
        If a node lies outside the prior's redshift nodes or the prior is zero on the whole grid there.
    MassmapError
        If the likelihood underflows at every node and mass for some realization (hyperparameters
        so extreme that exp(-½u²) is 0 everywhere): no finite posterior exists in float64.
    """
    from massmap_xr.kernels.posterior import check_prior_redshifts, log_prior_norm, prior_rows

    n, n_j = zj.shape
    x, wts = a["x"], a["wts"]
    flat = zj.ravel()
    labels = None if ids is None else np.repeat(np.asarray(ids), n_j)
    check_prior_redshifts(flat, z_nodes, ids=labels, who="posterior (photometric redshift nodes)")
    lnp = prior_rows(flat, z_nodes, np.maximum(log_table, LOG_ZERO), x, ids=labels,
                     who="posterior (photometric redshift nodes)")
    lnp -= log_prior_norm(lnp, wts)[:, None]  # P̂ per unit log10 M, unit integral at every node
    lnp = np.ascontiguousarray(lnp.reshape(n, n_j, x.size))
    n_r = a["a1"].size
    out = np.empty((n, x.size, n_r), dtype=np.float32)
    log_ev = np.empty((n, n_r))
    bad = _kernel_photoz(np.ascontiguousarray(a["log_lobs"][idx]), np.ascontiguousarray(np.log1p(zj)),
                         np.ascontiguousarray(lw), np.ascontiguousarray(a["width"][idx]), lnp, x, wts,
                         a["a1"], a["a2"], a["lna3"], a["a4"], out, log_ev)
    if bad.any():
        labs = np.arange(n) if ids is None else np.asarray(ids)
        raise MassmapError(
            "posterior: the likelihood of L_obs underflows to 0 at every redshift node and mass for some "
            f"realization of {describe_offenders(labs, bad)}; the hyperparameters (alpha1..alpha4, S) put mu_L "
            "impossibly far from L_obs: check them and lum_obs, or widen the mass grid"
        )
    return out, log_ev
