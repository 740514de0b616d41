"""Where a store lives: fsspec filesystem, zarr store and group of a local path or URL, atomic creation
of a new store directory, removal of interrupted temporary files, and locations of a cube's lazy sources."""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass

import dask
import numpy as np
import xarray as xr
import zarr

from massmap_xr.errors import (
    StoreError,
    StoreExistsError,
    check_output,
)


@dataclass(frozen=True, eq=False)
class StoreLocation:
    """One store's place: its path or URL and fsspec options, its filesystem resolved once.

    Every helper here takes either a path (with its ``storage_options``) or a StoreLocation
    (whose own options are used); a writer resolves its path once and passes the handle on.
    ``str()`` and ``repr()`` are those of the path, so messages read as before.
    """

    path: str
    storage_options: dict | None = None

    @classmethod
    def of(cls, path, storage_options=None) -> StoreLocation:
        return path if isinstance(path, StoreLocation) else cls(str(path), storage_options)

    @functools.cached_property
    def fs_root(self) -> tuple:
        import fsspec

        fs, root = fsspec.core.url_to_fs(self.path, **(self.storage_options or {}))
        return fs, root.rstrip("/")

    def __str__(self) -> str:
        return self.path

    def __repr__(self) -> str:
        return repr(self.path)


def filesystem(path, storage_options):
    return StoreLocation.of(path, storage_options).fs_root


def is_local(path) -> bool:
    s = str(path)
    return "://" not in s or s.startswith("file://")


def local_path(path) -> str:
    s = str(path)
    return s.removeprefix("file://")


def zarr_store(path, storage_options=None, read_only=False):
    if is_local(path):
        return zarr.storage.LocalStore(local_path(path), read_only=read_only)
    loc = StoreLocation.of(path, storage_options)
    return zarr.storage.FsspecStore.from_url(loc.path, storage_options=loc.storage_options or {}, read_only=read_only)


def store_exists(path, storage_options=None) -> bool:
    fs, root = filesystem(path, storage_options)
    return fs.exists(root)


def open_group(path, storage_options=None, mode="r"):
    try:
        return zarr.open_group(zarr_store(path, storage_options, read_only=mode == "r"), mode=mode)
    except (zarr.errors.GroupNotFoundError, FileNotFoundError, KeyError, ValueError, TypeError) as exc:
        raise StoreError(f"{str(path)!r} is not a readable Zarr group ({type(exc).__name__}: {exc}); "
                         "expected a massmap cube store") from None


def create_root(path, storage_options, mode, what: str = "to_store"):
    """Create the store's directory; atomic for local paths (two racing builds cannot both win).
    ``what`` (the writer's name) starts the message refusing an existing store for ``mode="w-"``."""
    fs, root = filesystem(path, storage_options)
    if fs.exists(root):
        check_output(str(path), overwrite=mode != "w-", what=what, exists=True, error=StoreExistsError,
                     hint="refusing to overwrite it. Pass mode='w' to replace it, or resume=True to finish an "
                          "interrupted build")
        fs.rm(root, recursive=True)
    if is_local(path):
        try:
            os.makedirs(os.path.dirname(os.path.abspath(local_path(path))), exist_ok=True)
            os.mkdir(local_path(path))
        except FileExistsError:
            raise StoreError(
                f"store {str(path)!r} was created by another process while this build started; "
                "two builds cannot write the same new store"
            ) from None
    else:
        fs.mkdir(root, create_parents=True)


_PARTIAL = re.compile(r"\.[0-9a-f]{32}\.partial$")


def remove_partial_files(path) -> int:
    """Delete temporary files left by writes killed before their rename (local stores only)."""
    if not is_local(path):
        return 0
    n = 0
    for d, _, files in os.walk(local_path(path)):
        for f in files:
            if _PARTIAL.search(f):
                os.unlink(os.path.join(d, f))
                n += 1
    return n


def store_key(store) -> str | None:
    """A comparable location of a zarr store object (absolute local path or fsspec URL)."""
    root = getattr(store, "root", None)
    if root is not None:  # LocalStore
        return os.path.realpath(str(root))
    fs, p = getattr(store, "fs", None), getattr(store, "path", None)
    if fs is not None and p is not None:
        return fs.unstrip_protocol(str(p).rstrip("/"))
    return None


def path_key(path, storage_options) -> str:
    if is_local(path):
        return os.path.realpath(local_path(path))
    fs, root = filesystem(path, storage_options)
    return fs.unstrip_protocol(root)


def lazy_sources(ds: xr.Dataset) -> set[str]:
    """Locations of the zarr stores the cube's lazy variables (dask-backed, or xarray's lazily
    indexed backend arrays of ``open_store(..., chunks=None)``) still read from."""
    candidates = []
    for v in ds.variables.values():
        data = getattr(v, "_data", None)
        if dask.is_dask_collection(data):
            candidates.extend(data.__dask_graph__().values())
        elif data is not None and not isinstance(data, np.ndarray):
            candidates.append(data)
    out: set[str] = set()
    seen: set[int] = set()
    for value in candidates:
        if id(value) in seen or not (hasattr(value, "array") or hasattr(value, "_array")):
            continue
        seen.add(id(value))
        obj = value
        for _ in range(12):  # xarray's lazy indexing wrappers around its ZarrArrayWrapper
            inner = getattr(obj, "_array", None)
            store = getattr(inner, "store", None) if inner is not None else None
            if store is not None and (k := store_key(store)) is not None:
                out.add(k)
                break
            obj = getattr(obj, "array", None)
            if obj is None:
                break
    return out
