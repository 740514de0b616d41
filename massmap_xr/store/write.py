"""Writing a new store: init_store, write_slabs, to_store (and resume); finalize_store is in
:mod:`massmap_xr.store.finalize`.

Layout (Zarr format 3, specified in ``stores/README.md``): one group holding the cube's variables
as written by xarray, plus two bookkeeping tables indexed by (halo slab, realization chunk):
``massmap_chunk_crc32``, the CRC-32 of every posterior cell as written (-1 where it has not been
written yet), and ``massmap_chunk_norm_error``, the largest deviation from 1 of the trapezoid
normalisation of the (halo, realization) rows in that cell, measured when it was written.

The posterior is stored in shards of one halo slab (``halo_chunk`` halos, every mass, every
realization) holding small inner chunks (``inner_halo_chunk`` halos × every mass ×
``realization_chunk`` realizations), Blosc LZ4 with bit shuffle, so that a slab is written as one
object and one halo or one realization is read without decompressing a whole slab.

Build life cycle (root attribute ``massmap_build_status``):

1. the cube and its template are validated, then the store directory is created (atomically
   for local paths: two builds racing for one new path cannot both succeed; ``to_store(mode="w")``
   builds the replacement of an existing store beside it and swaps it in once complete, and
   ``init_store(mode="w")`` deletes an existing store only at this point) and the template written with status
   ``"incomplete"``; the root attribute ``massmap_template`` becomes ``"complete"`` once every
   array exists;
2. halo slabs are written, each followed by its row of checksums (by one process, or by several
   processes each writing disjoint, slab-aligned halo ranges: :func:`write_slabs`); a slab whose
   (halo, realization) rows are not normalised within ``NORM_ATOL`` or hold NaN/inf is refused
   (:class:`StoreError`) and not written, so such a store never becomes complete;
3. :func:`~massmap_xr.store.finalize.finalize_store` checks that every checksum is present, records invariants (halo and
   realization counts, checksum-table digest, checksums of every other variable) and sets the
   status to ``"complete"``; it is the last write.

A killed build is finished by ``to_store(..., resume=True)``: slabs with recorded checksums are
kept, the others written.  :func:`append_halos` and :func:`append_realizations` extend a
complete store without rewriting what is there, except the one partly filled slab or shard that
the new data share with the old; they are interruptible and resumable in the same way (call
them again with the same cube).  Every chunk object is replaced atomically (a local store writes
a temporary file and renames it; object stores replace whole objects), so an interrupted write
never leaves a half-written chunk.  Metadata is not consolidated (see ``stores/README.md``).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Sequence

import numpy as np
import xarray as xr
import zarr

from massmap_xr.cube import validate_cube
from massmap_xr.errors import (
    StoreError,
    format_offenders,
)
from massmap_xr.store.checks import (
    check_schema,
    cube_hashes,
    model_problems,
    pending_record,
    raise_problems,
    same_value,
    stored_catalog,
    stored_weight,
    template_complete,
)
from massmap_xr.store.finalize import finalize, remember_slab_variable_crcs, remember_variable_crcs
from massmap_xr.store.layout import (
    BOOKKEEPING,
    BUILD_ID,
    CRC_NAME,
    LAYOUT,
    NORM_NAME,
    PENDING,
    STATUS,
    TABLES,
    TEMPLATE,
    StoreLayout,
    encoding_for,
    layout_for,
    posterior_blocks,
    read_layout,
)
from massmap_xr.store.location import (
    StoreLocation,
    create_root,
    filesystem,
    lazy_sources,
    open_group,
    path_key,
    refuse_foreign,
    remove_partial_files,
    remove_tree,
    replacement_sibling,
    store_exists,
    swap_in,
    zarr_store,
)
from massmap_xr.store.recipe import refuse_recipe
from massmap_xr.store.slabs import (
    SlabJob,
    empty_slab_variables,
    run_jobs,
    slab_extras,
    slab_variable_blocks,
    slab_variables,
    stored_slab_variables,
)
from massmap_xr.store.versioned import is_versioned, versioned_write


def _template(ds: xr.Dataset, layout: StoreLayout) -> xr.Dataset:
    """The Dataset that :func:`_write_template` writes: every value but the posterior's, loaded, and
    the root attributes (status incomplete).  Computing it checks the cube without touching a store."""
    import dask.array as da

    build_id = uuid.uuid4().hex
    attrs = {**{k: v for k, v in ds.attrs.items() if k not in BOOKKEEPING}, **cube_hashes(ds),
             STATUS: "incomplete", LAYOUT: json.dumps(layout.to_dict()), BUILD_ID: build_id}
    post = ds["posterior"].transpose("halo", "mass", "realization")
    empty = da.empty(post.shape, chunks=(layout.halo_chunk, layout.n_mass, layout.n_realization), dtype=np.float32)
    # every variable but the posterior is written here, with its values: to_zarr(compute=False)
    # would leave dask-backed ones (a rechunked or reopened cube) unwritten
    slab = slab_variables(ds)
    small = {k: v.load() for k, v in ds.variables.items() if k != "posterior" and k not in ds.dims and k not in slab}
    tmpl = ds.assign(small).assign(posterior=(post.dims, empty, dict(post.attrs)),
                                   weight=ds["weight"].copy(data=stored_weight(ds)))
    tmpl = tmpl.assign(empty_slab_variables(ds, slab, layout))
    tmpl.attrs = attrs
    return tmpl


def _write_template(ds: xr.Dataset, path, layout: StoreLayout, storage_options, tmpl: xr.Dataset | None = None,
                    *, fresh: bool = False) -> str:
    """Write the store's template (``tmpl`` from :func:`_template`, made from ``ds`` if not given).

    ``fresh``: the store directory was just created empty by this process.  The template is then
    written without clearing the directory (a local zarr store clears by deleting and re-creating
    it, a window in which a racing build's atomic ``mkdir`` would succeed); otherwise (rewriting
    an interrupted template) whatever is there is replaced.
    """
    tmpl = _template(ds, layout) if tmpl is None else tmpl
    build_id = tmpl.attrs[BUILD_ID]
    tmpl.to_zarr(zarr_store(path, storage_options), mode="w-" if fresh else "w", compute=False, consolidated=False,
                 zarr_format=3, encoding=encoding_for(tmpl, layout))
    remember_variable_crcs(path, storage_options, build_id, tmpl)
    group = open_group(path, storage_options, mode="r+")
    width = max(layout.n_realization_chunks, 1024)
    for name, dtype, fill, long_name in (
        (NORM_NAME, "float64", np.nan,
         "largest |trapezoid integral - 1| over the (halo, realization) rows of each posterior cell, at write time"),
        (CRC_NAME, "int64", -1, "CRC-32 of each posterior cell as written (-1: not written)"),
    ):
        group.create_array(
            name, shape=(layout.n_halo_chunks, layout.n_realization_chunks), chunks=(1, width), dtype=dtype,
            fill_value=fill, dimension_names=("halo_chunk", "realization_chunk"),
            attributes={"long_name": long_name},
        )
    group.attrs[TEMPLATE] = "complete"
    return build_id


def create_store(ds, path, storage_options, mode, realization_chunk, inner_halo_chunk,
                 what: str = "to_store") -> tuple[StoreLayout, str]:
    """Validate the cube and its template completely, then create the store (replacing an existing
    one for ``mode="w"``) and write the template: a bad cube never costs an existing store."""
    if mode == "w" and store_exists(path, storage_options):
        refuse_own_source(ds, path, storage_options)
    layout, ds = layout_for(ds, realization_chunk, inner_halo_chunk)
    tmpl = _template(ds, layout)  # every check on the cube's values happens here, before anything is deleted
    create_root(path, storage_options, mode, what)
    return layout, _write_template(ds, path, layout, storage_options, tmpl, fresh=True)


def refuse_own_source(ds, path, storage_options) -> None:
    """Refuse to replace the store that the cube still reads lazily from."""
    if path_key(path, storage_options) in lazy_sources(ds):
        raise StoreError(
                f"refusing to write with mode='w' onto {str(path)!r}: the cube was opened lazily from that very "
                "store, and replacing it would delete the data being written. Write to another path, or load "
                "the cube first (cube = cube.load()) if it fits in memory"
        )


@versioned_write("init_store")
def init_store(
    ds: xr.Dataset,
    path,
    *,
    mode: str = "w-",
    realization_chunk: int | None = None,
    inner_halo_chunk: int | None = None,
    storage_options: dict | None = None,
) -> StoreLayout:
    """Create a store for ``ds``: every array and attribute, no posterior values (status incomplete).

    Use with :func:`write_slabs` (possibly from several processes, each with disjoint halo slabs)
    and :func:`finalize_store`; :func:`to_store` does all three.

    Parameters
    ----------
    ds : xarray.Dataset
        The cube (lazy is fine: only its metadata, coordinates and small variables are written).
    path : str or path-like
        Local path or fsspec URL.
    mode : {"w-", "w"}
        ``"w-"`` refuses an existing path (atomically for local paths); ``"w"`` replaces it, once
        the cube and its template have passed every check (and never when the cube still reads
        lazily from that very store).
    realization_chunk : int, optional
        Realizations per stored chunk (default: inner chunks of about 512 KiB).
    inner_halo_chunk : int, optional
        Halos per stored chunk inside a slab's shard (a divisor of the slab size; default: the
        largest divisor not above 32).
    storage_options : dict, optional
        fsspec options for URLs.

    Returns
    -------
    StoreLayout
        The layout: ``halo_chunk`` is the slab size that halo ranges given to
        :func:`write_slabs` must be aligned to.
    """
    ds = validate_cube(ds, what="init_store", for_store=True)
    if mode not in ("w-", "w"):
        raise StoreError(f"init_store: mode must be 'w-' (refuse existing) or 'w' (replace), got {mode!r}")
    return create_store(ds, str(path), storage_options, mode, realization_chunk, inner_halo_chunk, "init_store")[0]


def _locate_cube(ds: xr.Dataset, group, attrs, layout: StoreLayout, path) -> int:
    """Store index of the cube's first halo (0 for the whole cube); checks the cube belongs here."""
    n = ds.sizes["halo"]
    ids = np.asarray(ds["halo"].values)
    problems = model_problems(ds, attrs, group, keys=("hyper_hash",))
    shape = (layout.n_mass, layout.n_realization)
    if (ds.sizes["mass"], ds.sizes["realization"]) != shape:
        problems.append(f"cube has {ds.sizes['mass']} masses x {ds.sizes['realization']} realizations, "
                        f"store has {shape[0]} x {shape[1]}")
    if problems:
        raise_problems(problems, f"cube does not belong to store {str(path)!r}",
                        "Write it to a new store (mode='w') or build the cube with the store's settings.")
    if n == layout.n_halo and same_value(attrs.get("catalog_hash"), cube_hashes(ds)["catalog_hash"]):
        return 0
    stored_ids = np.asarray(group["halo"][...])
    hit = np.flatnonzero(stored_ids == ids[0]) if n else np.array([], dtype=int)
    start = int(hit[0]) if hit.size else -1
    if start < 0 or start + n > layout.n_halo or not np.array_equal(stored_ids[start:start + n], ids):
        raise StoreError(
            f"cube does not belong to store {str(path)!r}: its catalogue hash differs and its {n} halo ids are not a "
            f"contiguous run of the store's {layout.n_halo} halo ids. Write it to a new store (mode='w')"
        )
    stored = stored_catalog(group, slice(start, start + n))
    for k in ("z", "lum_obs", "sigma_obs"):
        if not np.array_equal(stored[k], np.asarray(ds[k].values, dtype=stored[k].dtype)):
            raise StoreError(f"cube does not belong to store {str(path)!r}: halos [{start}, {start + n}) have "
                             f"different {k!r} values in the store. Write it to a new store (mode='w')")
    if start % layout.halo_chunk or ((start + n) % layout.halo_chunk and start + n != layout.n_halo):
        raise StoreError(
            f"cube covers store halos [{start}, {start + n}), which is not aligned to the store's slabs of "
            f"{layout.halo_chunk} halos; concurrent writers must cover whole slabs (start and stop multiples of "
            f"{layout.halo_chunk}, or stop = n_halo = {layout.n_halo})"
        )
    return start


