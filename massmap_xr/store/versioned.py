"""Versioned stores: a massmap store kept in an Icechunk repository (optional extra ``icechunk``).

A path ``icechunk://LOCATION`` names the store at the root of the Icechunk repository at
``LOCATION`` (a local directory, or ``s3://bucket/prefix`` reached with the same
``storage_options`` as any S3 store: ``endpoint_url``, ``key``, ``secret``, ``anon``,
``client_kwargs.region_name``).  Every store function takes such paths:

- each build (:func:`~massmap_xr.store.to_store`, ``init_store``, ``write_slabs``,
  ``finalize_store``), append (``append_halos``, ``append_realizations``) or replacement
  (``mode="w"``) runs in one writable session of branch ``main`` and becomes visible as one
  commit when it returns; a write that raises or is killed commits nothing, so readers never see
  a partial store on ``main``;
- readers open the head of ``main``, or a version: ``open_store(path, version=V)`` (or the path
  ``icechunk://LOCATION#V``) with ``V`` a branch, a tag or a snapshot id;
- :func:`history` lists the commits of a branch (``massmap info --history``).

Concurrent writers (several processes each writing slabs of one store) commit one after
another: a writer that finds ``main`` moved since it began rebases onto it, which succeeds when
the writes touch disjoint objects (``write_slabs`` of disjoint halo ranges) and otherwise raises
:class:`~massmap_xr.errors.VersionConflictError` naming both writes (e.g. two appends of halos
``[60, 90)``), with nothing of the failed write committed.

Writes in a versioned store are computed by dask's threaded scheduler of the writing process
(the session is not shared with distributed workers).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os
import threading

from massmap_xr.errors import StoreError, VersionConflictError

SCHEME = "icechunk://"
BRANCH = "main"

#: writable sessions of the writes running in this process, by repository
_ACTIVE: dict = {}
_REPOS: dict = {}
_LOCK = threading.RLock()


def is_versioned(path) -> bool:
    """Whether ``path`` names a store in an Icechunk repository (``icechunk://...``)."""
    return str(path).startswith(SCHEME)


def split(path) -> tuple[str, str | None]:
    """``(repository location, version or None)`` of an ``icechunk://LOCATION[#VERSION]`` path."""
    rest = str(path)[len(SCHEME):]
    location, _, version = rest.partition("#")
    if not location:
        raise StoreError(f"{str(path)!r}: an Icechunk path is icechunk://LOCATION (a directory or s3://bucket/prefix)")
    return location.rstrip("/") or "/", version or None


def at_version(path, version: str | None) -> str:
    """The path of ``path``'s store at ``version`` (a branch, tag or snapshot id)."""
    if version is None:
        return str(path)
    if not is_versioned(path):
        raise StoreError(f"open_store: version={version!r} needs a versioned store (a path icechunk://LOCATION); "
                         f"{str(path)!r} is a plain store, which has one version")
    return f"{SCHEME}{split(path)[0]}#{version}"


def _icechunk():
    try:
        import icechunk
    except ImportError:
        raise StoreError("versioned stores (icechunk:// paths) need the optional package icechunk: "
                         "pip install 'massmap_xr[icechunk]'") from None
    return icechunk


def _key(path, storage_options) -> tuple:
    location = split(path)[0]
    if "://" not in location:
        location = os.path.abspath(location)
    return location, json.dumps(storage_options or {}, sort_keys=True, default=str)


def _storage(location: str, storage_options):
    ic = _icechunk()
    so = dict(storage_options or {})
    if location.startswith("s3://"):
        bucket, _, prefix = location[5:].partition("/")
        ck = so.get("client_kwargs") or {}
        endpoint = so.get("endpoint_url") or ck.get("endpoint_url")
        return ic.s3_storage(bucket=bucket, prefix=prefix or None, endpoint_url=endpoint,
                             region=so.get("region") or ck.get("region_name") or ("us-east-1" if endpoint else None),
                             access_key_id=so.get("key"), secret_access_key=so.get("secret"),
                             session_token=so.get("token"), anonymous=so.get("anon") or None,
                             allow_http=bool(endpoint and endpoint.startswith("http://")),
                             force_path_style=bool(endpoint))
    if "://" in location and not location.startswith("file://"):
        raise StoreError(f"icechunk://{location}: versioned stores live in a local directory or on S3 "
                         "(icechunk://s3://bucket/prefix)")
    return ic.local_filesystem_storage(os.path.abspath(location.removeprefix("file://")))


def repository(path, storage_options=None, *, create: bool = False):
    """The Icechunk repository of ``path`` (created if ``create``); StoreError if there is none."""
    ic = _icechunk()
    key = _key(path, storage_options)
    with _LOCK:
        repo = _REPOS.get(key)
        if repo is None:
            storage = _storage(key[0], storage_options)
            if not ic.Repository.exists(storage):
                if not create:
                    raise StoreError(f"{str(path)!r} does not exist: no Icechunk repository at {key[0]!r}; build a "
                                     "store there with to_store / massmap build")
                repo = ic.Repository.open_or_create(storage)
            else:
                repo = ic.Repository.open(storage)
            _REPOS[key] = repo
    return repo


def _readonly(repo, path, version: str | None):
    version = version or BRANCH
    if version in repo.list_branches():
        return repo.readonly_session(branch=version)
    if version in repo.list_tags():
        return repo.readonly_session(tag=version)
    try:
        return repo.readonly_session(snapshot_id=version)
    except Exception:  # noqa: BLE001 - icechunk's error for an unknown or malformed id
        raise StoreError(f"{str(path)!r}: version {version!r} is not a branch ({sorted(repo.list_branches())}), "
                         f"a tag ({sorted(repo.list_tags())}) or a snapshot id of the repository; list the "
                         "commits with `massmap info --history`") from None


def session_store(path, storage_options=None, read_only: bool = False):
    """The zarr store of ``path``: the writable session of a write running in this process, or a
    read-only session of the requested version (default: the head of ``main``)."""
    _, version = split(path)
    if version is None:
        active = _ACTIVE.get(_key(path, storage_options))
        if active is not None:
            return active.store
    return _readonly(repository(path, storage_options), path, version).store


def exists(path, storage_options=None) -> bool:
    """Whether the repository exists and its (version of the) store has a root group."""
    from zarr.core.sync import sync

    try:
        repository(path, storage_options)
    except StoreError:  # no repository there
        return False
    store = session_store(path, storage_options, read_only=True)  # an unknown version raises
    return bool(sync(store.exists("zarr.json")))


def root_attrs(path, storage_options=None) -> dict:
    import zarr

    return dict(zarr.open_group(session_store(path, storage_options, read_only=True), mode="r",
                                zarr_format=3).attrs)


def clear(path, storage_options=None) -> None:
    """Delete the store's content in the running write (the old version stays in the history)."""
    from zarr.core.sync import sync

    active = _ACTIVE.get(_key(path, storage_options))
    if active is None:
        raise StoreError(f"{str(path)!r}: a versioned store is only changed inside a write (to_store, append_...)")
    sync(active.store.delete_dir(""))


@contextlib.contextmanager
def transaction(path, storage_options=None, message: str = "massmap write", *, operation: str = "write"):
    """Run the writes to ``path`` inside this block in one writable session of ``main``, committed
    (``message``) when the block ends without an exception; nothing is committed otherwise.

    Nested blocks (and the store functions called inside one) join the outer session.  A commit
    that finds ``main`` moved rebases onto it; when both changed the same objects it raises
    :class:`VersionConflictError` naming this write (``message``) and the commits it conflicts with.
    """
    import dask

    key = _key(path, storage_options)
    if key in _ACTIVE:
        yield _ACTIVE[key]
        return
    repo = repository(path, storage_options, create=True)
    session = repo.writable_session(BRANCH)
    base = session.snapshot_id
    _ACTIVE[key] = session
    try:
        with dask.config.set(scheduler="threads"):
            yield session
    finally:
        _ACTIVE.pop(key, None)
    if session.has_uncommitted_changes:
        _commit(repo, session, path, message, base)


def _commit(repo, session, path, message: str, base: str) -> str:
    ic = _icechunk()
    try:
        return session.commit(message)
    except ic.ConflictError:
        pass
    try:
        session.rebase(ic.ConflictDetector())
        return session.commit(message)
    except (ic.RebaseFailedError, ic.ConflictError) as exc:
        others = []
        for snap in repo.ancestry(branch=BRANCH):
            if snap.id == base:
                break
            others.append(f"{snap.id} {snap.message!r}")
        raise VersionConflictError(
            f"{str(path)!r}: this write ({message}) conflicts with what was committed to branch {BRANCH!r} since it "
            f"began: {'; '.join(others) or 'another commit'} ({type(exc).__name__}: {' '.join(str(exc).split())[:300]}). "
            "Nothing of this write was committed; run it again on the current store"
        ) from None


def _describe(operation: str, args: dict, path, storage_options) -> str:
    ds = args.get("ds")
    if operation in ("append_halos", "append_realizations"):
        dim, key = ("halo", "massmap_n_halo") if operation == "append_halos" else ("realization",
                                                                                      "massmap_n_realization")
        n = int(ds.sizes[dim]) if hasattr(ds, "sizes") and dim in ds.sizes else 0
        try:
            n0 = int(root_attrs(path, storage_options).get(key))
        except (StoreError, TypeError, ValueError, Exception):  # noqa: BLE001 - only for the message
            return f"{operation} of {n} {dim}s"
        return f"{operation} of {dim}s [{n0}, {n0 + n})"
    if operation == "write_slabs":
        if args.get("halo_range") is not None:
            a, b = args["halo_range"]
            return f"write_slabs of halos [{a}, {b})"
        if args.get("halo_chunks") is not None:
            return f"write_slabs of slabs {args['halo_chunks']}"
        return "write_slabs of every slab"
    if hasattr(ds, "sizes"):
        return (f"{operation} ({args.get('mode', 'w-')}) of {ds.sizes.get('halo', 0)} halos x "
                f"{ds.sizes.get('realization', 0)} realizations")
    return operation


def versioned_write(operation: str):
    """Decorator of a store function: on an ``icechunk://`` path it runs as one :func:`transaction`
    (one commit); on any other path it runs unchanged."""
    def deco(fn):
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            bound = sig.bind_partial(*args, **kwargs).arguments
            path, ds = bound.get("path"), bound.get("ds")
            if not is_versioned(path) and is_versioned(ds):  # the older (path, ds) order of the appends
                bound = {**bound, "path": ds, "ds": path}
                path = ds
            if not is_versioned(path):
                return fn(*args, **kwargs)
            if split(path)[1] is not None:
                raise StoreError(f"{operation}: {str(path)!r} names a version; writes go to the head of branch "
                                 f"{BRANCH!r}: give the path without #version")
            if operation == "to_store" and bound.get("resume"):
                so = bound.get("storage_options")
                if exists(path, so) and root_attrs(path, so).get("massmap_build_status") == "complete":
                    return str(path)
                if not exists(path, so):  # an interrupted versioned build was never committed: build it
                    kwargs = {**kwargs, "resume": False}
            so = bound.get("storage_options")
            with transaction(path, so, _describe(operation, bound, path, so), operation=operation):
                return fn(*args, **kwargs)
        return wrapper
    return deco


def history(path, storage_options=None, *, branch: str = BRANCH) -> list[dict]:
    """Commits of ``branch`` of a versioned store, newest first: ``snapshot_id``, ``written_at``
    (UTC ISO time) and ``message`` of each (the repository's initial commit included)."""
    if not is_versioned(path):
        raise StoreError(f"{str(path)!r} is not a versioned store (icechunk://LOCATION); it has no history")
    repo = repository(path, storage_options)
    return [{"snapshot_id": s.id, "written_at": s.written_at.isoformat(), "message": s.message}
            for s in repo.ancestry(branch=branch)]


def tag(path, name: str, storage_options=None, *, snapshot_id: str | None = None) -> str:
    """Tag a snapshot (default: the head of ``main``) of a versioned store; returns its id."""
    repo = repository(path, storage_options)
    sid = snapshot_id or repo.lookup_branch(BRANCH)
    repo.create_tag(name, sid)
    return sid
