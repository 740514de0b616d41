"""Stores that never lose data: replacement beside the old store, refusal of what is not a store,
write-time rules as strict as verification's, no side effects from failed commands, resource guards."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

import massmap_xr.store as st
from massmap_xr.catalog import mock_catalog
from massmap_xr.cube import build_posterior
from massmap_xr.errors import StoreError
from massmap_xr.model.hyper import reddick2013


def digests(root) -> dict:
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def cubes():
    cat = mock_catalog(20, seed=3)
    a = build_posterior(cat, reddick2013(3, seed=1, kind="posterior"), chunks=8)
    b = build_posterior(cat, reddick2013(3, seed=2, kind="posterior"), chunks=8)
    return a, b


@pytest.fixture
def store(tmp_path, cubes):
    return st.to_store(cubes[0], tmp_path / "old.zarr", progress=False)


def siblings(path):
    parent = os.path.dirname(str(path))
    return sorted(n for n in os.listdir(parent) if n != os.path.basename(str(path)))


def negative_cube(cube):
    """Normalised rows with a negative density: halo 0, realization 0 gets +x / -x at two masses."""
    post = cube["posterior"].values.copy()
    post[0, 10, 0] -= 5.0
    post[0, 11, 0] += 5.0  # the trapezoid integral over the uniform grid stays 1
    return cube.assign(posterior=(cube["posterior"].dims, post, cube["posterior"].attrs))


@pytest.mark.parametrize("bad", ["unnormalised", "negative", "nan"])
def test_failed_replacement_leaves_old_store_bit_identical(store, cubes, bad):
    cube = cubes[1]
    if bad == "unnormalised":
        cube = cube.assign(posterior=cube["posterior"] * 1.5)
    elif bad == "negative":
        cube = negative_cube(cube.compute())
    else:
        cube = cube.assign(posterior=cube["posterior"].where(cube["halo"] != cube["halo"][5]))
    before, around = digests(store), siblings(store)
    with pytest.raises(StoreError, match="not normalised"):
        st.to_store(cube, store, mode="w", progress=False)
    assert digests(store) == before
    assert siblings(store) == around  # the temporary sibling was removed
    assert st.verify_store(store).ok


def test_successful_replacement_gives_the_new_cube(store, cubes):
    around = siblings(store)
    st.to_store(cubes[1], store, mode="w", progress=False)
    assert siblings(store) == around
    got = st.open_store(store)
    assert got.attrs["hyper_hash"] == cubes[1].attrs["hyper_hash"]
    np.testing.assert_array_equal(got["posterior"].values, cubes[1]["posterior"].values)
    assert st.verify_store(store).ok


@pytest.mark.parametrize("kind", ["directory", "file", "zarr"])
def test_replacing_what_is_not_a_store_is_refused_untouched(tmp_path, cubes, kind):
    import zarr

    path = tmp_path / "x"
    if kind == "directory":
        path.mkdir()
        for n in ("a.txt", "b.txt", "c.txt"):
            (path / n).write_text(n)
        match = "is a directory with 3 entries that is not a massmap store"
    elif kind == "file":
        path.write_bytes(b"precious")
        match = "is a file of 8 bytes, not a massmap store"
    else:
        zarr.open_group(str(path), mode="w").create_array("data", shape=(3,), dtype="f8")
        match = "not a massmap store"
    before = digests(tmp_path)
    for call in (lambda: st.to_store(cubes[0], path, mode="w", progress=False),
                 lambda: st.init_store(cubes[0], path, mode="w")):
        with pytest.raises(StoreError, match=match) as info:
            call()
        assert "choose another path or remove it yourself" in str(info.value)
        assert digests(tmp_path) == before
        assert sorted(os.listdir(tmp_path)) == ["x"]


def test_negative_densities_are_refused_at_write_time(tmp_path, cubes):
    cube = negative_cube(cubes[0].compute())
    w = cube["log10_mass"].values
    assert abs(np.trapezoid(cube["posterior"].values[0, :, 0], w) - 1) < 1e-4  # still normalised
    with pytest.raises(StoreError, match=r"(?s)negative densities \(1 row.*first ids: " + str(int(cube.halo[0]))):
        st.to_store(cube, tmp_path / "n.zarr", progress=False)
    with pytest.raises(Exception):  # noqa: B017 - never marked complete
        st.open_store(tmp_path / "n.zarr")


def test_verify_flags_negative_densities(tmp_path, cubes, monkeypatch):
    """A store written before the write-time rule (negatives unchecked): checksums match, norms are 1."""
    import massmap_xr.store.slabs as slabs
    from massmap_xr.store.layout import norm_error

    # the writer's one-pass check, with the negative-density half switched off
    monkeypatch.setattr(slabs, "norm_and_negative",
                        lambda b, w: (norm_error(b, w), np.zeros((b.shape[0], b.shape[2]), dtype=bool)))
    path = st.to_store(negative_cube(cubes[0].compute()), tmp_path / "old.zarr", progress=False)
    monkeypatch.undo()
    report = st.verify_store(path)
    assert not report.ok
    assert [p for p in report.problems if "negative density" in p] == [
        "chunk (0, 0): halos [0, 20), realizations [0, 3): 1 negative density value(s) (a posterior density is never "
        "negative); rebuild the store"]


def test_finalize_and_write_slabs_on_a_missing_path_create_nothing(tmp_path, cubes):
    missing = tmp_path / "missing.zarr"
    with pytest.raises(StoreError, match="does not exist"):
        st.finalize_store(missing)
    with pytest.raises(StoreError, match="does not exist"):
        st.write_slabs(cubes[0], missing, halo_range=(0, 8))
    assert not missing.exists()
    st.to_store(cubes[0], missing, progress=False)  # a real build is not blocked
    assert st.verify_store(missing).ok


def test_store_below_a_regular_file_is_refused(tmp_path, cubes):
    (tmp_path / "f").write_text("x")
    with pytest.raises(StoreError, match="is a file, not a directory"):
        st.to_store(cubes[0], tmp_path / "f" / "s.zarr", progress=False)


# --------------------------------------------------------------------------- inputs that slipped through
def test_csv_with_a_repeated_column_name_is_refused(tmp_path):
    from massmap_xr.catalog import read_catalog
    from massmap_xr.errors import CatalogError

    p = tmp_path / "dup.csv"
    p.write_text("z,lum_obs,ra,dec,z\n0.1,1e10,10,0,0.2\n0.2,2e10,10.1,0.1,0.3\n")
    with pytest.raises(CatalogError, match=r"column name\(s\) \['z'\] occur more than once"):
        read_catalog(p)


@pytest.mark.parametrize("name, value", [("alpha1", 1e308), ("alpha1", -1e308), ("alpha4", 1e308)])
def test_edge_collapse_is_reported_when_the_check_overflows(name, value):
    import warnings

    from massmap_xr.errors import CatalogWarning

    cat = mock_catalog(5, seed=1)
    hyper = reddick2013(2, seed=0)
    hyper[name][:] = value
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no overflow warnings either
        with pytest.warns(CatalogWarning, match="5 halo\\(s\\) have L_obs so far"):
            build_posterior(cat, hyper)


def test_flat_likelihood_is_not_an_edge_collapse():
    import warnings

    cat = mock_catalog(5, seed=1)
    hyper = reddick2013(2, seed=0)
    hyper["alpha2"][:] = 0.0
    hyper["alpha1"][:] = 1e308
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_posterior(cat, hyper)


def test_hyper_table_with_text_in_a_numeric_column(tmp_path):
    from massmap_xr.errors import HyperparameterError
    from massmap_xr.model.hyper import read_hyper

    p = tmp_path / "h.csv"
    p.write_text("alpha1,alpha2,alpha3,alpha4,S\n1,1,1e14,1,0.2\n1,oops,1e14,1,0.2\n")
    with pytest.raises(HyperparameterError, match=r"column 'alpha2' must hold numbers, but 1 row\(s\) hold text "
                                                  r"\(first data rows 2: oops\)"):
        read_hyper(p)


def test_from_arviz_without_a_posterior_group():
    arviz = pytest.importorskip("arviz")
    from massmap_xr.errors import HyperparameterError
    from massmap_xr.model.hyper import from_arviz

    idata = arviz.InferenceData(prior=reddick2013(4).expand_dims(chain=1).rename(realization="draw"))
    with pytest.raises(HyperparameterError, match="has no 'posterior' group"):
        from_arviz(idata)


# --------------------------------------------------------------------------- resource guards
def test_sample_refuses_a_huge_request_before_allocating(cubes):
    from massmap_xr.analysis import sample
    from massmap_xr.errors import AnalysisError

    with pytest.raises(AnalysisError, match=r"sample\(1000000000\) of a block of 8 halos would need about 152 GB"
                                            r".*20 halos x 1000000000 samples x 8 bytes = 160 GB.*massmap sample"):
        sample(cubes[0], 10**9)
    with pytest.raises(AnalysisError, match=r"of 20 halos would need about 3\.44e\+03 GB"):
        sample(cubes[0].compute(), 10**10)


def test_sample_limit_follows_the_documented_setting(cubes, monkeypatch):
    from massmap_xr.analysis import sample
    from massmap_xr.errors import AnalysisError

    monkeypatch.setenv("MASSMAP_MEMORY_LIMIT", "10000")
    with pytest.raises(AnalysisError, match="about 1.52e-05 GB of memory, more than the limit of 1e-05 GB"):
        sample(cubes[0], 100)  # 2 * 8 * 8 * 100 + 3 * 8 * 100 = 15200 bytes
    monkeypatch.setenv("MASSMAP_MEMORY_LIMIT", "20000")
    assert sample(cubes[0], 100).shape == (20, 100)


def test_projections_refuse_huge_maps_before_allocating(cubes):
    import xarray as xr

    from massmap_xr.errors import ProjectionError
    from massmap_xr.sky import project_flat, project_healpix

    pytest.importorskip("healpy")
    cat = mock_catalog(20, seed=3)
    masses = xr.DataArray(np.ones((20, 1000)), dims=("halo", "sample"),
                          coords={"ra": ("halo", cat.ra.values), "dec": ("halo", cat.dec.values)})
    with pytest.raises(ProjectionError, match=r"HEALPix maps of every cell at nside 8192 x 1000 sample\(s\) would "
                                              r"need about 6\.45e\+03 GB.*cells='occupied'"):
        project_healpix(masses, 2**13, cells="all")
    with pytest.raises(ProjectionError, match=r"flat maps of .* pixels x 1000 sample\(s\) would need about .* GB"
                                              r".*increase pixel_scale"):
        project_flat(masses, pixel_scale=0.01)


def test_replacement_on_an_object_store(cubes):
    import uuid

    import fsspec

    path = f"memory://safety-{uuid.uuid4().hex}/r.zarr"
    st.to_store(cubes[0], path, progress=False)
    with pytest.raises(StoreError, match="not normalised"):
        st.to_store(cubes[1].assign(posterior=cubes[1]["posterior"] * 2), path, mode="w", progress=False)
    assert st.open_store(path).attrs["hyper_hash"] == cubes[0].attrs["hyper_hash"]
    st.to_store(cubes[1], path, mode="w", progress=False)
    assert st.open_store(path).attrs["hyper_hash"] == cubes[1].attrs["hyper_hash"]
    assert st.verify_store(path).ok
    parent = path.rsplit("/", 1)[0].removeprefix("memory:/")
    assert [e.rsplit("/", 1)[-1] for e in fsspec.filesystem("memory").ls(parent, detail=False)] == ["r.zarr"]
