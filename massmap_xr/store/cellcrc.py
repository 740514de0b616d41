"""CRC-32 of every realization cell of a decoded posterior block in one pass, without copying.

A cell of the checksum table is ``block[:, :, s:s + rc]`` taken in C order (the writer's
definition, :func:`~massmap_xr.store.layout.cell_stats`): in a (halo, mass, realization) block it is
strided, and gathering it into a contiguous copy before ``zlib.crc32`` costs several times the CRC
itself.  :func:`cell_crc32s` walks the block once, feeding each row's run of ``rc`` values to its
cell's running CRC-32 (the same CRC-32 as zlib: reflected polynomial 0xEDB88320, slice-by-8).
"""

from __future__ import annotations

import sys

import numba
import numpy as np

from massmap_xr.store.layout import crc32_of


def _tables() -> np.ndarray:
    t = np.zeros((8, 256), np.uint32)
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        t[0, n] = c
    for n in range(256):
        c = int(t[0, n])
        for k in range(1, 8):
            c = int(t[0, c & 0xFF]) ^ (c >> 8)
            t[k, n] = c
    return t


_TABLES = _tables()


@numba.njit(nogil=True, cache=True)
def _runs_crc32(words, n_rows, row_words, cell_words, t):  # pragma: no cover - compiled
    n_cells = -(-row_words // cell_words)
    out = np.full(n_cells, np.uint32(0xFFFFFFFF), dtype=np.uint32)
    for row in range(n_rows):
        base = row * row_words
        for k in range(n_cells):
            crc = out[k]
            i = base + k * cell_words
            end = base + min((k + 1) * cell_words, row_words)
            while i + 2 <= end:
                one = words[i] ^ crc
                two = words[i + 1]
                crc = (t[7, one & 0xFF] ^ t[6, (one >> 8) & 0xFF] ^ t[5, (one >> 16) & 0xFF] ^ t[4, one >> 24]
                       ^ t[3, two & 0xFF] ^ t[2, (two >> 8) & 0xFF] ^ t[1, (two >> 16) & 0xFF] ^ t[0, two >> 24])
                i += 2
            if i < end:
                w = words[i]
                for s in range(4):
                    crc = t[0, (crc ^ (w >> (8 * s))) & 0xFF] ^ (crc >> 8)
            out[k] = crc
    return out ^ np.uint32(0xFFFFFFFF)


def cell_crc32s(block: np.ndarray, rc: int) -> list[int]:
    """CRC-32 of ``block[:, :, s:s + rc]`` in C order for s = 0, rc, 2 rc, ... (the last cell may be
    shorter); equal to ``[crc32_of(block[:, :, s:s + rc]) ...]``."""
    n_r = block.shape[-1]
    if block.dtype.itemsize != 4 or sys.byteorder != "little" or block.size == 0:
        return [crc32_of(block[..., s:s + rc]) for s in range(0, n_r, rc)]
    words = np.ascontiguousarray(block).view(np.uint32).reshape(-1)
    return [int(c) for c in _runs_crc32(words, block.size // n_r, n_r, rc, _TABLES)]


def block_crc32s(block: np.ndarray, rc: int) -> list[int]:
    """:func:`cell_crc32s` of a contiguous block, taking the CRC-32 of the whole block at once when it
    is one cell (``rc`` covers every realization): the writer's fast path."""
    if rc >= block.shape[-1] and block.flags.c_contiguous:
        return [crc32_of(block)]
    return cell_crc32s(block, rc)


@numba.njit(nogil=True, cache=True)
def _norm_negative(block, w):  # pragma: no cover - compiled
    n_h, n_m, n_r = block.shape
    acc = np.zeros((n_h, n_r), dtype=np.float64)
    neg = np.zeros((n_h, n_r), dtype=np.bool_)
    for h in range(n_h):
        a = acc[h]
        g = neg[h]
        for m in range(n_m):
            wm = w[m]
            row = block[h, m]
            for r in range(n_r):
                v = row[r]
                a[r] += wm * v
                g[r] |= v < 0
    return np.abs(acc - 1.0), neg


def norm_and_negative(block: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(norm_error(block, w), np.any(block < 0, axis=1))`` in one pass over a float32 block
    (the float64 sums run in mass order, so they may differ from ``einsum``'s in the last bits)."""
    if block.dtype != np.float32 or block.ndim != 3:
        from massmap_xr.store.layout import norm_error

        return norm_error(block, w), np.any(block < 0, axis=1)
    return _norm_negative(np.ascontiguousarray(block), np.ascontiguousarray(w, dtype=np.float64))
