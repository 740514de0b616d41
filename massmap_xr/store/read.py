"""Opening a store lazily (open_store) and summarising it without reading the cube (store_info)."""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr
from dask.array.core import normalize_chunks

from massmap_xr.cube import STORE_COORDS, STORE_VARIABLES
from massmap_xr.errors import (
    IncompleteStoreError,
    StoreError,
)
from massmap_xr.store import versioned
from massmap_xr.store.checked import cell_aligned, check_metadata, checked_posterior
from massmap_xr.store.checks import check_schema, pending_record
from massmap_xr.store.layout import BOOKKEEPING, CRC_NAME, NORM_NAME, PENDING, STATUS, TABLES, read_layout
from massmap_xr.store.location import StoreLocation, open_group, store_exists, zarr_store


def _check_open_chunks(chunks) -> None:
    """StoreError unless ``chunks`` is a form :func:`open_store` accepts."""
    dims = ("halo", "mass", "realization", "prior_z")
    ok = chunks is None or (isinstance(chunks, str) and chunks in ("store", "auto"))
    ok = ok or (isinstance(chunks, (int, np.integer)) and not isinstance(chunks, (bool, np.bool_)) and
                (chunks > 0 or chunks == -1))
    if isinstance(chunks, dict):
        unknown = [k for k in chunks if k not in dims]
        bad = [k for k, v in chunks.items() if not (v is None or v == "auto" or (
            isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and (v > 0 or v == -1)))]
        if unknown or bad:
            raise StoreError(
                f"open_store: chunks dict must map dimensions {list(dims)} to positive sizes, -1, 'auto' or None; "
                f"got unknown dimension(s) {unknown} and bad size(s) for {bad} in {chunks!r}; pass e.g. "
                "chunks={'halo': 1000}"
            )
        ok = True
    if not ok:
        raise StoreError(
            f"open_store: chunks must be 'store' (one dask chunk per stored slab), 'auto', None, a positive int or a "
            f"dict {{dimension: size}}, got {chunks!r}"
        )


def open_store(path, *, allow_incomplete: bool = False, storage_options: dict | None = None, chunks="store",
               verify: bool = True, version: str | None = None) -> xr.Dataset:
    """Open a massmap store lazily (dask-backed, read-only) and validate its schema.

    Opening never writes: every file of the store keeps its bytes and modification time.

    A recipe store (``to_store(..., materialize=False)``, :mod:`massmap_xr.store.recipe`) opens as the
    same Dataset, its ``posterior`` recomputed by the kernel block by block when dask asks for it
    (bit-identical to the materialised store); ``verify`` then checks the recorded SHA-256 of every
    stored input at opening, and another package or kernel version raises
    :class:`~massmap_xr.errors.RecipeVersionError`.

    Reads are checked (``verify=True``, the default): each posterior chunk is compared, when dask computes it,
    with the CRC-32 the store recorded for that position at write time, so a flipped bit, a shard
    file copied over another one or a deleted shard raises a :class:`StoreError` naming the
    variable, the halo and realization range and the file, instead of reading back wrong numbers
    or NaN.  Opening reads only the checksum table and, for a finished build, checks the recorded
    CRC-32 of every catalogue and hyperparameter variable; no posterior chunk is read.

    Parameters
    ----------
    path : str or path-like
        Local path or fsspec URL.
    allow_incomplete : bool, default False
        Open a store whose build has not finished (unwritten chunks read as NaN, never as zeros).
    storage_options : dict, optional
        fsspec options for URLs.
    chunks : "store", dict, int, "auto" or None
        ``"store"`` gives one dask chunk per stored slab (shard); anything else is passed to
        :func:`xarray.open_zarr` (a dict maps dimension names to chunk sizes).  When ``verify`` is
        on and the requested chunks do not hold whole stored cells (halo slabs × realization
        chunks), the posterior is read and checked in store cells and rechunked afterwards.
        ``None`` gives xarray's lazily indexed (non-dask) arrays, whose posterior is not checked.
    verify : bool, default True
        Check every posterior chunk read against the store's checksum table (see above).
        ``verify=False`` reads without checking (``massmap verify STORE`` still checks everything).
    version : str, optional
        For a versioned store (``icechunk://LOCATION``, :mod:`massmap_xr.store.versioned`): the
        branch, tag or snapshot id to read (default: the head of branch ``main``).

    Raises
    ------
    StoreError
        If the path is missing or not a massmap cube, or ``chunks`` is not one of the accepted
        forms; :class:`SchemaVersionError` for an unknown schema version;
        :class:`IncompleteStoreError` for an unfinished build.  With ``verify``: at opening, a
        catalogue / hyperparameter variable or checksum table that changed since the build; when
        posterior values are computed, a chunk that differs from what was written at its position.
    """
    _check_open_chunks(chunks)
    loc = StoreLocation.of(versioned.at_version(path, version), storage_options)  # resolved once, passed on
    path, storage_options = str(loc), loc.storage_options
    if not store_exists(loc, storage_options):
        raise StoreError(f"store {path!r} does not exist")
    group = open_group(loc, storage_options, mode="r")
    attrs = dict(group.attrs)
    check_schema(attrs, path)
    status = attrs.get(STATUS)
    if status != "complete" and not allow_incomplete:
        if PENDING in attrs:
            op = pending_record(attrs).get("operation")
            how = f"finish it by calling {op}() again with the same cube"
        else:
            how = "finish it with `massmap build ... --resume` / to_store(..., resume=True)"
        raise IncompleteStoreError(
            f"store {path!r} is incomplete (build status {status!r}): its build was interrupted or is still "
            f"running; {how}, or pass allow_incomplete=True to look at it anyway"
        )
    from massmap_xr.store.recipe import is_recipe, open_recipe

    if is_recipe(attrs):  # a recipe store: the posterior is recomputed on read
        _check_open_chunks(chunks)
        return open_recipe(path, group, attrs, storage_options=storage_options, chunks=chunks, verify=verify)
    try:
        layout = read_layout(attrs, path)
        store_chunks = {"halo": layout.halo_chunk, "mass": -1, "realization": layout.realization_shard}
    except StoreError:
        if verify:
            raise
        layout, store_chunks = None, {}
    crc = check_metadata(group, attrs, path) if verify else None
    if verify and crc is None:
        raise StoreError(f"{path!r}: massmap store has no checksum table {CRC_NAME!r}, so its reads cannot be "
                         "checked; run `massmap verify` on it, or open it with open_store(..., verify=False)")
    from_store = chunks == "store"
    if from_store:
        chunks = store_chunks

    def _open(c):
        with warnings.catch_warnings():
            if from_store:  # per-halo variables are one stored chunk, handed out in slabs like the posterior
                warnings.filterwarnings("ignore", "The specified chunks separate the stored chunks", UserWarning)
            return xr.open_zarr(zarr_store(loc, storage_options, read_only=True), consolidated=False, zarr_format=3,
                                chunks=c, drop_variables=list(TABLES))

    ds = _open(chunks)
    missing = [k for k in (*STORE_VARIABLES, *STORE_COORDS) if k not in ds.variables]
    if missing:
        raise StoreError(f"{path!r}: massmap store is missing variable(s) {missing}; it is damaged")
    if ds["posterior"].dims != ("halo", "mass", "realization"):
        raise StoreError(f"{path!r}: posterior has dims {ds['posterior'].dims}, expected (halo, mass, realization)")
    post = ds["posterior"]
    if verify and post.chunks is not None:
        aligned = cell_aligned(post.chunks, layout)
        want = post.chunks if aligned else tuple(
            normalize_chunks((layout.halo_chunk, -1, layout.realization_shard), post.shape))
        backend = _open(None)["posterior"].variable._data
        data = checked_posterior(group["posterior"], backend, want, crc, layout, path)
        if not aligned:  # checked in store cells, then handed out in the chunks asked for
            data = data.rechunk(post.chunks)
        ds["posterior"] = post.copy(data=data)
    for k in BOOKKEEPING:
        ds.attrs.pop(k, None)
    ds.encoding["source"] = path
    return ds


