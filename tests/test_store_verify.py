"""verify_store finds damage; open_store is read-only and refuses foreign or newer stores."""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pytest
import xarray as xr
import zarr
from builders import file_digests
from builders import table_prior_cube as make_cube

import massmap_xr
import massmap_xr.store as st
from massmap_xr.errors import IncompleteStoreError, SchemaVersionError, StoreError
from massmap_xr.store import layout as store_layout

SHARD_1 = "posterior/c/1/0/0"  # halo slab 1: halos [16, 32), every realization
CELLS_1 = [f"chunk (1, {j}): halos [16, 32), realizations [{2 * j}, {2 * j + 2})" for j in range(3)]


@pytest.fixture(scope="module")
def built(table_store):
    return table_store


@pytest.fixture
def store(built, tmp_path):
    path = tmp_path / "cube.zarr"
    shutil.copytree(built, path)
    return path


def _root_attrs(path, edit):
    meta = json.loads((path / "zarr.json").read_text())
    edit(meta["attributes"])
    (path / "zarr.json").write_text(json.dumps(meta))


def _damaged_cells(report) -> list[str]:
    return [re.match(r"chunk \(\d+, \d+\): halos \[\d+, \d+\), realizations \[\d+, \d+\)", p).group(0)
            for p in report.problems if p.startswith("chunk (")]


def test_intact_store_verifies(store):
    report = st.verify_store(store)
    assert report.ok and report.n_chunks == 12
    assert str(report).endswith("12 chunks checked, all intact")


def test_truncated_chunk_is_named_by_its_ranges(store):
    f = store / SHARD_1
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    report = st.verify_store(store)
    assert not report.ok and _damaged_cells(report) == CELLS_1, str(report)


def test_deleted_chunk_is_reported_and_reads_as_nan_not_zero(store):
    (store / SHARD_1).unlink()
    report = st.verify_store(store)
    assert _damaged_cells(report) == CELLS_1
    assert all("checksum mismatch, chunk missing (reads as fill value NaN)" in p for p in report.problems)
    post = st.open_store(store, verify=False)["posterior"]  # unchecked, the missing cell is NaN
    assert post[16:32].isnull().all() and not post[:16].isnull().any()


@pytest.mark.parametrize("what", ["random bytes", "another valid chunk"])
def test_overwritten_chunk_is_reported(store, what):
    f = store / SHARD_1
    if what == "random bytes":
        f.write_bytes(np.random.default_rng(0).bytes(f.stat().st_size))
    else:
        shutil.copyfile(store / "posterior/c/2/0/0", f)  # decodes fine; only the checksums can tell
    report = st.verify_store(store)
    assert _damaged_cells(report) == CELLS_1, str(report)
    if what == "another valid chunk":
        assert all(p.endswith("checksum mismatch, chunk altered") for p in report.problems)


def test_edited_posterior_shape_is_reported(store):
    meta_path = store / "posterior" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    assert meta["shape"] == [60, 120, 6]
    meta["shape"] = [50, 120, 6]
    meta_path.write_text(json.dumps(meta))
    report = st.verify_store(store)
    assert not report.ok
    assert "posterior shape (50, 120, 6)" in report.problems[0] and "(60, 120, 6)" in report.problems[0]


def test_missing_schema_version_is_reported_and_refused(store):
    _root_attrs(store, lambda a: a.pop("massmap_schema_version"))
    report = st.verify_store(store)
    assert not report.ok and "not a massmap cube (no 'massmap_schema_version' attribute)" in report.problems[0]
    with pytest.raises(StoreError, match="not a massmap cube"):
        st.open_store(store)


