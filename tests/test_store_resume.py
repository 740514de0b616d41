"""Interrupted builds and appends: resume completes them without redoing finished slabs."""

from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pytest
import xarray as xr
import zarr
from builders import file_digests, run_py, script
from builders import table_prior_cube as make_cube

import massmap_xr.store as st
from massmap_xr.errors import IncompleteStoreError, StoreError
from massmap_xr.store import append as store_append
from massmap_xr.store import slabs

N_HALO, SLAB = 120, 4  # 30 slabs


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    cube = make_cube(N_HALO, 6, chunks=SLAB)[0]
    path = tmp_path_factory.mktemp("clean") / "cube.zarr"
    st.to_store(cube, path, progress=False, realization_chunk=2)
    return cube, path


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    cube = make_cube()[0]  # 60 halos in 4 slabs
    path = tmp_path_factory.mktemp("small") / "cube.zarr"
    st.to_store(cube, path, progress=False, realization_chunk=2)
    return cube, path


def _mtimes(path, sub="posterior"):
    return {p: os.stat(path / p).st_mtime_ns for p in file_digests(path, sub) if "/c/" in p}


@pytest.mark.slow
def test_sigkill_mid_build_then_resume_equals_clean_build(tmp_path, clean):
    cube, clean_path = clean
    path = tmp_path / "killed.zarr"
    body = f"""
    from massmap_xr.store import to_store
    cube = make_cube({N_HALO}, 6, chunks={SLAB})[0]

    def slow(block):
        time.sleep(0.1)
        return block

    cube = cube.assign(posterior=cube.posterior.copy(data=cube.posterior.data.map_blocks(slow, dtype=np.float32)))
    to_store(cube, sys.argv[1], progress=False, realization_chunk=2)
    print("FINISHED")
    """
    proc = run_py(script(tmp_path, "build.py", body), path, wait=False)
    rows = path / st.CRC_NAME / "c"
    t0 = time.time()
    while time.time() - t0 < 90:
        # count checksum files, not row folders: zarr creates a row's folder before it renames
        # the row's file into place
        if rows.exists() and sum(1 for f in rows.rglob("*") if f.is_file() and not f.name.endswith(".partial")) >= 4:
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL and "FINISHED" not in out

    crc = zarr.open_group(str(path), mode="r")[st.CRC_NAME][...]
    done = np.flatnonzero(np.all(crc >= 0, axis=1))
    assert 4 <= done.size < 30, done.size
    with pytest.raises(IncompleteStoreError, match=r"is incomplete.*to_store\(\.\.\., resume=True\)"):
        st.open_store(path)
    partial = st.open_store(path, allow_incomplete=True)
    i_missing = int(np.flatnonzero(np.any(crc < 0, axis=1))[-1])
    if not (path / f"posterior/c/{i_missing}/0/0").exists():  # never written: NaN, not zeros
        assert partial["posterior"][i_missing * SLAB].isnull().all()
    report = st.verify_store(path)
    assert not report.ok and "build status is 'incomplete'" in str(report)
    kept = {p: t for p, t in _mtimes(path).items() if int(p.split("/")[2]) in set(done.tolist())}
    assert len(kept) == done.size

    st.to_store(cube, path, resume=True, progress=False)
    after = _mtimes(path)
    assert {p: after[p] for p in kept} == kept  # finished slabs were not redone
    assert sum(1 for p in after if p not in kept) == 30 - done.size
    assert st.verify_store(path).ok
    assert file_digests(path, "posterior") == file_digests(clean_path, "posterior")
    assert file_digests(path, st.CRC_NAME) == file_digests(clean_path, st.CRC_NAME)
    assert not list(path.rglob("*.partial"))
    ds, ref = st.open_store(path), st.open_store(clean_path)
    assert np.array_equal(ds["posterior"].values.view(np.uint32), ref["posterior"].values.view(np.uint32))


def test_slab_written_without_its_checksum_is_rewritten(tmp_path, small):
    cube, clean_path = small
    path = tmp_path / "s.zarr"
    st.init_store(cube, path, realization_chunk=2)
    st.write_slabs(cube, path)
    g = zarr.open_group(str(path), mode="r+")
    g["posterior"][16:32] = np.float32(7.0)  # data of a write killed before its checksum was recorded
    g[st.CRC_NAME][1, :] = -1
    (path / "posterior" / "c" / "0" / f"0.{'ab' * 16}.partial").write_bytes(b"junk")  # left by a killed rename
    st.to_store(cube, path, resume=True, progress=False)
    assert file_digests(path, "posterior") == file_digests(clean_path, "posterior")
    assert st.verify_store(path).ok


def test_resume_of_a_complete_store_changes_nothing(small, tmp_path):
    cube, clean_path = small
    before = {p: (d, os.stat(clean_path / p).st_mtime_ns) for p, d in file_digests(clean_path).items()}
    st.to_store(cube, clean_path, resume=True, progress=False)
    assert {p: (d, os.stat(clean_path / p).st_mtime_ns) for p, d in file_digests(clean_path).items()} == before


