"""Appending halos or realizations to a complete store, interruptibly and resumably, without rewriting
what is stored except the one partly filled slab or shard the new data share with the old."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import xarray as xr

from massmap_xr.cube import validate_cube
from massmap_xr.errors import (
    IncompleteStoreError,
    StoreError,
    format_offenders,
)
from massmap_xr.store.checks import (
    arrays_of,
    catalog_hash_of,
    check_schema,
    cube_hashes,
    dims_of,
    hyper_hash_of,
    model_problems,
    pending_record,
    raise_problems,
    stored_catalog,
)
from massmap_xr.store.finalize import finalize
from massmap_xr.store.layout import (
    CRC_NAME,
    LAYOUT,
    NORM_NAME,
    PENDING,
    STATUS,
    TABLES,
    StoreLayout,
    cell_stats,
    posterior_blocks,
    read_layout,
)
from massmap_xr.store.location import StoreLocation, open_group
from massmap_xr.store.recipe import refuse_recipe
from massmap_xr.store.slabs import (
    SlabJob,
    run_jobs,
    slab_extras,
    slab_variable_blocks,
    slab_variables,
    stored_slab_variables,
)
from massmap_xr.store.versioned import versioned_write


def _begin_append(path, ds: xr.Dataset, operation: str, hash_name: str, storage_options):
    """Check ``ds`` and open the store for ``operation``:
    ``(path, group, attrs, cube_hash, pending, ds)``.

    ``cube_hash`` is the cube's ``hash_name`` (the hash of what the append adds); ``pending`` is the
    record of an interrupted append of this cube, or None for a fresh one; ``ds`` is the cube with
    its posterior in canonical order.  A cube with nothing to append (no halos for
    ``append_halos``, no realizations for ``append_realizations``) is refused before anything is
    read or recorded.
    """
    ds = validate_cube(ds, what=operation, for_store=True)
    dim = "halo" if operation == "append_halos" else "realization"
    if ds.sizes[dim] == 0:
        raise StoreError(
            f"{operation}: the cube has 0 {dim}s, nothing to append to {str(path)!r}; the store was not changed. "
            f"Pass a cube with at least one {dim}"
        )
    path = StoreLocation.of(path, storage_options)  # resolved once, passed on
    group = open_group(path, storage_options, mode="r+")
    attrs = dict(group.attrs)
    check_schema(attrs, path)
    refuse_recipe(attrs, path, operation)
    cube_hash = cube_hashes(ds)[hash_name]
    return path, group, attrs, cube_hash, _start_append(group, attrs, path, operation, cube_hash), ds


def _start_append(group, attrs, path, operation: str, key: str) -> dict | None:
    """Pending record of an interrupted ``operation`` with this cube, or None for a fresh append."""
    if PENDING in attrs:
        pend = pending_record(attrs)
        if pend.get("operation") == operation and pend.get("cube_hash") == key:
            return pend
        raise StoreError(
            f"store {str(path)!r} has an interrupted {pend.get('operation')} of another cube; finish it first by "
            f"calling {pend.get('operation')}() again with that cube"
        )
    if attrs.get(STATUS) != "complete":
        raise IncompleteStoreError(
            f"cannot {operation.replace('_', ' ')} to {str(path)!r}: its build is not complete; finish it with "
            "to_store(..., resume=True) first"
        )
    return None


def _write_values(arr, values: np.ndarray, region: tuple, path, name: str) -> None:
    stored = np.asarray(values).astype(arr.dtype)
    if stored.shape and not np.array_equal(stored, np.asarray(values), equal_nan=True):
        raise StoreError(f"{str(path)!r}: values of {name!r} cannot be stored exactly as {arr.dtype}")
    arr[region] = stored


def _extend_arrays(group, ds: xr.Dataset, dim: str, n_old: int, n_new_total: int, path) -> None:
    """Resize every array with ``dim`` to ``n_new_total`` and write the cube's values after ``n_old``."""
    for name, arr in arrays_of(group).items():
        dims = dims_of(arr)
        if dim not in dims or name in TABLES:
            continue
        ax = dims.index(dim)
        shape = list(arr.shape)
        shape[ax] = n_new_total
        if tuple(arr.shape) != tuple(shape):
            arr.resize(tuple(shape))
        if name == "posterior" or (dim == "realization" and name == "weight") or name in slab_variables(ds):
            continue  # the posterior and the other (halo, realization) variables are written with the slabs
        if name not in ds.variables:
            raise StoreError(f"cannot append to {str(path)!r}: the cube has no variable {name!r} along {dim!r}")
        v = ds[name].transpose(*dims)
        region = tuple(slice(n_old, n_new_total) if d == dim else slice(None) for d in dims)
        _write_values(arr, np.asarray(v.values), region, path, name)


