"""The catalogue likelihood P({L_obs} | {z}, α, S) of the mass–luminosity hyperparameters.

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
run serially, where starting threads would cost more than it saves).  The compiled pass (the
mass window, which bounds every halo's relative truncation error by ``rel_tol``, the Gaussian
recurrence and the log-space fallback) is :mod:`massmap_xr.kernels.likelihood`.

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
"""

from __future__ import annotations

import numba
import numpy as np
import xarray as xr

from massmap_xr.errors import InferenceError, PriorError, format_offenders
from massmap_xr.inference.selection import Selection
from massmap_xr.kernels.likelihood import loglike_parallel, loglike_serial
from massmap_xr.kernels.numerics import hyper_scale, trapezoid_weights
from massmap_xr.kernels.posterior import ZERO_PRIOR_LOG, check_prior_nonzero, check_prior_redshifts
from massmap_xr.kernels.selection import empty_table, selection_parallel, selection_serial
from massmap_xr.model.prior import LOG_ZERO, as_prior, check_mass_grid, default_mass_grid, z_weights
from massmap_xr.model.relation import HYPER_NAMES

__all__ = ["CatalogLikelihood", "log_likelihood"]

#: halos per partial sum; fixed so that results do not depend on the number of threads
_HALO_BLOCK = 256
#: problems smaller than this many (term × point) pairs run serially
_SERIAL_BELOW = 20000


def _is_log_uniform(x: np.ndarray) -> bool:
    d = np.diff(x)
    return bool(np.allclose(d, d[0], rtol=1e-9, atol=0.0))


