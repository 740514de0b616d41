"""Numerical kernels for the posterior cube.

:func:`posterior_block` fills a (halo, mass, realization) float32 block with the normalised
posterior density per unit log10 M.  For halo k and realization r::

    post[k, m, r] ∝ P_k[m] · exp(-½ u_{k r m}²),   u = (ln L_obs - ln μ_L(M_m, z_k)) / √(S² + σ_obs²)

with P_k the prior per unit log10 M at the halo's redshift (one row per halo, shared by every
realization), normalised so that the trapezoid integral over log10 M is 1.

Recurrence
----------
On a log-uniform mass grid u is linear in the mass index, u_m = u_0 - m β with
β = α2 Δln M / √(S² + σ_obs²), so the Gaussian factor g_m = exp(-½ u_m²) obeys::

    g_{m+1} = g_m · q_m,    q_{m+1} = q_m · exp(-β²),    q_m = exp(β u_m - β²/2)

two multiplications per cell instead of one ``exp``, vectorised across realizations.  The
kernel evaluates g exactly (one ``exp``) at the start of every block of cells and runs the
recurrence inside the block; q runs across the whole row.  A block is at most ``_BLOCK`` cells
and spans at most ``_DU_BLOCK`` in u (the block is shortened for a halo whose largest |β|
needs it; |β| > ``_DU_BLOCK`` means one exact ``exp`` per cell).  The span limit is what makes
the recurrence safe for narrow likelihoods (small S and σ_obs): a block that starts in the
far tail, where g underflows (|u| > 37.6), can only reach |u| > 31.6 before the next exact
restart, so the values it misses are below exp(-½·31.6²) ≈ 1e-217, far under the accepted
normalisation ``_NORM_MIN``.

The unnormalised values (at most 1: the prior row and g are both ≤ 1) are stored in the float32
output and rescaled in place once the row's normalisation is known.  Rows are accepted only if
their normalisation exceeds ``_NORM_MIN`` = 1e-30, so their peak exceeds 1e-30 divided by the
grid's span in dex (1.8e-31 for the default 5.5 dex), every value above 1e-3 of the peak is a
normal float32, and what underflows in float32 is below 1e-14 of the peak.
Seed-field halos have normalisations ≥ 1e-6, so the limit costs nothing in practice.

Accuracy
--------
Arithmetic is float64.  The recurrence error of a cell m positions into a block, with q carried
over n cells of the row, is about (m·n + m)·2⁻⁵³ relative, at most ~6e-12 for 128-cell blocks
on a 400-point grid.  Measured against the float64 reference :func:`posterior_reference` on 300
seed-field halos × 100 Reddick (2013) realizations (400 masses), the float64 values agree to
4e-13 relative where the density exceeds 1e-3 of its peak (1e-12 down to 1e-30 of the peak).
The output is rounded to float32 twice (the unnormalised value, then the normalised one), so
the stored density has relative error ≤ 2⁻²³ ≈ 1.2e-7 where it exceeds 1e-3 of the peak and
absolute error ≤ 1.2e-7 of the peak everywhere (measured: 1.16e-7 and 1.14e-7);
``tests/test_kernels_posterior.py`` asserts 2.5e-7 for both.  A float64 scratch row would remove one
rounding (≤ 6e-8) at ~20 % of the kernel's speed.

Fallback
--------
Rows whose normalisation is not in (``_NORM_MIN``, 1e300) — L_obs far from every μ_L on the
grid, a prior that is tiny where the likelihood peaks, or a recurrence that over- or
underflowed (0·∞) — and every row of a mass grid that is not log-uniform are computed in log
space in float64 (one ``exp`` per cell, a single float32 rounding), so no row is ever NaN or
silently zero for finite input.  The log-space path subtracts the smallest ½u² on the grid
(at the grid mass b nearest the relation's inverse) *before* adding ln P, writing
½(u_m² - u_b²) = ½ · α2(x_b - x_m)/w · (d_m + d_b)/w with d = ln L_obs - ln μ_L and
w = √(S² + σ_obs²), so neither a huge common ½u² (tiny S and σ_obs) nor a huge α1 swallows
the prior or the mass dependence.  Consequences: for α2 = 0 the likelihood is constant in mass
and the row is exactly the normalised prior, whatever S; where the differences overflow
(vanishing S and σ_obs) the likelihood is a delta function and the row is the normalised spike
at the grid mass nearest the relation's inverse.

Evidence and edge fraction
--------------------------
:func:`posterior_outputs` runs the same kernels and also returns, per (halo, realization), the
log-evidence ln ∫ p(ln L_obs | M, z) P̂(M | z) d log10 M (P̂: the prior per dex normalised to unit
trapezoid integral over the grid at z; p: the normal density per unit ln L_obs) — the log of the
row's normalisation, which the kernels record before rescaling (costs nothing measurable), minus
ln √(2π) w and the prior row's log-normalisation — and the edge fraction (:func:`edge_fraction`).
Photometric halos (several redshift nodes) go through :mod:`massmap_xr.kernels.photoz`.

Checks
------
Besides shapes and finiteness, :func:`posterior_block` refuses (with a
:class:`~massmap_xr.errors.PriorError`) redshift nodes that are not strictly increasing,
redshifts outside the nodes (no silent extrapolation) and halos at whose redshift the prior is
zero at every grid mass (ln dn/dM ≤ -1000, where exp() is exactly 0 — the posterior would
otherwise come out as a featureless row).  Hyperparameters anywhere in the float64 range are
accepted: the log-space path multiplies them by a power of two
(:func:`~massmap_xr.kernels.numerics.hyper_scale`) when one exceeds 2^500, so no partial sum of
ln L_obs - ln μ_L overflows.
"""