def _same_variables(group, ds: xr.Dataset, dim: str, path) -> None:
    stored = {k for k, a in arrays_of(group).items() if dim in dims_of(a) and k not in TABLES}
    cube = {k for k, v in ds.variables.items() if dim in v.dims}
    if stored != cube:
        raise StoreError(
            f"cannot append to {str(path)!r}: variables along {dim!r} differ (only in store: "
            f"{sorted(stored - cube)}, only in cube: {sorted(cube - stored)}); build the new cube from a catalogue "
            "and hyperparameter table with the same columns"
        )


def _label_kind(labels: np.ndarray) -> str:
    """``"number"`` or ``"text"`` (or the dtype kind): labels of different kinds cannot be compared."""
    kind = np.asarray(labels).dtype.kind
    return "number" if kind in "iuf" else "text" if kind in "USO" else kind


def resize_tables(group, rows: int, cols: int) -> None:
    for name in TABLES:
        if name in group and tuple(group[name].shape) != (rows, cols):
            group[name].resize((rows, cols))


def _cube_first(ds, path, operation: str):
    """``(ds, path)`` of a call in either order: ``operation(ds, path)``, or the older
    ``operation(path, ds)`` (still accepted, with a FutureWarning)."""
    if isinstance(path, xr.Dataset) and not isinstance(ds, xr.Dataset):
        warnings.warn(f"{operation}(path, ds) is deprecated: pass the cube first, {operation}(ds, path)",
                      FutureWarning, stacklevel=3)
        return path, ds
    return ds, path


@dataclass(frozen=True)
class _Append:
    """What differs between appending halos and appending realizations."""

    dim: str            # the dimension extended
    other: str          # the coordinate that must equal the store's
    hash_name: str      # the hash of what is appended (catalog_hash / hyper_hash)
    model_keys: tuple   # hashes that must equal the store's
    other_differs: str  # problem when ``other`` differs
    head: str           # head of the refusal when the model differs ({path!r} filled in)
    fix: str            # how to build a cube that fits
    plan: Callable      # (group, attrs, ds, layout, cube_hash, path) -> pending record of a fresh append
    prepare: Callable   # (group, pend, layout, path) -> checksum-table region to reset, after extending arrays
    jobs: Callable      # (ds, crc, layout, pend) -> (slab jobs, halos in total for progress)


def _append(spec: _Append, ds: xr.Dataset, path, progress: bool, storage_options) -> str:
    """The append skeleton: check, record the pending append, extend the metadata, write slabs, finalise."""
    operation = f"append_{spec.dim}s"
    path, group, attrs, cube_hash, pend, ds = _begin_append(path, ds, operation, spec.hash_name, storage_options)
    # (halo, realization) variables a store written before they existed lacks are not appended
    ds = ds.drop_vars(sorted(set(slab_variables(ds)) - set(stored_slab_variables(ds, group))))
    # the model is checked also when finishing an interrupted append (the pending record only
    # identifies what is appended, not how its posteriors were computed)
    problems = model_problems(ds, attrs, group, keys=spec.model_keys)
    stored = np.asarray(group[spec.other][...])
    if stored.shape != ds[spec.other].shape or not np.array_equal(stored, ds[spec.other].values):
        problems.append(spec.other_differs)
    raise_problems(problems, spec.head.format(path=path), spec.fix)
    if pend is None:
        layout = read_layout(attrs, path)
        _same_variables(group, ds, spec.dim, path)
        pend = spec.plan(group, attrs, ds, layout, cube_hash, path)
        group.attrs.update({STATUS: "incomplete", PENDING: json.dumps(pend)})
    layout = read_layout(attrs, path).replace(**{f"n_{spec.dim}": pend["n_after"]})
    if pend["stage"] == "metadata":
        _extend_arrays(group, ds, spec.dim, pend["n_before"], pend["n_after"], path)
        region = spec.prepare(group, pend, layout, path)
        group[CRC_NAME][region] = -1
        if NORM_NAME in group:
            group[NORM_NAME][region] = np.nan
        pend["stage"] = "slabs"
        group.attrs.update({LAYOUT: json.dumps(layout.to_dict()), spec.hash_name: pend[f"{spec.hash_name}_after"],
                            PENDING: json.dumps(pend)})
    jobs, total = spec.jobs(ds, group[CRC_NAME][...], layout, pend)
    run_jobs(jobs, path, storage_options, layout, progress=progress, total=total,
             initial=total - sum(j.n_halo for j in jobs), desc=f"massmap append {spec.dim}s", build_id=None)
    return finalize(path, storage_options, None, from_append=True)


