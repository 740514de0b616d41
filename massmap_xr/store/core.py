"""Zarr stores of posterior cubes: write, resume, append, open, verify.

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
   for local paths: two builds racing for one new path cannot both succeed; ``mode="w"``
   deletes an existing store only at this point) and the template written with status
   ``"incomplete"``; the root attribute ``massmap_template`` becomes ``"complete"`` once every
   array exists;
2. halo slabs are written, each followed by its row of checksums (by one process, or by several
   processes each writing disjoint, slab-aligned halo ranges: :func:`write_slabs`); a slab whose
   (halo, realization) rows are not normalised within ``NORM_ATOL`` or hold NaN/inf is refused
   (:class:`StoreError`) and not written, so such a store never becomes complete;
3. :func:`finalize_store` checks that every checksum is present, records invariants (halo and
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
import re
import uuid
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import dask
import numpy as np
import xarray as xr
import zarr

from massmap_xr._version import SCHEMA_VERSION
from massmap_xr.cube import STORE_COORDS, STORE_VARIABLES, validate_cube
from massmap_xr.errors import (
    IncompleteStoreError,
    SchemaVersionError,
    StoreError,
    format_offenders,
)

__all__ = [
    "CRC_NAME",
    "NORM_NAME",
    "StoreLayout",
    "VerifyReport",
    "append_halos",
    "append_realizations",
    "build_like_store",
    "finalize_store",
    "init_store",
    "open_store",
    "store_info",
    "to_store",
    "verify_store",
    "write_slabs",
]

CRC_NAME = "massmap_chunk_crc32"
NORM_NAME = "massmap_chunk_norm_error"
STATUS = "massmap_build_status"
TEMPLATE = "massmap_template"
LAYOUT = "massmap_layout"
BUILD_ID = "massmap_build_id"
PENDING = "massmap_pending"
TABLE_CRC = "massmap_checksum_table_crc32"
VAR_CRC = "massmap_variable_crc32"
N_HALO = "massmap_n_halo"
N_REAL = "massmap_n_realization"
#: internal attributes of a store, never part of the Dataset open_store returns
_BOOKKEEPING = (STATUS, TEMPLATE, LAYOUT, BUILD_ID, PENDING, TABLE_CRC, VAR_CRC, N_HALO, N_REAL)
_TABLES = (CRC_NAME, NORM_NAME)
#: attributes that must agree between a store and a cube written into it
_MODEL_ATTRS = ("method", "n_lum", "mc_seed", "sigma_obs_default")
#: target bytes of one inner (compression) chunk of the posterior
_INNER_BYTES = 512 * 2**10
#: preferred halos per inner chunk (one-halo reads decompress inner chunks of this many halos)
_INNER_HALOS = 32
#: tolerance of the trapezoid normalisation checked by verify_store
NORM_ATOL = 1e-4


def _codec():
    """Compressor of the posterior's inner chunks (see ``stores/README.md`` for the measurements)."""
    from zarr.codecs import BloscCodec

    return BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle", typesize=4)


# --------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class StoreLayout:
    """Chunking of a store's posterior.

    Parameters
    ----------
    n_halo, n_mass, n_realization : int
        Shape of ``posterior``.
    halo_chunk : int
        Halos per slab: the unit of writing, of region alignment and of the checksum table rows.
        With sharding it is the shard's halo extent.
    realization_chunk : int
        Realizations per stored (inner) chunk: the checksum table's column unit.
    inner_halo_chunk : int, optional
        Halos per inner chunk (divides ``halo_chunk``); defaults to ``halo_chunk`` (no sharding).
    realization_shard : int, optional
        Realizations per shard (a multiple of ``realization_chunk``); defaults to
        ``realization_chunk`` (no sharding).
    """

    n_halo: int
    n_mass: int
    n_realization: int
    halo_chunk: int
    realization_chunk: int
    inner_halo_chunk: int = 0
    realization_shard: int = 0

    def __post_init__(self):
        if self.inner_halo_chunk == 0:
            object.__setattr__(self, "inner_halo_chunk", self.halo_chunk)
        if self.realization_shard == 0:
            object.__setattr__(self, "realization_shard", self.realization_chunk)
        for k in ("halo_chunk", "realization_chunk", "inner_halo_chunk", "realization_shard"):
            if getattr(self, k) < 1:
                raise StoreError(f"store layout: {k} must be >= 1, got {getattr(self, k)}")
        for k in ("n_halo", "n_mass", "n_realization"):
            if getattr(self, k) < 0:
                raise StoreError(f"store layout: {k} must be >= 0, got {getattr(self, k)}")
        if self.halo_chunk % self.inner_halo_chunk:
            raise StoreError(
                f"store layout: inner_halo_chunk ({self.inner_halo_chunk}) must divide halo_chunk ({self.halo_chunk})"
            )
        if self.realization_shard % self.realization_chunk:
            raise StoreError(
                f"store layout: realization_shard ({self.realization_shard}) must be a multiple of "
                f"realization_chunk ({self.realization_chunk})"
            )

    @property
    def sharded(self) -> bool:
        """True when the posterior is stored in shards holding several inner chunks."""
        return self.inner_halo_chunk != self.halo_chunk or self.realization_shard != self.realization_chunk

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

    def describe_cell(self, i: int, j: int) -> str:
        """``"chunk (i, j): halos [a, b), realizations [c, d)"`` for messages."""
        hs, rs = self.halo_slice(i), self.realization_slice(j)
        return f"chunk ({i}, {j}): halos [{hs.start}, {hs.stop}), realizations [{rs.start}, {rs.stop})"

    def replace(self, **kw) -> StoreLayout:
        return StoreLayout(**{**self.to_dict(), **kw})

    _KEYS = ("n_halo", "n_mass", "n_realization", "halo_chunk", "realization_chunk", "inner_halo_chunk",
             "realization_shard")

    def to_dict(self) -> dict:
        return {k: int(getattr(self, k)) for k in self._KEYS}

    @classmethod
    def from_dict(cls, d: dict) -> StoreLayout:
        try:
            return cls(**{k: int(d.get(k, 0)) if k in ("inner_halo_chunk", "realization_shard") else int(d[k])
                          for k in cls._KEYS})
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"store layout record is malformed ({exc!r}): {d!r}") from None


def _default_inner_halo_chunk(halo_chunk: int) -> int:
    """Largest divisor of ``halo_chunk`` not above 32 (the whole slab if that leaves < 4 halos)."""
    if halo_chunk <= _INNER_HALOS:
        return halo_chunk
    best = max(d for d in range(1, _INNER_HALOS + 1) if halo_chunk % d == 0)
    return best if best >= 4 else halo_chunk


def _as_count(value, name: str, what: str = "to_store") -> int:
    """``value`` as an int (an integer, or a float with an integral value); StoreError otherwise."""
    if isinstance(value, (bool, np.bool_)):
        ok = False
    elif isinstance(value, (int, np.integer)):
        ok = True
    else:
        ok = isinstance(value, (float, np.floating)) and float(value).is_integer()
    if not ok:
        raise StoreError(f"{what}: {name} must be a positive integer (a number of chunk entries), got {value!r} "
                         f"of type {type(value).__name__}; pass e.g. {name}=8, or None for the default")
    return int(value)