def test_resume_with_another_cube_is_refused(tmp_path, small):
    cube, _ = small
    path = tmp_path / "o.zarr"
    st.init_store(cube, path)
    other = make_cube(hseed=42)[0]
    with pytest.raises(StoreError, match=r"(?s)cannot resume .* the cube differs.*\n  - hyper_hash: store has .*mode='w'"):
        st.to_store(other, path, resume=True, progress=False)


@pytest.mark.parametrize("state", ["empty directory", "root metadata only", "arrays without checksum table"])
def test_build_killed_while_writing_the_template_is_restarted(tmp_path, small, state):
    cube, clean_path = small
    path = tmp_path / "t.zarr"
    path.mkdir()
    if state != "empty directory":
        st.init_store(cube, tmp_path / "full.zarr", realization_chunk=2)
        (path / "zarr.json").write_bytes((tmp_path / "full.zarr" / "zarr.json").read_bytes())
        meta = json.loads((path / "zarr.json").read_text())
        meta["attributes"].pop(st.TEMPLATE)  # the flag is written last
        if state == "root metadata only":
            meta["attributes"] = {}
        else:
            for name in ("halo", "z", "posterior"):
                os.rename(tmp_path / "full.zarr" / name, path / name)
        (path / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError):
        st.open_store(path)
    st.to_store(cube, path, resume=True, progress=False, realization_chunk=2)
    assert file_digests(path, "posterior") == file_digests(clean_path, "posterior")
    assert st.verify_store(path).ok


def test_resume_refuses_a_directory_it_did_not_write(tmp_path, small):
    cube, _ = small
    path = tmp_path / "mine"
    path.mkdir()
    (path / "notes.txt").write_text("precious")
    with pytest.raises(StoreError, match=r"(?s)holds \['notes.txt'\] that a massmap build did not write.*mode='w'"):
        st.to_store(cube, path, resume=True, progress=False)
    assert (path / "notes.txt").read_text() == "precious"
    xr.Dataset({"a": ("x", np.arange(3.0))}).to_zarr(tmp_path / "foreign.zarr", zarr_format=3, consolidated=False)
    with pytest.raises(StoreError, match="not an interrupted massmap build"):
        st.to_store(cube, tmp_path / "foreign.zarr", resume=True, progress=False)


def _crash_on_call(monkeypatch, module, target: str, n: int):
    real = getattr(module, target)
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= n:
            raise RuntimeError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, target, flaky)


@pytest.mark.parametrize("stage", ["metadata", "slabs"])
@pytest.mark.parametrize("kind", ["halos", "realizations"])
def test_interrupted_append_is_finished_by_calling_it_again(tmp_path, monkeypatch, kind, stage):
    base, cat, hyp = make_cube(60, 6)
    if kind == "halos":
        new, cat_b, _ = make_cube(70, seed=3, halo_offset=100)
        union = make_cube(catalog=xr.concat([cat, cat_b], "halo"), hyper=hyp)[0]
        append = st.append_halos
    else:
        new, _, hyp_b = make_cube(catalog=cat, n_real=5, hseed=2, real_offset=6)
        union = make_cube(catalog=cat, hyper=xr.concat([hyp, hyp_b], "realization"))[0]
        append = st.append_realizations
    path = tmp_path / "a.zarr"
    st.to_store(base, path, progress=False, inner_halo_chunk=8, realization_chunk=4)
    with monkeypatch.context() as m:
        m.setattr(slabs, "n_workers", lambda: 1)
        _crash_on_call(m, *((store_append, "resize_tables") if stage == "metadata" else (slabs, "write_block")),
                       1 if stage == "metadata" else 3)
        with pytest.raises(RuntimeError, match="simulated crash"):
            append(new, path)
    op = f"append_{kind}"
    with pytest.raises(IncompleteStoreError, match=rf"finish it by calling {op}\(\) again with the same cube"):
        st.open_store(path)
    assert f"an interrupted {op}" in str(st.verify_store(path))
    with pytest.raises(StoreError, match=f"interrupted {op}"):
        st.to_store(union, path, resume=True, progress=False)
    with pytest.raises(StoreError, match=rf"cannot finalise .*an interrupted {op} is pending"):
        st.finalize_store(path)
    with pytest.raises(StoreError, match=f"has an interrupted {op} of another cube"):
        append(make_cube(10, seed=9, halo_offset=900)[0] if kind == "halos"
               else make_cube(catalog=cat, n_real=2, hseed=4, real_offset=20)[0], path)
    append(new, path)
    ds = st.open_store(path)
    assert np.array_equal(ds["posterior"].values.view(np.uint32), union["posterior"].values.view(np.uint32))
    assert ds.attrs["catalog_hash"] == union.attrs["catalog_hash"]
    assert ds.attrs["hyper_hash"] == union.attrs["hyper_hash"]
    assert st.verify_store(path).ok
