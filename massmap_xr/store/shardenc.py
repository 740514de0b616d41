"""Whole-shard writes of the posterior, encoded outside zarr's per-chunk machinery.

Zarr's sharded write of one slab (merge into an ``NDBuffer``, an all-fill check per inner chunk,
one asyncio task per inner chunk) costs about three times the Blosc encode of the same bytes.
:func:`encode_shard_into` builds the very bytes zarr writes for a complete shard — every inner
chunk Blosc-encoded with the array's own codec settings (``bytes`` little endian, then Blosc),
laid out in zarr's Morton order, followed by the shard index (``(offset, nbytes)`` uint64 pairs,
then its CRC-32C) — in one preallocated buffer: c-blosc (numcodecs' build, the one zarr's
``BloscCodec`` runs) compresses each inner chunk straight to its place, so no bytes object is
allocated, faulted in and copied per chunk.  :func:`write_shard` stores the buffer as one
object: on local disk with :mod:`.directio` (``O_DIRECT``, atomic: temporary file, then
rename, optionally on a background :class:`~massmap_xr.store.directio.WriteQueue`), elsewhere
with the store's ``set``.  ``tests/test_store_shardenc.py`` checks that the bytes equal zarr's
own for the same values, with and without the direct c-blosc call.

Only shards whose codec chain is exactly that (the layout every massmap store is written with)
and whose halo/realization extent the block covers completely go this way; anything else
(partly filled shards of appends, other codecs) falls back to ``array[...] = block``.

The small (halo, realization) variables written with each slab (one unsharded chunk per slab,
``bytes`` then Zstandard) go the same way: :func:`put_chunk` encodes a block that is exactly one
whole chunk with the array's Zstandard settings (zarr's bytes, tested) and stores it as one file.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from massmap_xr.store.directio import aligned_buffer, write_file, write_view

_EMPTY = np.uint64(2**64 - 1)


@dataclass(frozen=True)
class ShardSpec:
    """What :func:`encode_shard` needs of a sharded zarr array."""

    shard: tuple[int, ...]
    inner: tuple[int, ...]
    shape: tuple[int, ...]
    blosc: dict

    @property
    def grid(self) -> tuple[int, ...]:
        """Inner chunks per shard along each axis."""
        return tuple(s // c for s, c in zip(self.shard, self.inner, strict=True))


def shard_spec(arr) -> ShardSpec | None:
    """The :class:`ShardSpec` of a zarr v3 float32 array sharded with (bytes LE, Blosc) inner
    codecs and a (bytes LE, CRC-32C) index at the end; None for any other array."""
    from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ShardingCodec
    from zarr.codecs.sharding import ShardingCodecIndexLocation

    meta = arr.metadata
    if getattr(meta, "zarr_format", 2) != 3 or np.dtype(arr.dtype) != np.float32:
        return None
    codecs = tuple(meta.codecs)
    if len(codecs) != 1 or not isinstance(codecs[0], ShardingCodec):
        return None
    sc = codecs[0]
    inner, index = tuple(sc.codecs), tuple(sc.index_codecs)
    little = ("little", None)
    if (len(inner) != 2 or not isinstance(inner[0], BytesCodec) or not isinstance(inner[1], BloscCodec)
            or getattr(inner[0].endian, "value", inner[0].endian) not in little
            or len(index) != 2 or not isinstance(index[0], BytesCodec) or not isinstance(index[1], Crc32cCodec)
            or getattr(index[0].endian, "value", index[0].endian) not in little
            or sc.index_location != ShardingCodecIndexLocation.end):
        return None
    b = inner[1]
    shuffle = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[getattr(b.shuffle, "value", b.shuffle)]
    blosc = {"cname": getattr(b.cname, "value", b.cname), "clevel": int(b.clevel), "shuffle": shuffle,
             "blocksize": int(b.blocksize), "typesize": int(b.typesize or 4)}
    return ShardSpec(tuple(int(c) for c in arr.shards), tuple(int(c) for c in sc.chunk_shape),
                     tuple(int(s) for s in arr.shape), blosc)


@lru_cache(maxsize=8)
def _codec(cname: str, clevel: int, shuffle: int, blocksize: int, typesize: int):
    from numcodecs.blosc import Blosc

    return Blosc.from_config({"cname": cname, "clevel": clevel, "shuffle": shuffle, "blocksize": blocksize,
                              "typesize": typesize})


@lru_cache(maxsize=8)
def _order(grid: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    from zarr.core.indexing import morton_order_iter

    return tuple(tuple(int(x) for x in c) for c in morton_order_iter(grid))


def covers_shard(spec: ShardSpec, start: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    """True when a block of ``shape`` at ``start`` is exactly one shard's part inside the array."""
    for s0, n, sh, full in zip(start, shape, spec.shard, spec.shape, strict=True):
        if s0 % sh or n != min(sh, full - s0):
            return False
    return True