def _plan_halos(group, attrs, ds, layout, cube_hash, path) -> dict:
    old = stored_catalog(group)
    ids = np.asarray(ds["halo"].values)
    clash = np.intersect1d(old["halo"], ids)
    if clash.size or np.unique(ids).size != ids.size:
        raise StoreError(
            f"cannot append halos to {path!r}: {clash.size} halo id(s) already in the store "
            f"({format_offenders(clash)}) or repeated in the cube; halo ids must be unique, e.g. "
            f"cube.assign_coords(halo=cube.halo + {int(old['halo'].max()) + 1})"
        )
    old_with, old_without = catalog_hash_of(old)
    if attrs.get("catalog_hash") not in (old_with, old_without):
        raise StoreError(f"cannot append halos to {path!r}: its catalogue variables no longer match its "
                         "catalog_hash; run verify_store() on it")
    new_hashes = catalog_hash_of({k: ds[k].values for k in ("halo", "z", "lum_obs", "sigma_obs")})
    with_sigma = not (attrs.get("catalog_hash") == old_without and cube_hash == new_hashes[1])
    union = {k: np.concatenate([old[k], np.asarray(ds[k].values, dtype=old[k].dtype)]) for k in old}
    union_hash = catalog_hash_of(union)[0 if with_sigma else 1]
    n_old, n_add = layout.n_halo, ds.sizes["halo"]
    row, rem = divmod(n_old, layout.halo_chunk)
    partial = None
    if rem:
        partial = [int(c) for c in group[CRC_NAME][row, :]]
        read_checked(group, slice(row * layout.halo_chunk, n_old), slice(0, layout.n_realization), partial, layout)
    return {"operation": "append_halos", "stage": "metadata", "cube_hash": cube_hash,
            "n_before": n_old, "n_after": n_old + n_add, "catalog_hash_after": union_hash, "partial_crc": partial}