from __future__ import annotations

import numba
import numpy as np

from massmap_xr.errors import MassmapError, PriorError, describe_offenders, format_offenders
from massmap_xr.kernels.numerics import (
    LN_SQRT_2PI,
    half_u2_excess,
    hyper_scale,
    inverse_width,
    nearest_index,
    trapezoid_weights,
)
from massmap_xr.model.prior import LOG_ZERO, z_weights

__all__ = ["ZERO_PRIOR_LOG", "check_prior_nonzero", "prior_row_max", "check_prior_redshifts", "edge_fraction", "log_prior_norm",
           "posterior_block", "posterior_outputs", "posterior_reference", "prior_rows"]

#: most cells between two exact evaluations of the Gaussian factor
_BLOCK = 128
#: largest change of u allowed across one block (keeps restarts out of the underflowed tail)
_DU_BLOCK = 6.0
#: smallest accepted normalisation of a row computed with the recurrence (its unnormalised
#: values pass through float32, whose normal range ends at 1.2e-38)
_NORM_MIN = 1e-30
#: largest deviation (in ln M) of a grid from exact log-uniform spacing for the recurrence
_UNIFORM_ATOL = 1e-10
#: ln dn/dM at or below this is a zero prior: exp() of it is exactly 0 in float64 (the log of
#: any positive float64 is above -745); the package stores a zero prior as LOG_ZERO = -1e4
ZERO_PRIOR_LOG = -1.0e3
_LN10 = float(np.log(10.0))


def _offending_halos(ids, mask: np.ndarray, z: np.ndarray) -> str:
    """The halos flagged in ``mask`` with their redshifts, named by id (or by position in the input arrays)."""
    if ids is None:
        labels, note = np.arange(z.size), " (ids are positions in the input arrays)"
    else:
        labels, note = np.asarray(ids).ravel(), ""
        if labels.size != z.size:
            raise MassmapError(f"ids must have one entry per halo ({z.size}), got {labels.size}")
    return describe_offenders(labels, mask, values=z) + note


