"""Zarr stores of posterior cubes: write, open, verify.

Layout (Zarr format 3, specified in ``stores/README.md``): one group holding the cube's variables
as written by xarray, plus ``massmap_chunk_crc32(halo_chunk, realization_chunk)``, the CRC-32 of
every posterior chunk as written (-1 where a chunk has not been written yet).  The root
attribute ``massmap_build_status`` is ``"incomplete"`` from the moment the store is created and
becomes ``"complete"`` only after every chunk and its checksum are written, so a killed build
never looks valid.  A build is resumable: chunks whose checksum is recorded are not redone.
Metadata is not consolidated (see ``stores/README.md``).
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass

import dask
import numpy as np
import xarray as xr
import zarr

import massmap_xr
from massmap_xr.errors import IncompleteStoreError, SchemaVersionError, StoreError

__all__ = ["to_store", "open_store", "verify_store", "store_info", "StoreLayout", "CRC_NAME", "VerifyReport"]

CRC_NAME = "massmap_chunk_crc32"
STATUS = "massmap_build_status"
_REQUIRED_VARS = ("posterior", "z", "lum_obs", "alpha1", "alpha2", "alpha3", "alpha4", "S", "weight")
_REQUIRED_COORDS = ("halo", "mass", "log10_mass", "realization")
#: target bytes of one stored (compressed-before) posterior chunk
_CHUNK_BYTES = 16 * 2**20


def _codec():
    from zarr.codecs import BloscCodec

    return BloscCodec(cname="zstd", clevel=3, shuffle="shuffle", typesize=4)


@dataclass(frozen=True)
class StoreLayout:
    """Chunking of a store's posterior: halos per slab and realizations per chunk."""

    n_halo: int
    n_mass: int
    n_realization: int
    halo_chunk: int
    realization_chunk: int

    def __post_init__(self):
        for k in ("halo_chunk", "realization_chunk"):
            if getattr(self, k) < 1:
                raise StoreError(f"store layout: {k} must be >= 1, got {getattr(self, k)}")

    @property
    def n_halo_chunks(self) -> int:
        return -(-self.n_halo // self.halo_chunk)

    @property
    def n_realization_chunks(self) -> int:
        return -(-self.n_realization // self.realization_chunk)

    def halo_slice(self, i: int) -> slice:
        return slice(i * self.halo_chunk, min((i + 1) * self.halo_chunk, self.n_halo))

    def realization_slice(self, j: int) -> slice:
        return slice(j * self.realization_chunk, min((j + 1) * self.realization_chunk, self.n_realization))

    def to_dict(self) -> dict:
        return {k: int(getattr(self, k)) for k in ("n_halo", "n_mass", "n_realization", "halo_chunk", "realization_chunk")}

    @classmethod
    def from_dict(cls, d: dict) -> StoreLayout:
        return cls(**{k: int(d[k]) for k in ("n_halo", "n_mass", "n_realization", "halo_chunk", "realization_chunk")})


def _default_realization_chunk(halo_chunk: int, n_mass: int, n_r: int) -> int:
    rc = max(1, _CHUNK_BYTES // (4 * halo_chunk * n_mass))
    return int(min(rc, n_r))


# --------------------------------------------------------------------------- fsspec helpers
def _fs(path, storage_options):
    import fsspec

    fs, root = fsspec.core.url_to_fs(str(path), **(storage_options or {}))
    return fs, root.rstrip("/")


def _is_local(path) -> bool:
    s = str(path)
    return "://" not in s or s.startswith("file://")


def _local_path(path) -> str:
    s = str(path)
    return s[len("file://"):] if s.startswith("file://") else s


def _zarr_store(path, storage_options=None, read_only=False):
    if _is_local(path):
        return zarr.storage.LocalStore(_local_path(path), read_only=read_only)
    return zarr.storage.FsspecStore.from_url(str(path), storage_options=storage_options or {}, read_only=read_only)


def _exists(path, storage_options=None) -> bool:
    fs, root = _fs(path, storage_options)
    return fs.exists(root)


def _create_root(path, storage_options, mode):
    """Create the store's directory; atomic for local paths (two racing builds cannot both win)."""
    fs, root = _fs(path, storage_options)
    if fs.exists(root):
        if mode == "w-":
            raise StoreError(
                f"store {str(path)!r} already exists; refusing to overwrite it. Pass mode='w' to replace it, "
                "or resume=True to finish an interrupted build"
            )
        fs.rm(root, recursive=True)
    if _is_local(path):
        try:
            os.makedirs(os.path.dirname(os.path.abspath(_local_path(path))), exist_ok=True)
            os.mkdir(_local_path(path))
        except FileExistsError:
            raise StoreError(f"store {str(path)!r} was created by another process while this build started") from None
    else:
        fs.mkdir(root, create_parents=True)


# --------------------------------------------------------------------------- writing
def _check_cube(ds: xr.Dataset) -> None:
    if not isinstance(ds, xr.Dataset):
        raise StoreError(f"to_store: expected a cube Dataset, got {type(ds).__name__}")
    missing = [k for k in (*_REQUIRED_VARS, *_REQUIRED_COORDS) if k not in ds.variables]
    if missing or "massmap_schema_version" not in ds.attrs:
        raise StoreError(
            f"to_store: not a massmap cube (missing {missing or ['attribute massmap_schema_version']}); "
            "build one with build_posterior()"
        )
    if ds["posterior"].dims != ("halo", "mass", "realization"):
        raise StoreError(f"to_store: posterior must have dims (halo, mass, realization), has {ds['posterior'].dims}")


def _layout_for(ds: xr.Dataset, realization_chunk: int | None) -> tuple[StoreLayout, xr.Dataset]:
    post = ds["posterior"]
    n_h, n_m, n_r = post.shape
    if post.chunks is None:
        post = post.chunk({"halo": max(1, min(n_h, 512)), "mass": -1, "realization": -1})
    hc = post.chunks[0]
    if len(set(hc[:-1])) > 1 or (len(hc) > 1 and hc[-1] > hc[0]):
        post = post.chunk({"halo": hc[0]})
    post = post.chunk({"mass": -1, "realization": -1})
    h = post.chunks[0][0]
    rc = _default_realization_chunk(h, n_m, n_r) if realization_chunk is None else int(realization_chunk)
    layout = StoreLayout(n_h, n_m, n_r, h, min(max(rc, 1), n_r))
    return layout, ds.assign(posterior=post)


def _encoding(ds: xr.Dataset, layout: StoreLayout) -> dict:
    enc = {"posterior": {"chunks": (layout.halo_chunk, layout.n_mass, layout.realization_chunk),
                         "compressors": (_codec(),), "_FillValue": np.float32(np.nan)}}
    for k, v in ds.variables.items():
        if k != "posterior":
            enc[k] = {"chunks": v.shape if v.ndim else None} if v.ndim else {}
            if v.dtype.kind == "f":
                enc[k]["_FillValue"] = np.nan
    return {k: {kk: vv for kk, vv in e.items() if vv is not None} for k, e in enc.items()}


def _crcs(block: np.ndarray, layout: StoreLayout) -> list[int]:
    return [zlib.crc32(np.ascontiguousarray(block[:, :, layout.realization_slice(j)]).tobytes())
            for j in range(layout.n_realization_chunks)]


def _write_slab(block: np.ndarray, i: int, path: str, layout_dict: dict, storage_options) -> tuple[int, list[int]]:
    """Write one halo slab of the posterior and return its per-chunk CRC-32s (runs on workers)."""
    layout = StoreLayout.from_dict(layout_dict)
    block = np.ascontiguousarray(block, dtype=np.float32)
    arr = zarr.open_array(_zarr_store(path, storage_options), path="posterior", mode="r+")
    arr[layout.halo_slice(i)] = block
    return i, _crcs(block, layout)


def _progress(total, desc, enabled):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="halo", unit_scale=True, disable=not enabled, smoothing=0.1)


def _n_workers() -> int:
    try:
        from distributed import get_client

        client = get_client()
        return max(1, sum(client.nthreads().values()))
    except (ImportError, ValueError):
        return max(1, os.cpu_count() or 1)


def to_store(
    ds: xr.Dataset,
    path,
    *,
    mode: str = "w-",
    resume: bool = False,
    realization_chunk: int | None = None,
    progress: bool = True,
    storage_options: dict | None = None,
) -> str:
    """Write a posterior cube to a Zarr (format 3) store, slab by slab.

    Parameters
    ----------
    ds : xarray.Dataset
        A cube from :func:`~massmap_xr.cube.build_posterior` (lazy is best: blocks are computed as
        they are written, so memory stays bounded by a few slabs).
    path : str or path-like
        Local path or fsspec URL (``file://``, ``memory://``, object storage).
    mode : {"w-", "w"}
        ``"w-"`` (default) refuses an existing store; ``"w"`` replaces it.
    resume : bool
        Finish an interrupted build of the same cube: slabs whose checksums are recorded are kept.
    realization_chunk : int, optional
        Realizations per stored chunk (default: chunks of about 16 MiB).
    progress : bool
        Show a progress bar (halos/s and ETA).
    storage_options : dict, optional
        Passed to fsspec for URLs.

    Returns
    -------
    str
        The store path.
    """
    _check_cube(ds)
    if mode not in ("w-", "w"):
        raise StoreError(f"to_store: mode must be 'w-' (refuse existing) or 'w' (replace), got {mode!r}")
    path = str(path)
    layout, ds = _layout_for(ds, realization_chunk)
    if resume and _exists(path, storage_options):
        layout = _check_resumable(ds, path, storage_options)
    else:
        _create_root(path, storage_options, mode)
        _write_template(ds, path, layout, storage_options)
    store = _zarr_store(path, storage_options)
    group = zarr.open_group(store, mode="r+")
    crc_arr = group[CRC_NAME]
    done = np.all(crc_arr[...] >= 0, axis=1)
    todo = [i for i in range(layout.n_halo_chunks) if not done[i]]
    blocks = ds["posterior"].data.to_delayed().ravel()
    write = dask.delayed(_write_slab, pure=False)
    batch = max(2, 2 * _n_workers())
    with _progress(layout.n_halo, "massmap build", progress) as bar:
        bar.update(sum(layout.halo_slice(i).stop - layout.halo_slice(i).start for i in range(layout.n_halo_chunks) if done[i]))
        for b0 in range(0, len(todo), batch):
            tasks = [write(blocks[i], i, path, layout.to_dict(), storage_options) for i in todo[b0:b0 + batch]]
            for i, crcs in dask.compute(*tasks):
                crc_arr[i, :] = np.asarray(crcs, dtype=np.int64)
                s = layout.halo_slice(i)
                bar.update(s.stop - s.start)
    _finalize(group, ds, layout)
    return path


def _write_template(ds, path, layout, storage_options):
    attrs = {**ds.attrs, STATUS: "incomplete", "massmap_layout": json.dumps(layout.to_dict())}
    tmpl = ds.copy()
    tmpl.attrs = attrs
    tmpl.to_zarr(_zarr_store(path, storage_options), mode="w", compute=False, consolidated=False,
                 zarr_format=3, encoding=_encoding(tmpl, layout))
    group = zarr.open_group(_zarr_store(path, storage_options), mode="r+")
    group.create_array(
        CRC_NAME, shape=(layout.n_halo_chunks, layout.n_realization_chunks),
        chunks=(1, layout.n_realization_chunks), dtype="int64", fill_value=-1,
        dimension_names=("halo_chunk", "realization_chunk"),
        attributes={"long_name": "CRC-32 of each posterior chunk as written (-1: not written)"},
    )


def _check_resumable(ds, path, storage_options) -> StoreLayout:
    group = zarr.open_group(_zarr_store(path, storage_options), mode="r")
    attrs = dict(group.attrs)
    if "massmap_schema_version" not in attrs or CRC_NAME not in group:
        raise StoreError(f"cannot resume {path!r}: it is not a massmap store")
    for key in ("catalog_hash", "hyper_hash", "method"):
        if str(attrs.get(key)) != str(ds.attrs.get(key)):
            raise StoreError(
                f"cannot resume {path!r}: its {key} differs from the cube being written; resume needs the "
                "same catalogue, hyperparameters and method (or write a new store with mode='w')"
            )
    stored = StoreLayout.from_dict(json.loads(attrs["massmap_layout"]))
    layout, _ = _layout_for(ds, stored.realization_chunk)
    if layout != stored or not np.array_equal(group["mass"][...], ds["mass"].values):
        raise StoreError(
            f"cannot resume {path!r}: stored layout {stored.to_dict()} or mass grid differs from the cube's "
            f"{layout.to_dict()}; rebuild with the same chunks and mass grid"
        )
    return stored


def _finalize(group, ds, layout):
    crc = group[CRC_NAME][...]
    if np.any(crc < 0):
        raise StoreError("internal: finishing a build with unwritten chunks")
    digest = zlib.crc32(np.ascontiguousarray(crc).tobytes())
    group.attrs.update({"massmap_checksum_table_crc32": int(digest), "massmap_n_halo": int(layout.n_halo),
                        "massmap_n_realization": int(layout.n_realization)})
    group.attrs[STATUS] = "complete"


# --------------------------------------------------------------------------- reading
def _check_schema(attrs: dict, path) -> None:
    version = attrs.get("massmap_schema_version")
    if version is None:
        raise StoreError(
            f"{str(path)!r} is a Zarr store but not a massmap cube (no 'massmap_schema_version' attribute); "
            "open it with xarray.open_zarr, or build a cube with build_posterior()"
        )
    try:
        major, minor = (int(v) for v in str(version).split(".")[:2])
    except ValueError:
        raise SchemaVersionError(f"{str(path)!r}: unreadable schema version {version!r}") from None
    ours = tuple(int(v) for v in massmap_xr.SCHEMA_VERSION.split("."))
    if (major, minor) > ours:
        raise SchemaVersionError(
            f"{str(path)!r} was written with massmap schema version {version}, newer than the {massmap_xr.SCHEMA_VERSION} "
            "this massmap_xr reads; upgrade massmap_xr"
        )
    if major < ours[0]:
        raise SchemaVersionError(f"{str(path)!r}: schema version {version} is older than supported ({ours[0]}.x)")


def open_store(path, *, allow_incomplete: bool = False, storage_options: dict | None = None, chunks="store") -> xr.Dataset:
    """Open a massmap store lazily (dask-backed, read-only) and validate its schema.

    Parameters
    ----------
    path : str or path-like
        Local path or fsspec URL.
    allow_incomplete : bool, default False
        Open a store whose build has not finished (unwritten chunks read as NaN).
    storage_options : dict, optional
        fsspec options for URLs.
    chunks : "store" or dict
        ``"store"`` uses the stored chunks; a dict is passed to :func:`xarray.open_zarr`.

    Raises
    ------
    StoreError
        If the path is missing or not a massmap cube; :class:`SchemaVersionError` for an unknown
        schema version; :class:`IncompleteStoreError` for an unfinished build.
    """
    path = str(path)
    if not _exists(path, storage_options):
        raise StoreError(f"store {path!r} does not exist")
    try:
        group = zarr.open_group(_zarr_store(path, storage_options, read_only=True), mode="r")
    except (zarr.errors.GroupNotFoundError, FileNotFoundError, ValueError) as exc:
        raise StoreError(f"{path!r} is not a Zarr group ({exc}); expected a massmap cube store") from None
    attrs = dict(group.attrs)
    _check_schema(attrs, path)
    status = attrs.get(STATUS)
    if status != "complete" and not allow_incomplete:
        raise IncompleteStoreError(
            f"store {path!r} is incomplete (build status {status!r}): its build was interrupted or is still "
            "running. Finish it with `massmap build ... --resume` / to_store(..., resume=True), or pass "
            "allow_incomplete=True to look at it anyway"
        )
    ds = xr.open_zarr(
        _zarr_store(path, storage_options, read_only=True), consolidated=False, zarr_format=3,
        chunks={} if chunks == "store" else chunks, drop_variables=[CRC_NAME],
    )
    missing = [k for k in (*_REQUIRED_VARS, *_REQUIRED_COORDS) if k not in ds.variables]
    if missing:
        raise StoreError(f"{path!r}: massmap store is missing variable(s) {missing}; it is damaged")
    if ds["posterior"].dims != ("halo", "mass", "realization"):
        raise StoreError(f"{path!r}: posterior has dims {ds['posterior'].dims}, expected (halo, mass, realization)")
    for k in (STATUS, "massmap_layout", "massmap_checksum_table_crc32"):
        ds.attrs.pop(k, None)
    ds.encoding["source"] = path
    return ds


def store_info(path, storage_options=None) -> dict:
    """Summary of a store (sizes, status, schema, method, chunks) without reading the cube."""
    group = zarr.open_group(_zarr_store(str(path), storage_options, read_only=True), mode="r")
    attrs = dict(group.attrs)
    _check_schema(attrs, path)
    post = group["posterior"]
    crc = group[CRC_NAME][...] if CRC_NAME in group else np.zeros((0, 0))
    return {
        "path": str(path),
        "status": attrs.get(STATUS),
        "schema_version": attrs.get("massmap_schema_version"),
        "massmap_version": attrs.get("massmap_version"),
        "method": attrs.get("method"),
        "shape": dict(zip(("halo", "mass", "realization"), post.shape, strict=True)),
        "chunks": dict(zip(("halo", "mass", "realization"), post.chunks, strict=True)),
        "chunks_written": f"{int((crc >= 0).sum())}/{crc.size}",
        "uncompressed_bytes": int(np.prod(post.shape) * 4),
        "prior": attrs.get("prior", ""),
    }


@dataclass
class VerifyReport:
    """Result of :func:`verify_store`: ``ok`` and one line per problem."""

    path: str
    n_chunks: int
    problems: list

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        head = f"{self.path}: {self.n_chunks} chunks checked, "
        if self.ok:
            return head + "all intact"
        return head + f"{len(self.problems)} problem(s):\n  - " + "\n  - ".join(self.problems)


def verify_store(path, *, storage_options: dict | None = None, check_normalisation: bool = True) -> VerifyReport:
    """Re-check every posterior chunk of a store against the checksums recorded at write time.

    Each damaged chunk (altered, truncated, deleted, unreadable) is reported by its halo and
    realization index ranges; a missing chunk is never taken for zeros.  Also checks the build
    status, the halo count and (optionally) the normalisation of every (halo, realization).
    """
    path = str(path)
    problems = []
    try:
        group = zarr.open_group(_zarr_store(path, storage_options, read_only=True), mode="r")
    except Exception as exc:  # noqa: BLE001 - anything here means unreadable metadata
        return VerifyReport(path, 0, [f"metadata unreadable: {exc}"])
    attrs = dict(group.attrs)
    try:
        _check_schema(attrs, path)
        layout = StoreLayout.from_dict(json.loads(attrs["massmap_layout"]))
        post = group["posterior"]
        crc = group[CRC_NAME][...]
        log10_mass = group["log10_mass"][...]
    except Exception as exc:  # noqa: BLE001
        return VerifyReport(path, 0, [f"metadata damaged: {exc}"])
    if attrs.get(STATUS) != "complete":
        problems.append(f"build status is {attrs.get(STATUS)!r}, not 'complete'")
    if tuple(post.shape) != (layout.n_halo, layout.n_mass, layout.n_realization):
        problems.append(f"posterior shape {post.shape} differs from the recorded layout {layout.to_dict()}")
        return VerifyReport(path, 0, problems)
    if attrs.get(STATUS) == "complete" and attrs.get("massmap_n_halo") != layout.n_halo:
        problems.append(f"halo count {layout.n_halo} differs from the recorded {attrs.get('massmap_n_halo')}")
    from massmap_xr.kernel import trapezoid_weights

    w = trapezoid_weights(log10_mass)
    n = 0
    for i in range(layout.n_halo_chunks):
        hs = layout.halo_slice(i)
        for j in range(layout.n_realization_chunks):
            rs = layout.realization_slice(j)
            n += 1
            where = f"chunk ({i}, {j}): halos [{hs.start}, {hs.stop}), realizations [{rs.start}, {rs.stop})"
            if crc[i, j] < 0:
                problems.append(f"{where}: never written")
                continue
            try:
                block = np.ascontiguousarray(post[hs, :, rs])
            except Exception as exc:  # noqa: BLE001 - a damaged chunk can raise anything from the codec
                problems.append(f"{where}: unreadable ({type(exc).__name__}: {exc})")
                continue
            if zlib.crc32(block.tobytes()) != int(crc[i, j]):
                kind = "missing (reads as fill value)" if np.isnan(block).all() else "altered"
                problems.append(f"{where}: checksum mismatch, chunk {kind}")
                continue
            if check_normalisation:
                norm = np.einsum("m,hmr->hr", w, block.astype(np.float64))
                if not np.allclose(norm, 1.0, atol=1e-4):
                    problems.append(f"{where}: normalisation off (worst {float(np.abs(norm - 1).max()):.3g})")
    return VerifyReport(path, n, problems)
