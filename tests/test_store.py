"""Zarr stores: round trip, layout, region writes, concurrent writers, appends, fsspec, memory."""

from __future__ import annotations

import json
import os
import tracemalloc

import numpy as np
import pytest
import xarray as xr
import zarr
from builders import file_digests, run_py, script
from builders import table_prior_cube as make_cube

import massmap_xr.store as st
from massmap_xr.errors import IncompleteStoreError, StoreError
from massmap_xr.store import append as store_append
from massmap_xr.store import layout as store_layout
from massmap_xr.store import slabs


# --------------------------------------------------------------------------- round trip and layout
@pytest.mark.parametrize("backend", ["dask", "numpy"])
def test_round_trip_is_bitwise(tmp_path, cube, backend):
    src = cube if backend == "dask" else cube.compute()
    path = st.to_store(src, tmp_path / "c.zarr", progress=False)
    ds = st.open_store(path)
    post = ds["posterior"]
    assert post.dtype == np.float32 and post.dims == ("halo", "mass", "realization")
    assert np.array_equal(post.values.view(np.uint32), src["posterior"].values.view(np.uint32))
    for k in ("z", "lum_obs", "sigma_obs", "ra", "dec", "alpha1", "S", "weight", "mass", "log10_mass", "prior_dndm"):
        np.testing.assert_array_equal(ds[k].values, src[k].values)
    assert ds.attrs["catalog_hash"] == src.attrs["catalog_hash"]
    assert ds.attrs["hyper_hash"] == src.attrs["hyper_hash"]
    assert not set(store_layout.BOOKKEEPING) & set(ds.attrs)  # bookkeeping stays internal
    assert st.CRC_NAME not in ds.variables and st.NORM_NAME not in ds.variables
    assert post.attrs["units"] == "dex-1"
    assert ds["mass"].attrs["units"] == "solMass"


def test_store_uses_sharded_lz4_bitshuffle_layout(clean_store):
    g = zarr.open_group(str(clean_store), mode="r")
    post = g["posterior"]
    assert post.shards == (16, 120, 6) and post.chunks == (8, 120, 2)
    meta = post.metadata.to_dict()
    inner = meta["codecs"][0]["configuration"]["codecs"]
    blosc = next(c for c in inner if c["name"] == "blosc")["configuration"]
    assert (blosc["cname"], blosc["shuffle"]) == ("lz4", "bitshuffle")
    assert float(meta["fill_value"]) != float(meta["fill_value"])  # NaN: unwritten regions are visible
    layout = st.StoreLayout.from_dict(json.loads(g.attrs[st.LAYOUT]))
    assert layout == st.StoreLayout(60, 120, 6, 16, 2, 8, 6)
    assert g[st.CRC_NAME].shape == (4, 3)
    assert g.attrs[st.STATUS] == "complete" and g.attrs[st.TEMPLATE] == "complete"
    # per-halo variables are one chunk of whole slabs (one file each, not one per slab)
    assert g["z"].chunks == (64,)
    # one dask chunk per slab (shard) when opened
    assert st.open_store(clean_store)["posterior"].chunks == ((16, 16, 16, 12), (120,), (6,))


def test_layout_dataclass_round_trip_and_validation():
    lay = st.StoreLayout(115919, 400, 100, 416, 10, 32, 100)
    assert st.StoreLayout.from_dict(lay.to_dict()) == lay
    assert lay.n_halo_chunks == 279 and lay.n_realization_chunks == 10 and lay.sharded
    assert lay.halo_slice(278) == slice(115648, 115919)
    assert lay.describe_cell(1, 2) == "chunk (1, 2): halos [416, 832), realizations [20, 30)"
    old = {"n_halo": 60, "n_mass": 400, "n_realization": 6, "halo_chunk": 16, "realization_chunk": 6}
    legacy = st.StoreLayout.from_dict(old)  # stores written before sharding
    assert (legacy.inner_halo_chunk, legacy.realization_shard, legacy.sharded) == (16, 6, False)
    with pytest.raises(StoreError, match=r"inner_halo_chunk \(7\) must divide halo_chunk \(16\)"):
        st.StoreLayout(60, 400, 6, 16, 2, 7, 6)
    with pytest.raises(StoreError, match=r"realization_shard \(5\) must be a multiple of realization_chunk \(2\)"):
        st.StoreLayout(60, 400, 6, 16, 2, 8, 5)
    with pytest.raises(StoreError, match="layout record is malformed"):
        st.StoreLayout.from_dict({"n_halo": 3})