def store_info(path, storage_options=None) -> dict:
    """Summary of a store (kind, sizes, status, schema, method, chunks, checksums) without reading the cube.

    ``kind`` is ``"materialised store"`` or ``"recipe store (computed on read)"``."""
    from massmap_xr.store.recipe import MATERIALISED_KIND_TEXT, is_recipe, recipe_info

    group = open_group(StoreLocation.of(path, storage_options), storage_options, mode="r")
    attrs = dict(group.attrs)
    check_schema(attrs, path)
    if is_recipe(attrs):
        return recipe_info(group, attrs, path)
    post = group["posterior"]
    crc = group[CRC_NAME][...] if CRC_NAME in group else np.zeros((0, 0))
    norm = group[NORM_NAME][...] if NORM_NAME in group else np.zeros((0, 0))
    written = norm[crc >= 0] if norm.shape == crc.shape else np.zeros(0)
    shards = getattr(post, "shards", None)
    return {
        "path": str(path),
        "kind": MATERIALISED_KIND_TEXT,
        "status": attrs.get(STATUS),
        "pending": pending_record(attrs).get("operation") if PENDING in attrs else None,
        "schema_version": attrs.get("massmap_schema_version"),
        "massmap_version": attrs.get("massmap_version"),
        "method": attrs.get("method"),
        "shape": dict(zip(("halo", "mass", "realization"), post.shape, strict=True)),
        "chunks": dict(zip(("halo", "mass", "realization"), post.chunks, strict=True)),
        "shards": dict(zip(("halo", "mass", "realization"), shards, strict=True)) if shards else None,
        "slab_halos": int(read_layout(attrs, str(path)).halo_chunk),
        "chunks_written": f"{int((crc >= 0).sum())}/{crc.size}",
        "max_normalisation_error": float(np.max(written)) if written.size else None,
        "uncompressed_bytes": int(np.prod(post.shape) * 4),
        "prior": attrs.get("prior", ""),
        "catalog_hash": attrs.get("catalog_hash"),
        "hyper_hash": attrs.get("hyper_hash"),
        "hyper_kind": attrs.get("hyper_kind", "posterior"),
        "realization_halo_variables": sorted(k for k, a in group.arrays()
                                             if tuple(a.metadata.dimension_names or ()) in (("halo", "realization"),
                                                                                            ("realization", "halo"))),
    }