def encode_shard(spec: ShardSpec, start: tuple[int, ...], block: np.ndarray) -> bytes:
    """Bytes of the shard whose first element is at ``start`` holding ``block`` (its part of the
    array, see :func:`covers_shard`): inner chunks cut at the array's edge are padded with NaN,
    inner chunks wholly outside the array are left out, as zarr does."""
    buf = np.empty(shard_capacity(spec, start), dtype=np.uint8)
    return buf[:encode_shard_into(spec, start, block, buf)].tobytes()


def _inner_chunks(spec: ShardSpec, start: tuple[int, ...]) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(index in the shard, first element) of the shard's inner chunks inside the array, in zarr's order."""
    keys = []
    for idx in _order(spec.grid):
        lo = tuple(i * c for i, c in zip(idx, spec.inner, strict=True))
        if any(s0 + a >= full for s0, a, full in zip(start, lo, spec.shape, strict=True)):
            continue  # wholly outside the array
        keys.append((idx, lo))
    return keys


def shard_capacity(spec: ShardSpec, start: tuple[int, ...]) -> int:
    """Bytes that always hold the encoded shard at ``start`` (Blosc adds at most 16 bytes to a chunk)."""
    return len(_inner_chunks(spec, start)) * (4 * int(np.prod(spec.inner)) + _BLOSC_OVERHEAD) + 16 * int(np.prod(spec.grid)) + 4


def encode_shard_into(spec: ShardSpec, start: tuple[int, ...], block: np.ndarray, buf: np.ndarray) -> int:
    """Encode :func:`encode_shard`'s bytes into the uint8 array ``buf`` (at least
    :func:`shard_capacity` long) and return their length.  The inner chunks are compressed by
    c-blosc straight into ``buf`` where numcodecs' build of it can be called so (no intermediate
    bytes objects to allocate, fault in and copy), else with numcodecs' ``Blosc`` and copied."""
    import google_crc32c

    index = np.full((*spec.grid, 2), _EMPTY, dtype="<u8")
    pos = 0
    for idx, lo in _inner_chunks(spec, start):
        part = block[tuple(slice(a, a + c) for a, c in zip(lo, spec.inner, strict=True))]
        if part.shape != spec.inner:
            pad = np.full(spec.inner, np.nan, dtype=np.float32)
            pad[tuple(slice(0, n) for n in part.shape)] = part
            part = pad
        n = _blosc_into(spec.blosc, np.ascontiguousarray(part, dtype="<f4"), buf[pos:])
        index[idx] = (pos, n)
        pos += n
    raw = index.tobytes()
    buf[pos:pos + len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    pos += len(raw)
    buf[pos:pos + 4] = np.frombuffer(struct.pack("<I", google_crc32c.value(raw)), dtype=np.uint8)
    return pos + 4


#: most bytes c-blosc adds to a buffer it compresses (BLOSC_MAX_OVERHEAD)
_BLOSC_OVERHEAD = 16


@lru_cache(maxsize=1)
def _blosc_compress_ctx():
    """c-blosc's ``blosc_compress_ctx`` from numcodecs' extension module (the c-blosc zarr's
    ``BloscCodec`` runs), or None where it is not exported."""
    import ctypes

    try:
        import numcodecs.blosc

        fn = ctypes.CDLL(numcodecs.blosc.__file__).blosc_compress_ctx
    except (ImportError, OSError, AttributeError):  # pragma: no cover - numcodecs builds export it
        return None
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p,
                   ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int]
    return fn