def test_edited_variables_and_tables_break_the_recorded_invariants(store):
    g = zarr.open_group(str(store), mode="r+")
    g["z"][3] = g["z"][3] + 0.01
    g["weight"][0] = 0.5
    crc = g[st.CRC_NAME]
    crc[0, 0] = crc[0, 0] + 1
    _root_attrs(store, lambda a: a.update({st.N_HALO: 61}))
    problems = st.verify_store(store).problems
    expected = [
        "massmap_n_halo is 61 but the layout has 60",
        "the checksum table itself was altered",
        "variable 'weight' changed since the build (checksum mismatch)",
        "variable 'z' changed since the build (checksum mismatch)",
        "catalog_hash does not match the stored halo, z, lum_obs and sigma_obs",
        "hyper_hash does not match the stored hyperparameter table",
        "realization weights sum to",
        "chunk (0, 0): halos [0, 16), realizations [0, 2): checksum mismatch, chunk altered",
    ]
    for e in expected:
        assert any(e in p for p in problems), (e, problems)
    assert len(problems) == len(expected)


def test_rescaled_chunk_with_forged_checksums_fails_normalisation(store):
    g = zarr.open_group(str(store), mode="r+")
    block = 2 * g["posterior"][16:32, :, 0:2]
    g["posterior"][16:32, :, 0:2] = block
    g[st.CRC_NAME][1, 0] = store_layout.cell_stats(block, 0, 2, None)[0][0]
    problems = st.verify_store(store).problems
    assert any(p.startswith(CELLS_1[0] + ": normalisation off (worst |integral - 1| = 1 > 0.0001)") for p in problems)
    assert any("checksum table itself was altered" in p for p in problems)


def test_incomplete_store_reports_unwritten_chunks(tmp_path):
    cube = make_cube(40)[0]
    st.init_store(cube, tmp_path / "i.zarr")
    st.write_slabs(cube, tmp_path / "i.zarr", halo_chunks=[0])
    problems = st.verify_store(tmp_path / "i.zarr").problems
    assert problems[0] == "build status is 'incomplete', not 'complete'"
    assert problems[1:] == ["chunk (1, 0): halos [16, 32), realizations [0, 6): never written",
                            "chunk (2, 0): halos [32, 40), realizations [0, 6): never written"]


def test_open_store_and_reads_leave_every_file_unchanged(built):
    before = {p: (d, os.stat(built / p).st_mtime_ns, os.stat(built / p).st_size)
              for p, d in file_digests(built).items()}
    ds = st.open_store(built)
    marginal = (ds["posterior"] * ds["weight"]).sum("realization").compute()
    assert np.isfinite(marginal.values).all()
    st.store_info(built)
    assert st.verify_store(built).ok
    after = {p: (d, os.stat(built / p).st_mtime_ns, os.stat(built / p).st_size) for p, d in file_digests(built).items()}
    assert after == before


@pytest.mark.parametrize("version", ["9.0", "1.7"])
def test_newer_schema_version_is_refused_with_both_versions(store, version):
    _root_attrs(store, lambda a: a.update(massmap_schema_version=version))
    with pytest.raises(SchemaVersionError) as e:
        st.open_store(store)
    assert f"schema version {version}" in str(e.value) and massmap_xr.SCHEMA_VERSION in str(e.value)
    assert "upgrade massmap_xr" in str(e.value)
    report = st.verify_store(store)
    assert not report.ok and version in report.problems[0]


@pytest.mark.parametrize("version", ["0.3", "one"])
def test_older_or_unreadable_schema_version_is_refused(store, version):
    _root_attrs(store, lambda a: a.update(massmap_schema_version=version))
    with pytest.raises(SchemaVersionError, match=re.escape(version)):
        st.open_store(store)


def test_foreign_zarr_and_missing_paths_raise_store_error(tmp_path):
    path = tmp_path / "plain.zarr"
    xr.Dataset({"a": (("x",), np.arange(4.0))}).to_zarr(path, zarr_format=3, consolidated=False)
    with pytest.raises(StoreError, match=r"is a Zarr store but not a massmap cube.*xarray.open_zarr") as e:
        st.open_store(path)
    assert not isinstance(e.value, (SchemaVersionError, IncompleteStoreError))
    assert not st.verify_store(path).ok
    with pytest.raises(StoreError, match="does not exist"):
        st.open_store(tmp_path / "nowhere.zarr")
    (tmp_path / "dir").mkdir()
    with pytest.raises(StoreError, match="not a readable Zarr group"):
        st.open_store(tmp_path / "dir")
