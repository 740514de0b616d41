"""Selection functions of flux-limited catalogues, for the catalogue likelihood.

A catalogue that keeps only halos with L_obs above a limit (or with a completeness
S(L_obs, z) ∈ [0, 1]) is not a fair sample of P(L_obs | θ, z): each halo's likelihood must be
renormalised by its selection probability at its redshift::

    L_k = p(L_obs,k | θ, z_k) S(L_obs,k, z_k) / ∫ S(L, z_k) p(L | θ, z_k) dL,
    p(L | θ, z) = ∫ p(L | M, z, θ) p(M | z) dM

with p(M | z) the mass prior normalised over the grid.  :class:`Selection` holds the limit or
completeness function and prepares what the compiled kernel
(:mod:`massmap_xr.kernels.selection`) needs:

- ``lum_min`` (a number or a callable of z returning L_min(z), both in the units of
  ``lum_obs``): a hard limit; the denominator is ½ erfc per mass point, in closed form.  A
  halo below the limit is refused (the catalogue cannot come from that selection);
- ``selection`` (a callable of (L_obs, z) arrays returning the completeness in [0, 1]): the
  selection probability of a halo of mean luminosity ln μ at redshift z is tabulated per
  hyperparameter point on a uniform grid of ln μ (``n_mu`` points spanning the catalogue's ln
  L_obs ± 6) at ``n_z`` redshifts (uniform over the catalogue), as the trapezoid integral of
  S times the Gaussian of width √(S² + σ_obs²) over a grid of ln L 0.01 apart padded by 6 on
  each side, and interpolated linearly in ln μ and z.  It needs one ``sigma_obs`` for the
  whole catalogue.  With both, the completeness is S(L, z) · 1[L ≥ L_min(z)].
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from massmap_xr.errors import CatalogError, InferenceError, format_offenders

__all__ = ["Selection"]

#: half-width (in ln L) of the padding of the completeness integral beyond the ln mu grid
_PAD = 6.0
#: spacing in ln L of the completeness integral
_DL = 0.01


def _call(fn, name, *args):
    try:
        out = np.asarray(fn(*args), dtype=np.float64)
    except Exception as exc:  # a user function: report it as a setting error
        raise InferenceError(f"{name}: the callable raised {type(exc).__name__}: {exc}") from None
    return np.broadcast_to(out, np.broadcast_shapes(*(np.shape(a) for a in args))) if out.ndim == 0 else out


class Selection:
    """A flux limit and/or completeness function of a catalogue (see the module notes).

    Parameters
    ----------
    lum_min : float or callable, optional
        L_min (> 0, units of ``lum_obs``), or a function of redshift (array) returning it.
    selection : callable, optional
        Completeness S(L_obs, z) in [0, 1], vectorised over arrays of equal shape.
    n_z : int, default 48
        Redshift nodes of the tabulated completeness.
    n_mu : int, default 600
        ln μ points of the tabulated completeness.
    """

    def __init__(self, lum_min=None, selection: Callable | None = None, *, n_z: int = 48, n_mu: int = 600):
        if lum_min is not None and not callable(lum_min):
            try:
                v = float(lum_min)
            except (TypeError, ValueError):
                v = float("nan")
            if not (np.isfinite(v) and v > 0):
                raise InferenceError(f"lum_min must be a luminosity > 0 (units of lum_obs) or a callable of z, "
                                     f"got {lum_min!r:.80}")
            lum_min = v
        if selection is not None and not callable(selection):
            raise InferenceError(f"selection must be a callable S(L_obs, z) -> completeness in [0, 1], "
                                 f"got {type(selection).__name__}")
        self.lum_min = lum_min
        self.selection = selection
        self.n_z = int(n_z)
        self.n_mu = int(n_mu)
        self.mode = 0 if selection is None else 1

    def __bool__(self) -> bool:
        return self.lum_min is not None or self.selection is not None

    def key(self):
        """A hashable description (for the likelihood cache)."""
        return (self.lum_min if not callable(self.lum_min) else id(self.lum_min),
                None if self.selection is None else id(self.selection))

    def describe(self) -> str:
        parts = []
        if self.lum_min is not None:
            parts.append(f"lum_min={self.lum_min:g}" if not callable(self.lum_min) else "lum_min=callable(z)")
        if self.selection is not None:
            parts.append("selection=callable(L, z)")
        return ", ".join(parts) if parts else "none"

    def log_lmin(self, z: np.ndarray) -> np.ndarray:
        """ln L_min at redshifts ``z`` (-inf without a hard limit)."""
        if self.lum_min is None:
            return np.full(z.shape, -np.inf)
        if not callable(self.lum_min):
            return np.full(z.shape, np.log(self.lum_min))
        v = _call(self.lum_min, "lum_min", z)
        if v.shape != z.shape or not np.all(np.isfinite(v) & (v > 0)):
            raise InferenceError(f"lum_min(z) must return a finite luminosity > 0 for every redshift (shape {z.shape}); "
                                 f"got shape {v.shape} with {int(np.sum(~(np.isfinite(v) & (v > 0))))} bad value(s)")
        return np.log(v)

    def completeness(self, log_l: np.ndarray, z: np.ndarray) -> np.ndarray:
        """S(L, z) · 1[L ≥ L_min(z)] on arrays of equal shape (ln L given)."""
        s = np.ones(np.shape(log_l))
        if self.selection is not None:
            s = _call(self.selection, "selection", np.exp(log_l), z)
            if s.shape != np.shape(log_l) or not np.all(np.isfinite(s) & (s >= 0) & (s <= 1)):
                raise InferenceError("selection(L, z) must return a completeness in [0, 1] of the shape of its "
                                     f"arguments {np.shape(log_l)}; got shape {s.shape}")
        if self.lum_min is not None:
            s = np.where(log_l >= self.log_lmin(np.asarray(z)), s, 0.0)
        return s

    def log_observed(self, log_lobs: np.ndarray, z: np.ndarray, ids) -> np.ndarray:
        """ln S(L_obs,k, z_k) per halo; CatalogError naming the halos with zero completeness."""
        s = self.completeness(log_lobs, z)
        bad = ~(s > 0)
        if bad.any():
            rule = "below lum_min" if self.selection is None else "at zero completeness (or below lum_min)"
            raise CatalogError(
                f"lum_obs: {int(bad.sum())} halo(s) {rule}, halo {format_offenders(np.asarray(ids)[bad])}; a catalogue "
                "selected this way cannot contain them: remove them or lower the limit")
        return np.log(s)

    def prepare(self, z_terms: np.ndarray, log_lobs: np.ndarray, sig: np.ndarray) -> dict:
        """Per-term arrays and the tabulation grid for the kernel."""
        out = {"lmin": np.ascontiguousarray(self.log_lmin(z_terms), dtype=np.float64)}
        if self.mode == 0:
            out.update(zsel_i=np.zeros(z_terms.size, dtype=np.int64), zsel_w=np.zeros(z_terms.size),
                       tab_mu0=0.0, tab_dmu=1.0)
            return out
        if np.ptp(sig) > 0:
            raise InferenceError("selection: a completeness function needs one sigma_obs for the whole catalogue; "
                                 f"the catalogue's sigma_obs ranges from {sig.min():g} to {sig.max():g} (use lum_min "
                                 "for a hard limit, which allows per-halo sigma_obs)")
        zg = np.linspace(z_terms.min(), z_terms.max(), max(2, self.n_z))
        if zg[-1] == zg[0]:
            zg = np.array([zg[0], zg[0] + 1.0])
        t = (z_terms - zg[0]) / (zg[1] - zg[0])
        gi = np.clip(np.floor(t).astype(np.int64), 0, zg.size - 2)
        mu = np.linspace(log_lobs.min() - _PAD, log_lobs.max() + _PAD, max(3, self.n_mu))
        ell = np.arange(mu[0] - _PAD, mu[-1] + _PAD + _DL / 2, _DL)
        sgrid = self.completeness(np.broadcast_to(ell, (zg.size, ell.size)), np.broadcast_to(zg[:, None],
                                                                                               (zg.size, ell.size)))
        wl = np.full(ell.size, _DL)
        wl[[0, -1]] = 0.5 * _DL
        out.update(zsel_i=gi, zsel_w=np.ascontiguousarray(np.clip(t - gi, 0.0, 1.0)),
                   tab_mu0=float(mu[0]), tab_dmu=float(mu[1] - mu[0]))
        self._grid = (mu, ell, np.ascontiguousarray(sgrid * wl[None, :]), float(sig[0]))
        return out

    def tables(self, s: np.ndarray) -> np.ndarray:
        """(n_r, 3, n_z, n_mu) tables of P_sel, ∂P_sel/∂ln μ and ∂P_sel/∂sd for scatters ``s``."""
        mu, ell, sw, sig = self._grid
        out = np.empty((s.size, 3, sw.shape[0], mu.size))
        d = ell[None, :] - mu[:, None]  # (n_mu, n_l)
        for r, sr in enumerate(s):
            sd = float(np.hypot(sr, sig))
            k = np.exp(-0.5 * (d / sd) ** 2) / (sd * np.sqrt(2.0 * np.pi))
            out[r, 0] = sw @ k.T
            out[r, 1] = sw @ (k * d / sd**2).T
            out[r, 2] = sw @ (k * (d * d / sd**3 - 1.0 / sd)).T
        return out
