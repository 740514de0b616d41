"""Layout of a store: bookkeeping names, the posterior's slab/shard chunking (StoreLayout), its codec
and encoding, and the per-cell checksum and normalisation statistics."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import xarray as xr

from massmap_xr.errors import (
    StoreError,
)

try:  # zlib-ng's CRC-32 (the same checksum as zlib's, vectorised: about 3x faster)
    from zlib_ng.zlib_ng import crc32 as _crc32
    from zlib_ng.zlib_ng import crc32_combine as _crc32_combine
except ImportError:  # pragma: no cover - zlib-ng is a dependency; zlib gives the same values
    from zlib import crc32 as _crc32

    _crc32_combine = None

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
BOOKKEEPING = (STATUS, TEMPLATE, LAYOUT, BUILD_ID, PENDING, TABLE_CRC, VAR_CRC, N_HALO, N_REAL)


TABLES = (CRC_NAME, NORM_NAME)


#: target bytes of one inner (compression) chunk of the posterior
_INNER_BYTES = 512 * 2**10


#: preferred halos per inner chunk (one-halo reads decompress inner chunks of this many halos)
_INNER_HALOS = 32


#: largest inner chunk spanning every realization that the default layout takes (see make_layout)
_SPAN_BYTES = 2 * 2**20


#: preferred halos per inner chunk when inner chunks span every realization
_SPAN_HALOS = 8


#: tolerance of the trapezoid normalisation checked by verify_store
NORM_ATOL = 1e-4


def posterior_codec():
    """Compressor of the posterior's inner chunks (see ``stores/README.md`` for the measurements)."""
    from zarr.codecs import BloscCodec

    return BloscCodec(cname="lz4", clevel=1, shuffle="bitshuffle", typesize=4)


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


def _default_inner_halo_chunk(halo_chunk: int, most: int = _INNER_HALOS) -> int:
    """Largest divisor of ``halo_chunk`` not above ``most`` (the whole slab if that leaves < 4 halos)."""
    if halo_chunk <= most:
        return halo_chunk
    best = max(d for d in range(1, most + 1) if halo_chunk % d == 0)
    return best if best >= 4 else halo_chunk


def as_count(value, name: str, what: str = "to_store") -> int:
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


