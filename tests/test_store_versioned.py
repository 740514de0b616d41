"""Versioned stores (icechunk:// paths): one commit per write, nothing visible from a failed or
killed write, reads by branch, tag or snapshot, history, and concurrent writers that either merge
or fail with VersionConflictError."""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest
import xarray as xr
from builders import run_py, script
from builders import table_prior_cube as make_cube

import massmap_xr.store as st
from massmap_xr.errors import StoreError, StoreExistsError, VersionConflictError

pytest.importorskip("icechunk")
from massmap_xr.store import versioned  # noqa: E402


def bits(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32).view(np.uint32)


def spoiled(cube, slab: int):
    """``cube`` with slab ``slab`` doubled (not normalised): to_store raises when it reaches it."""
    def spoil(block, block_info=None):
        return block * 2 if block_info[0]["chunk-location"][0] == slab else block

    post = cube["posterior"]
    return cube.assign(posterior=post.copy(data=post.data.map_blocks(spoil, dtype=np.float32)))


def test_builds_appends_and_versions(tmp_path, capsys):
    path = f"icechunk://{tmp_path / 'repo'}"
    cube_a, cat_a, hyp = make_cube(40)
    st.to_store(cube_a, path, progress=False)
    with pytest.raises(StoreExistsError, match="refusing to overwrite"):
        st.to_store(cube_a, path, progress=False)
    ds = st.open_store(path)
    assert np.array_equal(bits(ds["posterior"].values), bits(cube_a["posterior"].values))
    assert st.verify_store(path).ok
    versioned.tag(path, "v1")
    cube_b, cat_b, _ = make_cube(30, seed=12, halo_offset=1000)
    st.append_halos(cube_b, path)
    union = make_cube(catalog=xr.concat([cat_a, cat_b], "halo"), hyper=hyp)[0]
    assert np.array_equal(bits(st.open_store(path)["posterior"].values), bits(union["posterior"].values))
    log = versioned.history(path)
    assert [c["message"] for c in log] == ["append_halos of halos [40, 70)",
                                            "to_store (w-) of 40 halos x 6 realizations", "Repository initialized"]
    # the first build by its snapshot id and by its tag; the head of main has the union
    for version in (log[1]["snapshot_id"], "v1"):
        old = st.open_store(path, version=version)
        assert old.sizes["halo"] == 40
        assert np.array_equal(bits(old["posterior"].values), bits(cube_a["posterior"].values))
    assert st.open_store(path, version="main").sizes["halo"] == 70
    assert st.store_info(f"{path}#v1")["shape"]["halo"] == 40
    with pytest.raises(StoreError, match="version 'nope' is not a branch"):
        st.open_store(path, version="nope")
    with pytest.raises(StoreError, match="needs a versioned store"):
        st.open_store(tmp_path / "plain.zarr", version="v1")
    # a replacement is one more commit; the replaced store stays readable by version
    st.to_store(cube_a.isel(halo=slice(0, 16)), path, mode="w", progress=False)
    assert st.open_store(path).sizes["halo"] == 16 and st.open_store(path, version="v1").sizes["halo"] == 40
    from massmap_xr.cli import main

    capsys.readouterr()
    assert main(["info", path, "--history"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and "to_store (w) of 16 halos" in out[0] and out[-1].endswith("Repository initialized")
    assert main(["verify", path]) == 0


def test_failed_build_and_failed_replacement_commit_nothing(tmp_path):
    path = f"icechunk://{tmp_path / 'repo'}"
    cube = make_cube(64)[0]
    with pytest.raises(StoreError, match="not normalised"):
        st.to_store(spoiled(cube, 2), path, progress=False)
    assert [c["message"] for c in versioned.history(path)] == ["Repository initialized"]
    with pytest.raises(StoreError, match="does not exist"):
        st.open_store(path, allow_incomplete=True)
    st.to_store(cube, path, resume=True, progress=False)  # nothing to resume: built from scratch
    head = versioned.history(path)[0]["snapshot_id"]
    with pytest.raises(StoreError, match="not normalised"):
        st.to_store(spoiled(make_cube(64, seed=3)[0], 1), path, mode="w", progress=False)
    cube_b = make_cube(20, seed=12, halo_offset=1000)[0]
    with pytest.raises(StoreError, match="not normalised"):
        st.append_halos(spoiled(cube_b, 1), path)
    assert versioned.history(path)[0]["snapshot_id"] == head
    ds = st.open_store(path)
    assert ds.sizes["halo"] == 64 and np.array_equal(bits(ds["posterior"].values), bits(cube["posterior"].values))
    assert st.verify_store(path).ok


@pytest.mark.slow
def test_killed_build_is_never_visible(tmp_path):
    repo = tmp_path / "repo"
    path = f"icechunk://{repo}"
    body = """
    from massmap_xr.store import to_store
    cube = make_cube(160, 6, chunks=16)[0]

    def slow(block):
        time.sleep(0.3)
        return block

    cube = cube.assign(posterior=cube.posterior.copy(data=cube.posterior.data.map_blocks(slow, dtype=np.float32)))
    to_store(cube, sys.argv[1], progress=False)
    print("FINISHED")
    """
    proc = run_py(script(tmp_path, "build.py", body), path, wait=False)
    chunks = repo / "chunks"
    t0 = time.time()
    while time.time() - t0 < 120:
        if chunks.exists() and len(list(chunks.iterdir())) >= 8:  # template and some slabs written
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL and "FINISHED" not in out
    assert [c["message"] for c in versioned.history(path)] == ["Repository initialized"]
    assert not versioned.exists(path)
    with pytest.raises(StoreError, match="does not exist"):
        st.open_store(path, allow_incomplete=True)


WRITER = """
import massmap_xr.store as st
cube = make_cube(64, 6, chunks=16)[0]
st.{call}
print("COMMITTED")
"""


def test_concurrent_disjoint_writers_merge(tmp_path):
    path = f"icechunk://{tmp_path / 'repo'}"
    cube = make_cube(64, 6, chunks=16)[0]
    st.init_store(cube, path)
    with versioned.transaction(path, message="write_slabs of halos [0, 32)"):
        st.write_slabs(cube, path, halo_range=(0, 32))
        # another process writes the other half and commits first
        rc, out, err = run_py(script(tmp_path, "w.py", WRITER.format(call=f"write_slabs(cube, {path!r}, "
                                                                         "halo_range=(32, 64))")))
        assert rc == 0 and "COMMITTED" in out, err
    st.finalize_store(path)
    ds = st.open_store(path)
    assert np.array_equal(bits(ds["posterior"].values), bits(cube["posterior"].values))
    messages = [c["message"] for c in versioned.history(path)]
    assert messages[:3] == ["finalize_store", "write_slabs of halos [0, 32)", "write_slabs of halos [32, 64)"]


def test_concurrent_appends_conflict(tmp_path):
    path = f"icechunk://{tmp_path / 'repo'}"
    cube = make_cube(64, 6, chunks=16)[0]
    st.to_store(cube, path, progress=False)
    head = versioned.history(path)[0]["snapshot_id"]
    mine = make_cube(20, 6, chunks=16, seed=12, halo_offset=1000)[0]
    call = "append_halos(make_cube(30, 6, chunks=16, seed=13, halo_offset=2000)[0], " + repr(path) + ")"
    with pytest.raises(VersionConflictError, match=r"append_halos of halos \[64, 84\).*conflicts.*"
                                                   r"append_halos of halos \[64, 94\)"):
        with versioned.transaction(path, message="append_halos of halos [64, 84)"):
            st.append_halos(mine, path)
            rc, out, err = run_py(script(tmp_path, "a.py", WRITER.format(call=call)))
            assert rc == 0 and "COMMITTED" in out, err
    log = versioned.history(path)
    assert log[1]["snapshot_id"] == head and log[0]["message"] == "append_halos of halos [64, 94)"
    ds = st.open_store(path)
    assert ds.sizes["halo"] == 94 and st.verify_store(path).ok