def _make_layout(n_h, n_m, n_r, halo_chunk, realization_chunk=None, inner_halo_chunk=None) -> StoreLayout:
    ih = _default_inner_halo_chunk(halo_chunk) if inner_halo_chunk is None else _as_count(inner_halo_chunk,
                                                                                         "inner_halo_chunk")
    if ih < 1 or halo_chunk % ih:
        raise StoreError(f"inner_halo_chunk must be a positive divisor of the halo slab size {halo_chunk}, got {ih}")
    if realization_chunk is None:
        rc = max(1, _INNER_BYTES // (4 * ih * max(n_m, 1)))
    else:
        rc = _as_count(realization_chunk, "realization_chunk")
        if rc < 1:
            raise StoreError(f"realization_chunk must be >= 1, got {realization_chunk!r}")
    rc = int(min(rc, max(n_r, 1)))
    shard_r = -(-max(n_r, 1) // rc) * rc
    return StoreLayout(n_h, n_m, n_r, int(halo_chunk), rc, ih, shard_r)


def _layout_for(ds: xr.Dataset, realization_chunk=None, inner_halo_chunk=None) -> tuple[StoreLayout, xr.Dataset]:
    """Layout of a new store for ``ds`` and ``ds`` with its posterior in regular halo slabs.

    The posterior is taken in the canonical (halo, mass, realization) order whatever its dims order;
    irregular halo chunks are made regular with the largest of them as the slab size (the first
    chunk may be a partial one).
    """
    post = ds["posterior"].transpose("halo", "mass", "realization")
    n_h, n_m, n_r = post.shape
    if post.chunks is None:
        post = post.chunk({"halo": max(1, min(n_h, 512)), "mass": -1, "realization": -1})
    hc = post.chunks[0]
    size = max(1, max(hc, default=1))
    if any(c != size for c in hc[:-1]) or (hc and hc[-1] > size):
        post = post.chunk({"halo": size})
    post = post.chunk({"mass": -1, "realization": -1})
    layout = _make_layout(n_h, n_m, n_r, post.chunks[0][0], realization_chunk, inner_halo_chunk)
    return layout, ds.assign(posterior=post)


def _slab_chunks(start: int, n: int, hc: int) -> tuple[int, ...]:
    """Chunk sizes along halo of ``n`` halos starting at store index ``start`` so that block
    boundaries fall on slab boundaries (multiples of ``hc``)."""
    out, pos, end = [], start, start + n
    while pos < end:
        stop = min((pos // hc + 1) * hc, end)
        out.append(stop - pos)
        pos = stop
    return tuple(out)


def _posterior_blocks(ds: xr.Dataset, start: int, hc: int):
    """Delayed posterior blocks of ``ds`` aligned to the store's slabs (``ds`` starts at ``start``)."""
    post = ds["posterior"].transpose("halo", "mass", "realization").data
    import dask.array as da

    if not isinstance(post, da.Array):
        post = da.from_array(np.asarray(post), chunks=(hc, -1, -1))
    want = (_slab_chunks(start, post.shape[0], hc), (post.shape[1],), (post.shape[2],))
    if post.chunks != want:
        post = post.rechunk(want)
    return post.to_delayed().ravel()


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
    return s.removeprefix("file://")


def _zarr_store(path, storage_options=None, read_only=False):
    if _is_local(path):
        return zarr.storage.LocalStore(_local_path(path), read_only=read_only)
    return zarr.storage.FsspecStore.from_url(str(path), storage_options=storage_options or {}, read_only=read_only)


def _exists(path, storage_options=None) -> bool:
    fs, root = _fs(path, storage_options)
    return fs.exists(root)


def _open_group(path, storage_options=None, mode="r"):
    try:
        return zarr.open_group(_zarr_store(path, storage_options, read_only=mode == "r"), mode=mode)
    except (zarr.errors.GroupNotFoundError, FileNotFoundError, KeyError, ValueError, TypeError) as exc:
        raise StoreError(f"{str(path)!r} is not a readable Zarr group ({type(exc).__name__}: {exc}); "
                         "expected a massmap cube store") from None


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
            raise StoreError(
                f"store {str(path)!r} was created by another process while this build started; "
                "two builds cannot write the same new store"
            ) from None
    else:
        fs.mkdir(root, create_parents=True)


_PARTIAL = re.compile(r"\.[0-9a-f]{32}\.partial$")


def _remove_partial_files(path) -> int:
    """Delete temporary files left by writes killed before their rename (local stores only)."""
    if not _is_local(path):
        return 0
    n = 0
    for d, _, files in os.walk(_local_path(path)):
        for f in files:
            if _PARTIAL.search(f):
                os.unlink(os.path.join(d, f))
                n += 1
    return n


# --------------------------------------------------------------------------- small helpers
def _jsonable(v):
    return json.loads(json.dumps(v, sort_keys=True, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def _same(a, b) -> bool:
    return _jsonable(a) == _jsonable(b)


def _dims(arr) -> tuple:
    return tuple(arr.metadata.dimension_names or ())


def _arrays(group) -> dict:
    return {name: arr for name, arr in group.arrays()}


def _read_layout(attrs: dict, path) -> StoreLayout:
    if LAYOUT not in attrs:
        raise StoreError(f"{str(path)!r}: massmap store has no {LAYOUT!r} attribute; it is damaged or was "
                         "not written by massmap_xr. Rebuild it with to_store(..., mode='w')")
    raw = attrs[LAYOUT]
    return StoreLayout.from_dict(json.loads(raw) if isinstance(raw, str) else raw)


def _template_complete(group, attrs) -> bool:
    if attrs.get(TEMPLATE) == "complete" or attrs.get(STATUS) == "complete":
        return True
    # stores written before the template flag existed: a recorded checksum proves the template was done
    if CRC_NAME in group and LAYOUT in attrs:
        try:
            return bool(np.any(group[CRC_NAME][...] >= 0))
        except Exception:  # noqa: BLE001 - unreadable table: not provably complete
            return False
    return False


def _trapezoid(group) -> np.ndarray:
    from massmap_xr.kernels.posterior import trapezoid_weights

    return trapezoid_weights(np.asarray(group["log10_mass"][...], dtype=float))


def _crc(a: np.ndarray) -> int:
    """CRC-32 of an array's bytes in C order (no copy when it is already contiguous)."""
    return zlib.crc32(memoryview(np.ascontiguousarray(a)).cast("B"))


def _norm_error(block: np.ndarray, w: np.ndarray) -> np.ndarray:
    """|trapezoid integral over mass - 1| for every (halo, realization) of ``block``, float64."""
    return np.abs(np.einsum("m,hmr->hr", w, block, dtype=np.float64) - 1.0)


def _cell_stats(block: np.ndarray, r0: int, rc: int, w: np.ndarray | None,
                err: np.ndarray | None = None) -> tuple[list[int], list[float]]:
    """CRC-32 and normalisation error of each realization cell of ``block`` (cells start at ``r0``,
    a multiple of ``rc``, and end at the block's end); no normalisation when ``w`` is None.
    ``err`` is ``_norm_error(block, w)`` when already computed."""
    n_r = block.shape[2]
    crcs = [_crc(block[:, :, s:s + rc]) for s in range(0, n_r, rc)]
    if w is None:
        return crcs, [float("nan")] * len(crcs)
    err = _norm_error(block, w) if err is None else err
    errs = [float(np.max(err[:, s:s + rc])) if err[:, s:s + rc].size else 0.0 for s in range(0, n_r, rc)]
    return crcs, errs


def _write_block(block, path, storage_options, layout_dict: dict, h0: int, r0: int, w, old=None):
    """Write ``block`` at ``posterior[h0:, :, r0:]`` and return its cells' checksums (runs on workers).

    ``old`` (append only) describes stored data to keep in front of ``block``: a dict with the
    region ``h``/``r`` to read, the ``axis`` to concatenate along, and the checksums ``crc`` it had
    when the append started (verified before anything is rewritten).

    A block with a (halo, realization) row that is not normalised (|trapezoid integral - 1| >
    ``NORM_ATOL``) or holds NaN/inf is not written: a dict ``{"halos", "realizations", "n_bad",
    "worst"}`` (store indices of the offending rows) is returned instead of the checksums.
    """
    layout = StoreLayout.from_dict(layout_dict)
    block = np.asarray(block, dtype=np.float32)
    arr = zarr.open_array(_zarr_store(path, storage_options), path="posterior", mode="r+")
    if old is not None:
        (a, b), (c, d) = old["h"], old["r"]
        prev = np.asarray(arr[a:b, :, c:d])
        crcs, _ = _cell_stats(prev, c, layout.realization_chunk, None)
        if [int(x) for x in crcs] != [int(x) for x in old["crc"]]:
            bad = [k for k, (x, y) in enumerate(zip(crcs, old["crc"], strict=True)) if int(x) != int(y)]
            raise StoreError(
                f"{str(path)!r}: stored posterior halos [{a}, {b}), realizations [{c}, {d}) no longer match their "
                f"checksums (realization cells {bad}); the store was damaged during the append. Restore it from a "
                "backup or rebuild it"
            )
        block = np.concatenate([prev, block], axis=old["axis"])
    block = np.ascontiguousarray(block)
    err = None
    if w is not None and block.size:
        err = _norm_error(block, w)
        bad = ~(err <= NORM_ATOL)  # NaN and inf included
        if bad.any():
            hh, rr = np.nonzero(bad)
            finite = err[np.isfinite(err)]
            return {"halos": sorted({int(h0 + h) for h in hh}), "realizations": sorted({int(r0 + r) for r in rr}),
                    "n_bad": int(bad.sum()), "n_rows": int(bad.size),
                    "worst": float("inf") if finite.size < err.size else float(np.max(finite))}
    arr[h0:h0 + block.shape[0], :, r0:r0 + block.shape[2]] = block
    return _cell_stats(block, r0, layout.realization_chunk, w, err)


def _n_workers() -> int:
    try:
        from distributed import get_client

        client = get_client()
        return max(1, sum(client.nthreads().values()))
    except (ImportError, ValueError):
        return max(1, os.cpu_count() or 1)


def _progress(total, desc, enabled, initial=0):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="halo", unit_scale=True, disable=not enabled,
                smoothing=0.1)


@dataclass
class _Job:
    row: int          # checksum-table row (halo slab index)
    block: object     # delayed or numpy block of new data
    h0: int           # first store halo written
    r0: int           # first store realization written
    n_halo: int       # halos counted for progress
    old: dict | None = field(default=None)


def _run_jobs(jobs: list[_Job], path, storage_options, layout: StoreLayout, *, progress: bool, total: int,
              initial: int, desc: str, build_id: str | None) -> None:
    """Compute and write jobs ``2 × workers`` at a time; record checksums after each batch.

    Raises :class:`StoreError` (after recording the batch's good slabs, so the store stays
    incomplete and is never marked complete) when a slab holds (halo, realization) rows that are
    not normalised within ``NORM_ATOL`` or hold NaN/inf; those slabs are not written.
    """
    if not jobs:
        return
    group = _open_group(path, storage_options, mode="r+")
    crc_arr = group[CRC_NAME]
    norm_arr = group.get(NORM_NAME, None)
    w = _trapezoid(group)
    batch = max(2, 2 * _n_workers())
    write = dask.delayed(_write_block, pure=False)
    with _progress(total, desc, progress, initial) as bar:
        for b0 in range(0, len(jobs), batch):
            if build_id is not None:
                _check_build_id(path, storage_options, build_id)
            part = jobs[b0:b0 + batch]
            tasks = [write(j.block, path, storage_options, layout.to_dict(), j.h0, j.r0, w, j.old) for j in part]
            refused = []
            for j, result in zip(part, dask.compute(*tasks), strict=True):
                if isinstance(result, dict):
                    refused.append(result)
                    continue
                crcs, errs = result
                c0 = j.r0 // layout.realization_chunk
                if norm_arr is not None:
                    norm_arr[j.row, c0:c0 + len(errs)] = np.asarray(errs, dtype=np.float64)
                crc_arr[j.row, c0:c0 + len(crcs)] = np.asarray(crcs, dtype=np.int64)
                bar.update(j.n_halo)
            if refused:
                _refuse_unnormalised(refused, group, path)


def _refuse_unnormalised(refused: list[dict], group, path) -> None:
    """Raise the StoreError of :func:`_run_jobs` for blocks that failed the normalisation check."""
    halos = sorted({h for r in refused for h in r["halos"]})
    reals = sorted({k for r in refused for k in r["realizations"]})
    ids = np.asarray(group["halo"][...])
    labels = np.asarray(group["realization"][...])
    worst = max(r["worst"] for r in refused)
    attrs = dict(group.attrs)
    op = _pending(attrs).get("operation") if PENDING in attrs else None
    n_bad, n_rows = sum(r["n_bad"] for r in refused), sum(r["n_rows"] for r in refused)
    raise StoreError(
        f"posterior of {str(path)!r}: {n_bad} of {n_rows} (halo, realization) rows in the slabs just computed are "
        f"not normalised (|trapezoid integral over log10_mass - 1| > {NORM_ATOL:g}, or NaN/inf values; worst "
        f"{worst:.3g}); halos: {len(halos)} (first ids: {format_offenders(ids[halos])}), realizations: "
        f"{len(reals)} (first labels: {format_offenders(labels[reals])}). These slabs were not written and the "
        "store was not marked complete. Write a cube from build_posterior() over its whole mass grid (a "
        "cube.isel(mass=...) subset is not normalised) without NaN or inf values"
        + (f"; to finish the interrupted {op}, call it again with such a cube of the same "
           f"{'halos' if op == 'append_halos' else 'realizations'}, e.g. from build_like_store(catalog, path"
           f"{'' if op == 'append_halos' else ', hyper=new_draws'})" if op else "")
    )


def _check_build_id(path, storage_options, build_id):
    now = dict(_open_group(path, storage_options).attrs).get(BUILD_ID)
    if now != build_id:
        raise StoreError(
            f"store {str(path)!r} was replaced by another build (build id {now!r}, expected {build_id!r}) "
            "while this one was writing; this build's result is not valid. Rebuild with one writer at a time"
        )


# --------------------------------------------------------------------------- cube checks
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
    a, b = np.asarray(group["weight"][...], dtype=float), _stored_weight(ds)
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
    b = np.asarray((b.transpose(*_dims(arr)) if set(_dims(arr)) == set(b.dims) else b).values, dtype=float)
    if a.shape != b.shape:
        problems.append(f"prior table prior_dndm has shape {a.shape} in the store, {b.shape} in the cube")
    elif not np.allclose(a, b, rtol=_PRIOR_RTOL, atol=0.0, equal_nan=True):
        with np.errstate(all="ignore"):
            rel = np.nanmax(np.abs(a - b) / np.maximum(np.abs(a), np.abs(b)))
        problems.append(f"prior table prior_dndm differs (largest relative difference {rel:.3g}): the cube was "
                        "built with another prior (parameters or table values)")
    return problems


def _model_problems(ds: xr.Dataset, attrs: dict, group, *, keys: Iterable[str]) -> list[str]:
    """Differences between a cube and a store that make the cube's values foreign to the store.

    Compares the hashes in ``keys`` (a ``hyper_hash`` differing only by round-off of the weights
    is accepted), the model attributes, the prior's description and its table (``prior_dndm`` on
    ``prior_z``: two priors with one description, e.g. two user tables, differ there), and the
    mass grid.
    """
    problems = []
    prior_keys = sorted({k for k in (*attrs, *ds.attrs) if k.startswith("prior")})
    hashes = _cube_hashes(ds) if keys else {}
    for key in (*keys, *_MODEL_ATTRS, *prior_keys):
        mine = hashes[key] if key in hashes else ds.attrs.get(key)
        if key in _PRIOR_ADDED_KEYS and key not in attrs and "prior_dndm" in group:
            continue  # a store from before these were recorded: its prior table is compared below
        if not _same(attrs.get(key), mine):
            if key == "hyper_hash" and _same_hyper(ds, group):
                continue
            problems.append(f"{key}: store has {attrs.get(key)!r}, cube has {mine!r}")
    stored_mass = np.asarray(group["mass"][...])
    if stored_mass.shape != ds["mass"].shape or not np.array_equal(stored_mass, ds["mass"].values):
        problems.append(f"mass grid differs (store: {stored_mass.size} points, cube: {ds.sizes['mass']} points)")
    else:
        problems += _prior_problems(ds, group)
    return problems


def _raise_problems(problems: list[str], head: str, fix: str) -> None:
    if problems:
        raise StoreError(head + ":\n  - " + "\n  - ".join(problems) + "\n" + fix)


def _catalog_hash_of(values: dict) -> tuple[str, str]:
    """Catalogue hashes of ``values`` (halo, z, lum_obs, sigma_obs) with and without sigma_obs.

    :func:`massmap_xr.cube.catalog_hash` includes ``sigma_obs`` only when the catalogue had it,
    so a store's hash is one of the two.
    """
    from massmap_xr.cube import catalog_hash

    cat = xr.Dataset({k: ("halo", np.asarray(v)) for k, v in values.items() if k != "halo"},
                     coords={"halo": np.asarray(values["halo"])})
    return catalog_hash(cat), catalog_hash(cat.drop_vars("sigma_obs"))


def _stored_catalog(group, sl=slice(None)) -> dict:
    return {k: np.asarray(group[k][sl]) for k in ("halo", "z", "lum_obs", "sigma_obs")}


def _hyper_hash_of(values: dict) -> str:
    from massmap_xr.model.hyper import hyper_hash

    return hyper_hash(xr.Dataset({k: ("realization", np.asarray(v, dtype=float)) for k, v in values.items()}))


def _cube_hashes(ds: xr.Dataset) -> dict:
    """The cube's ``catalog_hash`` and ``hyper_hash`` as its data define them.

    A cube's attributes go stale when it is subset (``cube.isel(halo=...)``); the store records
    hashes that match what it holds, keeping the cube's own convention for ``catalog_hash``
    (with or without ``sigma_obs``) when its attribute is current.
    """
    from massmap_xr.model.relation import HYPER_NAMES

    with_s, without_s = _catalog_hash_of({k: ds[k].values for k in ("halo", "z", "lum_obs", "sigma_obs")})
    ch = ds.attrs.get("catalog_hash")
    return {
        "catalog_hash": ch if ch in (with_s, without_s) else with_s,
        "hyper_hash": _hyper_hash_of({**{k: ds[k].values for k in HYPER_NAMES}, "weight": _stored_weight(ds)}),
    }


def _stored_weight(ds: xr.Dataset) -> np.ndarray:
    """The cube's weights as stored: summing to 1 (a realization subset of a cube is renormalised)."""
    w = np.asarray(ds["weight"].values, dtype=float)
    total = float(w.sum())
    if not total > 0:
        raise StoreError(f"weight: the realization weights sum to {total!r}; at least one must be positive")
    return w if abs(total - 1.0) <= 1e-12 else w / total


# --------------------------------------------------------------------------- template
def _encoding(ds: xr.Dataset, layout: StoreLayout) -> dict:
    post = {"chunks": (layout.inner_halo_chunk, layout.n_mass, layout.realization_chunk),
            "compressors": (_codec(),), "_FillValue": np.float32(np.nan)}
    if layout.sharded:
        post["shards"] = (layout.halo_chunk, layout.n_mass, layout.realization_shard)
    enc = {"posterior": post}
    for k, v in ds.variables.items():
        if k == "posterior":
            continue
        e = {}
        if v.ndim:
            chunks = list(v.shape)
            for ax, dim in enumerate(v.dims):
                # along halo and realization, chunk like the posterior's shards (a chunk may exceed the
                # current length: appends then fill it instead of starting misaligned chunks)
                if dim == "halo":
                    chunks[ax] = layout.halo_chunk
                elif dim == "realization":
                    chunks[ax] = layout.realization_shard
            e["chunks"] = tuple(max(1, c) for c in chunks)
        if v.dtype.kind == "f":
            e["_FillValue"] = np.nan
        enc[k] = e
    return enc


def _template(ds: xr.Dataset, layout: StoreLayout) -> xr.Dataset:
    """The Dataset that :func:`_write_template` writes: every value but the posterior's, loaded, and
    the root attributes (status incomplete).  Computing it checks the cube without touching a store."""
    import dask.array as da

    build_id = uuid.uuid4().hex
    attrs = {**{k: v for k, v in ds.attrs.items() if k not in _BOOKKEEPING}, **_cube_hashes(ds),
             STATUS: "incomplete", LAYOUT: json.dumps(layout.to_dict()), BUILD_ID: build_id}
    post = ds["posterior"].transpose("halo", "mass", "realization")
    empty = da.empty(post.shape, chunks=(layout.halo_chunk, layout.n_mass, layout.n_realization), dtype=np.float32)
    # every variable but the posterior is written here, with its values: to_zarr(compute=False)
    # would leave dask-backed ones (a rechunked or reopened cube) unwritten
    small = {k: v.load() for k, v in ds.variables.items() if k != "posterior" and k not in ds.dims}
    tmpl = ds.assign(small).assign(posterior=(post.dims, empty, dict(post.attrs)),
                                   weight=ds["weight"].copy(data=_stored_weight(ds)))
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
    tmpl.to_zarr(_zarr_store(path, storage_options), mode="w-" if fresh else "w", compute=False, consolidated=False,
                 zarr_format=3, encoding=_encoding(tmpl, layout))
    group = _open_group(path, storage_options, mode="r+")
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


def _store_key(store) -> str | None:
    """A comparable location of a zarr store object (absolute local path or fsspec URL)."""
    root = getattr(store, "root", None)
    if root is not None:  # LocalStore
        return os.path.realpath(str(root))
    fs, p = getattr(store, "fs", None), getattr(store, "path", None)
    if fs is not None and p is not None:
        return fs.unstrip_protocol(str(p).rstrip("/"))
    return None


def _path_key(path, storage_options) -> str:
    if _is_local(path):
        return os.path.realpath(_local_path(path))
    fs, root = _fs(path, storage_options)
    return fs.unstrip_protocol(root)


def _lazy_sources(ds: xr.Dataset) -> set[str]:
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
            if store is not None and (k := _store_key(store)) is not None:
                out.add(k)
                break
            obj = getattr(obj, "array", None)
            if obj is None:
                break
    return out


def _init(ds, path, storage_options, mode, realization_chunk, inner_halo_chunk) -> tuple[StoreLayout, str]:
    """Validate the cube and its template completely, then create the store (replacing an existing
    one for ``mode="w"``) and write the template: a bad cube never costs an existing store."""
    if mode == "w" and _exists(path, storage_options):
        target = _path_key(path, storage_options)
        if target in _lazy_sources(ds):
            raise StoreError(
                f"refusing to write with mode='w' onto {str(path)!r}: the cube was opened lazily from that very "
                "store, and replacing it would delete the data being written. Write to another path, or load "
                "the cube first (cube = cube.load()) if it fits in memory"
            )
    layout, ds = _layout_for(ds, realization_chunk, inner_halo_chunk)
    tmpl = _template(ds, layout)  # every check on the cube's values happens here, before anything is deleted
    _create_root(path, storage_options, mode)
    return layout, _write_template(ds, path, layout, storage_options, tmpl, fresh=True)


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
    return _init(ds, str(path), storage_options, mode, realization_chunk, inner_halo_chunk)[0]


# --------------------------------------------------------------------------- writing slabs
def _locate_cube(ds: xr.Dataset, group, attrs, layout: StoreLayout, path) -> int:
    """Store index of the cube's first halo (0 for the whole cube); checks the cube belongs here."""
    n = ds.sizes["halo"]
    ids = np.asarray(ds["halo"].values)
    problems = _model_problems(ds, attrs, group, keys=("hyper_hash",))
    shape = (layout.n_mass, layout.n_realization)
    if (ds.sizes["mass"], ds.sizes["realization"]) != shape:
        problems.append(f"cube has {ds.sizes['mass']} masses x {ds.sizes['realization']} realizations, "
                        f"store has {shape[0]} x {shape[1]}")
    if problems:
        _raise_problems(problems, f"cube does not belong to store {str(path)!r}",
                        "Write it to a new store (mode='w') or build the cube with the store's settings.")
    if n == layout.n_halo and _same(attrs.get("catalog_hash"), _cube_hashes(ds)["catalog_hash"]):
        return 0
    stored_ids = np.asarray(group["halo"][...])
    hit = np.flatnonzero(stored_ids == ids[0]) if n else np.array([], dtype=int)
    start = int(hit[0]) if hit.size else -1
    if start < 0 or start + n > layout.n_halo or not np.array_equal(stored_ids[start:start + n], ids):
        raise StoreError(
            f"cube does not belong to store {str(path)!r}: its catalogue hash differs and its {n} halo ids are not a "
            f"contiguous run of the store's {layout.n_halo} halo ids. Write it to a new store (mode='w')"
        )
    stored = _stored_catalog(group, slice(start, start + n))
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
    path = str(path)
    group = _open_group(path, storage_options, mode="r+")
    attrs = dict(group.attrs)
    _check_schema(attrs, path)
    if not _template_complete(group, attrs):
        raise StoreError(f"store {path!r} has an incomplete template (its creation was interrupted); "
                         "create it again with init_store(..., mode='w') or to_store(..., resume=True)")
    if PENDING in attrs:
        raise StoreError(f"store {path!r} has an interrupted {_pending(attrs)['operation']}; finish it first by "
                         "calling that function again with the same cube")
    layout = _read_layout(attrs, path)
    start = _locate_cube(ds, group, attrs, layout, path)
    rows = _select_rows(layout, start, ds.sizes["halo"], halo_chunks, halo_range)
    crc = group[CRC_NAME][...]
    done = np.all(crc >= 0, axis=1)
    todo = rows if overwrite else [i for i in rows if not done[i]]
    if todo and attrs.get(STATUS) == "complete":
        raise StoreError(f"store {path!r} is complete; refusing to rewrite slabs {format_offenders(todo)} of a "
                         "finished store. Build a new store with mode='w'")
    blocks = _posterior_blocks(ds, start, layout.halo_chunk)
    base = start // layout.halo_chunk
    jobs = []
    for i in todo:
        s = layout.halo_slice(i)
        jobs.append(_Job(i, blocks[i - base], s.start, 0, s.stop - s.start))
    n_rows = sum(layout.halo_slice(i).stop - layout.halo_slice(i).start for i in rows)
    _run_jobs(jobs, path, storage_options, layout, progress=progress, total=n_rows,
              initial=n_rows - sum(j.n_halo for j in jobs), desc="massmap build", build_id=attrs.get(BUILD_ID))
    return todo


# --------------------------------------------------------------------------- finalising
def _variable_crcs(group) -> dict:
    out = {}
    for name, arr in sorted(_arrays(group).items()):
        if name == "posterior" or name in _TABLES:
            continue
        out[name] = int(zlib.crc32(np.ascontiguousarray(arr[...]).tobytes()))
    return out


def _missing_cells(crc: np.ndarray, layout: StoreLayout) -> list[str]:
    rows = np.flatnonzero(np.any(crc < 0, axis=1))
    return [f"slab {i} (halos [{layout.halo_slice(i).start}, {layout.halo_slice(i).stop}))" for i in rows]


def finalize_store(path, *, storage_options: dict | None = None, build_id: str | None = None) -> str:
    """Mark a store complete once every posterior cell's checksum is recorded.

    Records the invariants that :func:`verify_store` re-checks (halo and realization counts,
    the checksum table's CRC-32, the CRC-32 of every other variable) and sets
    ``massmap_build_status = "complete"`` last.  Calling it on a complete store is harmless.

    Parameters
    ----------
    path : str or path-like
        Store path or fsspec URL.
    storage_options : dict, optional
        fsspec options for URLs.
    build_id : str, optional
        Refuse to finalise unless the store still carries this build id (detects a concurrent
        replacement of the store by another build).

    Raises
    ------
    IncompleteStoreError
        If some slabs have not been written; the message lists them.
    """
    return _finalize(str(path), storage_options, build_id, from_append=False)


def _finalize(path: str, storage_options, build_id, *, from_append: bool) -> str:
    group = _open_group(path, storage_options, mode="r+")
    attrs = dict(group.attrs)
    _check_schema(attrs, path)
    if PENDING in attrs and not from_append:
        op = _pending(attrs).get("operation")
        raise StoreError(f"cannot finalise {path!r}: an interrupted {op} is pending; finish it by calling {op}() "
                         "again with the same cube")
    if build_id is not None:
        _check_build_id(path, storage_options, build_id)
    layout = _read_layout(attrs, path)
    crc = group[CRC_NAME][...]
    missing = _missing_cells(crc, layout)
    if missing or not _template_complete(group, attrs):
        raise IncompleteStoreError(
            f"cannot finalise {path!r}: {len(missing)} of {layout.n_halo_chunks} slab(s) not written "
            f"({format_offenders(missing, 3)}); write them with write_slabs() or to_store(..., resume=True)"
        )
    if tuple(group["posterior"].shape) != (layout.n_halo, layout.n_mass, layout.n_realization):
        raise StoreError(f"cannot finalise {path!r}: posterior shape {group['posterior'].shape} differs from its "
                         f"layout {layout.to_dict()}; the store is damaged, rebuild it with mode='w'")
    new = {k: v for k, v in attrs.items() if k != PENDING}
    new.update({
        TABLE_CRC: int(zlib.crc32(np.ascontiguousarray(crc).tobytes())),
        N_HALO: int(layout.n_halo),
        N_REAL: int(layout.n_realization),
        VAR_CRC: json.dumps(_variable_crcs(group)),
        STATUS: "complete",
    })
    group.attrs.put(new)  # one write of the root metadata: complete and its invariants appear together
    return path


# --------------------------------------------------------------------------- to_store / resume
def _prepare_resume(ds, path, storage_options, realization_chunk, inner_halo_chunk) -> tuple[StoreLayout, str | None]:
    """Check that an existing store can be finished with ``ds``; recreate an interrupted template."""
    fs, root = _fs(path, storage_options)
    entries = fs.ls(root, detail=False) if fs.isdir(root) else None
    if entries is None:
        raise StoreError(f"cannot resume {path!r}: it is not a directory/prefix of a Zarr store")
    try:
        group = zarr.open_group(_zarr_store(path, storage_options), mode="r+")
        attrs = dict(group.attrs)
        readable = True
    except Exception:  # noqa: BLE001 - killed before the root metadata was written
        group, attrs, readable = None, {}, False
    names = {os.path.basename(str(e).rstrip("/")) for e in entries}
    ours = {*ds.variables, *_TABLES, "zarr.json"}
    if not readable or not _template_complete(group, attrs):
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
        layout, rds = _layout_for(ds, realization_chunk, inner_halo_chunk)
        return layout, _write_template(rds, path, layout, storage_options)
    _check_schema(attrs, path)
    if PENDING in attrs:
        op = _pending(attrs)["operation"]
        raise StoreError(f"cannot resume {path!r}: it has an interrupted {op}; finish it by calling {op}() again "
                         "with the same cube")
    layout = _read_layout(attrs, path)
    problems = _model_problems(ds, attrs, group, keys=("catalog_hash", "hyper_hash"))
    if tuple(ds["posterior"].shape) != (layout.n_halo, layout.n_mass, layout.n_realization):
        problems.append(f"posterior shape: store {(layout.n_halo, layout.n_mass, layout.n_realization)}, "
                        f"cube {tuple(ds['posterior'].shape)}")
    _raise_problems(problems, f"cannot resume {path!r}: the cube differs from the one being built there",
                    "Resume needs the same catalogue, hyperparameters, mass grid, prior and method; or write a new "
                    "store with mode='w'.")
    if attrs.get(STATUS) != "complete":
        _remove_partial_files(path)
    return layout, attrs.get(BUILD_ID)


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
        ``"w-"`` (default) refuses an existing store; ``"w"`` replaces it, but only after the cube
        and its template have been validated, and never when the cube was opened lazily from that
        very store (replacing it would delete the data being written).
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
    path = str(path)
    if resume and _exists(path, storage_options):
        _, build_id = _prepare_resume(ds, path, storage_options, realization_chunk, inner_halo_chunk)
        if dict(_open_group(path, storage_options).attrs).get(STATUS) == "complete":
            return path
    else:
        _, build_id = _init(ds, path, storage_options, mode, realization_chunk, inner_halo_chunk)
    write_slabs(ds, path, progress=progress, storage_options=storage_options)
    finalize_store(path, storage_options=storage_options, build_id=build_id)
    return path


# --------------------------------------------------------------------------- appending
def _pending(attrs: dict) -> dict:
    raw = attrs.get(PENDING)
    return json.loads(raw) if isinstance(raw, str) else dict(raw or {})


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
    path = str(path)
    group = _open_group(path, storage_options, mode="r+")
    attrs = dict(group.attrs)
    _check_schema(attrs, path)
    cube_hash = _cube_hashes(ds)[hash_name]
    return path, group, attrs, cube_hash, _start_append(group, attrs, path, operation, cube_hash), ds


def _start_append(group, attrs, path, operation: str, key: str) -> dict | None:
    """Pending record of an interrupted ``operation`` with this cube, or None for a fresh append."""
    if PENDING in attrs:
        pend = _pending(attrs)
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
    for name, arr in _arrays(group).items():
        dims = _dims(arr)
        if dim not in dims or name in _TABLES:
            continue
        ax = dims.index(dim)
        shape = list(arr.shape)
        shape[ax] = n_new_total
        if tuple(arr.shape) != tuple(shape):
            arr.resize(tuple(shape))
        if name == "posterior" or (dim == "realization" and name == "weight"):
            continue
        if name not in ds.variables:
            raise StoreError(f"cannot append to {str(path)!r}: the cube has no variable {name!r} along {dim!r}")
        v = ds[name].transpose(*dims)
        region = tuple(slice(n_old, n_new_total) if d == dim else slice(None) for d in dims)
        _write_values(arr, np.asarray(v.values), region, path, name)


def _same_variables(group, ds: xr.Dataset, dim: str, path) -> None:
    stored = {k for k, a in _arrays(group).items() if dim in _dims(a) and k not in _TABLES}
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


def _resize_tables(group, rows: int, cols: int) -> None:
    for name in _TABLES:
        if name in group and tuple(group[name].shape) != (rows, cols):
            group[name].resize((rows, cols))


def append_halos(path, ds: xr.Dataset, *, progress: bool = False, storage_options: dict | None = None) -> str:
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
    path : str or path-like
        A complete massmap store.
    ds : xarray.Dataset
        Cube of the new halos, from :func:`~massmap_xr.cube.build_posterior`.
    progress : bool, default False
        Show a progress bar.
    storage_options : dict, optional
        fsspec options for URLs.

    Returns
    -------
    str
        The store path.
    """
    path, group, attrs, cube_hash, pend, ds = _begin_append(path, ds, "append_halos", "catalog_hash",
                                                            storage_options)
    new_hashes = _catalog_hash_of({k: ds[k].values for k in ("halo", "z", "lum_obs", "sigma_obs")})
    # the model is checked also when finishing an interrupted append (the pending record only
    # identifies the halos, not how their posteriors were computed)
    problems = _model_problems(ds, attrs, group, keys=("hyper_hash",))
    stored_r = np.asarray(group["realization"][...])
    if stored_r.shape != ds["realization"].shape or not np.array_equal(stored_r, ds["realization"].values):
        problems.append("realization labels differ from the store's")
    _raise_problems(problems, f"cannot append halos to {path!r}: the cube's model differs from the store's",
                    "Build the new halos with the store's hyperparameters, mass grid, prior and method: "
                    "build_like_store(new_catalog, path).")
    if pend is None:
        layout = _read_layout(attrs, path)
        _same_variables(group, ds, "halo", path)
        old = _stored_catalog(group)
        ids = np.asarray(ds["halo"].values)
        clash = np.intersect1d(old["halo"], ids)
        if clash.size or np.unique(ids).size != ids.size:
            raise StoreError(
                f"cannot append halos to {path!r}: {clash.size} halo id(s) already in the store "
                f"({format_offenders(clash)}) or repeated in the cube; halo ids must be unique, e.g. "
                f"cube.assign_coords(halo=cube.halo + {int(old['halo'].max()) + 1})"
            )
        old_with, old_without = _catalog_hash_of(old)
        if attrs.get("catalog_hash") not in (old_with, old_without):
            raise StoreError(f"cannot append halos to {path!r}: its catalogue variables no longer match its "
                             "catalog_hash; run verify_store() on it")
        with_sigma = not (attrs.get("catalog_hash") == old_without and cube_hash == new_hashes[1])
        union = {k: np.concatenate([old[k], np.asarray(ds[k].values, dtype=old[k].dtype)]) for k in old}
        union_hash = _catalog_hash_of(union)[0 if with_sigma else 1]
        n_old, n_add = layout.n_halo, ds.sizes["halo"]
        row, rem = divmod(n_old, layout.halo_chunk)
        partial = None
        if rem:
            partial = [int(c) for c in group[CRC_NAME][row, :]]
            _read_checked(group, slice(row * layout.halo_chunk, n_old), slice(0, layout.n_realization), partial, layout)
        pend = {"operation": "append_halos", "stage": "metadata", "cube_hash": cube_hash,
                "n_before": n_old, "n_after": n_old + n_add, "catalog_hash_after": union_hash, "partial_crc": partial}
        group.attrs.update({STATUS: "incomplete", PENDING: json.dumps(pend)})
    layout = _read_layout(attrs, path).replace(n_halo=pend["n_after"])
    n_old, n_total = pend["n_before"], pend["n_after"]
    row, rem = divmod(n_old, layout.halo_chunk)
    if pend["stage"] == "metadata":
        _extend_arrays(group, ds, "halo", n_old, n_total, path)
        _resize_tables(group, layout.n_halo_chunks, group[CRC_NAME].shape[1])
        group[CRC_NAME][row:, :] = -1
        if NORM_NAME in group:
            group[NORM_NAME][row:, :] = np.nan
        pend["stage"] = "slabs"
        group.attrs.update({LAYOUT: json.dumps(layout.to_dict()), "catalog_hash": pend["catalog_hash_after"],
                            PENDING: json.dumps(pend)})
    crc = group[CRC_NAME][...]
    blocks = _posterior_blocks(ds, n_old, layout.halo_chunk)
    jobs = []
    for k, i in enumerate(range(row, layout.n_halo_chunks)):
        if np.all(crc[i] >= 0):
            continue
        s = layout.halo_slice(i)
        old = None
        if k == 0 and rem:
            old = {"h": (s.start, n_old), "r": (0, layout.n_realization), "axis": 0, "crc": pend["partial_crc"]}
        jobs.append(_Job(i, blocks[k], s.start, 0, s.stop - max(s.start, n_old), old))
    _run_jobs(jobs, path, storage_options, layout, progress=progress, total=n_total - n_old,
              initial=n_total - n_old - sum(j.n_halo for j in jobs), desc="massmap append halos", build_id=None)
    return _finalize(path, storage_options, None, from_append=True)


def build_like_store(catalog: xr.Dataset, path, *, hyper=None, chunks: int | None = None,
                     storage_options: dict | None = None) -> xr.Dataset:
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

    Raises
    ------
    StoreError
        If the store's prior cannot be rebuilt (a prior table without its ``prior_dndm``, or
        unreadable Tinker parameters).
    """
    from massmap_xr.cube import HYPER_NAMES, build_posterior
    from massmap_xr.model.prior import TablePrior, TinkerPrior

    # a store with an interrupted append is read too: rebuilding the appended cube is how that
    # append is finished when the cube first passed was refused
    pending = PENDING in _open_group(str(path), storage_options, mode="r").attrs
    store = open_store(path, storage_options=storage_options, allow_incomplete=pending)
    attrs = store.attrs
    kind = attrs.get("prior")
    if kind == "TinkerPrior":
        # stores written before z_max, dz and dlog10m were recorded still have the nodes in prior_z
        zn = np.asarray(store["prior_z"].values, dtype=float) if "prior_z" in store.variables else np.zeros(0)
        z_max = attrs.get("prior_z_max", float(zn[-1]) if zn.size > 1 else 4.0)
        dz = attrs.get("prior_dz", float(np.round(zn[1] - zn[0], 12)) if zn.size > 1 else 0.05)
        try:
            prior = TinkerPrior(z_max=float(z_max), dz=float(dz), cosmology=attrs["prior_cosmology"],
                                hmf_model=attrs["prior_hmf_model"], transfer_model=attrs["prior_transfer_model"],
                                dlog10m=float(attrs.get("prior_dlog10m", 0.005)))
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"{str(path)!r}: cannot rebuild its TinkerPrior from the prior_* attributes "
                             f"({type(exc).__name__}: {exc}); build the cube with build_posterior(..., prior=...) "
                             "using the store's prior") from None
    elif kind == "TablePrior" and "prior_dndm" in store:
        table = store["prior_dndm"].load().rename(prior_z="z")
        table.attrs = {k[len("prior_table_"):]: v for k, v in attrs.items() if k.startswith("prior_table_")}
        prior = TablePrior(table)
    else:
        raise StoreError(f"{str(path)!r}: cannot rebuild its prior ({kind!r}); build the cube with "
                         "build_posterior(..., prior=...) using the store's prior")
    reuse = hyper is None
    if reuse:
        names = [k for k in (*HYPER_NAMES, "weight") if k in store]
        hyper = store[names].load()
    layout = _read_layout(dict(_open_group(str(path), storage_options, mode="r").attrs), str(path))
    cube = build_posterior(
        catalog, hyper, prior=prior, mass=store["mass"].values, sigma_obs=float(attrs["sigma_obs_default"]),
        method=attrs["method"], n_lum=max(int(attrs.get("n_lum", 0)), 1), seed=int(attrs.get("mc_seed", 0)),
        chunks=layout.halo_chunk if chunks is None else chunks,
    )
    if reuse:
        # build_posterior renormalises the weights, which can change the last bit of weights that
        # already sum to 1: keep the store's exactly, so the cube's hyper_hash is the store's
        cube = cube.assign(weight=cube["weight"].copy(data=np.asarray(hyper["weight"].values, dtype=float)))
        cube.attrs["hyper_hash"] = _hyper_hash_of({k: cube[k].values for k in (*HYPER_NAMES, "weight")})
    return cube


def _read_checked(group, hs: slice, rs: slice, crcs, layout: StoreLayout) -> np.ndarray:
    block = np.asarray(group["posterior"][hs, :, rs])
    got, _ = _cell_stats(block, rs.start, layout.realization_chunk, None)
    if [int(c) for c in got] != [int(c) for c in crcs]:
        raise StoreError(
            f"stored posterior halos [{hs.start}, {hs.stop}), realizations [{rs.start}, {rs.stop}) do not match "
            "their checksums; the store is damaged (run verify_store). Nothing was changed"
        )
    return block


def _union_weights(w_old: np.ndarray, w_new: np.ndarray) -> np.ndarray:
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


def append_realizations(path, ds: xr.Dataset, *, progress: bool = False, storage_options: dict | None = None) -> str:
    """Append the hyperparameter realizations of cube ``ds`` to a complete store.

    ``ds`` must have the store's halos (same catalogue hash), mass grid, prior and method, and
    realization labels not already in the store.  Stored shards are not rewritten except the
    last, partly filled realization shard of each halo slab (read back, checked against its
    checksums and written again followed by the new realizations).

    Weights: the stored ``weight`` always sums to 1.  The union's weights keep the relative
    weights within each set and count each set in proportion to its number of realizations
    (see :func:`_union_weights`), so appending draws of the same hyper-posterior gives every
    draw the weight 1/N, as one build of the union would.  The store's ``hyper_hash`` then
    describes the union table.

    A cube without realizations is refused before anything is recorded.  An interrupted append
    leaves the store incomplete; call ``append_realizations`` again with
    the same ``ds`` to finish it.

    Parameters
    ----------
    path : str or path-like
        A complete massmap store.
    ds : xarray.Dataset
        Cube of the new realizations, from :func:`~massmap_xr.cube.build_posterior` with the
        store's catalogue; give its realizations new labels, e.g.
        ``hyper.assign_coords(realization=hyper.realization + n_stored)``.
    progress : bool, default False
        Show a progress bar.
    storage_options : dict, optional
        fsspec options for URLs.

    Returns
    -------
    str
        The store path.

    Notes
    -----
    For ``method="montecarlo"`` cubes the Monte Carlo draws behind the appended realizations
    differ from those one build of the union would make, so values agree statistically, not
    bitwise; analytic cubes agree bitwise.
    """
    from massmap_xr.model.relation import HYPER_NAMES

    path, group, attrs, cube_hash, pend, ds = _begin_append(path, ds, "append_realizations", "hyper_hash",
                                                            storage_options)
    # the model is checked also when finishing an interrupted append
    problems = _model_problems(ds, attrs, group, keys=("catalog_hash",))
    stored_ids = np.asarray(group["halo"][...])
    if stored_ids.shape != ds["halo"].shape or not np.array_equal(stored_ids, ds["halo"].values):
        problems.append("halo ids differ from the store's (same halos in the same order are needed)")
    _raise_problems(problems, f"cannot append realizations to {path!r}: the cube's halos or model differ",
                    "Build the new realizations from the store's catalogue, mass grid, prior and method: "
                    "build_like_store(catalog, path, hyper=new_draws).")
    if pend is None:
        layout = _read_layout(attrs, path)
        _same_variables(group, ds, "realization", path)
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
        j0 = (n_old // layout.realization_shard) * layout.realization_shard
        c0 = j0 // layout.realization_chunk
        partial = None
        if j0 < n_old:
            partial = [[int(c) for c in row] for row in group[CRC_NAME][:, c0:layout.n_realization_chunks]]
            for i in range(layout.n_halo_chunks):
                _read_checked(group, layout.halo_slice(i), slice(j0, n_old), partial[i], layout)
        hyp = {k: np.concatenate([np.asarray(group[k][...], dtype=float), np.asarray(ds[k].values, dtype=float)])
               for k in HYPER_NAMES}
        weight = _union_weights(group["weight"][...], ds["weight"].values)
        pend = {"operation": "append_realizations", "stage": "metadata", "cube_hash": cube_hash,
                "n_before": n_old, "n_after": n_old + n_add, "hyper_hash_after": _hyper_hash_of({**hyp, "weight": weight}),
                "partial_crc": partial, "weight": weight.tolist()}
        group.attrs.update({STATUS: "incomplete", PENDING: json.dumps(pend)})
    layout_old = _read_layout(attrs, path)
    n_old, n_total = pend["n_before"], pend["n_after"]
    if layout_old.n_realization != n_old:  # resumed after the metadata stage
        layout_old = layout_old.replace(n_realization=n_old)
    layout = layout_old.replace(n_realization=n_total)
    j0 = (n_old // layout.realization_shard) * layout.realization_shard
    c0 = j0 // layout.realization_chunk
    if pend["stage"] == "metadata":
        _extend_arrays(group, ds, "realization", n_old, n_total, path)
        _write_values(group["weight"], np.asarray(pend["weight"]), (slice(None),), path, "weight")
        _resize_tables(group, layout.n_halo_chunks, layout.n_realization_chunks)
        group[CRC_NAME][:, c0:] = -1
        if NORM_NAME in group:
            group[NORM_NAME][:, c0:] = np.nan
        pend["stage"] = "slabs"
        group.attrs.update({LAYOUT: json.dumps(layout.to_dict()), "hyper_hash": pend["hyper_hash_after"],
                            PENDING: json.dumps(pend)})
    crc = group[CRC_NAME][...]
    blocks = _posterior_blocks(ds, 0, layout.halo_chunk)
    jobs = []
    for i in range(layout.n_halo_chunks):
        if np.all(crc[i, c0:] >= 0):
            continue
        s = layout.halo_slice(i)
        old = None
        if j0 < n_old:
            old = {"h": (s.start, s.stop), "r": (j0, n_old), "axis": 2, "crc": pend["partial_crc"][i]}
        jobs.append(_Job(i, blocks[i], s.start, j0, s.stop - s.start, old))
    _run_jobs(jobs, path, storage_options, layout, progress=progress, total=layout.n_halo,
              initial=layout.n_halo - sum(j.n_halo for j in jobs), desc="massmap append realizations", build_id=None)
    return _finalize(path, storage_options, None, from_append=True)


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


def open_store(path, *, allow_incomplete: bool = False, storage_options: dict | None = None, chunks="store") -> xr.Dataset:
    """Open a massmap store lazily (dask-backed, read-only) and validate its schema.

    Opening never writes: every file of the store keeps its bytes and modification time.

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
        :func:`xarray.open_zarr` (a dict maps dimension names to chunk sizes).

    Raises
    ------
    StoreError
        If the path is missing or not a massmap cube, or ``chunks`` is not one of the accepted
        forms; :class:`SchemaVersionError` for an unknown schema version;
        :class:`IncompleteStoreError` for an unfinished build.
    """
    _check_open_chunks(chunks)
    path = str(path)
    if not _exists(path, storage_options):
        raise StoreError(f"store {path!r} does not exist")
    group = _open_group(path, storage_options, mode="r")
    attrs = dict(group.attrs)
    _check_schema(attrs, path)
    status = attrs.get(STATUS)
    if status != "complete" and not allow_incomplete:
        if PENDING in attrs:
            op = _pending(attrs).get("operation")
            how = f"finish it by calling {op}() again with the same cube"
        else:
            how = "finish it with `massmap build ... --resume` / to_store(..., resume=True)"
        raise IncompleteStoreError(
            f"store {path!r} is incomplete (build status {status!r}): its build was interrupted or is still "
            f"running; {how}, or pass allow_incomplete=True to look at it anyway"
        )
    if chunks == "store":
        try:
            layout = _read_layout(attrs, path)
            chunks = {"halo": layout.halo_chunk, "mass": -1, "realization": layout.realization_shard}
        except StoreError:
            chunks = {}
    ds = xr.open_zarr(
        _zarr_store(path, storage_options, read_only=True), consolidated=False, zarr_format=3,
        chunks=chunks, drop_variables=list(_TABLES),
    )
    missing = [k for k in (*STORE_VARIABLES, *STORE_COORDS) if k not in ds.variables]
    if missing:
        raise StoreError(f"{path!r}: massmap store is missing variable(s) {missing}; it is damaged")
    if ds["posterior"].dims != ("halo", "mass", "realization"):
        raise StoreError(f"{path!r}: posterior has dims {ds['posterior'].dims}, expected (halo, mass, realization)")
    for k in _BOOKKEEPING:
        ds.attrs.pop(k, None)
    ds.encoding["source"] = path
    return ds


def store_info(path, storage_options=None) -> dict:
    """Summary of a store (sizes, status, schema, method, chunks, checksums) without reading the cube."""
    group = _open_group(str(path), storage_options, mode="r")
    attrs = dict(group.attrs)
    _check_schema(attrs, path)
    post = group["posterior"]
    crc = group[CRC_NAME][...] if CRC_NAME in group else np.zeros((0, 0))
    norm = group[NORM_NAME][...] if NORM_NAME in group else np.zeros((0, 0))
    written = norm[crc >= 0] if norm.shape == crc.shape else np.zeros(0)
    shards = getattr(post, "shards", None)
    return {
        "path": str(path),
        "status": attrs.get(STATUS),
        "pending": _pending(attrs).get("operation") if PENDING in attrs else None,
        "schema_version": attrs.get("massmap_schema_version"),
        "massmap_version": attrs.get("massmap_version"),
        "method": attrs.get("method"),
        "shape": dict(zip(("halo", "mass", "realization"), post.shape, strict=True)),
        "chunks": dict(zip(("halo", "mass", "realization"), post.chunks, strict=True)),
        "shards": dict(zip(("halo", "mass", "realization"), shards, strict=True)) if shards else None,
        "chunks_written": f"{int((crc >= 0).sum())}/{crc.size}",
        "max_normalisation_error": float(np.max(written)) if written.size else None,
        "uncompressed_bytes": int(np.prod(post.shape) * 4),
        "prior": attrs.get("prior", ""),
        "catalog_hash": attrs.get("catalog_hash"),
        "hyper_hash": attrs.get("hyper_hash"),
    }


# --------------------------------------------------------------------------- verification
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


def _verify_metadata(group, attrs, layout: StoreLayout) -> list[str]:
    """Invariants recorded at build time: counts, checksum table, small variables, hashes."""
    problems = []
    arrays = _arrays(group)
    for k in (*STORE_VARIABLES, *STORE_COORDS):
        if k not in arrays:
            problems.append(f"variable {k!r} is missing")
    sizes = {"halo": layout.n_halo, "mass": layout.n_mass, "realization": layout.n_realization}
    for name, arr in arrays.items():
        if name in _TABLES:
            continue
        for ax, d in enumerate(_dims(arr)):
            if d in sizes and arr.shape[ax] != sizes[d]:
                problems.append(f"variable {name!r} has {arr.shape[ax]} entries along {d!r}, the layout says {sizes[d]}")
    if attrs.get(STATUS) != "complete":
        return problems
    for key, want in ((N_HALO, layout.n_halo), (N_REAL, layout.n_realization)):
        if attrs.get(key) != want:
            problems.append(f"{key} is {attrs.get(key)!r} but the layout has {want}")
    crc = group[CRC_NAME][...]
    if TABLE_CRC in attrs and int(zlib.crc32(np.ascontiguousarray(crc).tobytes())) != attrs[TABLE_CRC]:
        problems.append("the checksum table itself was altered (its CRC-32 differs from the one recorded at build time)")
    if VAR_CRC in attrs:
        recorded = json.loads(attrs[VAR_CRC]) if isinstance(attrs[VAR_CRC], str) else attrs[VAR_CRC]
        for name, want in sorted(recorded.items()):
            if name not in arrays:
                problems.append(f"variable {name!r} is missing")
                continue
            try:
                got = int(zlib.crc32(np.ascontiguousarray(arrays[name][...]).tobytes()))
            except Exception as exc:  # noqa: BLE001 - a damaged chunk can raise anything
                problems.append(f"variable {name!r} is unreadable ({type(exc).__name__}: {exc})")
                continue
            if got != int(want):
                problems.append(f"variable {name!r} changed since the build (checksum mismatch)")
    from massmap_xr.model.relation import HYPER_NAMES

    try:
        cat = _stored_catalog(group)
        if attrs.get("catalog_hash") not in _catalog_hash_of(cat):
            problems.append("catalog_hash does not match the stored halo, z, lum_obs and sigma_obs")
        if np.unique(cat["halo"]).size != cat["halo"].size:
            problems.append("halo ids are not unique")
        hyp = {k: np.asarray(group[k][...], dtype=float) for k in (*HYPER_NAMES, "weight")}
        if attrs.get("hyper_hash") != _hyper_hash_of(hyp):
            problems.append("hyper_hash does not match the stored hyperparameter table (alpha1..alpha4, S, weight)")
        wsum = float(np.sum(hyp["weight"]))
        if not abs(wsum - 1.0) <= 1e-9:
            problems.append(f"realization weights sum to {wsum!r}, not 1")
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        problems.append(f"catalogue or hyperparameter variables unreadable ({type(exc).__name__}: {exc})")
    return problems


def verify_store(path, *, storage_options: dict | None = None, check_normalisation: bool = True) -> VerifyReport:
    """Re-check every posterior chunk of a store against the checksums recorded at write time.

    Each damaged cell (altered, truncated, deleted, unreadable) is reported by its halo and
    realization index ranges; a missing chunk is never taken for zeros.  Also re-checks the
    invariants recorded when the build finished: build status, halo and realization counts,
    the checksum table's own CRC, the checksums of every other variable, the catalogue and
    hyperparameter hashes, the weights' sum, and (optionally) the trapezoid normalisation of
    every (halo, realization) against both the tolerance and the value recorded at write time.

    Returns
    -------
    VerifyReport
        ``report.ok`` is True when nothing is wrong; ``str(report)`` lists the problems.
    """
    path = str(path)
    problems: list[str] = []
    try:
        group = _open_group(path, storage_options, mode="r")
        attrs = dict(group.attrs)
        _check_schema(attrs, path)
        layout = _read_layout(attrs, path)
        post = group["posterior"]
        crc = group[CRC_NAME][...]
        norm = group[NORM_NAME][...] if NORM_NAME in group else None
        w = _trapezoid(group)
    except Exception as exc:  # noqa: BLE001 - anything here means unreadable or foreign metadata
        return VerifyReport(path, 0, [f"metadata damaged or not a massmap store: {exc}"])
    if attrs.get(STATUS) != "complete":
        problems.append(f"build status is {attrs.get(STATUS)!r}, not 'complete'"
                        + (f" (an interrupted {_pending(attrs).get('operation')})" if PENDING in attrs else ""))
    want = (layout.n_halo, layout.n_mass, layout.n_realization)
    if tuple(post.shape) != want or _dims(post) != ("halo", "mass", "realization"):
        problems.append(f"posterior shape {tuple(post.shape)} / dims {_dims(post)} differ from the recorded layout "
                        f"{want} (halo, mass, realization)")
        return VerifyReport(path, 0, problems)
    if crc.shape != (layout.n_halo_chunks, layout.n_realization_chunks):
        problems.append(f"checksum table shape {crc.shape} differs from the layout's "
                        f"{(layout.n_halo_chunks, layout.n_realization_chunks)}")
        return VerifyReport(path, 0, problems)
    if w.shape != (layout.n_mass,):
        problems.append(f"log10_mass has shape {w.shape}, expected ({layout.n_mass},)")
        return VerifyReport(path, 0, problems)
    problems += _verify_metadata(group, attrs, layout)
    n = 0
    for i in range(layout.n_halo_chunks):
        hs = layout.halo_slice(i)
        for j in range(layout.n_realization_chunks):
            rs = layout.realization_slice(j)
            n += 1
            where = layout.describe_cell(i, j)
            if crc[i, j] < 0:
                problems.append(f"{where}: never written")
                continue
            try:
                block = np.ascontiguousarray(post[hs, :, rs])
            except Exception as exc:  # noqa: BLE001 - a damaged chunk can raise anything from the codec
                problems.append(f"{where}: unreadable ({type(exc).__name__}: {exc})")
                continue
            if _crc(block) != int(crc[i, j]):
                kind = "missing (reads as fill value NaN)" if np.isnan(block).all() else "altered"
                problems.append(f"{where}: checksum mismatch, chunk {kind}")
                continue
            if check_normalisation:
                err = float(np.max(_norm_error(block, w))) if block.size else 0.0
                if not err <= NORM_ATOL:
                    problems.append(f"{where}: normalisation off (worst |integral - 1| = {err:.3g} > {NORM_ATOL:g})")
                elif norm is not None and np.isfinite(norm[i, j]) and not abs(err - norm[i, j]) <= 1e-9:
                    problems.append(f"{where}: normalisation error {err:.3g} differs from the {norm[i, j]:.3g} "
                                    "recorded at write time")
    return VerifyReport(path, n, problems)