def test_default_layout_at_full_field_scale():
    lay = store_layout.make_layout(115919, 400, 100, 416)
    # inner chunks span every realization: (8, 400, 100), 1.28 MB, one checksum cell per slab
    assert (lay.inner_halo_chunk, lay.realization_chunk, lay.realization_shard) == (8, 100, 100)
    assert 4 * 8 * 400 * 100 <= store_layout._SPAN_BYTES
    # too many realizations for one inner chunk: ~512 KiB inner chunks of 32 halos
    lay = store_layout.make_layout(115919, 400, 1000, 416)
    assert (lay.inner_halo_chunk, lay.realization_chunk, lay.realization_shard) == (32, 10, 1000)
    # a slab size with no divisor in [4, 32] is stored unsharded along halo
    assert store_layout.make_layout(100, 400, 100, 37).inner_halo_chunk == 37


def test_mode_w_minus_refuses_and_w_replaces(tmp_path, cube):
    path = tmp_path / "c.zarr"
    st.to_store(cube, path, progress=False)
    with pytest.raises(StoreError, match="already exists; refusing to overwrite it. Pass mode='w'"):
        st.to_store(cube, path, progress=False)
    other = make_cube(hseed=6)[0]
    st.to_store(other, path, mode="w", progress=False)
    assert st.open_store(path).attrs["hyper_hash"] == other.attrs["hyper_hash"]
    with pytest.raises(StoreError, match="mode must be 'w-'"):
        st.to_store(cube, tmp_path / "x.zarr", mode="a")


# --------------------------------------------------------------------------- region writes
def test_init_write_finalize_in_pieces_equals_to_store(tmp_path, cube, clean_store):
    path = tmp_path / "p.zarr"
    lay = st.init_store(cube, path, inner_halo_chunk=8, realization_chunk=2)
    assert lay.halo_chunk == 16 and lay.n_halo_chunks == 4
    with pytest.raises(IncompleteStoreError, match="resume"):
        st.open_store(path)
    assert st.write_slabs(cube, path, halo_range=(0, 32)) == [0, 1]
    with pytest.raises(IncompleteStoreError, match=r"2 of 4 slab\(s\) not written \(slab 2 \(halos \[32, 48\)\)"):
        st.finalize_store(path)
    assert st.open_store(path, allow_incomplete=True)["posterior"][40].isnull().all()
    assert st.write_slabs(cube, path, halo_chunks=[3, 2, 1]) == [2, 3]  # written slab 1 is skipped
    st.finalize_store(path)
    assert st.verify_store(path).ok
    assert file_digests(path, "posterior") == file_digests(clean_store, "posterior")
    assert file_digests(path, st.CRC_NAME) == file_digests(clean_store, st.CRC_NAME)
    with pytest.raises(StoreError, match="is complete; refusing to rewrite slabs 0"):
        st.write_slabs(cube, path, halo_chunks=[0], overwrite=True)


def test_misaligned_regions_are_refused(tmp_path, cube):
    path = tmp_path / "a.zarr"
    st.init_store(cube, path)
    with pytest.raises(StoreError, match=r"halo_range \[8, 32\) is not aligned to the store's slabs of 16 halos"
                                         r".*Nearest aligned range: \[0, 32\)"):
        st.write_slabs(cube, path, halo_range=(8, 32))
    with pytest.raises(StoreError, match=r"halo_range \[16, 50\) is not aligned"):
        st.write_slabs(cube, path, halo_range=(16, 50))
    st.write_slabs(cube, path, halo_range=(48, 60), progress=False)  # stop = n_halo is aligned
    with pytest.raises(StoreError, match=r"halo_range \[0, 70\) is outside \[0, 60\)"):
        st.write_slabs(cube, path, halo_range=(0, 70))
    with pytest.raises(StoreError, match=r"slab index\(es\) 4 out of range \[0, 4\)"):
        st.write_slabs(cube, path, halo_chunks=[4])
    with pytest.raises(StoreError, match="give halo_chunks or halo_range, not both"):
        st.write_slabs(cube, path, halo_chunks=[0], halo_range=(0, 16))
    # a cube of a catalogue slice that does not start on a slab boundary
    part = make_cube(catalog=cube_catalog().isel(halo=slice(8, 40)))[0]
    with pytest.raises(StoreError, match=r"covers store halos \[8, 40\), which is not aligned"):
        st.write_slabs(part, path)
    assert np.all(zarr.open_group(str(path))[st.CRC_NAME][:3] < 0)  # nothing was written by the refusals


