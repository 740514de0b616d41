"""Checked reads: every posterior chunk :func:`~massmap_xr.store.open_store` hands out is compared,
inside the dask graph, with the CRC-32 the store recorded for that position when it was written.

The expected values come from the store's per-cell checksum table (``massmap_chunk_crc32``, one
entry per halo slab × realization cell, the table :func:`~massmap_xr.store.verify_store` uses),
read once when the store is opened.  A block is checked cell by cell with the writer's definition
(:func:`~massmap_xr.store.layout.crc32_of` of the cell's float32 values in C order, see
``cell_stats``), so altered bytes, a shard copied over another one (right content, wrong place)
and a deleted shard (reads as the NaN fill value) all fail with a :class:`StoreError`.
"""

from __future__ import annotations

import json
import os

import numpy as np

from massmap_xr.errors import StoreError
from massmap_xr.store.cellcrc import cell_crc32s
from massmap_xr.store.checks import arrays_of
from massmap_xr.store.layout import CRC_NAME, PENDING, STATUS, TABLE_CRC, TABLES, VAR_CRC, StoreLayout, crc32_of
from massmap_xr.store.shardenc import read_shards, shard_spec

#: how every checked-read error ends
VERIFY_HINT = ("run `massmap verify {path}` to list every damaged chunk, then rebuild the store; "
               "open_store(..., verify=False) reads it without this check")


def variable_crc(arr) -> int:
    """CRC-32 of a stored (zarr) array's values in C order, as recorded in ``massmap_variable_crc32``."""
    return crc32_of(np.asarray(arr[...]))


def recorded_variable_crcs(attrs: dict) -> dict:
    raw = attrs.get(VAR_CRC)
    if raw is None:
        return {}
    return json.loads(raw) if isinstance(raw, str) else dict(raw)


def check_metadata(group, attrs: dict, path: str) -> np.ndarray | None:
    """Open-time part of a checked read; returns the checksum table (None when the store has none).

    For a finished build (status complete, nothing pending) the checksum table's own CRC and the
    recorded CRC of every catalogue / hyperparameter variable are checked: they are small.
    """
    if CRC_NAME not in group:
        return None
    crc = np.asarray(group[CRC_NAME][...], dtype=np.int64)
    if attrs.get(STATUS) != "complete" or PENDING in attrs:
        return crc
    hint = VERIFY_HINT.format(path=path)
    if TABLE_CRC in attrs and crc32_of(np.asarray(group[CRC_NAME][...])) != int(attrs[TABLE_CRC]):
        raise StoreError(f"{path!r}: the checksum table {CRC_NAME!r} was altered since the build (its CRC-32 "
                         f"differs from the one recorded); {hint}")
    arrays = arrays_of(group)
    for name, want in sorted(recorded_variable_crcs(attrs).items()):
        if name == "posterior" or name in TABLES:
            continue
        where = os.path.join(path, name) if "://" not in path else f"{path.rstrip('/')}/{name}"
        if name not in arrays:
            raise StoreError(f"{path!r}: variable {name!r} is missing (directory {where!r}); {hint}")
        try:
            got = variable_crc(arrays[name])
        except Exception as exc:  # noqa: BLE001 - a damaged chunk can raise anything from the codec
            raise StoreError(f"{path!r}: variable {name!r} is unreadable ({type(exc).__name__}: {exc}; files under "
                             f"{where!r}); {hint}") from None
        if got != int(want):
            raise StoreError(f"{path!r}: variable {name!r} changed since the build (its CRC-32 differs from the "
                             f"one recorded; files under {where!r}); {hint}")
    return crc


def cell_aligned(chunks: tuple, layout: StoreLayout) -> bool:
    """True when every dask block of a (halo, mass, realization) array holds whole checksum cells."""
    if len(chunks[1]) != 1:
        return False
    for sizes, unit, n in ((chunks[0], layout.halo_chunk, layout.n_halo),
                           (chunks[2], layout.realization_chunk, layout.n_realization)):
        edges = np.cumsum(sizes)[:-1]
        if np.any(edges % unit) or int(np.sum(sizes)) != n:
            return False
    return True


