"""Checked reads: open_store compares every posterior chunk it hands out with the store's checksum table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dask
import numpy as np
import pytest

import massmap_xr.store as st
from massmap_xr.analysis import sample
from massmap_xr.errors import StoreError
from tests.test_store import make_cube


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """24 halos x 120 masses x 6 realizations in sharded slabs of 8 halos (3 shard files of the same shape,
    each of 2 inner chunks along halo and 3 realization cells)."""
    cube = make_cube(24, 6, chunks=8)[0]
    path = tmp_path_factory.mktemp("checked") / "cube.zarr"
    st.to_store(cube, path, progress=False, realization_chunk=2, inner_halo_chunk=4)
    layout = json.loads(json.loads((path / "zarr.json").read_text())["attributes"]["massmap_layout"])
    assert (layout["halo_chunk"], layout["realization_chunk"], layout["realization_shard"]) == (8, 2, 6)
    return path


@pytest.fixture
def store(built, tmp_path):
    path = tmp_path / "cube.zarr"
    shutil.copytree(built, path)
    return path


def shard(store: Path, i: int) -> Path:
    return store / "posterior" / "c" / str(i) / "0" / "0"


def flip_bit(path: Path, byte: int, bit: int = 3) -> None:
    data = bytearray(path.read_bytes())
    data[byte] ^= 1 << bit
    path.write_bytes(bytes(data))


def decodable_flip(store: Path) -> int:
    """A byte of shard 1 whose flipped bit still decodes, into different numbers (a silent corruption)."""
    target, before = shard(store, 1), shard(store, 1).read_bytes()
    clean = st.open_store(store, verify=False)["posterior"].values
    try:
        for byte in range(64, len(before) // 4):
            flip_bit(target, byte)
            try:
                bad = st.open_store(store, verify=False)["posterior"].values
            except Exception:  # noqa: BLE001 - this flip breaks decoding: try the next byte
                continue
            finally:
                target.write_bytes(before)
            if not np.array_equal(bad, clean, equal_nan=True):
                return byte
    finally:
        target.write_bytes(before)
    raise AssertionError("no decodable bit flip found")


def damage(store: Path, kind: str) -> Path:
    """Damage shard 1 (halos [8, 16)); returns its file."""
    target = shard(store, 1)
    if kind == "flip":
        flip_bit(target, decodable_flip(store))  # inside the first inner chunk (the shard index sits at the end)
    elif kind == "undecodable":
        flip_bit(target, 20)  # inside the first inner chunk's blosc header
    elif kind == "swap":
        shutil.copyfile(shard(store, 2), target)
    else:
        target.unlink()
    return target


READS = {
    "summary": lambda ds: ds.massmap.summary().compute(),
    "values": lambda ds: ds["posterior"].values,
    "sample": lambda ds: sample(ds, 20, seed=1).compute(),
}


@pytest.mark.parametrize("kind", ["flip", "swap", "delete"])
@pytest.mark.parametrize("read", sorted(READS))
def test_damaged_shard_raises_a_named_store_error(store, kind, read):
    target = damage(store, kind)
    ds = st.open_store(store, verify=True)  # opening reads no posterior chunk: the damage surfaces when reading
    with pytest.raises(StoreError) as info:
        READS[read](ds)
    msg = str(info.value)
    assert "'posterior'" in msg
    assert "halos [8, 16)" in msg and "realizations [0, 2)" in msg
    assert repr(str(target)) in msg
    assert f"massmap verify {store}" in msg
    assert "verify=False" in msg
    if kind == "delete":
        assert "missing" in msg
    if kind == "swap":
        assert "halos [16, 24)" in msg and "swapped" in msg


def test_flipped_bit_reads_different_numbers_without_the_check(built, store):
    clean = st.open_store(built, verify=False)["posterior"].values
    damage(store, "flip")
    bad = st.open_store(store, verify=False)["posterior"].values
    assert not np.array_equal(bad[8:16], clean[8:16], equal_nan=True)
    assert np.array_equal(bad[:8], clean[:8]) and np.array_equal(bad[16:], clean[16:])


def test_undecodable_shard_raises_a_named_store_error(store):
    target = damage(store, "undecodable")
    with pytest.raises(Exception) as raw:
        st.open_store(store, verify=False)["posterior"].to_numpy()
    assert not isinstance(raw.value, StoreError)  # unchecked, the codec's own error comes through
    with pytest.raises(StoreError) as info:
        st.open_store(store, verify=True).massmap.summary().compute()
    msg = str(info.value)
    assert "'posterior' halos [8, 16), realizations [0, 6) cannot be decoded" in msg
    assert repr(str(target)) in msg and f"massmap verify {store}" in msg


def test_verify_false_reads_without_checking(store):
    damage(store, "swap")
    post = st.open_store(store, verify=False)["posterior"].values
    np.testing.assert_array_equal(post[8:16], post[16:24])  # the swapped shard's numbers, unchecked
    st.open_store(store, verify=False).massmap.summary().compute()


def test_clean_store_reads_bit_identically_with_and_without_the_check(built):
    checked, unchecked = st.open_store(built, verify=True), st.open_store(built, verify=False)
    a, b = checked["posterior"].values, unchecked["posterior"].values
    assert a.dtype == b.dtype == np.float32
    assert a.tobytes() == b.tobytes()
    sa, sb = checked.massmap.summary().compute(), unchecked.massmap.summary().compute()
    for k in sa.data_vars:
        assert sa[k].values.tobytes() == sb[k].values.tobytes(), k
    assert checked["posterior"].chunks == unchecked["posterior"].chunks
    ea, eb = checked["posterior"].encoding, unchecked["posterior"].encoding
    assert ea.keys() == eb.keys()
    assert all(ea[k] == eb[k] or repr(ea[k]) == repr(eb[k]) or k == "dtype" and np.dtype(ea[k]) == np.dtype(eb[k])
               for k in ea)


@pytest.mark.parametrize("chunks", [{"halo": 5}, {"halo": 16}, {"halo": 8, "realization": 3}, "auto", 7])
def test_other_open_chunks_are_checked_in_store_cells(built, store, chunks):
    clean = st.open_store(built, chunks=chunks, verify=False)
    ds = st.open_store(built, chunks=chunks, verify=True)
    assert ds["posterior"].chunks == clean["posterior"].chunks
    assert ds["posterior"].values.tobytes() == clean["posterior"].values.tobytes()
    damage(store, "swap")
    with pytest.raises(StoreError, match=r"halos \[8, 16\)"):
        st.open_store(store, chunks=chunks, verify=True)["posterior"].to_numpy()


def test_one_halo_read_checks_its_whole_cell(store):
    damage(store, "flip")
    with pytest.raises(StoreError, match="massmap verify"):
        st.open_store(store, verify=True)["posterior"].isel(halo=[9]).to_numpy()
    st.open_store(store, verify=True)["posterior"].isel(halo=slice(0, 8)).to_numpy()  # other slabs read fine


def test_opening_reads_no_posterior_chunk(store):
    damage(store, "delete")
    calls = []

    def counting(dsk, keys, **kw):
        calls.append(keys)
        return dask.get(dsk, keys, **kw)

    with dask.config.set(scheduler=counting):
        ds = st.open_store(store, verify=True)
        summ = ds.massmap.summary()
        assert calls == []  # opening and building the graph compute nothing
        with pytest.raises(StoreError, match="missing"):
            summ.compute()
    assert calls


def test_opening_checks_small_variables(store):
    # overwrite the stored weights' chunk with another valid chunk: the catalogue / hyper CRCs catch it
    w = sorted(p for p in (store / "lum_obs" / "c").rglob("*") if p.is_file())
    assert w
    cube = make_cube(24, 6, chunks=8, seed=99)[0]
    other = store.parent / "other.zarr"
    st.to_store(cube, other, progress=False, realization_chunk=2, inner_halo_chunk=4)
    for p in w:
        shutil.copyfile(other / p.relative_to(store), p)
    with pytest.raises(StoreError, match=r"variable 'lum_obs' changed since the build.*massmap verify"):
        st.open_store(store, verify=True)
    st.open_store(store, verify=False)


def test_incomplete_store_checks_written_cells_only(tmp_path):
    cube = make_cube(24, 6, chunks=8)[0]
    path = tmp_path / "part.zarr"
    st.init_store(cube, path, realization_chunk=2, inner_halo_chunk=4)
    st.write_slabs(cube, path, halo_chunks=[0])
    ds = st.open_store(path, allow_incomplete=True, verify=True)
    post = ds["posterior"].values
    assert np.isnan(post[8:]).all() and np.isfinite(post[:8]).all()
    flip_bit(shard(path, 0), 100)
    with pytest.raises(StoreError, match=r"halos \[0, 8\)"):
        st.open_store(path, allow_incomplete=True, verify=True)["posterior"].to_numpy()


@pytest.mark.parametrize(("shape", "rc"), [((7, 5, 13), 3), ((3, 2, 5), 5), ((4, 3, 1), 1), ((2, 3, 9), 2),
                                           ((1, 1, 0), 4)])
def test_cell_crc32s_equals_zlib_on_each_cell(shape, rc):
    import zlib

    from massmap_xr.store.cellcrc import cell_crc32s

    block = np.random.default_rng(3).random(shape).astype(np.float32)
    want = [zlib.crc32(block[:, :, s:s + rc].copy(order="C").tobytes()) for s in range(0, shape[2], rc)]
    assert cell_crc32s(block, rc) == want
    assert cell_crc32s(block.astype(np.float64), rc) == [
        zlib.crc32(block.astype(np.float64)[:, :, s:s + rc].copy().tobytes()) for s in range(0, shape[2], rc)]


def test_a_checked_cube_still_counts_as_reading_its_store(store):
    from massmap_xr.store.location import lazy_sources

    ds = st.open_store(store, verify=True)
    only = ds[["posterior"]]
    assert lazy_sources(only.drop_vars([k for k in only.coords]))
    with pytest.raises(StoreError, match="opened lazily from that very store"):
        st.to_store(ds, store, mode="w", progress=False)