def check_prior_redshifts(z, z_nodes, *, ids=None, who: str = "posterior_block") -> None:
    """Check that the prior's redshift nodes are increasing and cover every redshift ``z``.

    Parameters
    ----------
    z : numpy.ndarray (n_halo,)
        Redshifts of the halos.
    z_nodes : numpy.ndarray (n_z,)
        Redshift nodes of the prior table.
    ids : array_like, optional
        Halo ids for the message (default: positions in ``z``).
    who : str
        Name of the caller, for the message.

    Raises
    ------
    PriorError
        If the nodes are not finite and strictly increasing, or some redshifts lie outside
        ``[z_nodes[0], z_nodes[-1]]`` (the prior would be extrapolated).
    """
    z = np.asarray(z, dtype=np.float64).ravel()
    z_nodes = np.asarray(z_nodes, dtype=np.float64).ravel()
    if z_nodes.size < 1 or not np.all(np.isfinite(z_nodes)):
        raise PriorError(f"{who}: z_nodes (the prior's redshift nodes) must be finite numbers, at least one, "
                         f"got {z_nodes[:5].tolist()}; pass the nodes returned by prior.log_table(mass)")
    steps = np.diff(z_nodes)
    if np.any(steps <= 0):
        bad = np.flatnonzero(steps <= 0)
        raise PriorError(
            f"{who}: z_nodes (the prior's redshift nodes) must be strictly increasing; {bad.size} of {steps.size} "
            f"step(s) are not (first at node index {format_offenders(bad + 1)}: z = "
            f"{', '.join(f'{v:.6g}' for v in z_nodes[bad + 1][:5])}); sort the table's rows by redshift and drop "
            "duplicated nodes"
        )
    lo, hi = float(z_nodes[0]), float(z_nodes[-1])
    out = (z < lo) | (z > hi)
    if out.any():
        raise PriorError(
            f"{who}: z outside the prior's redshift nodes [{lo:g}, {hi:g}] for "
            f"{_offending_halos(ids, out, z)}; the prior is not extrapolated: tabulate it over "
            "these redshifts (e.g. TinkerPrior(z_max=...)) or drop these halos"
        )


def prior_rows(z: np.ndarray, z_nodes: np.ndarray, log_table: np.ndarray, log_mass: np.ndarray, *,
               ids=None, who: str = "prior_rows") -> np.ndarray:
    """ln prior per unit ln M (equivalently per log10 M, up to a constant) of each halo.

    ln(dn/dM) is interpolated linearly in z between the table's nodes (redshifts beyond the
    nodes take the end node: callers that must not extrapolate check with
    :func:`check_prior_redshifts`), and ln M is added (dn/dln M = M dn/dM).  Each row has its
    maximum subtracted.

    Parameters
    ----------
    z : numpy.ndarray (n_halo,)
        Redshifts.
    z_nodes : numpy.ndarray (n_z,)
        Redshift nodes of the table.
    log_table : numpy.ndarray (n_z, n_mass)
        ln(dn/dM) at the nodes on the mass grid (-inf or :data:`~massmap_xr.model.prior.LOG_ZERO`
        where the prior is zero).
    log_mass : numpy.ndarray (n_mass,)
        ln M of the grid (M in M_sun).
    ids : array_like, optional
        Halo ids, to name offenders in the error (default: positions in ``z``).
    who : str
        Name of the caller, for the error message.

    Returns
    -------
    numpy.ndarray (n_halo, n_mass)
        float64, maximum 0 in every row.

    Raises
    ------
    PriorError
        If at some halo's redshift the prior is zero at every mass of the grid (interpolated
        ln dn/dM ≤ :data:`ZERO_PRIOR_LOG` everywhere): the posterior would otherwise silently
        be a featureless row.
    """
    z = np.asarray(z, dtype=np.float64)
    log_table = np.maximum(np.asarray(log_table, dtype=np.float64), LOG_ZERO)  # -inf -> finite log-zero
    i, w = z_weights(z_nodes, z)
    rows = (1.0 - w)[:, None] * log_table[i] + w[:, None] * log_table[i + 1]
    check_prior_nonzero(z, rows.max(axis=1, initial=-np.inf), ids=ids, who=who)
    rows += np.asarray(log_mass, dtype=np.float64)[None, :]
    return rows - rows.max(axis=1, keepdims=True)


def prior_row_max(z: np.ndarray, z_nodes: np.ndarray, log_table: np.ndarray) -> np.ndarray:
    """Largest interpolated ln dn/dM on the mass grid at each redshift ``z``: the row maximum that
    :func:`prior_rows` checks (same interpolation, same arithmetic), without making the rows
    (memory: one float per halo)."""
    z = np.asarray(z, dtype=np.float64).ravel()
    i, w = z_weights(z_nodes, z)
    table = np.ascontiguousarray(np.maximum(np.asarray(log_table, dtype=np.float64), LOG_ZERO))
    out = np.empty(z.size)
    _row_max_kernel(table, np.ascontiguousarray(i, dtype=np.int64), np.ascontiguousarray(w, dtype=np.float64), out)
    return out


