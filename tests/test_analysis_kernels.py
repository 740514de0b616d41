"""The compiled analysis passes against plain numpy: the realization fold and the inverse-CDF draws."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr

from massmap_xr.analysis.inverse_cdf import grid_draws
from massmap_xr.analysis.reductions import cdf_kernel, invert_cdf
from massmap_xr.analysis.weights import weighted_realization_sum


def _densities(rng, n_h, n_r, m):
    x = np.linspace(9.0, 15.0, m)
    centre = rng.uniform(11, 14, size=(n_h, n_r, 1))
    width = rng.uniform(0.05, 0.6, size=(n_h, n_r, 1))
    p = np.exp(-0.5 * ((x - centre) / width) ** 2).astype(np.float32)
    return x, p


def test_grid_draws_are_bitwise_the_numpy_cdf_and_inversion():
    rng = np.random.default_rng(5)
    n_h, n_r, m, n_s = 7, 6, 50, 40
    x, p = _densities(rng, n_h, n_r, m)
    p[2, 3] = 0.0  # no CDF: NaN draws
    p[4, 1, 10] = np.nan  # a NaN in the row: NaN draws
    p[5, 0, :5] = -1e-9  # tiny negatives are clipped, as in cdf_kernel
    pick = rng.integers(0, n_r, size=(n_h, n_s))
    pick[2, :3] = 3
    pick[4, :3] = 1
    pick[5, :3] = 0
    u = rng.random((n_h, n_s))
    u[0, :3] = [0.0, 1.0, 1.0 - 2.0**-53]
    strided = np.ascontiguousarray(p.transpose(0, 2, 1)).transpose(0, 2, 1)  # as a store block is read
    got = grid_draws(strided, x, pick, u)

    ref = np.empty_like(got)
    for h in range(n_h):
        c = cdf_kernel(p[h], x)
        ref[h] = invert_cdf(c, x, pick[h], u[h])
    np.testing.assert_array_equal(got, ref)
    assert np.isnan(got[2, :3]).all() and np.isnan(got[4, :3]).all() and np.isfinite(got[5]).all()
    assert np.isfinite(got[0]).all() and got[0, 1] <= x[-1]


def _weighted_loop(p, w):
    out = np.zeros(p.shape[:2])
    for r in range(p.shape[2]):
        out += p[:, :, r].astype(np.float64) * (w[:, r:r + 1] if w.ndim == 2 else w[r])
    return out


@pytest.mark.parametrize("per_halo", [False, True])
def test_realization_fold_matches_numpy_and_is_independent_of_chunks(per_halo):
    rng = np.random.default_rng(9)
    _, p = _densities(rng, 37, 11, 30)
    p = p.transpose(0, 2, 1)  # (halo, mass, realization)
    w = rng.random((37, 11)) if per_halo else rng.random(11)
    w /= w.sum(axis=-1, keepdims=True)
    ref = _weighted_loop(p, w)
    p64 = p.astype(np.float64)
    ein = np.einsum("hmr,hr->hm", p64, w) if per_halo else np.einsum("hmr,r->hm", p64, w)
    np.testing.assert_allclose(ref, ein, rtol=1e-12)
    post = xr.DataArray(p, dims=("halo", "mass", "realization"))
    wd = xr.DataArray(w, dims=("halo", "realization") if per_halo else ("realization",))
    np.testing.assert_array_equal(weighted_realization_sum(post, wd), ref)
    lazy = post.copy(data=da.from_array(p, chunks=(10, 30, 4)))
    lw = wd.copy(data=da.from_array(w, chunks=((10, 4) if per_halo else (4,))))
    np.testing.assert_array_equal(weighted_realization_sum(lazy, lw).compute(), ref)


def test_philox_uniforms_are_numpy_philox_streams():
    from massmap_xr.analysis.philox import philox_uniforms

    key = np.random.SeedSequence(7).generate_state(2, np.uint64)
    words = np.array([0, 1, 5, 416, 2**40, 2**62 + 3], dtype=np.uint64)
    for n, stream in ((1, 0), (4, 3), (11, 3), (250, 1)):
        got = philox_uniforms(key, words, n=n, stream=stream)
        ref = np.array([np.random.Generator(np.random.Philox(key=key, counter=[0, 0, int(w), stream])).random(n)
                        for w in words])
        np.testing.assert_array_equal(got, ref)
