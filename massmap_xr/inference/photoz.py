"""Photometric redshifts in the catalogue likelihood.

A halo with a catalogue variable ``z_err`` > 0 (Gaussian p(z) = N(z, z_err²) truncated to the
prior's redshift range, which starts at z = 0) has an unknown true redshift; its likelihood is
marginalised over it with the quadrature of :func:`massmap_xr.model.redshift.redshift_nodes`::

    L_k = Σ_j w_kj p(L_obs,k | θ, z_kj)    (Σ_j w_kj = 1)

with every node its own term of the compiled kernel (its own prior row; with a selection
function, each node's term is normalised by the selection probability at z_kj and multiplied by
S(L_obs,k, z_kj)).  Photometric halos are never grouped; spectroscopic halos (z_err absent,
NaN or 0) stay exact terms, grouped as before where ``group_tol`` is set.  The node terms are
evaluated one by one (per-term log-likelihoods and gradients, in chunks of hyperparameter
points that keep the buffers below about 40 MB) and combined by log-sum-exp.
"""

from __future__ import annotations

import numpy as np

from massmap_xr.model.redshift import redshift_nodes

__all__ = ["photoz_per_halo", "photoz_sum", "photoz_terms"]

#: per-term buffer size (floats) of one chunk of hyperparameter points
_BUFFER = 5_000_000


def photoz_terms(like, catalog, z, log_lobs, sig, ids, n_nodes: int):
    """Node terms of the photometric halos and the mask of spectroscopic ones.

    Returns ``(terms, spec)``: ``terms`` None when no halo has z_err > 0, else a dict with the
    kernel's term arrays (``"t"``), the node log-weights (``"logw"``, (n_photo, n_node)) and the
    number of terms.
    """
    err = np.asarray(catalog["z_err"].values, dtype=np.float64)
    err = np.where(np.isnan(err), 0.0, err)
    photo = err > 0
    if not photo.any():
        return None, np.ones(z.size, dtype=bool)
    zr = like.prior.z_range
    zj, lw = redshift_nodes(z[photo], err[photo], z_range=(max(0.0, float(zr[0])), float(zr[1])),
                            n_nodes=int(n_nodes), ids=np.asarray(ids)[photo])
    n_p, n_j = zj.shape
    zf = np.ascontiguousarray(zj.ravel())
    lf = np.repeat(log_lobs[photo], n_j)
    sf = np.repeat(sig[photo], n_j)
    lw = np.array(lw, dtype=np.float64)
    if like.selection:
        s = like.selection.completeness(lf, zf).reshape(n_p, n_j)
        with np.errstate(divide="ignore"):
            lw = lw + np.log(s)
        from massmap_xr.errors import CatalogError, format_offenders

        none = ~np.any(np.isfinite(lw), axis=1)
        if none.any():
            raise CatalogError(f"lum_obs: {int(none.sum())} photometric halo(s) have zero completeness at every "
                               f"redshift node, halo {format_offenders(np.asarray(ids)[photo][none])}; a catalogue "
                               "selected this way cannot contain them: remove them or lower the limit")
    t = like._term_arrays(zf, lf, sf, np.ones(zf.size), ids=np.repeat(np.asarray(ids)[photo], n_j))
    return {"t": t, "logw": lw, "n_terms": int(zf.size), "shape": (n_p, n_j)}, ~photo


def _node_values(like, flat, want_grad):
    """Per-node log-likelihoods (n_photo, n_node, n_r) and gradients (…, 5) (None without)."""
    pz = like._pz
    n_p, n_j = pz["shape"]
    n_r = flat[0].size
    ll = np.empty((n_p * n_j, n_r))
    g = np.empty((n_p * n_j, n_r, 5)) if want_grad else None
    step = max(1, _BUFFER // (pz["n_terms"] * (6 if want_grad else 1)))
    for a in range(0, n_r, step):
        b = min(n_r, a + step)
        part = tuple(np.ascontiguousarray(v[a:b]) for v in flat)
        o_ll, o_g = like.run_terms(pz["t"], pz["n_terms"], part, want_grad, 1)
        ll[:, a:b] = o_ll
        if want_grad:
            g[:, a:b] = o_g
    ll = ll.reshape(n_p, n_j, n_r) + pz["logw"][:, :, None]
    return ll, (None if g is None else g.reshape(n_p, n_j, n_r, 5))


def _combine(ll):
    """ln Σ_j exp(ll_j) over the node axis and the softmax weights (0 where all are -inf)."""
    mx = np.max(ll, axis=1, keepdims=True)
    safe = np.where(np.isfinite(mx), mx, 0.0)
    e = np.exp(ll - safe)
    tot = e.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (safe + np.log(tot))[:, 0]
        w = np.where(tot > 0, e / tot, 0.0)
    return out, w


def photoz_sum(like, flat, want_grad: bool):
    """Σ over photometric halos of ln Σ_j w_j p(L_obs | θ, z_j), and its gradient (n_r, 5)."""
    ll, g = _node_values(like, flat, want_grad)
    per, w = _combine(ll)  # (n_p, n_r), (n_p, n_j, n_r)
    total = per.sum(axis=0)
    if not want_grad:
        return total, None
    grad = np.einsum("pjr,pjrk->rk", w, g)
    return total, grad


def photoz_per_halo(like, flat) -> np.ndarray:
    """ln L_k of every photometric halo (catalogue order among them) at one hyperparameter point."""
    ll, _ = _node_values(like, flat, False)
    return _combine(ll)[0][:, 0]