@numba.njit(parallel=True, cache=True)
def _row_max_kernel(table, i, w, out):  # pragma: no cover
    n_m = table.shape[1]
    for k in numba.prange(i.size):
        a, b = table[i[k]], table[i[k] + 1 if table.shape[0] > 1 else 0]
        best = -np.inf
        for m in range(n_m):
            v = (1.0 - w[k]) * a[m] + w[k] * b[m]
            if v > best:
                best = v
        out[k] = best


def check_prior_nonzero(z, row_max, *, ids=None, who: str = "prior_rows") -> None:
    """Raise :class:`PriorError` for halos whose interpolated ln dn/dM is ≤ ``ZERO_PRIOR_LOG`` at every mass.

    ``row_max`` is the largest interpolated ln dn/dM on the mass grid at each halo's redshift ``z``.
    """
    z = np.asarray(z, dtype=np.float64).ravel()
    zero = np.asarray(row_max, dtype=np.float64).ravel() <= ZERO_PRIOR_LOG
    if zero.any():
        raise PriorError(
            f"{who}: the prior is zero on the whole mass grid (ln dn/dM <= {ZERO_PRIOR_LOG:g} at every mass) at the "
            f"redshift z of {_offending_halos(ids, zero, z)}; P(M | z) cannot be normalised "
            "there and their posterior would silently come out featureless: use a prior that is positive "
            "somewhere on the mass grid at these redshifts (check the table's rows at the nearest redshift nodes "
            "and its mass range), widen the mass grid, or drop these halos"
        )


@numba.njit(parallel=True, fastmath=False, cache=True)
def _kernel_uniform(log_lobs, zfac, width, lnp, x0, dx, wts, a1, a2, lna3, a4, out, lnorm):  # pragma: no cover
    n_h, n_m = lnp.shape
    n_r = a1.shape[0]
    bad = np.zeros(n_h, dtype=np.bool_)
    for k in numba.prange(n_h):
        row = np.exp(lnp[k])
        beta = np.empty(n_r)
        c = np.empty(n_r)
        u0 = np.empty(n_r)
        g = np.empty(n_r)
        ratio = np.empty(n_r)
        norm = np.zeros(n_r)
        bmax = 0.0
        for r in range(n_r):
            w = width[k, r]
            beta[r] = a2[r] * dx / w
            c[r] = np.exp(-beta[r] * beta[r])
            u0[r] = (log_lobs[k] - a1[r] - a4[r] * zfac[k] - a2[r] * (x0 - lna3[r])) / w
            ratio[r] = np.exp(beta[r] * u0[r] - 0.5 * beta[r] * beta[r])
            bmax = max(bmax, abs(beta[r]))
        blk = _BLOCK
        if bmax * _BLOCK > _DU_BLOCK:
            blk = max(1, int(_DU_BLOCK / bmax))
        for m0 in range(0, n_m, blk):
            m1 = min(m0 + blk, n_m)
            for r in range(n_r):
                u = u0[r] - m0 * beta[r]
                g[r] = np.exp(-0.5 * u * u)
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
            if not (norm[r] > _NORM_MIN and norm[r] < 1e300):
                bad[k] = True
        if not bad[k]:
            for r in range(n_r):
                lnorm[k, r] = np.log(norm[r])
                norm[r] = 1.0 / norm[r]
            for m in range(n_m):
                for r in range(n_r):
                    out[k, m, r] = out[k, m, r] * norm[r]
    return bad


