"""Stores on object storage: every store operation against a real S3 endpoint (moto's server on
localhost, reached through s3fs), compared with the same operations on local disk."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from builders import table_prior_cube as make_cube

import massmap_xr.store as st
from massmap_xr.errors import IncompleteStoreError, StoreError, StoreExistsError

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")


def bits(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32).view(np.uint32)


def fresh(s3, stem="cube") -> str:
    return s3.url(f"{stem}-{uuid.uuid4().hex[:8]}.zarr")


def listing(s3, url) -> list[str]:
    import s3fs

    fs = s3fs.S3FileSystem(**s3.storage_options, skip_instance_cache=True)
    return sorted(fs.find(url.removeprefix("s3://")))


@pytest.mark.slow
def test_build_open_verify_equal_local(s3, table_cube, table_store):
    url = fresh(s3)
    assert st.to_store(table_cube, url, progress=False, inner_halo_chunk=8, realization_chunk=2,
                       storage_options=s3.storage_options) == url
    names = listing(s3, url)
    assert f"{url.removeprefix('s3://')}/zarr.json" in names and any("/posterior/c/" in n for n in names)
    ds = st.open_store(url, storage_options=s3.storage_options)
    ref = st.open_store(table_store)
    assert np.array_equal(bits(ds["posterior"].values), bits(ref["posterior"].values))
    for k in ("halo", "z", "lum_obs", "weight", "alpha1"):
        np.testing.assert_array_equal(ds[k].values, ref[k].values)
    report = st.verify_store(url, storage_options=s3.storage_options)
    assert report.ok and report.n_chunks == st.verify_store(table_store).n_chunks, str(report)
    info = st.store_info(url, storage_options=s3.storage_options)
    assert info["status"] == "complete" and info["chunks_written"] == st.store_info(table_store)["chunks_written"]
    # a second build onto the same URL is refused; mode="w" replaces it
    with pytest.raises(StoreExistsError, match="refusing to overwrite"):
        st.to_store(table_cube, url, progress=False, storage_options=s3.storage_options)
    st.to_store(table_cube.isel(halo=slice(0, 32)), url, mode="w", progress=False,
                storage_options=s3.storage_options)
    assert st.open_store(url, storage_options=s3.storage_options).sizes["halo"] == 32
    assert not [n for n in listing(s3, s3.url("")) if "partial-replace" in n]


def test_missing_and_damaged_object_store(s3, table_cube):
    import s3fs

    missing = fresh(s3, "missing")
    with pytest.raises(StoreError, match="does not exist"):
        st.open_store(missing, storage_options=s3.storage_options)
    assert not listing(s3, missing)  # reading created nothing
    url = fresh(s3)
    st.to_store(table_cube, url, progress=False, inner_halo_chunk=8, realization_chunk=2,
                storage_options=s3.storage_options)
    fs = s3fs.S3FileSystem(**s3.storage_options, skip_instance_cache=True)
    shard = f"{url.removeprefix('s3://')}/posterior/c/1/0/0"
    data = bytearray(fs.cat_file(shard))
    data[len(data) // 2] ^= 0xFF
    fs.pipe_file(shard, bytes(data))
    report = st.verify_store(url, storage_options=s3.storage_options)
    assert not report.ok and "halos [16, 32)" in str(report)
    with pytest.raises(StoreError, match=r"halos \[16, 32\)"):
        st.open_store(url, storage_options=s3.storage_options)["posterior"].values  # noqa: B018


@pytest.mark.slow
def test_appends_on_s3_equal_one_build_of_the_union(s3):
    so = s3.storage_options
    cube_a, cat_a, hyp = make_cube(40)
    cube_b, cat_b, _ = make_cube(30, seed=12, halo_offset=1000)
    url = fresh(s3)
    st.to_store(cube_a, url, progress=False, inner_halo_chunk=8, realization_chunk=2, storage_options=so)
    st.append_halos(cube_b, url, storage_options=so)
    cat = xr.concat([cat_a, cat_b], "halo")
    union = make_cube(catalog=cat, hyper=hyp)[0]
    ds = st.open_store(url, storage_options=so)
    assert ds.sizes["halo"] == 70
    assert np.array_equal(bits(ds["posterior"].values), bits(union["posterior"].values))
    cube_c, _, hyp_c = make_cube(catalog=cat, n_real=3, hseed=8, real_offset=6)
    st.append_realizations(cube_c, url, storage_options=so)
    union = make_cube(catalog=cat, hyper=xr.concat([hyp, hyp_c], "realization"))[0]
    ds = st.open_store(url, storage_options=so)
    assert ds.sizes["realization"] == 9
    assert np.array_equal(bits(ds["posterior"].values), bits(union["posterior"].values))
    np.testing.assert_allclose(ds["weight"].values, np.full(9, 1 / 9))
    assert st.verify_store(url, storage_options=so).ok


def test_interrupted_build_on_s3_is_resumed(s3):
    so = s3.storage_options
    cube = make_cube(64)[0]
    url = fresh(s3)
    # a build stopped by a bad slab: the good slabs are kept, the store stays incomplete
    post = cube["posterior"].data

    def spoil(block, block_info=None):
        return block * 2 if block_info[0]["chunk-location"][0] == 2 else block

    bad = cube.assign(posterior=cube["posterior"].copy(data=post.map_blocks(spoil, dtype=np.float32)))
    with pytest.raises(StoreError, match="not normalised"):
        st.to_store(bad, url, progress=False, storage_options=so)
    with pytest.raises(IncompleteStoreError):
        st.open_store(url, storage_options=so)
    crc = st.open_store(url, storage_options=so, allow_incomplete=True, verify=False)
    assert crc.sizes["halo"] == 64
    info = st.store_info(url, storage_options=so)
    assert info["status"] == "incomplete" and info["chunks_written"] == "3/4"
    st.to_store(cube, url, resume=True, progress=False, storage_options=so)
    ds = st.open_store(url, storage_options=so)
    assert np.array_equal(bits(ds["posterior"].values), bits(cube["posterior"].values))
    assert st.verify_store(url, storage_options=so).ok
    # several writers: init, disjoint halo ranges, finalize
    url2 = fresh(s3)
    st.init_store(cube, url2, storage_options=so)
    assert st.write_slabs(cube, url2, halo_range=(32, 64), storage_options=so) == [2, 3]
    with pytest.raises(IncompleteStoreError, match="slab"):
        st.finalize_store(url2, storage_options=so)
    st.write_slabs(cube, url2, halo_range=(0, 32), storage_options=so)
    st.finalize_store(url2, storage_options=so)
    assert np.array_equal(bits(st.open_store(url2, storage_options=so)["posterior"].values),
                          bits(cube["posterior"].values))


def test_versioned_store_on_s3(s3):
    pytest.importorskip("icechunk")
    from massmap_xr.store import versioned

    so = s3.storage_options
    path = f"icechunk://s3://{s3.bucket}/repo-{uuid.uuid4().hex[:8]}"
    cube_a, cat_a, hyp = make_cube(40)
    st.to_store(cube_a, path, progress=False, storage_options=so)
    cube_b, cat_b, _ = make_cube(20, seed=12, halo_offset=1000)
    st.append_halos(cube_b, path, storage_options=so)
    union = make_cube(catalog=xr.concat([cat_a, cat_b], "halo"), hyper=hyp)[0]
    assert np.array_equal(bits(st.open_store(path, storage_options=so)["posterior"].values),
                          bits(union["posterior"].values))
    log = versioned.history(path, so)
    assert [c["message"] for c in log[:2]] == ["append_halos of halos [40, 60)",
                                                "to_store (w-) of 40 halos x 6 realizations"]
    old = st.open_store(path, storage_options=so, version=log[1]["snapshot_id"])
    assert np.array_equal(bits(old["posterior"].values), bits(cube_a["posterior"].values))
    assert st.verify_store(path, storage_options=so).ok


def test_recipe_store_on_s3(s3):
    """A recipe store written to S3 opens there and recomputes the cube bit for bit; verify checks it."""
    cube = make_cube(20, 3, chunks=8)[0]
    url = fresh(s3)
    st.to_store(cube, url, materialize=False, progress=False, storage_options=s3.storage_options)
    back = st.open_store(url, storage_options=s3.storage_options)
    assert st.store_info(url, storage_options=s3.storage_options)["kind"].startswith("recipe")
    np.testing.assert_array_equal(back.posterior.values, cube.posterior.values)
    assert st.verify_store(url, storage_options=s3.storage_options).ok


@pytest.fixture(scope="module")
def catalog_csv(tmp_path_factory):
    from massmap_xr.catalog import mock_catalog

    cat = mock_catalog(30, seed=8)
    path = tmp_path_factory.mktemp("s3cli") / "field.csv"
    pd.DataFrame({"z": cat.z, "lum_obs": cat.lum_obs, "ra": cat.ra, "dec": cat.dec,
                  "mass_true": cat.mass_true, "sigma_obs": cat.sigma_obs}).to_csv(path, index=False)
    return path


@pytest.mark.slow
def test_cli_with_storage_options(s3, catalog_csv, tmp_path, capsys):
    from massmap_xr.cli import main

    url = fresh(s3)
    opts = json.dumps(s3.storage_options)
    optfile = tmp_path / "s3.json"
    optfile.write_text(opts)
    common = ["--storage-options", opts]
    assert main(["build", str(catalog_csv), "-o", url, "--n-realizations", "3", "--chunks", "16", "--quiet",
                 *common]) == 0
    capsys.readouterr()
    assert main(["info", url, "--storage-options", f"@{optfile}"]) == 0
    assert "complete" in capsys.readouterr().out
    assert main(["verify", url, *common]) == 0
    assert "all intact" in capsys.readouterr().out
    assert main(["summary", url, "-o", str(tmp_path / "s.csv"), *common]) == 0
    assert len(pd.read_csv(tmp_path / "s.csv", comment="#")) == 30
    assert main(["sample", url, "-n", "3", "-o", str(tmp_path / "s.zarr"), *common]) == 0
    assert main(["append-halos", url, str(catalog_csv), "--renumber", "--quiet", *common]) == 0
    assert main(["append-realizations", url, "--n-realizations", "2", "--quiet", *common]) == 0
    ds = st.open_store(url, storage_options=s3.storage_options)
    assert ds.sizes["halo"] == 60 and ds.sizes["realization"] == 5
    capsys.readouterr()
    # without the options the endpoint is not reached: a clean one-line error, not a traceback
    for bad, what in (("{not json", "not valid JSON"), ("[1, 2]", "expected a JSON object"),
                      (f"@{tmp_path / 'none.json'}", "cannot read the file")):
        assert main(["info", url, "--storage-options", bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("massmap: error: --storage-options") and what in err and err.count("\n") == 1, err