class CellCheck:
    """Block function of the checked posterior: returns the block unchanged when every stored cell
    in it has the CRC-32 recorded for its position, raises a :class:`StoreError` otherwise."""

    def __init__(self, crc: np.ndarray, layout: StoreLayout, path: str, chunk_key):
        self.crc, self.layout, self.path, self.chunk_key = crc, layout, path, chunk_key

    def file_of(self, i: int, j: int) -> str:
        lay = self.layout
        h_unit = lay.halo_chunk if lay.sharded else lay.inner_halo_chunk
        r_unit = lay.realization_shard if lay.sharded else lay.realization_chunk
        key = self.chunk_key((i * lay.halo_chunk // h_unit, 0, j * lay.realization_chunk // r_unit))
        if "://" in self.path:
            return f"{self.path.rstrip('/')}/posterior/{key}"
        return os.path.join(self.path, "posterior", *key.split("/"))

    def fail(self, i: int, j: int, got: int, cell: np.ndarray):
        lay = self.layout
        if cell.size and np.isnan(cell).all():
            what = "is missing (it reads as the NaN fill value: its file was deleted or never written)"
        else:
            other = np.argwhere(self.crc == got)
            if other.size:
                oi, oj = (int(x) for x in other[0])
                why = f"it holds the data recorded for {lay.describe_cell(oi, oj)}: a shard file was copied or swapped"
            else:
                why = "its bytes were altered"
            what = f"differs from what was written there ({why})"
        raise StoreError(
            f"{self.path!r}: variable 'posterior' {lay.describe_cell(i, j)} in file {self.file_of(i, j)!r} "
            f"{what}: its CRC-32 {got} is not the {int(self.crc[i, j])} recorded for this position; "
            + VERIFY_HINT.format(path=self.path)
        )

    def check(self, block: np.ndarray, h0: int, h1: int, r0: int, r1: int) -> np.ndarray:
        hc, rc = self.layout.halo_chunk, self.layout.realization_chunk
        j0, n_j = r0 // rc, self.crc.shape[1]
        for i in range(h0 // hc, -(-h1 // hc)):
            rows = block[i * hc - h0:min((i + 1) * hc, h1) - h0]
            for dj, got in enumerate(cell_crc32s(rows, rc)):
                j = j0 + dj
                want = int(self.crc[i, j]) if j < n_j else -1
                if want >= 0 and got != want:  # want < 0: never written (allow_incomplete)
                    self.fail(i, j, got, rows[:, :, j * rc - r0:min((j + 1) * rc, r1) - r0])
        return block


class CheckedCells:
    """The stored posterior as dask reads it in a checked read: each block (whole cells) is read
    from the zarr array and checked; ``array`` is xarray's lazily indexed backend array of the same
    variable, so the result is still recognised as reading from this store."""

    def __init__(self, zarr_array, backend_array, check: CellCheck):
        self.zarr_array, self.array, self.cell_check = zarr_array, backend_array, check
        self.shape, self.dtype, self.ndim = tuple(zarr_array.shape), np.dtype(zarr_array.dtype), 3

    def __getitem__(self, key):
        return read_checked(self, key)


def _read(arr, key) -> np.ndarray:
    """``arr[key]``: whole shards decoded by :func:`~massmap_xr.store.shardenc.read_shards`
    (zarr's own read of a shard costs several times the decode), anything else through zarr."""
    spec = shard_spec(arr)
    if spec is not None and all(isinstance(k, slice) and k.step in (None, 1) for k in key):
        start = tuple(k.indices(n)[0] for k, n in zip(key, arr.shape, strict=True))
        shape = tuple(max(0, k.indices(n)[1] - k.indices(n)[0]) for k, n in zip(key, arr.shape, strict=True))
        block = read_shards(arr, spec, start, shape)
        if block is not None:
            return block
    return np.asarray(arr[key])


def read_checked(cells: CheckedCells, key) -> np.ndarray:
    """dask getter of a checked read: one block of whole cells, read and checked (never fused
    with a later slice, so a block is always checked whole)."""
    (h0, h1), (r0, r1) = ((k.start or 0, k.stop) for k in (key[0], key[2]))
    try:
        block = _read(cells.zarr_array, key)
    except Exception as exc:  # noqa: BLE001 - a damaged chunk can raise anything from the codec
        check, lay = cells.cell_check, cells.cell_check.layout
        i, j = h0 // lay.halo_chunk, r0 // lay.realization_chunk
        raise StoreError(
            f"{check.path!r}: variable 'posterior' halos [{h0}, {h1}), realizations [{r0}, {r1}) cannot be decoded "
            f"({type(exc).__name__}: {exc}); its file {check.file_of(i, j)!r} (first of the block) is damaged; "
            + VERIFY_HINT.format(path=check.path)
        ) from None
    return cells.cell_check.check(block, h0, h1, r0, r1)


def checked_posterior(zarr_array, backend_array, chunks: tuple, crc: np.ndarray, layout: StoreLayout, path: str):
    """Dask array of the stored posterior with ``chunks`` (holding whole cells), each block checked
    against the checksum table ``crc`` when it is computed."""
    import dask.array as da
    from dask.base import tokenize

    shape = tuple(zarr_array.shape)
    if crc.shape != (layout.n_halo_chunks, layout.n_realization_chunks) or shape != (
            layout.n_halo, layout.n_mass, layout.n_realization):
        raise StoreError(
            f"{path!r}: the checksum table {CRC_NAME!r} has shape {crc.shape} and the posterior {shape}, "
            f"but the store's layout says {(layout.n_halo_chunks, layout.n_realization_chunks)} cells of "
            f"{(layout.n_halo, layout.n_mass, layout.n_realization)}; " + VERIFY_HINT.format(path=path)
        )
    cells = CheckedCells(zarr_array, backend_array, CellCheck(crc, layout, path, zarr_array.metadata.encode_chunk_key))
    name = "massmap-checked-posterior-" + tokenize(path, crc, layout.to_dict(), chunks)
    return da.from_array(cells, chunks=chunks, name=name, getitem=read_checked, asarray=False, fancy=False,
                         meta=np.empty((0, 0, 0), dtype=cells.dtype))
