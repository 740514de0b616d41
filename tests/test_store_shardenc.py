"""Whole-shard writes (store/shardenc.py) give zarr's own bytes; stores of both layouts read and verify."""

import numpy as np
import pytest
import zarr
from builders import table_prior_cube as make_cube
from zarr.codecs import BloscCodec

import massmap_xr.store as st
from massmap_xr.store import shardenc, slabs
from massmap_xr.store.cellcrc import block_crc32s, norm_and_negative
from massmap_xr.store.layout import cell_stats, norm_error
from massmap_xr.store.shardenc import covers_shard, encode_shard, shard_spec


def _array(path, shape, chunks, shards):
    codec = BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle", typesize=4)
    return zarr.create_array(str(path), shape=shape, chunks=chunks, shards=shards, dtype="float32",
                             compressors=(codec,), fill_value=np.nan)


@pytest.mark.parametrize(("shape", "chunks", "shards"), [
    ((20, 4, 10), (4, 4, 5), (8, 4, 10)),     # last shard cut by the array's edge (inner chunks padded / absent)
    ((40, 30, 12), (8, 30, 12), (16, 30, 12)),  # inner chunks spanning every realization
    ((24, 10, 7), (4, 10, 2), (8, 10, 8)),     # realization shard larger than the array
])
def test_encoded_shards_equal_zarrs_own_bytes(tmp_path, shape, chunks, shards):
    rng = np.random.default_rng(3)
    x = (rng.random(shape, dtype=np.float32) * np.linspace(0, 1, shape[1], dtype=np.float32)[None, :, None])
    ref = _array(tmp_path / "ref.zarr", shape, chunks, shards)
    ref[...] = x
    spec = shard_spec(ref)
    assert spec is not None and spec.inner == chunks and spec.shard == shards
    for i in range(0, shape[0], shards[0]):
        for j in range(0, shape[2], shards[2]):
            block = x[i:i + shards[0], :, j:j + shards[2]]
            assert covers_shard(spec, (i, 0, j), block.shape)
            key = ref.metadata.encode_chunk_key((i // shards[0], 0, j // shards[2]))
            want = (tmp_path / "ref.zarr" / key).read_bytes()
            assert encode_shard(spec, (i, 0, j), block) == want
            # numcodecs' Blosc (the path where c-blosc cannot be called directly) gives the same bytes
            with pytest.MonkeyPatch.context() as m:
                m.setattr(shardenc, "_blosc_compress_ctx", lambda: None)
                assert encode_shard(spec, (i, 0, j), block) == want
    assert shardenc._blosc_compress_ctx() is not None  # the direct call is what the build uses here
    # a block that is not one whole shard is not taken by the fast path
    assert not covers_shard(spec, (1, 0, 0), (shards[0], shape[1], shape[2]))
    assert not covers_shard(spec, (0, 0, 0), (max(1, min(shards[0], shape[0]) - 1), shape[1], shape[2]))


def test_put_block_fast_path_and_fallback_read_back_bitwise(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    x = rng.random((20, 4, 10), dtype=np.float32)
    arr = _array(tmp_path / "a.zarr", x.shape, (4, 4, 5), (8, 4, 10))
    calls = []
    real = slabs.write_shard
    monkeypatch.setattr(slabs, "write_shard", lambda *a: calls.append(a[2]) or real(*a))
    slabs.put_block(arr, x[8:16], (8, 0, 0))      # one whole shard: encoded here
    slabs.put_block(arr, x[16:20], (16, 0, 0))    # the edge shard, cut by the array: encoded here
    slabs.put_block(arr, x[0:8, :, 0:5], (0, 0, 0))  # part of a shard: through zarr
    slabs.put_block(arr, x[0:8, :, 5:10], (0, 0, 5))
    assert calls == [(8, 0, 0), (16, 0, 0)]
    back = zarr.open_array(str(tmp_path / "a.zarr"), mode="r")[...]
    assert np.array_equal(back, x)


def test_block_checksums_and_norm_pass_match_definitions():
    rng = np.random.default_rng(5)
    x = rng.random((6, 30, 12), dtype=np.float32)
    for rc in (1, 5, 12, 20):
        assert block_crc32s(x, rc) == cell_stats(x, 0, rc, None)[0]
    w = rng.random(30)
    x[2, 3, 4] = -0.5
    x[1, 0, 0] = np.nan
    err, neg = norm_and_negative(x, w)
    ref = norm_error(x, w)
    assert np.array_equal(np.isnan(err), np.isnan(ref))
    np.testing.assert_allclose(err[~np.isnan(err)], ref[~np.isnan(ref)], rtol=0, atol=1e-12)
    assert np.array_equal(neg, np.any(x < 0, axis=1)) and neg[2, 4]


@pytest.mark.parametrize("kw", [{}, {"realization_chunk": 2, "inner_halo_chunk": 4}, {"realization_chunk": 6}])
def test_both_layouts_build_read_bitwise_and_verify(tmp_path, kw):
    """The default layout (inner chunks spanning every realization, one checksum cell per slab) and the
    previous one (realization cells of a few realizations) are both written, read and verified."""
    cube = make_cube(40, 6, chunks=16)[0]
    path = tmp_path / "c.zarr"
    st.to_store(cube, path, progress=False, **kw)
    g = zarr.open_group(str(path), mode="r")
    lay = st.StoreLayout.from_dict(__import__("json").loads(g.attrs[st.LAYOUT]))
    if not kw:
        assert (lay.inner_halo_chunk, lay.realization_chunk) == (8, 6)
    assert g["posterior"].chunks == (lay.inner_halo_chunk, 120, lay.realization_chunk)
    assert g["z"].chunks == (48,)  # one chunk of whole slabs
    want = cube["posterior"].transpose("halo", "mass", "realization").values
    for verify in (False, True):
        got = st.open_store(path, verify=verify)["posterior"].values
        assert np.array_equal(got, want)
    assert st.verify_store(path).ok
