"""Where a store lives: fsspec filesystem, zarr store and group of a local path or URL, atomic creation
of a new store directory, removal of interrupted temporary files, and locations of a cube's lazy sources."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import uuid
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
from massmap_xr.store import versioned
from massmap_xr.store.versioned import is_versioned


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
    if is_versioned(path):
        raise StoreError(f"{str(path)!r}: a versioned store has no file system to list or change directly; this "
                         "operation is not available for icechunk:// stores")
    return StoreLocation.of(path, storage_options).fs_root


def is_local(path) -> bool:
    s = str(path)
    return "://" not in s or s.startswith("file://")


def local_path(path) -> str:
    s = str(path)
    return s.removeprefix("file://")


def zarr_store(path, storage_options=None, read_only=False):
    if is_versioned(path):
        loc = StoreLocation.of(path, storage_options)
        return versioned.session_store(loc.path, loc.storage_options, read_only=read_only)
    if is_local(path):
        return zarr.storage.LocalStore(local_path(path), read_only=read_only)
    loc = StoreLocation.of(path, storage_options)
    return zarr.storage.FsspecStore.from_url(loc.path, storage_options=zarr_options(loc), read_only=read_only)


def zarr_options(loc: StoreLocation) -> dict:
    """fsspec options of the zarr store of an URL.  For S3 (s3fs), objects are read with one GET
    each (``max_concurrency=1``) unless the options say otherwise: s3fs's concurrent whole-object
    read first asks for the object's size, a second request per chunk read."""
    opts = dict(loc.storage_options or {})
    if loc.path.startswith(("s3://", "s3a://")):
        opts.setdefault("max_concurrency", 1)
    return opts


def store_exists(path, storage_options=None) -> bool:
    if is_versioned(path):
        loc = StoreLocation.of(path, storage_options)
        return versioned.exists(loc.path, loc.storage_options)
    fs, root = filesystem(path, storage_options)
    return fs.exists(root)


def open_group(path, storage_options=None, mode="r"):
    """Open an existing store's group (``mode`` "r" or "r+"); never creates anything on disk.

    The group is opened as Zarr format 3 (what massmap writes) with one read of its ``zarr.json``;
    only when that fails is its existence checked (object stores: no listing per opening) and
    another format tried, for the messages.  A local path is checked first (opening a missing
    local store for writing would create its directory).
    """
    local = is_local(path)
    if mode in ("r", "r+") and local and not store_exists(path, storage_options):
        raise _missing(path)
    read_only = mode == "r"
    try:
        return zarr.open_group(zarr_store(path, storage_options, read_only=read_only), mode=mode, zarr_format=3)
    except (zarr.errors.GroupNotFoundError, FileNotFoundError, KeyError, ValueError, TypeError):
        pass
    if mode in ("r", "r+") and not local and not store_exists(path, storage_options):
        raise _missing(path)
    try:
        return zarr.open_group(zarr_store(path, storage_options, read_only=read_only), mode=mode)
    except (zarr.errors.GroupNotFoundError, FileNotFoundError, KeyError, ValueError, TypeError) as exc:
        raise StoreError(f"{str(path)!r} is not a readable Zarr group ({type(exc).__name__}: {exc}); "
                         "expected a massmap cube store") from None


def _missing(path) -> StoreError:
    return StoreError(f"{str(path)!r} does not exist; expected a massmap cube store (check the path, or build "
                      "one with to_store / massmap build)")


def create_root(path, storage_options, mode, what: str = "to_store"):
    """Create the store's directory; atomic for local paths (two racing builds cannot both win).
    ``what`` (the writer's name) starts the message refusing an existing store for ``mode="w-"``."""
    if is_versioned(path):  # inside the write's session: replaced content stays in the history
        if store_exists(path, storage_options):
            check_output(str(path), overwrite=mode != "w-", what=what, exists=True, error=StoreExistsError,
                         hint="refusing to overwrite it. Pass mode='w' to replace it (the old version stays in "
                              "its history)")
            refuse_foreign(path, storage_options, what)
            loc = StoreLocation.of(path, storage_options)
            versioned.clear(loc.path, loc.storage_options)
        return
    fs, root = filesystem(path, storage_options)
    if fs.exists(root):
        check_output(str(path), overwrite=mode != "w-", what=what, exists=True, error=StoreExistsError,
                     hint="refusing to overwrite it. Pass mode='w' to replace it, or resume=True to finish an "
                          "interrupted build")
        refuse_foreign(path, storage_options, what)
        fs.rm(root, recursive=True)
    if is_local(path):
        parent = os.path.dirname(os.path.abspath(local_path(path)))
        above = parent
        while not os.path.lexists(above) and os.path.dirname(above) != above:
            above = os.path.dirname(above)
        if not os.path.isdir(above):
            raise StoreError(f"{what}: cannot create {str(path)!r}: {above!r} is a file, not a directory; "
                             "choose an output path in a directory")
        if not os.access(above, os.W_OK | os.X_OK):
            raise StoreError(f"{what}: cannot create {str(path)!r}: directory {above!r} is not writable; "
                             "choose an output path you can write to")
        os.makedirs(parent, exist_ok=True)
        try:
            os.mkdir(local_path(path))
        except FileExistsError:
            raise StoreError(
                f"store {str(path)!r} was created by another process while this build started; "
                "two builds cannot write the same new store"
            ) from None
    else:
        fs.mkdir(root, create_parents=True)