@numba.njit(parallel=True, cache=True)
def _kernel_logspace(rows_idx, log_lobs, zfac, width, lnp, x, wts, a1, a2, lna3, a4, scale, out,
                     lnorm):  # pragma: no cover
    n_m = lnp.shape[1]
    n_r = a1.shape[0]
    for j in numba.prange(rows_idx.shape[0]):
        k = rows_idx[j]
        e = np.empty(n_m)
        for r in range(n_r):
            # everything in units of 1/c (c = scale[r], 1 unless some α is beyond 2^500), so that
            # no partial sum of ln L_obs - ln μ_L overflows; d_m = off - slope x_m
            c = scale[r]
            w = width[k, r] * c
            slope = a2[r] * c
            off = log_lobs[k] * c - a1[r] * c - (a4[r] * c) * zfac[k] + slope * lna3[r]
            # b: the grid mass nearest the relation's inverse, where ½u² is smallest; subtracting
            # ½u_b² before adding ln P keeps the prior however large ½u² is (α2 = 0: the excess
            # is 0 at every mass and the row is the prior)
            b = 0
            if slope != 0.0:
                b = nearest_index(x, off / slope)
            d_b = off - slope * x[b]
            iw = inverse_width(w)
            emax = -np.inf
            for m in range(n_m):
                e[m] = lnp[k, m] - half_u2_excess(slope, x[b] - x[m], off - slope * x[m], d_b, w, iw)
                emax = max(emax, e[m])
            # e[b] = lnp[k, b] is finite, so emax is; where the excess overflows everywhere else
            # (vanishing S and σ_obs) the row is the normalised spike at b
            norm = 0.0
            for m in range(n_m):
                e[m] = np.exp(e[m] - emax)
                norm += wts[m] * e[m]
            for m in range(n_m):
                out[k, m, r] = e[m] / norm
            # ln Σ_m wts P g = ln norm + emax - ½u_b² (d_b and w carry the same scale factor)
            ub = d_b / w if w > 0.0 else np.inf
            lnorm[k, r] = np.log(norm) + emax - 0.5 * ub * ub if d_b != 0.0 else np.log(norm) + emax


def _uniform_step(x: np.ndarray) -> float | None:
    """The step of a log-uniform grid (in ln M), or None if ``x`` is not uniform to 1e-10."""
    if x.size < 2:
        return None
    dx = (x[-1] - x[0]) / (x.size - 1)
    dev = np.abs(x - (x[0] + dx * np.arange(x.size))).max()
    return float(dx) if dev <= _UNIFORM_ATOL else None


def _as_vector(name: str, value, n: int | None) -> np.ndarray:
    a = np.ascontiguousarray(value, dtype=np.float64)
    if a.ndim != 1 or (n is not None and a.size != n):
        want = f"({n},)" if n is not None else "1-D"
        raise MassmapError(f"posterior_block: {name} must have shape {want}, got {a.shape}")
    bad = ~np.isfinite(a)
    if bad.any():
        raise MassmapError(
            f"posterior_block: {name} has {int(bad.sum())} non-finite value(s) (first at index "
            f"{np.flatnonzero(bad)[:5].tolist()}); every input must be finite"
        )
    return a


def _prepare(log_lobs, z, sigma_obs, z_nodes, log_table, mass, alpha1, alpha2, alpha3, alpha4, S,
             ids=None) -> dict:
    """Validate the inputs of :func:`posterior_block` and derive the kernels' arguments."""
    log_lobs = _as_vector("log_lobs", log_lobs, None)
    n_h = log_lobs.size
    z = _as_vector("z", z, n_h)
    sig = np.asarray(sigma_obs, dtype=np.float64)
    if sig.ndim == 0:
        sig = np.full(n_h, float(sig))
    sig = _as_vector("sigma_obs", sig, n_h)
    if np.any(sig < 0):
        raise MassmapError(
            f"posterior_block: sigma_obs must be >= 0, {int((sig < 0).sum())} value(s) are negative "
            f"(first at index {np.flatnonzero(sig < 0)[:5].tolist()})"
        )
    mass = _as_vector("mass", mass, None)
    if mass.size < 2 or np.any(mass <= 0) or np.any(np.diff(mass) <= 0):
        raise MassmapError("posterior_block: mass must be a positive, strictly increasing grid of >= 2 points (M_sun)")
    x = np.log(mass)
    wts = trapezoid_weights(x / _LN10)
    hyp = [_as_vector(k, a, None) for k, a in zip(("alpha1", "alpha2", "alpha3", "alpha4", "S"),
                                                   (alpha1, alpha2, alpha3, alpha4, S), strict=True)]
    n_r = hyp[0].size
    if any(a.size != n_r for a in hyp):
        raise MassmapError(f"posterior_block: hyperparameters must share one length, got {[a.size for a in hyp]}")
    a1, a2, a3, a4, s = hyp
    for name, v in (("alpha3 (pivot mass, M_sun)", a3), ("S (intrinsic scatter)", s)):
        if np.any(v <= 0):
            raise MassmapError(
                f"posterior_block: {name} must be > 0, {int((v <= 0).sum())} of {n_r} realization(s) are not "
                f"(first at index {np.flatnonzero(v <= 0)[:5].tolist()})"
            )
    # width of the likelihood in ln L_obs; hypot neither under- nor overflows
    width = np.ascontiguousarray(np.hypot(sig[:, None], s[None, :]))
    log_table = np.asarray(log_table, dtype=np.float64)
    if log_table.ndim != 2 or log_table.shape[1] != mass.size:
        raise MassmapError(f"posterior_block: log_table must have shape (n_z, {mass.size}), got {log_table.shape}")
    if np.any(np.isnan(log_table) | (log_table == np.inf)):
        raise MassmapError("posterior_block: log_table (ln dn/dM) must not contain NaN or +inf")
    log_table = np.maximum(log_table, LOG_ZERO)  # -inf (zero prior) -> the package's finite log-zero
    z_nodes = np.asarray(z_nodes, dtype=np.float64)
    if z_nodes.ndim != 1 or z_nodes.size != log_table.shape[0]:
        raise PriorError(f"posterior_block: z_nodes must have shape ({log_table.shape[0]},) (one node per row of "
                         f"log_table), got {z_nodes.shape}")
    check_prior_redshifts(z, z_nodes, ids=ids)
    lnp = np.ascontiguousarray(prior_rows(z, z_nodes, log_table, x, ids=ids, who="posterior_block"))
    return {"log_lobs": log_lobs, "z": z, "zfac": np.log1p(z), "width": width, "lnp": lnp, "x": x, "wts": wts,
            "a1": a1, "a2": a2, "lna3": np.log(a3), "a4": a4, "scale": hyper_scale(a1, a2, a4)}