def _catalog_arrays(catalog, sigma_obs, z_range) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from massmap_xr.catalog import check_sigma_obs, validate_catalog

    sigma_obs = check_sigma_obs(sigma_obs, catalog, "catalogue likelihood")
    validate_catalog(catalog, z_range=z_range, require_positions=False, warn=False)
    z = np.asarray(catalog["z"].values, dtype=np.float64)
    log_lobs = np.log(np.asarray(catalog["lum_obs"].values, dtype=np.float64))
    sig = np.asarray(catalog["sigma_obs"].values, dtype=np.float64) if sigma_obs is None else np.full(z.size, sigma_obs)
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
    sigma_obs : float, optional
        Observational scatter of ln L_obs for a catalogue without a per-halo ``sigma_obs``
        variable; never assumed (neither given is a :class:`~massmap_xr.errors.CatalogError`).
    group_tol : float or (float, float), optional
        Group halos in cells of this width in z and in ln L_obs (one number for both, or
        ``(dz, dlnL)``); see the module notes.  Default None: every halo is summed exactly.
    window : float, default 8
        Half-width, in Gaussian standard deviations, of the mass window summed per halo.
    rel_tol : float, default 1e-12
        Bound on the relative truncation error of every halo's likelihood; windows that cannot
        guarantee it are replaced by the whole grid.
    lum_min : float or callable, optional
        Flux limit of the catalogue: L_min (units of ``lum_obs``) or a callable of z.  Every
        halo's likelihood is divided by its selection probability at its redshift,
        ∫ S(L, z_k) p(L | θ, z_k) dL (½ erfc per mass point for a hard limit); see
        :mod:`massmap_xr.inference.selection`.  Halos below the limit raise CatalogError.
    selection : callable, optional
        Completeness S(L_obs, z) in [0, 1] (vectorised), instead of or on top of ``lum_min``;
        each halo's likelihood is multiplied by S(L_obs,k, z_k) and normalised likewise
        (tabulated in ln μ_L and z; needs one ``sigma_obs`` for the catalogue).
    photoz_nodes : int, default 20
        Quadrature nodes of the redshift integral of photometric halos (catalogue variable
        ``z_err`` > 0; Gaussian p(z) truncated to the prior's range, z > 0): their likelihood is
        Σ_j w_j p(L_obs | θ, z_j), see :mod:`massmap_xr.inference.photoz`.  Photometric halos
        are not grouped.

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

    def __init__(self, catalog: xr.Dataset, prior=None, mass=None, *, sigma_obs: float | None = None, group_tol=None,
                 window: float = 8.0, rel_tol: float = 1e-12, lum_min=None, selection=None, photoz_nodes: int = 20):
        if not (np.isfinite(window) and window >= 3.0):
            raise InferenceError(f"window must be >= 3 Gaussian widths, got {window!r}")
        if not (np.isfinite(rel_tol) and 0 < rel_tol < 1e-3):
            raise InferenceError(f"rel_tol must be in (0, 1e-3), got {rel_tol!r}")
        self.prior = as_prior(prior)
        self.mass = check_mass_grid(default_mass_grid() if mass is None else mass, "CatalogLikelihood",
                                    min_size=3, error=InferenceError)
        z, log_lobs, sig = _catalog_arrays(catalog, sigma_obs, self.prior.z_range)
        self.n_halo = int(z.size)
        self.sigma_obs = None if sigma_obs is None else float(sigma_obs)
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
        self.selection = Selection(lum_min, selection)
        # photometric redshifts: halos with z_err > 0 are marginalised over redshift nodes (ungrouped)
        self._pz = None
        self.n_photoz = 0
        self._spec = np.ones(z.size, dtype=bool)
        if "z_err" in catalog.variables:
            from massmap_xr.inference.photoz import photoz_terms

            self._pz, self._spec = photoz_terms(self, catalog, z, log_lobs, sig, ids, photoz_nodes)
            self.n_photoz = int((~self._spec).sum())
            spec = self._spec
            z, log_lobs, sig, ids = z[spec], log_lobs[spec], sig[spec], ids[spec]
        self._log_sel_obs_k = self.selection.log_observed(log_lobs, z, ids) if self.selection else np.zeros(z.size)
        self._log_sel_obs = float(self._log_sel_obs_k.sum())
        if self.group_tol is None or z.size == 0:
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
        self.__dict__.update(self._term_arrays(z, log_lobs, sig, coef, ids))
        self.n_terms = int(z.size)

    def _term_arrays(self, z, log_lobs, sig, coef, ids=None, who="CatalogLikelihood") -> dict:
        """The kernel's per-term arrays (prior rows, normalisations, selection) as a dict of ``_name``."""
        i, wz = z_weights(self._z_nodes, z)
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
        check_prior_nonzero(z, row_max, ids=ids, who=who if ids is not None else f"{who} (grouped terms)")
        out = {"_rows": rows, "_lognorm": lognorm, "_zi": np.ascontiguousarray(i, dtype=np.int64),
               "_zw": np.ascontiguousarray(wz, dtype=np.float64),
               "_lobs": np.ascontiguousarray(log_lobs, dtype=np.float64),
               "_zfac": np.ascontiguousarray(np.log1p(z)),
               "_sig": np.ascontiguousarray(sig, dtype=np.float64),
               "_coef": np.ascontiguousarray(coef, dtype=np.float64), "_sel": None}
        if self.selection:
            out["_sel"] = self.selection.prepare(np.asarray(z, dtype=np.float64), np.asarray(log_lobs, dtype=np.float64),
                                                 np.asarray(sig, dtype=np.float64)) if n else None
        return out

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
        flat = (a1, a2, a3, a4, s)
        out_ll, out_grad = self.run_terms(self.__dict__, self.n_terms, flat, want_grad, block)
        if block == 1:
            return out_ll[:, 0]
        ll = out_ll.sum(axis=0) + self._log_sel_obs
        g = out_grad.sum(axis=0) if want_grad else None
        if self._pz is not None and n_r:
            from massmap_xr.inference.photoz import photoz_sum

            ll_pz, g_pz = photoz_sum(self, flat, want_grad)
            ll = ll + ll_pz
            if want_grad:
                g = g + g_pz
        self.n_evaluations += int(n_r)
        ll = ll.reshape(shape)
        if not want_grad:
            return ll
        return ll, g.reshape((*shape, 5))

    def run_terms(self, t: dict, n_terms: int, flat, want_grad: bool, block: int):
        """Run the compiled kernels on the term arrays ``t``: per-block sums (block, n_r) and gradients."""
        a1, a2, a3, a4, s = flat
        n_r = a1.size
        n_blocks = max(1, -(-n_terms // block))
        out_ll = np.zeros((n_blocks, n_r))
        out_grad = np.zeros((n_blocks, n_r, 5) if want_grad else (1, 1, 5))
        out_fb = np.zeros(n_blocks, dtype=np.int64)
        if n_r and n_terms:
            serial = n_terms * n_r < _SERIAL_BELOW or numba.get_num_threads() == 1
            kernel = loglike_serial if serial else loglike_parallel
            kernel(
                t["_lobs"], t["_zfac"], t["_sig"], t["_coef"], t["_rows"], self._x, self._lnw, self._lt,
                t["_zi"], t["_zw"], t["_lognorm"], a1, a2, a3, a4, s, hyper_scale(a1, a2, a4), self.window,
                self.rel_tol, self._uniform, bool(want_grad), int(block), out_ll, out_grad, out_fb,
            )
            sel = t.get("_sel")
            if sel is not None:
                tab = self.selection.tables(s) if self.selection.mode == 1 else empty_table()
                (selection_serial if serial else selection_parallel)(
                    t["_zfac"], t["_sig"], t["_coef"], t["_rows"], self._x, sel["lmin"], sel["zsel_i"],
                    sel["zsel_w"], sel["tab_mu0"], sel["tab_dmu"], np.ascontiguousarray(tab), a1, a2, a3, a4, s,
                    int(self.selection.mode), bool(want_grad), int(block), out_ll, out_grad,
                )
        self.n_fallback += int(out_fb.sum())
        return out_ll, out_grad

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
        flat = [np.ravel(np.asarray(a, dtype=np.float64))[:1] for a in (alpha1, alpha2, alpha3, alpha4, S)]
        out = np.empty(self._spec.size)
        out[self._spec] = exact._evaluate(flat, False, block=1) + self._log_sel_obs_k
        if self._pz is not None:
            from massmap_xr.inference.photoz import photoz_per_halo

            out[~self._spec] = photoz_per_halo(self, flat)
        return out

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


def prior_token(prior):
    """A hashable key of the mass prior's *content*, or None if it has none.

    A table prior (a DataArray or :class:`~massmap_xr.model.prior.TablePrior`) is keyed by a
    digest of its redshifts, masses and values, so a new object holding the same table (as
    each call of a script or of the CLI makes) finds the cached likelihood; other hashable
    priors (``TinkerPrior`` compares by its settings) key by themselves.
    """
    import hashlib

    from massmap_xr.model.prior import TablePrior

    if prior is None:
        return ("default",)
    if isinstance(prior, xr.DataArray):
        prior = TablePrior(prior)
    if isinstance(prior, TablePrior):
        h = hashlib.blake2b(digest_size=16)
        for a in (prior._z, prior._log_m, prior._log_v):
            h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
        return ("TablePrior", h.hexdigest())
    try:
        hash(prior)
    except TypeError:
        return None
    return prior


def _cache_key(catalog, prior, mass, sigma_obs, group_tol, extra=()):
    from massmap_xr.cube import catalog_hash

    prior = prior_token(prior)
    if prior is None:
        return None
    m = None if mass is None else np.asarray(mass, dtype=np.float64)
    mkey = None if m is None else (m.shape, m.tobytes())
    gkey = None if group_tol is None else tuple(np.atleast_1d(np.asarray(group_tol, dtype=float)).tolist())
    return (catalog_hash(catalog), prior, mkey, None if sigma_obs is None else float(sigma_obs), gkey, *extra)


def log_likelihood(catalog: xr.Dataset, alpha1, alpha2, alpha3, alpha4, S, *, prior=None, mass=None,
                   sigma_obs: float | None = None, group_tol=None, lum_min=None, selection=None) -> np.ndarray:
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
    sigma_obs : float, optional
        Observational scatter of ln L_obs for a catalogue without a per-halo ``sigma_obs``
        variable; never assumed (neither given is a :class:`~massmap_xr.errors.CatalogError`).
    group_tol : float or (float, float), optional
        Group halos in (z, ln L_obs) cells of this size (approximate; see
        :meth:`CatalogLikelihood.grouping_error`).  Default: exact sum over halos.
    lum_min, selection : optional
        Flux limit (a number or a callable of z) and completeness S(L_obs, z) of a selected
        catalogue; see :class:`CatalogLikelihood`.

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
    key = _cache_key(catalog, prior, mass, sigma_obs, group_tol, Selection(lum_min, selection).key())
    like = _CACHE.get(key) if key is not None else None
    if like is None:
        like = CatalogLikelihood(catalog, prior, mass, sigma_obs=sigma_obs, group_tol=group_tol, lum_min=lum_min,
                                 selection=selection)
        _CACHE.clear()
        if key is not None:
            _CACHE[key] = like
    return like(alpha1, alpha2, alpha3, alpha4, S)