#: root attribute that only stores written by this package carry (layout.STATUS)
_STATUS_ATTR = "massmap_build_status"


def foreign_description(path, storage_options=None) -> str | None:
    """``None`` if ``path`` holds a store written by this package (its root ``zarr.json`` carries
    ``massmap_build_status``) or an empty directory; otherwise what is there, for messages."""
    if is_versioned(path):
        loc = StoreLocation.of(path, storage_options)
        try:
            attrs = versioned.root_attrs(loc.path, loc.storage_options)
        except Exception:  # noqa: BLE001 - no readable root group
            attrs = {}
        return None if _STATUS_ATTR in attrs else (f"{str(path)!r} holds a Zarr group that is not a massmap store "
                                                   f"(no {_STATUS_ATTR} attribute)")
    fs, root = filesystem(path, storage_options)
    if not fs.isdir(root):
        try:
            size = f" of {int(fs.size(root))} bytes"
        except (OSError, TypeError, ValueError):
            size = ""
        return f"{str(path)!r} is a file{size}, not a massmap store"
    entries = fs.ls(root, detail=False)
    if not entries:
        return None
    try:
        attrs = json.loads(fs.cat_file(f"{root}/zarr.json")).get("attributes", {})
    except (OSError, ValueError, AttributeError):
        attrs = {}
    if isinstance(attrs, dict) and _STATUS_ATTR in attrs:
        return None
    n = len(entries)
    return (f"{str(path)!r} is a directory with {n} entr{'y' if n == 1 else 'ies'} that is not a massmap store "
            f"(its zarr.json has no {_STATUS_ATTR} attribute)")


def refuse_foreign(path, storage_options, what: str) -> None:
    """Refuse to replace anything but a store written by this package: never delete or write into it."""
    text = foreign_description(path, storage_options)
    if text is not None:
        raise StoreError(f"{what}: {text}; choose another path or remove it yourself")


def replacement_sibling(path) -> str:
    """A new, unused path beside ``path`` where its replacement is built."""
    return f"{str(path).rstrip('/')}.{uuid.uuid4().hex}.partial-replace"


def remove_tree(path, storage_options=None) -> None:
    """Delete a directory tree this process created (a failed replacement's sibling)."""
    fs, root = filesystem(path, storage_options)
    if fs.exists(root):
        fs.rm(root, recursive=True)


def swap_in(new, path, storage_options=None) -> None:
    """Put the complete store at ``new`` in place of the store at ``path`` and delete the old one.

    Local paths: ``path`` is renamed to a backup beside it, ``new`` renamed to ``path``, then the
    backup deleted; if the second rename fails the backup is renamed back.  At no moment is
    neither store present under some name.  Object stores have no rename: the old store stays
    readable until the new one is complete, then it is deleted and the new one moved; between
    the two, ``path`` is briefly absent or partial (the new store is complete at ``new`` until it
    has been moved).
    """
    if is_local(path):
        old, src = local_path(path).rstrip("/"), local_path(new).rstrip("/")
        backup = f"{old}.{uuid.uuid4().hex}.replaced"
        os.rename(old, backup)
        try:
            os.rename(src, old)
        except BaseException:
            os.rename(backup, old)
            raise
        shutil.rmtree(backup)
        return
    fs, root = filesystem(path, storage_options)
    _, src = filesystem(new, storage_options)
    fs.invalidate_cache()  # the new store was written through another client: list it afresh
    objects = fs.find(src)  # objects only: object stores have no directories to copy
    fs.rm(root, recursive=True)
    if objects:
        fs.copy(objects, [root + o[len(src):] for o in objects])
    fs.rm(src, recursive=True)
    fs.invalidate_cache()


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
    if is_versioned(path):
        return f"{versioned.SCHEME}{versioned.split(path)[0]}"
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