def posterior_block(
    log_lobs, z, sigma_obs, *, z_nodes, log_table, mass, alpha1, alpha2, alpha3, alpha4, S, out=None, ids=None
) -> np.ndarray:
    """Normalised posterior density per unit log10 M, float32 (halo, mass, realization).

    Parameters
    ----------
    log_lobs, z : numpy.ndarray (n_halo,)
        ln L_obs (catalogue luminosity units) and redshift of each halo.
    sigma_obs : float or numpy.ndarray (n_halo,)
        Observational log-normal scatter (natural log), one value or one per halo.
    z_nodes, log_table : numpy.ndarray
        The prior: ln(dn/dM) (n_z, n_mass) on ``mass`` at redshift nodes ``z_nodes``.
    mass : numpy.ndarray (n_mass,)
        Mass grid in M_sun, increasing (log-uniform grids use the fast recurrence, others the
        log-space path).
    alpha1, alpha2, alpha3, alpha4, S : numpy.ndarray (n_realization,)
        Hyperparameters (α3 in M_sun; S > 0 natural-log scatter).
    out : numpy.ndarray, optional
        Preallocated C-contiguous float32 output of shape (n_halo, n_mass, n_realization).
    ids : array_like (n_halo,), optional
        Halo ids, used only to name offending halos in error messages (default: their
        positions in the input arrays).

    Returns
    -------
    numpy.ndarray
        float32 (n_halo, n_mass, n_realization), density per dex: the trapezoid integral over
        log10 M of every (halo, realization) row is 1.  Accuracy: see the module docstring.

    Raises
    ------
    MassmapError
        For inputs of the wrong shape or length, non-finite values, S or α3 <= 0, σ_obs < 0, a
        mass grid that is not positive and strictly increasing, a prior table with NaN or +inf,
        or an ``out`` of the wrong shape, dtype or memory layout.
    PriorError
        (a MassmapError) For redshift nodes that are not strictly increasing, redshifts outside
        the nodes, or halos at whose redshift the prior is zero at every grid mass.

    Examples
    --------
    >>> from massmap_xr.model.prior import TinkerPrior, default_mass_grid
    >>> mass = default_mass_grid(100)
    >>> zn, lt = TinkerPrior().log_table(mass)
    >>> p = posterior_block(np.array([11.0]), np.array([0.3]), 0.05, z_nodes=zn, log_table=lt, mass=mass,
    ...                     alpha1=[10.7], alpha2=[0.36], alpha3=[2.35e14], alpha4=[1.1], S=[0.155])
    >>> p.shape, p.dtype, round(float(trapezoid_weights(np.log10(mass)) @ p[0, :, 0]), 5)
    ((1, 100, 1), dtype('float32'), 1.0)
    """
    a = _prepare(log_lobs, z, sigma_obs, z_nodes, log_table, mass, alpha1, alpha2, alpha3, alpha4, S, ids=ids)
    shape = (a["log_lobs"].size, a["x"].size, a["a1"].size)
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise MassmapError(
            f"posterior_block: out must be a C-contiguous float32 array of shape {shape}, got "
            f"{getattr(out, 'dtype', type(out).__name__)} {getattr(out, 'shape', '')}"
        )
    _fill(a, out)
    return out


