"""Whole-shard writes of the posterior, encoded outside zarr's per-chunk machinery.

Zarr's sharded write of one slab (merge into an ``NDBuffer``, an all-fill check per inner chunk,
one asyncio task per inner chunk) costs about three times the Blosc encode of the same bytes.
:func:`encode_shard` builds the very bytes zarr writes for a complete shard — every inner chunk
Blosc-encoded with the array's own codec settings (``bytes`` little endian, then Blosc), laid
out in zarr's Morton order, followed by the shard index (``(offset, nbytes)`` uint64 pairs,
then its CRC-32C) — and :func:`write_shard` stores them as one object with the store's ``set``
(atomic on local disk: temporary file, then rename).  ``tests/test_store_shardenc.py`` checks
that the bytes equal zarr's own for the same values.

Only shards whose codec chain is exactly that (the layout every massmap store is written with)
and whose halo/realization extent the block covers completely go this way; anything else
(partly filled shards of appends, other codecs) falls back to ``array[...] = block``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

_EMPTY = np.uint64(2**64 - 1)


@dataclass(frozen=True)
class ShardSpec:
    """What :func:`encode_shard` needs of a sharded zarr array."""

    shard: tuple[int, ...]
    inner: tuple[int, ...]
    shape: tuple[int, ...]
    blosc: dict


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


def encode_shard(spec: ShardSpec, start: tuple[int, ...], block: np.ndarray, pool=None) -> bytes:
    """Bytes of the shard whose first element is at ``start`` holding ``block`` (its part of the
    array, see :func:`covers_shard`): inner chunks cut at the array's edge are padded with NaN,
    inner chunks wholly outside the array are left out, as zarr does."""
    import google_crc32c

    codec = _codec(**spec.blosc)
    grid = tuple(s // c for s, c in zip(spec.shard, spec.inner, strict=True))
    keys = []
    for idx in _order(grid):
        lo = tuple(i * c for i, c in zip(idx, spec.inner, strict=True))
        if any(s0 + a >= full for s0, a, full in zip(start, lo, spec.shape, strict=True)):
            continue  # wholly outside the array
        keys.append((idx, lo))

    def enc(item):
        _, lo = item
        sel = tuple(slice(a, a + c) for a, c in zip(lo, spec.inner, strict=True))
        part = block[sel]
        if part.shape != spec.inner:
            pad = np.full(spec.inner, np.nan, dtype=np.float32)
            pad[tuple(slice(0, n) for n in part.shape)] = part
            part = pad
        return codec.encode(np.ascontiguousarray(part, dtype="<f4"))

    parts = list(pool.map(enc, keys)) if pool is not None else [enc(k) for k in keys]
    index = np.full((*grid, 2), _EMPTY, dtype="<u8")
    pos = 0
    for (idx, _), p in zip(keys, parts, strict=True):
        index[idx] = (pos, len(p))
        pos += len(p)
    raw = index.tobytes()
    return b"".join([*map(bytes, parts), raw, struct.pack("<I", google_crc32c.value(raw))])


def write_shard(arr, spec: ShardSpec, start: tuple[int, ...], data: bytes) -> None:
    """Store ``data`` as the shard object of ``arr`` starting at ``start``."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    key = arr.metadata.encode_chunk_key(tuple(s // sh for s, sh in zip(start, spec.shard, strict=True)))
    path = f"{arr.path}/{key}" if arr.path else key
    sync(arr.store.set(path, default_buffer_prototype().buffer.from_bytes(data)))


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
    grid = tuple(s // c for s, c in zip(spec.shard, spec.inner, strict=True))
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