def _prepare_halos(group, pend, layout, path) -> tuple:
    resize_tables(group, layout.n_halo_chunks, group[CRC_NAME].shape[1])
    return slice(pend["n_before"] // layout.halo_chunk, None), slice(None)


def _halo_jobs(ds, crc, layout, pend):
    n_old, n_total = pend["n_before"], pend["n_after"]
    row, rem = divmod(n_old, layout.halo_chunk)
    blocks = posterior_blocks(ds, n_old, layout.halo_chunk)
    extra = slab_variable_blocks(ds, slab_variables(ds), n_old, layout.halo_chunk)
    jobs = []
    for k, i in enumerate(range(row, layout.n_halo_chunks)):
        if np.all(crc[i] >= 0):
            continue
        s = layout.halo_slice(i)
        old = None
        if k == 0 and rem:
            old = {"h": (s.start, n_old), "r": (0, layout.n_realization), "axis": 0, "crc": pend["partial_crc"]}
        jobs.append(SlabJob(i, blocks[k], s.start, 0, s.stop - max(s.start, n_old), old,
                            extras=slab_extras(extra, k, max(s.start, n_old), 0)))
    return jobs, n_total - n_old


def _first_shard(layout, n_old) -> tuple[int, int]:
    """First realization of the shard holding the store's last realization, and its chunk column."""
    j0 = (n_old // layout.realization_shard) * layout.realization_shard
    return j0, j0 // layout.realization_chunk


def _plan_realizations(group, attrs, ds, layout, cube_hash, path) -> dict:
    from massmap_xr.model.relation import HYPER_NAMES

    old_r = np.asarray(group["realization"][...])
    new_r = np.asarray(ds["realization"].values)
    if _label_kind(old_r) != _label_kind(new_r):
        raise StoreError(
            f"cannot append realizations to {path!r}: the store's realization labels are {old_r.dtype} "
            f"(first: {format_offenders(old_r, 3)}), the cube's are {new_r.dtype} (first: "
            f"{format_offenders(new_r, 3)}); relabel the new realizations with labels of the store's kind"
        )
    clash = np.intersect1d(old_r, new_r)
    if clash.size or np.unique(new_r).size != new_r.size:
        raise StoreError(
            f"cannot append realizations to {path!r}: {clash.size} realization label(s) already in the store "
            f"({format_offenders(clash)}) or repeated in the cube; relabel them, e.g. "
            f"hyper.assign_coords(realization=hyper.realization + {int(old_r.max()) + 1})"
        )
    n_old, n_add = layout.n_realization, ds.sizes["realization"]
    j0, c0 = _first_shard(layout, n_old)
    partial = None
    if j0 < n_old:
        partial = [[int(c) for c in row] for row in group[CRC_NAME][:, c0:layout.n_realization_chunks]]
        for i in range(layout.n_halo_chunks):
            read_checked(group, layout.halo_slice(i), slice(j0, n_old), partial[i], layout)
    hyp = {k: np.concatenate([np.asarray(group[k][...], dtype=float), np.asarray(ds[k].values, dtype=float)])
           for k in HYPER_NAMES}
    weight = union_weights(group["weight"][...], ds["weight"].values)
    return {"operation": "append_realizations", "stage": "metadata", "cube_hash": cube_hash,
            "n_before": n_old, "n_after": n_old + n_add, "hyper_hash_after": hyper_hash_of({**hyp, "weight": weight}),
            "partial_crc": partial, "weight": weight.tolist()}


def _prepare_realizations(group, pend, layout, path) -> tuple:
    _write_values(group["weight"], np.asarray(pend["weight"]), (slice(None),), path, "weight")
    resize_tables(group, layout.n_halo_chunks, layout.n_realization_chunks)
    return slice(None), slice(_first_shard(layout, pend["n_before"])[1], None)


def _realization_jobs(ds, crc, layout, pend):
    n_old = pend["n_before"]
    j0, c0 = _first_shard(layout, n_old)
    blocks = posterior_blocks(ds, 0, layout.halo_chunk)
    extra = slab_variable_blocks(ds, slab_variables(ds), 0, layout.halo_chunk)
    jobs = []
    for i in range(layout.n_halo_chunks):
        if np.all(crc[i, c0:] >= 0):
            continue
        s = layout.halo_slice(i)
        old = None
        if j0 < n_old:
            old = {"h": (s.start, s.stop), "r": (j0, n_old), "axis": 2, "crc": pend["partial_crc"][i]}
        jobs.append(SlabJob(i, blocks[i], s.start, j0, s.stop - s.start, old,
                            extras=slab_extras(extra, i, s.start, n_old)))
    return jobs, layout.n_halo


_HALOS = _Append(
    dim="halo", other="realization", hash_name="catalog_hash", model_keys=("hyper_hash",),
    other_differs="realization labels differ from the store's",
    head="cannot append halos to {path!r}: the cube's model differs from the store's",
    fix="Build the new halos with the store's hyperparameters, mass grid, prior and method: "
        "build_like_store(new_catalog, path).",
    plan=_plan_halos, prepare=_prepare_halos, jobs=_halo_jobs,
)
_REALIZATIONS = _Append(
    dim="realization", other="halo", hash_name="hyper_hash", model_keys=("catalog_hash",),
    other_differs="halo ids differ from the store's (same halos in the same order are needed)",
    head="cannot append realizations to {path!r}: the cube's halos or model differ",
    fix="Build the new realizations from the store's catalogue, mass grid, prior and method: "
        "build_like_store(catalog, path, hyper=new_draws).",
    plan=_plan_realizations, prepare=_prepare_realizations, jobs=_realization_jobs,
)


@versioned_write("append_halos")
def append_halos(ds: xr.Dataset, path, *, progress: bool = False, storage_options: dict | None = None) -> str:
    """Append the halos of cube ``ds`` to a complete store, without rewriting the stored halos.

    ``ds`` must have the store's realizations (same hyperparameter hash), mass grid, prior and
    method, the same catalogue variables, and halo ids not already in the store.  Only the last,
    partly filled slab of the store (if any) is rewritten: its stored halos are read back,
    checked against their checksums, and written again followed by the first new halos.  The
    store's ``catalog_hash`` then describes the union catalogue (old halos then new), so a later
    resume or verification of the store expects the union cube.

    A cube without halos is refused before anything is recorded.  An interrupted append leaves
    the store incomplete; call ``append_halos`` again with the same
    ``ds`` to finish it.

    Parameters
    ----------
    ds : xarray.Dataset
        Cube of the new halos, from :func:`~massmap_xr.cube.build_posterior`.
    path : str or path-like
        A complete massmap store.
    progress : bool, default False
        Show a progress bar.
    storage_options : dict, optional
        fsspec options for URLs.

    Returns
    -------
    str
        The store path.
    """
    ds, path = _cube_first(ds, path, "append_halos")
    return _append(_HALOS, ds, path, progress, storage_options)


def read_checked(group, hs: slice, rs: slice, crcs, layout: StoreLayout) -> np.ndarray:
    block = np.asarray(group["posterior"][hs, :, rs])
    got, _ = cell_stats(block, rs.start, layout.realization_chunk, None)
    if [int(c) for c in got] != [int(c) for c in crcs]:
        raise StoreError(
            f"stored posterior halos [{hs.start}, {hs.stop}), realizations [{rs.start}, {rs.stop}) do not match "
            "their checksums; the store is damaged (run verify_store). Nothing was changed"
        )
    return block


def union_weights(w_old: np.ndarray, w_new: np.ndarray) -> np.ndarray:
    """Weights of the union of two realization sets, each counted in proportion to its size.

    Within each set the relative weights are kept; each set's weights are rescaled to mean 1
    (values within 1e-12 of 1 are set to exactly 1, so uniform sets stay exactly uniform), and the
    union is renormalised to sum to 1.  For two sets of equally weighted draws this is 1/N each,
    the weights of one build of the union.
    """
    raws = []
    for w in (w_old, w_new):
        w = np.asarray(w, dtype=float)
        raw = w / w.mean()
        raws.append(np.where(np.abs(raw - 1.0) <= 1e-12, 1.0, raw))
    raw = np.concatenate(raws)
    return raw / raw.sum()


@versioned_write("append_realizations")
def append_realizations(ds: xr.Dataset, path, *, progress: bool = False,
                        storage_options: dict | None = None) -> str:
    """Append the hyperparameter realizations of cube ``ds`` to a complete store.

    ``ds`` must have the store's halos (same catalogue hash), mass grid, prior and method, and
    realization labels not already in the store.  Stored shards are not rewritten except the
    last, partly filled realization shard of each halo slab (read back, checked against its
    checksums and written again followed by the new realizations).

    Weights: the stored ``weight`` always sums to 1.  The union's weights keep the relative
    weights within each set and count each set in proportion to its number of realizations
    (see :func:`union_weights`), so appending draws of the same hyper-posterior gives every
    draw the weight 1/N, as one build of the union would.  The store's ``hyper_hash`` then
    describes the union table.

    A cube without realizations is refused before anything is recorded.  An interrupted append
    leaves the store incomplete; call ``append_realizations`` again with
    the same ``ds`` to finish it.

    Parameters
    ----------
    ds : xarray.Dataset
        Cube of the new realizations, from :func:`~massmap_xr.cube.build_posterior` with the
        store's catalogue; give its realizations new labels, e.g.
        ``hyper.assign_coords(realization=hyper.realization + n_stored)``.
    path, progress, storage_options
        As for :func:`append_halos`, which also returns the store path.

    Notes
    -----
    For ``method="montecarlo"`` cubes the Monte Carlo draws behind the appended realizations
    differ from those one build of the union would make, so values agree statistically, not
    bitwise; analytic cubes agree bitwise.
    """
    ds, path = _cube_first(ds, path, "append_realizations")
    return _append(_REALIZATIONS, ds, path, progress, storage_options)