def cube_catalog():
    return make_cube()[1]


def test_foreign_cube_is_refused_with_every_difference(tmp_path, cube):
    path = tmp_path / "f.zarr"
    st.init_store(cube, path)
    other = make_cube(hseed=99, n_mass=100)[0]
    with pytest.raises(StoreError) as e:
        st.write_slabs(other, path)
    msg = str(e.value)
    assert "hyper_hash: store has" in msg and "mass grid differs (store: 120 points, cube: 100 points)" in msg


@pytest.mark.slow
def test_two_processes_write_disjoint_slabs(tmp_path, cube, clean_store):
    """Two processes, each with only its own catalogue slice, fill one store; the result is exact."""
    path = tmp_path / "shared.zarr"
    st.init_store(cube, path, inner_halo_chunk=8, realization_chunk=2)
    body = """
    from massmap_xr.store import write_slabs
    a, b = int(sys.argv[2]), int(sys.argv[3])
    full = make_cube()[1]
    part = make_cube(catalog=full.isel(halo=slice(a, b)))[0]
    print(write_slabs(part, sys.argv[1]))
    """
    s = script(tmp_path, "writer.py", body)
    procs = [run_py(s, path, 0, 32, wait=False), run_py(s, path, 32, 60, wait=False)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert outs[0][0].strip() == "[0, 1]" and outs[1][0].strip() == "[2, 3]"
    st.finalize_store(path)
    assert st.verify_store(path).ok
    assert file_digests(path, "posterior") == file_digests(clean_store, "posterior")


@pytest.mark.slow
def test_two_builds_racing_for_one_new_path(tmp_path):
    path = tmp_path / "race.zarr"
    body = """
    from massmap_xr.errors import StoreError
    from massmap_xr.store import to_store
    from pathlib import Path
    cube = make_cube()[0]
    Path(sys.argv[2] + sys.argv[3]).touch()  # ready; start together with the other racer
    while not all(Path(sys.argv[2] + k).exists() for k in "ab"):
        time.sleep(0.001)
    try:
        to_store(cube, sys.argv[1], progress=False)
    except StoreError as exc:
        print("REFUSED", exc)
        sys.exit(3)
    print("BUILT")
    """
    s = script(tmp_path, "racer.py", body)
    procs = [run_py(s, path, tmp_path / "ready-", k, wait=False) for k in "ab"]
    outs = [p.communicate(timeout=600) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 3], outs
    loser = next(o for p, o in zip(procs, outs, strict=True) if p.returncode == 3)[0]
    assert "another process" in loser or "already exists" in loser
    assert st.verify_store(path).ok


# --------------------------------------------------------------------------- appends
def test_append_halos_equals_one_build_of_the_union(tmp_path):
    cube_a, cat_a, hyp = make_cube(60)
    cube_b, cat_b, _ = make_cube(45, seed=12, halo_offset=1000)
    path = tmp_path / "h.zarr"
    st.to_store(cube_a, path, progress=False, inner_halo_chunk=8, realization_chunk=2)
    before = {p: os.stat(path / p).st_mtime_ns for p in file_digests(path, "posterior") if "/c/" in p}
    with pytest.warns(FutureWarning, match=r"append_halos\(ds, path\)"):  # the older order still works
        st.append_halos(path, cube_b)
    union = make_cube(catalog=xr.concat([cat_a, cat_b], "halo"), hyper=hyp)[0]
    ds = st.open_store(path)
    assert ds.sizes["halo"] == 105
    assert np.array_equal(ds["posterior"].values.view(np.uint32), union["posterior"].values.view(np.uint32))
    for k in ("halo", "z", "lum_obs", "ra", "dec", "mass_true", "sigma_obs"):
        np.testing.assert_array_equal(ds[k].values, union[k].values)
    assert ds.attrs["catalog_hash"] == union.attrs["catalog_hash"]
    assert zarr.open_group(str(path), mode="r").attrs[st.N_HALO] == 105 and st.N_HALO not in ds.attrs
    # the three full slabs were not rewritten; the partial one (halos 48..59) was
    after = {p: os.stat(path / p).st_mtime_ns for p in before}
    assert {p for p in before if before[p] != after[p]} == {"posterior/c/3/0/0"}
    report = st.verify_store(path)
    assert report.ok and report.n_chunks == 7 * 3, str(report)
    # the store now describes the union: resuming with the union cube is a no-op
    st.to_store(union, path, resume=True, progress=False)


def test_append_realizations_equals_one_build_of_the_union(tmp_path):
    cube_a, cat, hyp_a = make_cube(40, 6)
    cube_b, _, hyp_b = make_cube(catalog=cat, n_real=5, hseed=8, real_offset=6)
    path = tmp_path / "r.zarr"
    # realization_chunk 4 -> shards of 8 realizations: the 6 stored leave the shard partly filled
    st.to_store(cube_a, path, progress=False, inner_halo_chunk=8, realization_chunk=4)
    with pytest.warns(FutureWarning, match=r"append_realizations\(ds, path\)"):  # the older order still works
        st.append_realizations(path, cube_b)
    union = make_cube(catalog=cat, hyper=xr.concat([hyp_a, hyp_b], "realization"))[0]
    ds = st.open_store(path)
    assert ds.sizes["realization"] == 11
    assert np.array_equal(ds["posterior"].values.view(np.uint32), union["posterior"].values.view(np.uint32))
    for k in ("realization", "alpha1", "alpha2", "alpha3", "alpha4", "S"):
        np.testing.assert_array_equal(ds[k].values, union[k].values)
    np.testing.assert_array_equal(ds["weight"].values, np.full(11, 1 / 11))
    assert ds.attrs["hyper_hash"] == union.attrs["hyper_hash"]
    assert st.store_info(path)["shards"] == {"halo": 16, "mass": 120, "realization": 8}
    report = st.verify_store(path)
    assert report.ok and report.n_chunks == 3 * 3, str(report)
    # appending again fills the second, partial shard
    cube_c, _, hyp_c = make_cube(catalog=cat, n_real=2, hseed=9, real_offset=11)
    st.append_realizations(cube_c, path)
    union = make_cube(catalog=cat, hyper=xr.concat([hyp_a, hyp_b, hyp_c], "realization"))[0]
    assert np.array_equal(st.open_store(path)["posterior"].values, union["posterior"].values)
    assert st.verify_store(path).ok


def test_union_weights_count_each_set_by_its_size():
    w = store_append.union_weights(np.array([0.5, 0.25, 0.25]), np.array([1.0]))
    # set A relative weights 2:1:1 with mean 1 -> 1.5, .75, .75; set B -> 1; total 4
    np.testing.assert_allclose(w, [0.375, 0.1875, 0.1875, 0.25], rtol=1e-15)
    assert np.array_equal(store_append.union_weights(np.full(3, 1 / 3), np.full(7, 1 / 7)), np.ones(10) / 10)


def test_append_refusals(tmp_path):
    cube_a, cat, _hyp = make_cube(40)
    path = tmp_path / "x.zarr"
    st.to_store(cube_a, path, progress=False)
    with pytest.raises(StoreError, match=r"40 halo id\(s\) already in the store \(0, 1, 2, 3, 4 \(and 35 more\)\)"):
        st.append_halos(cube_a, path)
    with pytest.raises(StoreError, match=r"realization label\(s\) already in the store"):
        st.append_realizations(make_cube(catalog=cat, hseed=3)[0], path)
    with pytest.raises(StoreError, match="model differs from the store's:\n  - hyper_hash"):
        st.append_halos(make_cube(20, seed=4, hseed=7, halo_offset=500)[0], path)
    with pytest.raises(StoreError, match="mass grid differs"):
        st.append_halos(make_cube(20, seed=4, halo_offset=500, n_mass=90)[0], path)
    with pytest.raises(StoreError, match="halo ids differ"):
        st.append_realizations(make_cube(30, real_offset=10)[0], path)
    unfinished = tmp_path / "u.zarr"
    st.init_store(cube_a, unfinished)
    with pytest.raises(IncompleteStoreError, match="its build is not complete; finish it with to_store"):
        st.append_halos(make_cube(20, seed=4, halo_offset=500)[0], unfinished)
    assert st.verify_store(path).ok  # refusals changed nothing


# --------------------------------------------------------------------------- fsspec and memory
def test_memory_url_store(cube):
    url = f"memory://massmap-test-{os.getpid()}/cube.zarr"
    st.to_store(cube, url, progress=False)
    ds = st.open_store(url)
    assert np.array_equal(ds["posterior"].values, cube["posterior"].values)
    assert st.verify_store(url).ok
    assert st.store_info(url)["status"] == "complete"
    with pytest.raises(StoreError, match="already exists"):
        st.to_store(cube, url, progress=False)
    import fsspec

    fsspec.filesystem("memory").rm(f"/massmap-test-{os.getpid()}", recursive=True)


def test_peak_memory_is_bounded_by_a_batch_of_slabs(tmp_path, monkeypatch):
    """The writer holds about 2 x workers slabs at a time, not the cube."""
    big, _, _ = make_cube(1024, 40, chunks=16, n_mass=100)
    slab = 16 * 100 * 40 * 4
    total = 1024 * 100 * 40 * 4
    monkeypatch.setattr(slabs, "n_workers", lambda: 2)  # batches of 4 slabs
    st.to_store(make_cube(20)[0], tmp_path / "warm.zarr", progress=False)  # imports and compilation first
    tracemalloc.start()
    try:
        st.to_store(big, tmp_path / "big.zarr", progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 64 * slab
    assert peak < 16 * slab, f"peak {peak / 1e6:.1f} MB for slabs of {slab / 1e6:.2f} MB"


def test_subset_cube_gets_hashes_that_match_its_data(tmp_path, cube):
    from massmap_xr.cube import catalog_hash

    part = cube.isel(halo=slice(0, 20), realization=slice(0, 4))  # attrs still describe the full cube
    path = st.to_store(part, tmp_path / "s.zarr", progress=False)
    ds = st.open_store(path)
    cat = make_cube()[1].isel(halo=slice(0, 20))
    cat = cat.assign(sigma_obs=("halo", part["sigma_obs"].values))  # stale attrs: sigma_obs is hashed too
    assert ds.attrs["catalog_hash"] == catalog_hash(cat) != cube.attrs["catalog_hash"]
    assert ds.attrs["hyper_hash"] != cube.attrs["hyper_hash"]
    np.testing.assert_allclose(ds["weight"].values, np.full(4, 0.25), rtol=1e-15)  # renormalised subset
    assert st.verify_store(path).ok
    st.to_store(part, path, resume=True, progress=False)  # the same subset resumes


def test_rechunked_or_reopened_cube_stores_every_variable(tmp_path):
    """Dask-backed catalogue/hyperparameter variables are written with their values, not left as fill."""
    from massmap_xr.catalog import mock_catalog
    from massmap_xr.cube import build_posterior
    from massmap_xr.model.hyper import reddick2013

    cube = build_posterior(mock_catalog(30, seed=1, mass=np.logspace(10, 15.5, 400)), reddick2013(4, seed=2),
                           mass=np.logspace(10, 15.5, 50), chunks=16)  # halos above 1e10 M_sun
    st.to_store(cube.chunk({"halo": 10}), tmp_path / "a.zarr", progress=False)
    a = st.open_store(tmp_path / "a.zarr").compute()
    st.to_store(st.open_store(tmp_path / "a.zarr"), tmp_path / "b.zarr", progress=False)
    b = st.open_store(tmp_path / "b.zarr").compute()
    ref = cube.compute()
    for ds in (a, b):
        for k in ("z", "lum_obs", "sigma_obs", "alpha1", "S", "log10_mass", "prior_dndm"):
            np.testing.assert_allclose(ds[k].values, ref[k].values, err_msg=k)
        np.testing.assert_allclose(ds.ra.values, ref.ra.values)
        assert st.verify_store(tmp_path / "a.zarr").ok and st.verify_store(tmp_path / "b.zarr").ok


@pytest.fixture(scope="module")
def cube(table_cube):
    return table_cube


@pytest.fixture(scope="module")
def clean_store(table_store):
    return table_store
