"""Stores keep the hyperparameter kind and the per-(halo, realization) variables (log_evidence,
edge_fraction): written with the slabs, appended, resumed, verified, read back; old stores without
them still open."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import xarray as xr
from builders import brute_log_evidence, table_prior_cube, with_log_evidence

from massmap_xr.analysis import marginalize, summary
from massmap_xr.errors import AnalysisError, StoreError
from massmap_xr.model.hyper import reddick2013
from massmap_xr.store import (
    append_halos,
    append_realizations,
    finalize_store,
    init_store,
    open_store,
    store_info,
    to_store,
    verify_store,
    write_slabs,
)


def _with_extras(cube):
    """The cube with brute-force log_evidence and a float32 edge_fraction, both lazy along halo."""
    cube = with_log_evidence(cube)
    le = cube["log_evidence"]
    edge = (np.exp(le.clip(max=0.0)) * 0.01).astype(np.float32).rename("edge_fraction")
    return cube.assign(edge_fraction=edge.chunk({"halo": cube["posterior"].chunksizes["halo"]}))


@pytest.fixture(scope="module")
def parts():
    """A union cube of 40 halos x 6 realizations and its halo / realization parts, with extras."""
    whole, cat, hyper = table_prior_cube(40, 6, chunks=8, hyper=reddick2013(6, seed=5))
    cat_a, cat_b = cat.isel(halo=slice(0, 27)), cat.isel(halo=slice(27, None))
    hyp_a, hyp_b = hyper.isel(realization=slice(0, 4)), hyper.isel(realization=slice(4, None))
    return {
        "whole": _with_extras(whole),
        "halos_a": _with_extras(table_prior_cube(catalog=cat_a, hyper=hyper, chunks=8)[0]),
        "halos_b": _with_extras(table_prior_cube(catalog=cat_b, hyper=hyper, chunks=8)[0]),
        "real_a": _with_extras(table_prior_cube(catalog=cat, hyper=hyp_a, chunks=8)[0]),
        "real_b": _with_extras(table_prior_cube(catalog=cat, hyper=hyp_b, chunks=8)[0]),
    }


def _same_extras(ds, cube):
    for k in ("log_evidence", "edge_fraction"):
        assert ds[k].dtype == cube[k].dtype
        assert ds[k].dims == ("halo", "realization")
        np.testing.assert_array_equal(ds[k].values, cube[k].transpose("halo", "realization").values)


def test_round_trip_kind_and_variables(tmp_path, parts):
    cube = parts["whole"]
    path = to_store(cube, tmp_path / "s.zarr", progress=False, inner_halo_chunk=4, realization_chunk=2)
    ds = open_store(path)
    assert ds.attrs["hyper_kind"] == "prior"
    _same_extras(ds, cube)
    assert ds["log_evidence"].chunksizes["halo"] == ds["posterior"].chunksizes["halo"]  # lazy, by slab
    assert verify_store(path).ok
    info = store_info(path)
    assert info["hyper_kind"] == "prior" and info["realization_halo_variables"] == ["edge_fraction", "log_evidence"]
    a, b = summary(cube).compute(), summary(ds).compute()
    np.testing.assert_allclose(b["mean"].values, a["mean"].values, rtol=0, atol=1e-12)
    # the prior kind of the store gives evidence weights, different from the plain mean
    plain = marginalize(ds.assign_attrs(hyper_kind="posterior")).values
    assert np.max(np.abs(marginalize(ds).values - plain)) > 1e-3


def test_damaged_evidence_is_detected(tmp_path, parts):
    path = to_store(parts["whole"], tmp_path / "s.zarr", progress=False)
    path_ = tmp_path / "s.zarr" / "log_evidence"
    chunk = next(p for p in path_.rglob("*") if p.is_file() and p.name != "zarr.json")
    raw = bytearray(chunk.read_bytes())
    raw[-1] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    report = verify_store(path)
    assert not report.ok and "log_evidence" in str(report)
    with pytest.raises(StoreError, match="log_evidence"):
        open_store(path)
    assert path_.exists()


def test_append_halos_and_realizations_match_one_build(tmp_path, parts):
    whole = parts["whole"]
    p1 = to_store(parts["halos_a"], tmp_path / "h.zarr", progress=False, inner_halo_chunk=4, realization_chunk=2)
    append_halos(parts["halos_b"], p1)
    ds = open_store(p1)
    _same_extras(ds, whole)
    assert verify_store(p1).ok
    p2 = to_store(parts["real_a"], tmp_path / "r.zarr", progress=False, inner_halo_chunk=4, realization_chunk=3)
    append_realizations(parts["real_b"], p2)
    ds = open_store(p2)
    _same_extras(ds, whole)
    assert verify_store(p2).ok
    np.testing.assert_allclose(marginalize(ds).values, marginalize(whole).values, rtol=1e-6, atol=1e-9)


def test_several_writers_and_resume(tmp_path, parts):
    cube = parts["whole"]
    path = tmp_path / "w.zarr"
    layout = init_store(cube, path, inner_halo_chunk=4, realization_chunk=2)
    write_slabs(cube, path, halo_range=(0, 2 * layout.halo_chunk))
    ds = open_store(path, allow_incomplete=True)
    assert np.isnan(ds["log_evidence"].values[2 * layout.halo_chunk:]).all()  # unwritten: NaN
    to_store(cube, path, resume=True, progress=False)
    _same_extras(open_store(path), cube)
    # a killed build (template written, some slabs) finished by write_slabs + finalize
    path2 = tmp_path / "w2.zarr"
    init_store(cube, path2)
    write_slabs(cube, path2)
    finalize_store(path2)
    _same_extras(open_store(path2), cube)


def test_old_store_without_the_variables(tmp_path, parts):
    cube = parts["whole"]
    old = cube.drop_vars(["log_evidence", "edge_fraction"])
    path = to_store(old.assign_attrs(hyper_kind="posterior"), tmp_path / "old.zarr", progress=False)
    ds = open_store(path)
    assert "log_evidence" not in ds and ds.attrs["hyper_kind"] == "posterior"
    assert np.isfinite(summary(ds)["mean"].values).all()
    # a store of prior draws without the evidence: a clear error saying how to rebuild
    path2 = to_store(old, tmp_path / "old_prior.zarr", progress=False)
    with pytest.raises(AnalysisError, match="(?s)log_evidence.*build_like_store"):
        summary(open_store(path2))
    # new cubes (with the variables) append to an old store: the variables it lacks are not added
    shutil.copytree(path2, tmp_path / "copy.zarr")
    append_halos(parts["halos_b"].assign_coords(halo=parts["halos_b"].halo + 1000), tmp_path / "copy.zarr")
    ds = open_store(tmp_path / "copy.zarr")
    assert ds.sizes["halo"] == 53 and "log_evidence" not in ds and verify_store(tmp_path / "copy.zarr").ok


def test_kinds_cannot_be_mixed(tmp_path, parts):
    path = to_store(parts["real_a"], tmp_path / "k.zarr", progress=False)
    other = parts["real_b"].assign_attrs(hyper_kind="posterior")
    with pytest.raises(StoreError, match="hyper_kind"):
        append_realizations(other, path)


def test_brute_force_evidence_agrees_with_kernel_when_present():
    """When build_posterior itself computes log_evidence, it must agree with brute-force quadrature."""
    # the kernel integrates on the cube's grid (trapezoid, O(h^2)): a fine grid makes that error negligible
    cube = table_prior_cube(8, 3, hyper=reddick2013(3, seed=2), n_mass=600)[0]
    if "log_evidence" not in cube:
        pytest.skip("build_posterior does not compute log_evidence in this version")
    got = cube["log_evidence"].values
    want = brute_log_evidence(cube)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-3)
    assert isinstance(cube["log_evidence"].data, type(cube["posterior"].data))
    assert xr.DataArray(got).dtype == np.float64


def test_cli_hyper_kind(tmp_path, capsys):
    import pandas as pd

    from massmap_xr.catalog import mock_catalog
    from massmap_xr.cli import main

    cat = mock_catalog(20, seed=8)
    csv = tmp_path / "field.csv"
    pd.DataFrame({"z": cat.z, "lum_obs": cat.lum_obs, "ra": cat.ra, "dec": cat.dec,
                  "sigma_obs": cat.sigma_obs}).to_csv(csv, index=False)
    prior, post = tmp_path / "prior.zarr", tmp_path / "post.zarr"
    assert main(["build", str(csv), "-o", str(prior), "--n-realizations", "3", "--quiet"]) == 0
    assert main(["build", str(csv), "-o", str(post), "--n-realizations", "3", "--hyper-kind", "posterior",
                 "--quiet"]) == 0
    assert open_store(prior).attrs["hyper_kind"] == "prior"
    assert open_store(post).attrs["hyper_kind"] == "posterior"
    assert main(["summary", str(post), "-o", str(tmp_path / "s.csv")]) == 0
    if "log_evidence" not in open_store(prior):  # this version's build does not record the evidence
        capsys.readouterr()
        assert main(["summary", str(prior), "-o", str(tmp_path / "p.csv")]) == 2
        err = capsys.readouterr().err
        assert "log_evidence" in err and "massmap build" in err and not (tmp_path / "p.csv").exists()
    # new draws appended to a store take its kind by default
    assert main(["append-realizations", str(post), "--n-realizations", "2", "--quiet"]) == 0
    ds = open_store(post)
    assert ds.sizes["realization"] == 5 and ds.attrs["hyper_kind"] == "posterior"