def _fill(a: dict, out: np.ndarray, lnorm: np.ndarray | None = None) -> np.ndarray:
    """Run the kernels on prepared arguments ``a`` into ``out`` (float32, or float64 for tests).

    ``lnorm`` (float64 (n_halo, n_realization), optional) receives ln Σ_m wts_m P_k[m] g_m, the
    log of the unnormalised row's trapezoid integral (prior rows with their maximum 0, Gaussian
    factor without its 1/(√(2π) w)).  Returns the indices of the halos computed in log space
    (all of them for a grid that is not log-uniform).
    """
    n_h = out.shape[0]
    if lnorm is None:
        lnorm = np.empty((n_h, a["a1"].size))
    if n_h == 0:
        return np.zeros(0, dtype=np.int64)
    common = (a["width"], a["lnp"])
    hyp = (a["a1"], a["a2"], a["lna3"], a["a4"])
    dx = _uniform_step(a["x"])
    if dx is not None:
        bad = _kernel_uniform(a["log_lobs"], a["zfac"], *common, float(a["x"][0]), dx, a["wts"], *hyp, out, lnorm)
        idx = np.flatnonzero(bad).astype(np.int64)
    else:
        idx = np.arange(n_h, dtype=np.int64)
    if idx.size:
        _kernel_logspace(idx, a["log_lobs"], a["zfac"], *common, a["x"], a["wts"], *hyp, a["scale"], out, lnorm)
    return idx


def log_prior_norm(lnp: np.ndarray, wts: np.ndarray) -> np.ndarray:
    """ln of the trapezoid integral over log10 M of exp(``lnp``) per row (rows with maximum 0).

    A row-wise sum (not a BLAS product), so a row's value does not depend on the other rows.
    """
    return np.log((np.exp(lnp) * wts).sum(axis=1))


def edge_fraction(post: np.ndarray, log10_mass: np.ndarray) -> np.ndarray:
    """Posterior probability in the first and last trapezoid cells of the grid, summed: float32 (halo, realization).

    ``½Δ_0(p_0 + p_1) + ½Δ_{n-2}(p_{n-2} + p_{n-1})`` with Δ the cell widths in log10 M and p the
    density per dex ``post`` (halo, mass, realization).  For a posterior well inside the grid it is
    ~0; a posterior cut by an edge has a fraction of order (cell width) / (posterior width).
    """
    d0 = float(log10_mass[1] - log10_mass[0])
    d1 = float(log10_mass[-1] - log10_mass[-2])
    p = post
    f = 0.5 * d0 * (p[:, 0, :].astype(np.float64) + p[:, 1, :]) + 0.5 * d1 * (
        p[:, -2, :].astype(np.float64) + p[:, -1, :])
    return f.astype(np.float32)