def make_layout(n_h, n_m, n_r, halo_chunk, realization_chunk=None, inner_halo_chunk=None) -> StoreLayout:
    """Layout of a new store.  By default inner chunks span every realization (``_SPAN_HALOS``
    halos each, one checksum cell per slab) when such a chunk stays under ``_SPAN_BYTES``: the
    slab is then a run of contiguous inner chunks, encoded and checksummed without gathering
    (``stores/README.md`` gives the measurements and what reads of one realization pay for it);
    otherwise inner chunks of about ``_INNER_BYTES`` with ``_INNER_HALOS`` halos."""
    if realization_chunk is None and inner_halo_chunk is None:
        ih = _default_inner_halo_chunk(halo_chunk, _SPAN_HALOS)
        if 4 * ih * max(n_m, 1) * max(n_r, 1) <= _SPAN_BYTES:
            rc = max(n_r, 1)
            return StoreLayout(n_h, n_m, n_r, int(halo_chunk), rc, ih, rc)
    ih = _default_inner_halo_chunk(halo_chunk) if inner_halo_chunk is None else as_count(inner_halo_chunk,
                                                                                         "inner_halo_chunk")
    if ih < 1 or halo_chunk % ih:
        raise StoreError(f"inner_halo_chunk must be a positive divisor of the halo slab size {halo_chunk}, got {ih}")
    if realization_chunk is None:
        rc = max(1, _INNER_BYTES // (4 * ih * max(n_m, 1)))
    else:
        rc = as_count(realization_chunk, "realization_chunk")
        if rc < 1:
            raise StoreError(f"realization_chunk must be >= 1, got {realization_chunk!r}")
    rc = int(min(rc, max(n_r, 1)))
    shard_r = -(-max(n_r, 1) // rc) * rc
    return StoreLayout(n_h, n_m, n_r, int(halo_chunk), rc, ih, shard_r)


def layout_for(ds: xr.Dataset, realization_chunk=None, inner_halo_chunk=None) -> tuple[StoreLayout, xr.Dataset]:
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
    layout = make_layout(n_h, n_m, n_r, post.chunks[0][0], realization_chunk, inner_halo_chunk)
    return layout, ds.assign(posterior=post)


def slab_chunks(start: int, n: int, hc: int) -> tuple[int, ...]:
    """Chunk sizes along halo of ``n`` halos starting at store index ``start`` so that block
    boundaries fall on slab boundaries (multiples of ``hc``)."""
    out, pos, end = [], start, start + n
    while pos < end:
        stop = min((pos // hc + 1) * hc, end)
        out.append(stop - pos)
        pos = stop
    return tuple(out)


def posterior_blocks(ds: xr.Dataset, start: int, hc: int):
    """Delayed posterior blocks of ``ds`` aligned to the store's slabs (``ds`` starts at ``start``)."""
    post = ds["posterior"].transpose("halo", "mass", "realization").data
    import dask.array as da

    if not isinstance(post, da.Array):
        post = da.from_array(np.asarray(post), chunks=(hc, -1, -1))
    want = (slab_chunks(start, post.shape[0], hc), (post.shape[1],), (post.shape[2],))
    if post.chunks != want:
        post = post.rechunk(want)
    return post.to_delayed().ravel()


def read_layout(attrs: dict, path) -> StoreLayout:
    if LAYOUT not in attrs:
        raise StoreError(f"{str(path)!r}: massmap store has no {LAYOUT!r} attribute; it is damaged or was "
                         "not written by massmap_xr. Rebuild it with to_store(..., mode='w')")
    raw = attrs[LAYOUT]
    return StoreLayout.from_dict(json.loads(raw) if isinstance(raw, str) else raw)


def crc32_of(a: np.ndarray) -> int:
    """CRC-32 of an array's bytes in C order (no copy when it is already contiguous), for any
    fixed-size dtype (numbers, bools, strings, datetimes), equal to ``zlib.crc32(a.tobytes())``
    (computed with zlib-ng's vectorised CRC-32 where it is installed)."""
    return _crc32(np.ascontiguousarray(a).reshape(-1).view(np.uint8))


def crc32_concat(pieces) -> int | None:
    """CRC-32 of the concatenation of byte strings known only by their ``(crc32, length)`` pairs,
    in order (as :func:`crc32_of` of the joined bytes); None where zlib-ng is not installed."""
    if _crc32_combine is None:  # pragma: no cover
        return None
    out = 0
    for crc, n in pieces:
        out = _crc32_combine(out, int(crc), int(n))
    return out


def norm_error(block: np.ndarray, w: np.ndarray) -> np.ndarray:
    """|trapezoid integral over mass - 1| for every (halo, realization) of ``block``, float64."""
    return np.abs(np.einsum("m,hmr->hr", w, block, dtype=np.float64) - 1.0)


def cell_stats(block: np.ndarray, r0: int, rc: int, w: np.ndarray | None,
                err: np.ndarray | None = None, crcs: list[int] | None = None) -> tuple[list[int], list[float]]:
    """CRC-32 and normalisation error of each realization cell of ``block`` (cells start at ``r0``,
    a multiple of ``rc``, and end at the block's end); no normalisation when ``w`` is None.
    ``err`` is ``norm_error(block, w)`` and ``crcs`` the cells' CRC-32 when already computed
    (e.g. by :func:`~massmap_xr.store.cellcrc.block_crc32s`, which does not copy the cells)."""
    n_r = block.shape[2]
    if crcs is None:
        crcs = [crc32_of(block[:, :, s:s + rc]) for s in range(0, n_r, rc)]
    if w is None:
        return crcs, [float("nan")] * len(crcs)
    err = norm_error(block, w) if err is None else err
    errs = [float(np.max(err[:, s:s + rc])) if err[:, s:s + rc].size else 0.0 for s in range(0, n_r, rc)]
    return crcs, errs


def encoding_for(ds: xr.Dataset, layout: StoreLayout) -> dict:
    post = {"chunks": (layout.inner_halo_chunk, layout.n_mass, layout.realization_chunk),
            "compressors": (posterior_codec(),), "_FillValue": np.float32(np.nan)}
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
                if dim == "halo" and v.dims == ("halo",):
                    # a per-halo variable is written once, with the template: one chunk (whole
                    # slabs) instead of one file per slab; appends fill it, then add chunks
                    chunks[ax] = max(layout.n_halo_chunks, 1) * layout.halo_chunk
                elif dim == "halo":
                    chunks[ax] = layout.halo_chunk
                elif dim == "realization":
                    chunks[ax] = layout.realization_shard
            e["chunks"] = tuple(max(1, c) for c in chunks)
        if v.dtype.kind == "f":
            e["_FillValue"] = np.nan
        enc[k] = e
    return enc
