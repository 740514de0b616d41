"""Counter-based uniforms for many streams at once: numpy's Philox4x64-10, compiled.

:func:`sample` gives every halo its own stream, ``numpy.random.Philox(key=key, counter=[0, 0,
h, stream])`` for halo id ``h``, and reads ``n`` doubles from it with ``Generator.random``.  Making
one numpy generator per halo costs ~30 µs, more than drawing its samples; :func:`philox_uniforms`
computes the same numbers for a whole block of halos in one compiled loop.  The algorithm is
the Random123 Philox4x64 with 10 rounds as numpy implements it (the counter is incremented
before each block of four 64-bit outputs; a double is ``(u64 >> 11) * 2**-53``); a test holds it
bitwise to numpy.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["philox_uniforms"]

_M0 = np.uint64(0xD2E7470EE14C6C93)
_M1 = np.uint64(0xCA5A826395121157)
_W0 = np.uint64(0x9E3779B97F4A7C15)
_W1 = np.uint64(0xBB67AE8584CAA73B)


@numba.njit(inline="always")
def _mulhilo(a, b):  # pragma: no cover - compiled
    """(high, low) 64-bit words of the 128-bit product a * b."""
    mask = np.uint64(0xFFFFFFFF)
    s32 = np.uint64(32)
    a_lo, a_hi = a & mask, a >> s32
    b_lo, b_hi = b & mask, b >> s32
    ll = a_lo * b_lo
    lh = a_lo * b_hi
    hl = a_hi * b_lo
    hh = a_hi * b_hi
    mid = (ll >> s32) + (lh & mask) + (hl & mask)
    hi = hh + (lh >> s32) + (hl >> s32) + (mid >> s32)
    return hi, a * b


@numba.njit(nogil=True, cache=True)
def _uniforms(key0, key1, c1, words2, c3, n, out):  # pragma: no cover - compiled
    scale = 1.0 / 9007199254740992.0
    s11 = np.uint64(11)
    one = np.uint64(1)
    for i in range(words2.size):
        x0 = np.uint64(0)
        x1 = c1
        x2 = words2[i]
        x3 = c3
        got = 0
        while got < n:
            x0 += one  # numpy increments the 256-bit counter before each block
            if x0 == 0:
                x1 += one
                if x1 == 0:
                    x2 += one
                    if x2 == 0:
                        x3 += one
            v0, v1, v2, v3 = x0, x1, x2, x3
            k0, k1 = key0, key1
            for r in range(10):
                if r:
                    k0 += _W0
                    k1 += _W1
                hi0, lo0 = _mulhilo(_M0, v0)
                hi1, lo1 = _mulhilo(_M1, v2)
                v0, v1, v2, v3 = hi1 ^ v1 ^ k0, lo1, hi0 ^ v3 ^ k1, lo0
            for v in (v0, v1, v2, v3):
                if got < n:
                    out[i, got] = np.float64(v >> s11) * scale
                    got += 1
    return out


def philox_uniforms(key: np.ndarray, words2: np.ndarray, *, n: int, stream: int) -> np.ndarray:
    """(len(words2), n) doubles in [0, 1): row i is ``Generator(Philox(key=key, counter=[0, 0,
    words2[i], stream])).random(n)``.

    ``key`` is the two-word Philox key, ``words2`` the uint64 third counter words (one stream
    each), ``stream`` the fourth counter word shared by all rows."""
    key = np.asarray(key, dtype=np.uint64).ravel()
    words = np.ascontiguousarray(words2, dtype=np.uint64).ravel()
    out = np.empty((words.size, int(n)))
    return _uniforms(key[0], key[1], np.uint64(0), words, np.uint64(stream), int(n), out)
