"""A cube of new halos or realizations built with the model recorded in an existing store."""

from __future__ import annotations

import numpy as np
import xarray as xr

from massmap_xr.errors import (
    StoreError,
)
from massmap_xr.store.checks import hyper_hash_of
from massmap_xr.store.layout import PENDING, read_layout
from massmap_xr.store.location import open_group
from massmap_xr.store.read import open_store


def build_like_store(catalog: xr.Dataset, path, *, hyper=None, chunks: int | None = None,
                     storage_options: dict | None = None, allow_incomplete: bool = False) -> xr.Dataset:
    """A lazy cube of ``catalog`` built with the model of the store at ``path``.

    The store's mass grid, prior, method (``n_lum``, Monte Carlo seed), default ``sigma_obs`` and
    (unless ``hyper`` is given) its hyperparameter realizations, with their stored weights
    exactly, are reused, so the result can be passed to :func:`append_halos`.  A Tinker prior is
    rebuilt with the store's ``z_max``, ``dz`` and ``dlog10m`` (read from its ``prior_z`` nodes for
    stores that predate those attributes).  With ``hyper`` (new realizations, e.g. more draws of the
    same posterior) the result, built for the store's halos, is what :func:`append_realizations`
    takes.

    Parameters
    ----------
    catalog : xarray.Dataset
        Halos, as from :func:`~massmap_xr.catalog.read_catalog`.
    path : str or path-like
        A massmap store.
    hyper : optional
        Hyperparameter samples for the new cube (default: the store's).
    chunks : int, optional
        Halos per dask chunk (default: the store's slab size).
    allow_incomplete : bool, default False
        Also read a store that is not complete yet, e.g. one made by :func:`init_store` for
        several writers (``massmap build ... --halo-range`` builds its slabs this way, so every
        writer uses the model recorded when the store was initialised).

    Raises
    ------
    StoreError
        If the store's prior cannot be rebuilt (a prior table without its ``prior_dndm``, or
        unreadable Tinker parameters).
    """
    from massmap_xr.cube import HYPER_NAMES, build_posterior
    from massmap_xr.model.prior import prior_from_attrs

    # a store with an interrupted append is read too: rebuilding the appended cube is how that
    # append is finished when the cube first passed was refused
    pending = PENDING in open_group(str(path), storage_options, mode="r").attrs
    store = open_store(path, storage_options=storage_options, allow_incomplete=pending or allow_incomplete)
    attrs = store.attrs
    prior = prior_from_attrs(attrs, store.get("prior_z"), store.get("prior_dndm"), source=repr(str(path)),
                             error=StoreError)
    reuse = hyper is None
    if reuse:
        names = [k for k in (*HYPER_NAMES, "weight") if k in store]
        hyper = store[names].load()
    layout = read_layout(dict(open_group(str(path), storage_options, mode="r").attrs), str(path))
    cube = build_posterior(
        catalog, hyper, prior=prior, mass=store["mass"].values, sigma_obs=_store_sigma_obs(attrs, catalog),
        method=attrs["method"], n_lum=max(int(attrs.get("n_lum", 0)), 1), seed=int(attrs.get("mc_seed", 0)),
        chunks=layout.halo_chunk if chunks is None else chunks,
    )
    if reuse:
        # build_posterior renormalises the weights, which can change the last bit of weights that
        # already sum to 1: keep the store's exactly, so the cube's hyper_hash is the store's
        cube = cube.assign(weight=cube["weight"].copy(data=np.asarray(hyper["weight"].values, dtype=float)))
        cube.attrs["hyper_hash"] = hyper_hash_of({k: cube[k].values for k in (*HYPER_NAMES, "weight")})
    return cube


def _store_sigma_obs(attrs, catalog):
    """The scatter the store's cube was built with, for a catalogue that has no ``sigma_obs`` of its own."""
    if "sigma_obs" in catalog.variables:
        return None
    value = attrs.get("sigma_obs_default")
    return float(value) if isinstance(value, (int, float)) else None