def posterior_outputs(log_lobs, z, sigma_obs, *, z_nodes, log_table, mass, alpha1, alpha2, alpha3, alpha4, S,
                      nodes=None, ids=None):
    """The posterior block with its per-(halo, realization) log-evidence and edge fraction, in one kernel pass.

    Same arguments as :func:`posterior_block`, plus ``nodes`` = ``(z_nodes_halo, log_w)``
    (float64 (halo, node), from :func:`massmap_xr.model.redshift.redshift_nodes`) for halos
    with redshift uncertainty; halos whose row is one node of log-weight 0 at their ``z``
    (spectroscopic) go through exactly the kernel of :func:`posterior_block` (bit-identical
    posterior), the others through :func:`massmap_xr.kernels.photoz.photoz_block`.

    Returns
    -------
    post : numpy.ndarray float32 (halo, mass, realization)
        As :func:`posterior_block` (for photometric halos: marginalised over z, each node
        weighted by p(z_j) times the halo's evidence there).
    log_evidence : numpy.ndarray float64 (halo, realization)
        ln ∫ p(ln L_obs | M, z) P̂(M | z) d log10 M (times Σ_j w_j over z nodes for photometric
        halos), where p(ln L_obs | M, z) is the normal density per unit ln L_obs of width
        √(S² + σ_obs²) about ln μ_L(M, z) and P̂(· | z) is the prior per unit log10 M normalised to
        unit trapezoid integral over the mass grid at that z.  Natural log of a density in
        ln L_obs; -inf only where it underflows float64.
    edge_fraction : numpy.ndarray float32 (halo, realization)
        :func:`edge_fraction` of the posterior.
    """
    a = _prepare(log_lobs, z, sigma_obs, z_nodes, log_table, mass, alpha1, alpha2, alpha3, alpha4, S, ids=ids)
    n_h, n_m, n_r = a["log_lobs"].size, a["x"].size, a["a1"].size
    out = np.empty((n_h, n_m, n_r), dtype=np.float32)
    log_ev = np.empty((n_h, n_r))
    photo = np.zeros(n_h, dtype=bool)
    if nodes is not None:
        zj, lw = (np.asarray(v, dtype=np.float64) for v in nodes)
        if zj.shape != lw.shape or zj.ndim != 2 or zj.shape[0] != n_h:
            raise MassmapError(f"posterior_outputs: nodes must be two (halo, node) arrays with {n_h} rows, got "
                               f"{zj.shape} and {lw.shape}")
        photo = np.isfinite(lw[:, 1:]).any(axis=1) | (zj[:, 0] != a["z"]) | (lw[:, 0] != 0.0)
    spec = np.flatnonzero(~photo)
    if spec.size == n_h:
        _fill(a, out, log_ev)
    elif spec.size:
        sub = _subset(a, spec)
        o = np.empty((spec.size, n_m, n_r), dtype=np.float32)
        lv = np.empty((spec.size, n_r))
        _fill(sub, o, lv)
        out[spec], log_ev[spec] = o, lv
    if spec.size:
        lv = log_ev[spec]
        lv -= (log_prior_norm(a["lnp"][spec], a["wts"])[:, None] + LN_SQRT_2PI + np.log(a["width"][spec]))
        log_ev[spec] = lv
    if photo.any():
        from massmap_xr.kernels.photoz import photoz_block

        ph = np.flatnonzero(photo)
        o, lv = photoz_block(a, ph, zj[ph], lw[ph], z_nodes=z_nodes, log_table=log_table,
                             ids=None if ids is None else np.asarray(ids)[ph])
        out[ph], log_ev[ph] = o, lv
    return out, log_ev, edge_fraction(out, a["x"] / _LN10)


def _subset(a: dict, idx: np.ndarray) -> dict:
    """The prepared arguments restricted to halos ``idx``."""
    sub = dict(a)
    for k in ("log_lobs", "z", "zfac", "width", "lnp"):
        sub[k] = np.ascontiguousarray(a[k][idx])
    return sub


def posterior_reference(log_lobs, z, sigma_obs, *, z_nodes, log_table, mass, alpha1, alpha2, alpha3, alpha4, S):
    """Plain float64 numpy evaluation of the same posterior (for tests and documentation).

    Same arguments as :func:`posterior_block` (without ``out``); evaluates
    :func:`massmap_xr.model.relation.lobs_log_likelihood` on the full (halo, mass, realization) grid
    in log space.  Returns float64 of shape (n_halo, n_mass, n_realization).
    """
    from massmap_xr.model.relation import lobs_log_likelihood

    x = np.log(np.asarray(mass, dtype=float))
    lnp = prior_rows(np.asarray(z, float), np.asarray(z_nodes, float), np.asarray(log_table, float), x)  # (h, m)
    ll = lobs_log_likelihood(
        np.exp(np.asarray(log_lobs, float))[:, None, None], np.exp(x)[None, :, None],
        np.asarray(z, float)[:, None, None],
        np.asarray(alpha1)[None, None, :], np.asarray(alpha2)[None, None, :], np.asarray(alpha3)[None, None, :],
        np.asarray(alpha4)[None, None, :], np.asarray(S)[None, None, :],
        np.broadcast_to(np.asarray(sigma_obs, float), np.shape(z))[:, None, None],
    )
    e = lnp[:, :, None] + ll
    e -= e.max(axis=1, keepdims=True)
    p = np.exp(e)
    w = trapezoid_weights(x / _LN10)
    return p / np.einsum("m,hmr->hr", w, p)[:, None, :]
