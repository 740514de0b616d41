"""Checks that a cube belongs to a store (model, prior, hyperparameters, hashes), the store's schema
version and build id, and the small attribute and metadata helpers they share."""

from __future__ import annotations

import json
from collections.abc import Iterable

import numpy as np
import xarray as xr

from massmap_xr._version import SCHEMA_VERSION
from massmap_xr.errors import (
    SchemaVersionError,
    StoreError,
)
from massmap_xr.store.layout import BUILD_ID, CRC_NAME, LAYOUT, PENDING, STATUS, TEMPLATE
from massmap_xr.store.location import open_group

#: attributes that must agree between a store and a cube written into it
MODEL_ATTRS = ("method", "n_lum", "mc_seed", "sigma_obs_default")


def jsonable(v):
    return json.loads(json.dumps(v, sort_keys=True, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def same_value(a, b) -> bool:
    return jsonable(a) == jsonable(b)


def dims_of(arr) -> tuple:
    return tuple(arr.metadata.dimension_names or ())


def arrays_of(group) -> dict:
    return {name: arr for name, arr in group.arrays()}


def template_complete(group, attrs) -> bool:
    if attrs.get(TEMPLATE) == "complete" or attrs.get(STATUS) == "complete":
        return True
    # stores written before the template flag existed: a recorded checksum proves the template was done
    if CRC_NAME in group and LAYOUT in attrs:
        try:
            return bool(np.any(group[CRC_NAME][...] >= 0))
        except Exception:  # noqa: BLE001 - unreadable table: not provably complete
            return False
    return False


def trapezoid_of(group) -> np.ndarray:
    from massmap_xr.kernels.posterior import trapezoid_weights

    return trapezoid_weights(np.asarray(group["log10_mass"][...], dtype=float))


def check_build_id(path, storage_options, build_id):
    now = dict(open_group(path, storage_options).attrs).get(BUILD_ID)
    if now != build_id:
        raise StoreError(
            f"store {str(path)!r} was replaced by another build (build id {now!r}, expected {build_id!r}) "
            "while this one was writing; this build's result is not valid. Rebuild with one writer at a time"
        )


#: prior parameters recorded only by newer versions: a store without them is compared by its prior table
_PRIOR_ADDED_KEYS = ("prior_z_max", "prior_dz", "prior_dlog10m")


#: relative tolerance of prior-table and weight comparisons (values recomputed the same way agree to round-off)
_PRIOR_RTOL = 1e-9


_WEIGHT_RTOL = 1e-12


def _same_hyper(ds: xr.Dataset, group) -> bool:
    """True when the cube's hyperparameter table is the store's: the same alpha1..alpha4 and S, and
    weights equal to round-off (renormalising weights that already sum to 1 can change their last bit)."""
    from massmap_xr.model.relation import HYPER_NAMES

    for k in HYPER_NAMES:
        a, b = np.asarray(group[k][...], dtype=float), np.asarray(ds[k].values, dtype=float)
        if a.shape != b.shape or not np.array_equal(a, b):
            return False
    a, b = np.asarray(group["weight"][...], dtype=float), stored_weight(ds)
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=_WEIGHT_RTOL, atol=0.0))


def _prior_problems(ds: xr.Dataset, group) -> list[str]:
    """Differences between the cube's prior table (``prior_dndm`` on ``prior_z``) and the store's."""
    if "prior_dndm" not in group or "prior_dndm" not in ds.variables:
        return []
    problems = []
    if "prior_z" in group and "prior_z" in ds.variables:
        a, b = np.asarray(group["prior_z"][...], dtype=float), np.asarray(ds["prior_z"].values, dtype=float)
        if a.shape != b.shape or not np.allclose(a, b, rtol=_PRIOR_RTOL, atol=1e-12):
            problems.append(f"prior redshift nodes prior_z differ (store: {a.size} nodes up to "
                            f"{a.max() if a.size else float('nan'):g}, cube: {b.size} up to "
                            f"{b.max() if b.size else float('nan'):g})")
            return problems
    arr = group["prior_dndm"]
    a = np.asarray(arr[...], dtype=float)
    b = ds["prior_dndm"]
    b = np.asarray((b.transpose(*dims_of(arr)) if set(dims_of(arr)) == set(b.dims) else b).values, dtype=float)
    if a.shape != b.shape:
        problems.append(f"prior table prior_dndm has shape {a.shape} in the store, {b.shape} in the cube")
    elif not np.allclose(a, b, rtol=_PRIOR_RTOL, atol=0.0, equal_nan=True):
        with np.errstate(all="ignore"):
            rel = np.nanmax(np.abs(a - b) / np.maximum(np.abs(a), np.abs(b)))
        problems.append(f"prior table prior_dndm differs (largest relative difference {rel:.3g}): the cube was "
                        "built with another prior (parameters or table values)")
    return problems