def _select_rows(layout: StoreLayout, cube_start: int, cube_n: int, halo_chunks, halo_range) -> list[int]:
    first, last = cube_start // layout.halo_chunk, -(-(cube_start + cube_n) // layout.halo_chunk)
    if halo_chunks is not None and halo_range is not None:
        raise StoreError("write_slabs: give halo_chunks or halo_range, not both")
    if halo_range is not None:
        try:
            a, b = (int(v) for v in halo_range)
        except (TypeError, ValueError):
            raise StoreError(f"write_slabs: halo_range must be (start, stop), got {halo_range!r}") from None
        hc = layout.halo_chunk
        if not (0 <= a < b <= layout.n_halo):
            raise StoreError(f"write_slabs: halo_range [{a}, {b}) is outside [0, {layout.n_halo})")
        if a % hc or (b % hc and b != layout.n_halo):
            raise StoreError(
                f"write_slabs: halo_range [{a}, {b}) is not aligned to the store's slabs of {hc} halos: start and "
                f"stop must be multiples of {hc} (stop may also be n_halo = {layout.n_halo}); misaligned concurrent "
                f"writes would lose data. Nearest aligned range: [{a - a % hc}, {min(layout.n_halo, -(-b // hc) * hc)})"
            )
        rows = list(range(a // hc, -(-b // hc)))
    elif halo_chunks is not None:
        items = [halo_chunks] if isinstance(halo_chunks, (int, np.integer)) else halo_chunks
        if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
            items = None
        else:
            items = list(items)
        if items is None or not all(isinstance(i, (int, np.integer)) and not isinstance(i, (bool, np.bool_))
                                    for i in items):
            raise StoreError(
                f"write_slabs: halo_chunks must be a sequence of integer slab indices (slab i holds halos "
                f"[i*{layout.halo_chunk}, (i+1)*{layout.halo_chunk})), got {halo_chunks!r:.120}; pass e.g. "
                "halo_chunks=[0, 1], or halo_range=(start, stop)"
            )
        rows = sorted({int(i) for i in items})
        bad = [i for i in rows if not 0 <= i < layout.n_halo_chunks]
        if bad:
            raise StoreError(f"write_slabs: halo slab index(es) {format_offenders(bad)} out of range "
                             f"[0, {layout.n_halo_chunks})")
    else:
        rows = list(range(first, last))
    outside = [i for i in rows if not first <= i < last]
    if outside:
        raise StoreError(
            f"write_slabs: slab(s) {format_offenders(outside)} are not covered by the cube, which holds store halos "
            f"[{cube_start}, {cube_start + cube_n}) (slabs {first}..{last - 1})"
        )
    return rows


@versioned_write("write_slabs")
def write_slabs(
    ds: xr.Dataset,
    path,
    *,
    halo_chunks: Sequence[int] | None = None,
    halo_range: tuple[int, int] | None = None,
    overwrite: bool = False,
    progress: bool = False,
    storage_options: dict | None = None,
) -> list[int]:
    """Compute and write posterior slabs of ``ds`` into a store made by :func:`init_store`.

    Several processes may call this at once on one store as long as their slabs are disjoint:
    each slab is one shard object plus one row of the checksum table, so writers never touch the
    same object.

    Parameters
    ----------
    ds : xarray.Dataset
        The whole cube, or a contiguous, slab-aligned run of its halos (e.g. built from a slice of
        the catalogue); its hyperparameters, mass grid, method and prior must match the store's.
    path : str or path-like
        Store path or fsspec URL.
    halo_chunks : sequence of int, optional
        Slab indices to write (slab ``i`` holds halos ``[i*halo_chunk, (i+1)*halo_chunk)``).
    halo_range : (int, int), optional
        Store halo index range ``[start, stop)`` to write; must be aligned to slabs.
    overwrite : bool, default False
        Rewrite slabs whose checksums are already recorded (by default they are skipped, which is
        what makes resuming cheap).
    progress : bool, default False
        Show a progress bar.
    storage_options : dict, optional
        fsspec options for URLs.

    Returns
    -------
    list of int
        The slab indices written.

    Raises
    ------
    StoreError
        If the store is not an initialised massmap store, the cube does not belong to it, or a
        halo range is not aligned to the slabs, ``halo_chunks`` is not a sequence of integers,
        or a computed slab holds (halo, realization) rows that are not normalised (|trapezoid
        integral - 1| > ``NORM_ATOL``) or NaN/inf: those slabs are not written and the store
        stays incomplete.
    """
    ds = validate_cube(ds, what="write_slabs", for_store=True)
    return _write_slabs(ds, str(path), storage_options, halo_chunks=halo_chunks, halo_range=halo_range,
                        overwrite=overwrite, progress=progress)


def _write_slabs(ds: xr.Dataset, path: str, storage_options, *, halo_chunks=None, halo_range=None,
                 overwrite: bool = False, progress: bool = False, known: bool = False) -> list[int]:
    """:func:`write_slabs` of a validated cube; ``known``: the cube is the one the store was just
    created or checked for (by :func:`to_store`), so it is not compared with the store again."""
    group = open_group(path, storage_options, mode="r+")
    attrs = dict(group.attrs)
    check_schema(attrs, path)
    refuse_recipe(attrs, path, "write_slabs")
    if not template_complete(group, attrs):
        raise StoreError(f"store {path!r} has an incomplete template (its creation was interrupted); "
                         "create it again with init_store(..., mode='w') or to_store(..., resume=True)")
    if PENDING in attrs:
        raise StoreError(f"store {path!r} has an interrupted {pending_record(attrs)['operation']}; finish it first by "
                         "calling that function again with the same cube")
    layout = read_layout(attrs, path)
    start = 0 if known else _locate_cube(ds, group, attrs, layout, path)
    rows = _select_rows(layout, start, ds.sizes["halo"], halo_chunks, halo_range)
    crc = group[CRC_NAME][...]
    done = np.all(crc >= 0, axis=1)
    todo = rows if overwrite else [i for i in rows if not done[i]]
    if todo and attrs.get(STATUS) == "complete":
        raise StoreError(f"store {path!r} is complete; refusing to rewrite slabs {format_offenders(todo)} of a "
                         "finished store. Build a new store with mode='w'")
    blocks = posterior_blocks(ds, start, layout.halo_chunk)
    extra = slab_variable_blocks(ds, stored_slab_variables(ds, group), start, layout.halo_chunk)
    base = start // layout.halo_chunk
    jobs = []
    for i in todo:
        s = layout.halo_slice(i)
        jobs.append(SlabJob(i, blocks[i - base], s.start, 0, s.stop - s.start,
                            extras=slab_extras(extra, i - base, s.start, 0)))
    n_rows = sum(layout.halo_slice(i).stop - layout.halo_slice(i).start for i in rows)
    written = run_jobs(jobs, path, storage_options, layout, progress=progress, total=n_rows,
                       initial=n_rows - sum(j.n_halo for j in jobs), desc="massmap build",
                       build_id=attrs.get(BUILD_ID))
    if known and len(todo) == layout.n_halo_chunks:  # a fresh build: finalising need not read them back
        remember_slab_variable_crcs(path, storage_options, attrs.get(BUILD_ID),
                                    [written.get(i) for i in range(layout.n_halo_chunks)])
    return todo


def _prepare_resume(ds, path, storage_options, realization_chunk, inner_halo_chunk) -> tuple[StoreLayout, str | None]:
    """Check that an existing store can be finished with ``ds``; recreate an interrupted template."""
    fs, root = filesystem(path, storage_options)
    entries = fs.ls(root, detail=False) if fs.isdir(root) else None
    if entries is None:
        raise StoreError(f"cannot resume {path!r}: it is not a directory/prefix of a Zarr store")
    try:
        group = zarr.open_group(zarr_store(path, storage_options), mode="r+")
        attrs = dict(group.attrs)
        readable = True
    except Exception:  # noqa: BLE001 - killed before the root metadata was written
        group, attrs, readable = None, {}, False
    names = {os.path.basename(str(e).rstrip("/")) for e in entries}
    ours = {*ds.variables, *TABLES, "zarr.json"}
    if not readable or not template_complete(group, attrs):
        foreign = names - ours
        started_by_us = ("massmap_schema_version" in attrs and attrs.get(STATUS) == "incomplete") or not attrs
        if foreign or not started_by_us:
            raise StoreError(
                f"cannot resume {path!r}: it holds {sorted(foreign) or 'a Zarr group'} that a massmap build did not "
                "write; it is not an interrupted massmap build. Rebuild with mode='w' to replace it"
            )
        # the template was never finished, so no slab was written: write it again
        for e in entries:
            fs.rm(e, recursive=True)
        layout, rds = layout_for(ds, realization_chunk, inner_halo_chunk)
        return layout, _write_template(rds, path, layout, storage_options)
    check_schema(attrs, path)
    refuse_recipe(attrs, path, "to_store(resume=True)")
    if PENDING in attrs:
        op = pending_record(attrs)["operation"]
        raise StoreError(f"cannot resume {path!r}: it has an interrupted {op}; finish it by calling {op}() again "
                         "with the same cube")
    layout = read_layout(attrs, path)
    problems = model_problems(ds, attrs, group, keys=("catalog_hash", "hyper_hash"))
    if tuple(ds["posterior"].shape) != (layout.n_halo, layout.n_mass, layout.n_realization):
        problems.append(f"posterior shape: store {(layout.n_halo, layout.n_mass, layout.n_realization)}, "
                        f"cube {tuple(ds['posterior'].shape)}")
    raise_problems(problems, f"cannot resume {path!r}: the cube differs from the one being built there",
                    "Resume needs the same catalogue, hyperparameters, mass grid, prior and method; or write a new "
                    "store with mode='w'.")
    if attrs.get(STATUS) != "complete":
        remove_partial_files(path)
    return layout, attrs.get(BUILD_ID)


def _replace(ds, path, storage_options, realization_chunk, inner_halo_chunk, progress) -> None:
    """``to_store(mode="w")`` onto an existing store: the new store is built completely beside the
    old one (``<path>.<id>.partial-replace``), then swapped in (:func:`swap_in`).  Anything but a
    store written by this package is refused untouched; a failed build removes its sibling and
    leaves the old store as it was."""
    refuse_foreign(path, storage_options, "to_store")
    refuse_own_source(ds, path, storage_options)
    tmp = StoreLocation.of(replacement_sibling(path), storage_options)
    try:
        _, build_id = create_store(ds, tmp, storage_options, "w-", realization_chunk, inner_halo_chunk)
        _write_slabs(ds, tmp, storage_options, progress=progress, known=True)
        finalize(tmp, storage_options, build_id, from_append=False)
    except BaseException:
        remove_tree(tmp, storage_options)
        raise
    swap_in(tmp, path, storage_options)


@versioned_write("to_store")
def to_store(
    ds: xr.Dataset,
    path,
    *,
    mode: str = "w-",
    resume: bool = False,
    realization_chunk: int | None = None,
    inner_halo_chunk: int | None = None,
    progress: bool = True,
    storage_options: dict | None = None,
    materialize: bool = True,
) -> str:
    """Write a posterior cube to a Zarr (format 3) store, slab by slab.

    Equivalent to :func:`init_store`, :func:`write_slabs` for every slab, then
    :func:`finalize_store`.  Slabs are computed ``2 × (number of dask workers)`` at a time, so
    memory stays bounded by a few slabs whatever the cube's size.

    Parameters
    ----------
    ds : xarray.Dataset
        A cube from :func:`~massmap_xr.cube.build_posterior` (lazy is best: blocks are computed as
        they are written).
    path : str or path-like
        Local path or fsspec URL (``file://``, ``memory://``, object storage).
    mode : {"w-", "w"}
        ``"w-"`` (default) refuses an existing store; ``"w"`` replaces an existing massmap store:
        the new one is built completely beside it (``<path>.<id>.partial-replace``) and swapped in
        only once complete, so a cube that fails any check (values included) leaves the old store
        as it was.  Never when the cube was opened lazily from that very store, and never onto a
        path that is not a store written by this package (a plain directory or file is refused
        untouched).
    resume : bool
        Finish an interrupted build of the same cube: slabs whose checksums are recorded are kept
        (a complete store is left untouched).  A build killed while its template was being
        written is started again from the template.
    realization_chunk : int, optional
        Realizations per stored chunk (default: inner chunks of about 512 KiB).  Ignored when
        resuming: an existing store keeps its layout.
    inner_halo_chunk : int, optional
        Halos per stored chunk inside a slab (default: largest divisor of the slab size <= 32).
        Ignored when resuming.
    progress : bool
        Show a progress bar (halos/s and ETA).
    storage_options : dict, optional
        Passed to fsspec for URLs.
    materialize : bool, default True
        ``False`` writes a *recipe store* instead (:mod:`massmap_xr.store.recipe`): every input of
        the cube (catalogue, hyperparameters, prior table, mass grid, build options, content hashes)
        and no posterior chunks; :func:`open_store` recomputes the posterior on read, bit-identical
        to the materialised store.  ``resume`` does not apply (a recipe is written in one step).

    Returns
    -------
    str
        The store path.

    Raises
    ------
    StoreError
        If the path exists (``mode="w-"``), another process created it first, or ``resume=True``
        meets a store of a different cube; if the cube is not a valid massmap cube (missing
        variables or ``sigma_obs``, non-integer or repeated halo ids, repeated realization labels,
        bad chunk arguments); if it would overwrite its own source store; or if a slab is not
        normalised or holds NaN/inf (the store is then left incomplete, never marked complete).
    """
    ds = validate_cube(ds, what="to_store", for_store=True)
    if mode not in ("w-", "w"):
        raise StoreError(f"to_store: mode must be 'w-' (refuse existing) or 'w' (replace), got {mode!r}")
    path = StoreLocation.of(path, storage_options)  # resolved once, passed on
    if not materialize:
        from massmap_xr.store.recipe import write_recipe

        if resume:
            raise StoreError("to_store: resume=True does not apply to a recipe store (materialize=False), which is "
                             "written in one step; pass mode='w' to write it again")
        return write_recipe(ds, path, mode=mode, realization_chunk=realization_chunk,
                            inner_halo_chunk=inner_halo_chunk, storage_options=storage_options)
    if resume and store_exists(path, storage_options):
        _, build_id = _prepare_resume(ds, path, storage_options, realization_chunk, inner_halo_chunk)
        if dict(open_group(path, storage_options).attrs).get(STATUS) == "complete":
            return str(path)
    elif mode == "w" and not is_versioned(path) and store_exists(path, storage_options):
        _replace(ds, path, storage_options, realization_chunk, inner_halo_chunk, progress)
        return str(path)
    else:
        _, build_id = create_store(ds, path, storage_options, mode, realization_chunk, inner_halo_chunk)
    # the cube was validated above and checked against the store by create_store / _prepare_resume
    _write_slabs(ds, path, storage_options, progress=progress, known=True)
    finalize(path, storage_options, build_id, from_append=False)
    return str(path)