def _blosc_into(blosc: dict, src: np.ndarray, out: np.ndarray) -> int:
    """Blosc-compress the contiguous ``src`` into ``out`` as numcodecs' ``Blosc(**blosc)`` would;
    return the compressed length."""
    fn = _blosc_compress_ctx()
    if fn is not None:
        n = fn(blosc["clevel"], blosc["shuffle"], blosc["typesize"], src.nbytes, src.ctypes.data, out.ctypes.data,
               out.size, blosc["cname"].encode(), blosc["blocksize"], 1)
        if n > 0:
            return int(n)
    enc = _codec(**blosc).encode(src)
    out[:len(enc)] = np.frombuffer(enc, dtype=np.uint8)
    return len(enc)


@dataclass(frozen=True)
class ChunkSpec:
    """What :func:`put_chunk` needs of an unsharded zarr array (``bytes`` LE then Zstandard)."""

    chunks: tuple[int, ...]
    shape: tuple[int, ...]
    dtype: np.dtype
    level: int
    checksum: bool


def chunk_spec(arr) -> ChunkSpec | None:
    """The :class:`ChunkSpec` of a zarr v3 array stored without sharding with exactly (bytes
    little endian, Zstd) codecs; None for any other array."""
    from zarr.codecs import BytesCodec, ZstdCodec

    meta = arr.metadata
    if getattr(meta, "zarr_format", 2) != 3:
        return None
    codecs = tuple(meta.codecs)
    if (len(codecs) != 2 or not isinstance(codecs[0], BytesCodec) or not isinstance(codecs[1], ZstdCodec)
            or getattr(codecs[0].endian, "value", codecs[0].endian) not in ("little", None)):
        return None
    return ChunkSpec(tuple(int(c) for c in arr.chunks), tuple(int(n) for n in arr.shape), np.dtype(arr.dtype),
                     int(codecs[1].level), bool(codecs[1].checksum))