def model_problems(ds: xr.Dataset, attrs: dict, group, *, keys: Iterable[str]) -> list[str]:
    """Differences between a cube and a store that make the cube's values foreign to the store.

    Compares the hashes in ``keys`` (a ``hyper_hash`` differing only by round-off of the weights
    is accepted), the model attributes, the prior's description and its table (``prior_dndm`` on
    ``prior_z``: two priors with one description, e.g. two user tables, differ there), and the
    mass grid.
    """
    problems = []
    prior_keys = sorted({k for k in (*attrs, *ds.attrs) if k.startswith("prior")})
    hashes = cube_hashes(ds) if keys else {}
    for key in (*keys, *MODEL_ATTRS, *prior_keys):
        mine = hashes[key] if key in hashes else ds.attrs.get(key)
        if key in _PRIOR_ADDED_KEYS and key not in attrs and "prior_dndm" in group:
            continue  # a store from before these were recorded: its prior table is compared below
        if not same_value(attrs.get(key), mine):
            if key == "hyper_hash" and _same_hyper(ds, group):
                continue
            problems.append(f"{key}: store has {attrs.get(key)!r}, cube has {mine!r}")
    problems += _kind_problems(ds, attrs)
    stored_mass = np.asarray(group["mass"][...])
    if stored_mass.shape != ds["mass"].shape or not np.array_equal(stored_mass, ds["mass"].values):
        problems.append(f"mass grid differs (store: {stored_mass.size} points, cube: {ds.sizes['mass']} points)")
    else:
        problems += _prior_problems(ds, group)
    return problems


def _kind_problems(ds: xr.Dataset, attrs: dict) -> list[str]:
    """A store of prior draws takes no posterior draws and vice versa (no attribute: posterior draws)."""
    a, b = attrs.get("hyper_kind", "posterior"), ds.attrs.get("hyper_kind", "posterior")
    if a == b:
        return []
    return [f"hyper_kind: the store holds {a!r} draws, the cube {b!r} draws (prior draws are weighted by each "
            "halo's evidence in the analysis, posterior draws are not, so they cannot be mixed); build the cube "
            f"with as_hyper(draws, kind={a!r}) if its draws are of that kind"]


def raise_problems(problems: list[str], head: str, fix: str) -> None:
    if problems:
        raise StoreError(head + ":\n  - " + "\n  - ".join(problems) + "\n" + fix)


def catalog_hash_of(values: dict) -> tuple[str, str]:
    """Catalogue hashes of ``values`` (halo, z, lum_obs, sigma_obs) with and without sigma_obs.

    :func:`massmap_xr.cube.catalog_hash` includes ``sigma_obs`` only when the catalogue had it,
    so a store's hash is one of the two.
    """
    from massmap_xr.cube import catalog_hash

    cat = xr.Dataset({k: ("halo", np.asarray(v)) for k, v in values.items() if k != "halo"},
                     coords={"halo": np.asarray(values["halo"])})
    return catalog_hash(cat), catalog_hash(cat.drop_vars("sigma_obs"))


def stored_catalog(group, sl=slice(None)) -> dict:
    return {k: np.asarray(group[k][sl]) for k in ("halo", "z", "lum_obs", "sigma_obs")}


def hyper_hash_of(values: dict) -> str:
    from massmap_xr.model.hyper import hyper_hash

    return hyper_hash(xr.Dataset({k: ("realization", np.asarray(v, dtype=float)) for k, v in values.items()}))


def cube_hashes(ds: xr.Dataset) -> dict:
    """The cube's ``catalog_hash`` and ``hyper_hash`` as its data define them.

    A cube's attributes go stale when it is subset (``cube.isel(halo=...)``); the store records
    hashes that match what it holds, keeping the cube's own convention for ``catalog_hash``
    (with or without ``sigma_obs``) when its attribute is current.
    """
    from massmap_xr.model.relation import HYPER_NAMES

    with_s, without_s = catalog_hash_of({k: ds[k].values for k in ("halo", "z", "lum_obs", "sigma_obs")})
    ch = ds.attrs.get("catalog_hash")
    return {
        "catalog_hash": ch if ch in (with_s, without_s) else with_s,
        "hyper_hash": hyper_hash_of({**{k: ds[k].values for k in HYPER_NAMES}, "weight": stored_weight(ds)}),
    }


def stored_weight(ds: xr.Dataset) -> np.ndarray:
    """The cube's weights as stored: summing to 1 (a realization subset of a cube is renormalised)."""
    w = np.asarray(ds["weight"].values, dtype=float)
    total = float(w.sum())
    if not total > 0:
        raise StoreError(f"weight: the realization weights sum to {total!r}; at least one must be positive")
    return w if abs(total - 1.0) <= 1e-12 else w / total


def pending_record(attrs: dict) -> dict:
    raw = attrs.get(PENDING)
    return json.loads(raw) if isinstance(raw, str) else dict(raw or {})


def check_schema(attrs: dict, path) -> None:
    version = attrs.get("massmap_schema_version")
    if version is None:
        raise StoreError(
            f"{str(path)!r} is a Zarr store but not a massmap cube (no 'massmap_schema_version' attribute); "
            "open it with xarray.open_zarr, or build a cube with build_posterior()"
        )
    try:
        major, minor = (int(v) for v in str(version).split(".")[:2])
    except ValueError:
        raise SchemaVersionError(
            f"{str(path)!r}: unreadable massmap schema version {version!r} (this massmap_xr reads "
            f"{SCHEMA_VERSION.split('.')[0]}.x up to {SCHEMA_VERSION})"
        ) from None
    ours = tuple(int(v) for v in SCHEMA_VERSION.split("."))
    if (major, minor) > ours:
        raise SchemaVersionError(
            f"{str(path)!r} was written with massmap schema version {version}, newer than the {SCHEMA_VERSION} "
            "this massmap_xr reads; upgrade massmap_xr"
        )
    if major < ours[0]:
        raise SchemaVersionError(
            f"{str(path)!r}: schema version {version} is older than supported ({ours[0]}.x, this massmap_xr writes "
            f"{SCHEMA_VERSION}); rebuild the store with this version"
        )