def put_chunk(arr, block: np.ndarray, start: tuple[int, ...], queue=None) -> None:
    """``arr[start:start + block.shape] = block``: a block that is exactly one whole chunk of an
    array of :func:`chunk_spec`'s form, on a local store, is Zstd-encoded here and stored as one
    file (by ``queue`` when given, see :func:`write_shard`); anything else goes through zarr."""
    spec = chunk_spec(arr)
    root = _local_root(arr.store)
    whole = spec is not None and all(s0 % c == 0 and n == c and s0 + n <= full for s0, n, c, full in
                                     zip(start, block.shape, spec.chunks, spec.shape, strict=True))
    if not whole or root is None:
        arr[tuple(slice(s, s + n) for s, n in zip(start, block.shape, strict=True))] = block
        return
    data = _zstd(spec.level, spec.checksum).encode(np.ascontiguousarray(block, dtype=spec.dtype.newbyteorder("<")))
    key = arr.metadata.encode_chunk_key(tuple(s // c for s, c in zip(start, spec.chunks, strict=True)))
    path = root / (f"{arr.path}/{key}" if arr.path else key)
    if queue is not None:
        queue.submit(path, [data])
    else:
        write_file(path, [data])


@lru_cache(maxsize=8)
def _zstd(level: int, checksum: bool):
    from numcodecs import Zstd

    return Zstd(level=level, checksum=checksum)


def write_shard(arr, spec: ShardSpec, start: tuple[int, ...], block: np.ndarray, queue=None) -> None:
    """Encode ``block`` (:func:`encode_shard_into`) and store it as the shard object of ``arr``
    starting at ``start``: on a local store straight from memory (:mod:`.directio`, atomic; into
    a buffer of ``queue``, a :class:`~massmap_xr.store.directio.WriteQueue`, and written by it,
    when given), elsewhere with the store's own ``set``."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    key = arr.metadata.encode_chunk_key(tuple(s // sh for s, sh in zip(start, spec.shard, strict=True)))
    path = f"{arr.path}/{key}" if arr.path else key
    root = _local_root(arr.store)
    cap = shard_capacity(spec, start)
    if root is not None and queue is not None:
        buf = queue.reserve(cap)
        try:
            n = encode_shard_into(spec, start, block, buf)
        except BaseException:
            queue.release(buf)
            raise
        queue.submit_buffer(root / path, buf, n)
        return
    buf = aligned_buffer(cap)
    n = encode_shard_into(spec, start, block, buf)
    if root is not None:
        write_view(root / path, memoryview(buf)[:n])
        return
    sync(arr.store.set(path, default_buffer_prototype().buffer.from_bytes(buf[:n].tobytes())))


def _local_root(store) -> Path | None:
    """The folder of a writable zarr ``LocalStore`` (whose files this module writes itself), else None."""
    from zarr.storage import LocalStore

    return Path(store.root) if type(store) is LocalStore and not store.read_only else None


def read_shards(arr, spec: ShardSpec, start: tuple[int, ...], shape: tuple[int, ...]) -> np.ndarray | None:
    """``arr[start:start + shape]`` decoded by hand when the region is a run of whole shards along
    the first axis and one whole shard along the others (the reads of ``open_store``'s slabs):
    each shard object is fetched once, its index checked (CRC-32C) and its inner chunks
    Blosc-decoded straight into the result.  A missing shard or inner chunk reads as NaN (the
    fill value).  None when the region is not of that form (the caller then reads through zarr)."""
    import google_crc32c
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    if start[1:] != (0,) * (len(start) - 1) or start[0] % spec.shard[0]:
        return None
    for n, sh, full in zip(shape[1:], spec.shard[1:], spec.shape[1:], strict=True):
        if n != min(sh, full):
            return None
    if start[0] + shape[0] != spec.shape[0] and shape[0] % spec.shard[0]:
        return None
    codec = _codec(**spec.blosc)
    grid = spec.grid
    n_index = 16 * int(np.prod(grid)) + 4
    out = np.empty(shape, dtype=np.float32)  # every element is decoded or set to NaN below
    proto = default_buffer_prototype()
    for s0 in range(start[0], start[0] + shape[0], spec.shard[0]):
        key = arr.metadata.encode_chunk_key((s0 // spec.shard[0],) + (0,) * (len(shape) - 1))
        buf = sync(arr.store.get(f"{arr.path}/{key}" if arr.path else key, prototype=proto))
        if buf is None:
            out[s0 - start[0]:s0 - start[0] + spec.shard[0]] = np.nan
            continue
        raw = buf.as_numpy_array().view(np.uint8).ravel()  # the fetched bytes, not a copy of them
        if raw.size < n_index:
            raise ValueError(f"shard {key!r}: {raw.size} bytes, shorter than its index ({n_index} bytes)")
        idx_raw = raw[-n_index:-4].tobytes()
        if int(raw[-4:].view("<u4")[0]) != google_crc32c.value(idx_raw):
            raise ValueError(f"shard {key!r}: its index does not match its CRC-32C")
        index = np.frombuffer(idx_raw, dtype="<u8").reshape(*grid, 2)
        for idx in np.ndindex(*grid):
            off, nb = (int(v) for v in index[idx])
            lo = [s0 - start[0] + idx[0] * spec.inner[0]] + [a * c for a, c in zip(idx[1:], spec.inner[1:],
                                                                                       strict=True)]
            sel = tuple(slice(a, min(a + c, n)) for a, c, n in zip(lo, spec.inner, shape, strict=True))
            if any(s.start >= s.stop for s in sel):
                continue
            dst = out[sel]
            if off == 2**64 - 1:
                dst[...] = np.nan  # an empty inner chunk reads as the fill value
                continue
            if dst.shape == spec.inner and dst.flags.c_contiguous:
                codec.decode(raw[off:off + nb], out=dst)
            else:
                full = np.frombuffer(codec.decode(raw[off:off + nb]), dtype="<f4").reshape(spec.inner)
                dst[...] = full[tuple(slice(0, s.stop - s.start) for s in sel)]
    return out
