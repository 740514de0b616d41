"""Recipe stores (inputs only, the posterior recomputed on read) against materialised stores."""

from __future__ import annotations

import json

import dask
import numpy as np
import pytest
import xarray as xr
import zarr
from builders import table_prior_cube

import massmap_xr as mm
import massmap_xr.store as st
from massmap_xr.cli import main
from massmap_xr.errors import RecipeVersionError, StoreError
from massmap_xr.store.recipe import RECIPE


@pytest.fixture(scope="module")
def pair(tmp_path_factory, table_cube):
    """The table cube written materialised and as a recipe."""
    d = tmp_path_factory.mktemp("recipe")
    st.to_store(table_cube, d / "m.zarr", progress=False)
    st.to_store(table_cube, d / "r.zarr", materialize=False)
    return d / "m.zarr", d / "r.zarr"


def _assert_same_dataset(a: xr.Dataset, b: xr.Dataset):
    assert set(a.variables) == set(b.variables)
    assert a.attrs == b.attrs
    for k in a.variables:
        assert a[k].dims == b[k].dims, k
        assert a[k].dtype == b[k].dtype, k
        assert a[k].attrs == b[k].attrs, k
        assert a[k].chunks == b[k].chunks, k
        np.testing.assert_array_equal(a[k].values, b[k].values, err_msg=k)


def test_recipe_holds_no_posterior_and_opens_as_the_materialised_store(pair, table_cube):
    mat, rec = pair
    assert not (rec / "posterior").exists() and (mat / "posterior").exists()
    size = sum(p.stat().st_size for p in rec.rglob("*") if p.is_file())
    assert size < sum(p.stat().st_size for p in (mat / "posterior").rglob("*") if p.is_file())
    with dask.config.set(scheduler="threads"):
        m, r = st.open_store(mat), st.open_store(rec)
        _assert_same_dataset(m, r)
        assert r["posterior"].chunks == ((16, 16, 16, 12), (120,), (6,))
        # against the cube itself, computed afresh
        assert np.array_equal(r["posterior"].values, table_cube["posterior"].values)
    assert r.encoding["massmap_store_kind"] == "recipe"
    assert st.store_info(rec)["kind"] == "recipe store (computed on read)"
    assert st.store_info(mat)["kind"] == "materialised store"
    assert st.verify_store(rec).ok


def test_recipe_of_a_tinker_cube_is_bit_identical(tmp_path, small_cube):
    """The stored prior table, read back as a TablePrior, gives the TinkerPrior's posterior bit for bit."""
    st.to_store(small_cube, tmp_path / "r.zarr", materialize=False)
    r = st.open_store(tmp_path / "r.zarr")
    assert small_cube.attrs["prior"] == "TinkerPrior" and r.attrs["prior"] == "TinkerPrior"
    assert np.array_equal(r["posterior"].values, small_cube["posterior"].values)


def test_prior_table_whose_logs_do_not_round_trip_is_rebuilt_exactly(tmp_path):
    """A table with values near 1: exp(ln v) is not v in the last bit for some entries, yet the kernel
    reads the table the cube records, so a TablePrior of that table reproduces the posterior exactly."""
    m = np.logspace(9.5, 16.0, 80)
    zt = np.linspace(0.0, 4.0, 5)
    table = np.exp(-((np.log10(m)[None, :] - 12.5) ** 2) / 8.0) * (1.0 + 0.1 * zt[:, None])
    prior = mm.TablePrior(xr.DataArray(table, dims=("z", "mass"), coords={"z": zt, "mass": m}))
    mass = np.logspace(10.0, 15.5, 120)
    zn, lt = prior.log_table(mass)
    assert np.any(np.log(np.exp(lt)) != lt)  # the round trip that a naive rebuild would rely on fails
    cat = mm.mock_catalog(40, seed=3, prior=prior, mass=mass)
    cube = mm.build_posterior(cat, mm.reddick2013(5, seed=1), prior=prior, mass=mass, chunks=16)
    st.to_store(cube, tmp_path / "r.zarr", materialize=False)
    assert np.array_equal(st.open_store(tmp_path / "r.zarr")["posterior"].values, cube["posterior"].values)
    # and the posterior agrees with the float64 reference on the original table
    from massmap_xr.kernels.posterior import posterior_reference

    ref = posterior_reference(np.log(cat["lum_obs"].values), cat["z"].values, 0.05, z_nodes=zn, log_table=lt,
                              mass=mass, **{k: cube[k].values for k in ("alpha1", "alpha2", "alpha3", "alpha4", "S")})
    peak = ref.max(axis=1, keepdims=True)
    assert np.max(np.abs(cube["posterior"].values - ref) / peak) < 2.5e-7


def test_monte_carlo_recipe_is_bit_identical(tmp_path):
    base = table_prior_cube(20, 3, chunks=8)[0]
    cat = base[["z", "lum_obs", "sigma_obs"]].assign_coords(ra=base["ra"], dec=base["dec"])
    cat.attrs = {}  # not the analytic cube's method, n_lum, mc_seed (a catalogue's attributes ride into the cube)
    prior = mm.model.prior.prior_from_attrs(base.attrs, base["prior_z"], base["prior_dndm"])
    cube = mm.build_posterior(cat, base[["alpha1", "alpha2", "alpha3", "alpha4", "S", "weight"]], prior=prior,
                              mass=base["mass"].values, method="montecarlo", n_lum=20, seed=5, chunks=8)
    st.to_store(cube, tmp_path / "m.zarr", progress=False)
    st.to_store(cube, tmp_path / "r.zarr", materialize=False)
    _assert_same_dataset(st.open_store(tmp_path / "m.zarr"), st.open_store(tmp_path / "r.zarr"))


def test_recipe_from_a_materialised_store_and_back(tmp_path, pair):
    mat, rec = pair
    st.to_store(st.open_store(mat), tmp_path / "r2.zarr", materialize=False)  # spot-checked against the store
    st.to_store(st.open_store(rec), tmp_path / "m2.zarr", progress=False)
    assert st.verify_store(tmp_path / "m2.zarr").ok
    for p in ("r2.zarr", "m2.zarr"):
        _assert_same_dataset(st.open_store(mat), st.open_store(tmp_path / p))


def test_a_cube_whose_posterior_is_not_its_inputs_is_refused(tmp_path, table_cube):
    bad = table_cube.copy()
    post = table_cube["posterior"].values.copy()
    post[50, post[50, :, 2].argmax(), 2] *= 1.0 + 2**-20  # one cell (a peak) in the last slab
    bad["posterior"] = table_cube["posterior"].copy(data=dask.array.from_array(post, chunks=(16, 120, 6)))
    with pytest.raises(StoreError, match=r"'posterior' for halos \[48, 60\) is not what build_posterior computes"):
        st.to_store(bad, tmp_path / "r.zarr", materialize=False)
    assert not (tmp_path / "r.zarr").exists()
    extra = table_cube.assign(other=table_cube["posterior"].isel(mass=0, drop=True))
    with pytest.raises(StoreError, match=r"\['other'\] are not computed by build_posterior"):
        st.to_store(extra, tmp_path / "r.zarr", materialize=False)
    with pytest.raises(StoreError, match="no \\['prior_dndm'"):
        st.to_store(table_cube.drop_vars("prior_dndm"), tmp_path / "r.zarr", materialize=False)


def _edit_recipe(path, **changes):
    meta = json.loads((path / "zarr.json").read_text())
    rec = json.loads(meta["attributes"][RECIPE])
    rec.update(changes)
    meta["attributes"][RECIPE] = json.dumps(rec)
    (path / "zarr.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(("key", "value", "named"), [("massmap_version", "0.0.9", "massmap_xr 0.0.9"),
                                                      ("kernel_version", "0", "kernel version 0")])
def test_other_versions_are_refused_naming_both(tmp_path, table_cube, key, value, named):
    st.to_store(table_cube, tmp_path / "r.zarr", materialize=False)
    _edit_recipe(tmp_path / "r.zarr", **{key: value})
    with pytest.raises(RecipeVersionError) as exc:
        st.open_store(tmp_path / "r.zarr")
    assert named in str(exc.value) and f"massmap_xr {mm.__version__} (kernel version {mm.KERNEL_VERSION}) is installed" \
        in str(exc.value)
    assert isinstance(exc.value, StoreError)
    report = st.verify_store(tmp_path / "r.zarr")
    assert not report.ok and named in str(report)
    old = table_cube.assign_attrs(massmap_version="0.0.9")
    with pytest.raises(RecipeVersionError, match="computed by massmap_xr 0.0.9"):
        st.to_store(old, tmp_path / "r2.zarr", materialize=False)


@pytest.mark.parametrize(("name", "group"), [("lum_obs", "catalogue"), ("alpha1", "hyperparameters"),
                                             ("prior_dndm", "prior")])
def test_tampered_inputs_are_reported_by_verify_and_refused_by_open(tmp_path, table_cube, name, group):
    path = tmp_path / "r.zarr"
    st.to_store(table_cube, path, materialize=False)
    arr = zarr.open_group(str(path), mode="r+")[name]
    vals = arr[...]
    vals.flat[3] *= 1.000001
    arr[...] = vals
    report = st.verify_store(path)
    assert not report.ok
    assert f"{group} variable {name!r} changed since the recipe was written" in str(report)
    with pytest.raises(StoreError, match=f"{name!r} changed since the recipe was written"):
        st.open_store(path)
    assert st.open_store(path, verify=False).sizes["halo"] == 60  # opting out reads it anyway


def test_chunks_options_and_object_storage(table_cube, pair):
    _, rec = pair
    ds = st.open_store(rec, chunks={"halo": 7})
    assert ds["posterior"].chunks[0][0] == 7
    assert np.array_equal(ds["posterior"].values, table_cube["posterior"].values)
    url = "memory://recipe-test/r.zarr"
    st.to_store(table_cube, url, materialize=False)
    try:
        assert np.array_equal(st.open_store(url)["posterior"].values, table_cube["posterior"].values)
        assert st.verify_store(url).ok
    finally:
        import fsspec

        fsspec.filesystem("memory").rm("/recipe-test", recursive=True)


def test_writers_refuse_a_recipe_store(tmp_path, table_cube):
    path = tmp_path / "r.zarr"
    st.to_store(table_cube, path, materialize=False)
    calls = {
        "write_slabs": lambda: st.write_slabs(table_cube, path),
        "finalize_store": lambda: st.finalize_store(path),
        "to_store(resume=True)": lambda: st.to_store(table_cube, path, resume=True, progress=False),
        "append_halos": lambda: st.append_halos(table_prior_cube(16, 6, halo_offset=100)[0], path),
    }
    for what, call in calls.items():
        with pytest.raises(StoreError, match=rf"{what.replace('(', '.').replace(')', '.')}: .* is a recipe store"):
            call()
    with pytest.raises(StoreError, match="resume=True does not apply to a recipe"):
        st.to_store(table_cube, path, resume=True, materialize=False)
    with pytest.raises(StoreError, match="already exists"):
        st.to_store(table_cube, path, materialize=False)
    # mode='w' replaces it (built beside, swapped in), with another cube's inputs
    other = table_prior_cube(30, 4, chunks=8)[0]
    st.to_store(other, path, mode="w", materialize=False)
    assert st.open_store(path).sizes["halo"] == 30
    assert not list(tmp_path.glob("*partial-replace*"))


def test_every_accessor_method_agrees(pair):
    from massmap_xr import lensing, sky

    mat, rec = pair
    m, r = st.open_store(mat), st.open_store(rec)
    checks = {
        "marginalize": lambda ds: ds.massmap.marginalize(),
        "cdf": lambda ds: ds.massmap.cdf(per_realization=True),
        "summary": lambda ds: ds.massmap.summary(),
        "quantile": lambda ds: ds.massmap.quantile([0.1, 0.5, 0.9]),
        "fit_normal": lambda ds: ds.massmap.fit_normal(),
        "sample": lambda ds: ds.massmap.sample(20, seed=3),
        "sample normal": lambda ds: ds.massmap.sample(20, seed=3, method="normal", correlated=False),
        "calibration": lambda ds: ds.massmap.calibration(),
        "halo_prior": lambda ds: ds.massmap.halo_prior(),
        "project_flat": lambda ds: ds.massmap.sample(10, seed=1).massmap.project_flat(pixel_scale=2.0),
        "project_healpix": lambda ds: ds.massmap.sample(10, seed=1).massmap.project_healpix(64),
        "map statistics": lambda ds: sky.map_statistics(sky.project_flat(ds.massmap.sample(10, seed=1),
                                                                         pixel_scale=2.0)),
        "kappa_map": lambda ds: ds.massmap.kappa_map(5, flat=2.0, z_source=1.5, seed=2),
        "shear_flat": lambda ds: lensing.shear_flat(ds.massmap.sample(5, seed=2), ds["z"], z_source=1.5,
                                                    pixel_scale=2.0, center=(150.0, 2.0), size=40.0),
    }
    for name, f in checks.items():
        a, b = f(m).compute(), f(r).compute()
        assert a.identical(b), name
    import matplotlib.pyplot as plt

    for ds in (m, r):
        ds.massmap.plot_posterior(int(ds["halo"][0]))
        ds.massmap.plot_fit(int(ds["halo"][0]))
    plt.close("all")


def _run(*argv):
    return main([str(a) for a in argv])


def test_cli_build_recipe_info_verify_materialize(tmp_path, capsys):
    cat = tmp_path / "cat.nc"
    base = table_prior_cube(40, 4)[1]
    base.to_netcdf(cat)
    table = tmp_path / "prior.txt"
    m = np.logspace(9.5, 16.0, 80)
    zt = np.linspace(0.0, 4.0, 5)
    rows = [(z, mi, mi**-1.9 * np.exp(-mi / (2e14 / (1.0 + z)))) for z in zt for mi in m]
    np.savetxt(table, rows)
    common = [cat, "--n-realizations", 4, "--seed", 2, "--prior-table", table, "--quiet"]
    assert _run("build", *common, "-o", tmp_path / "r.zarr", "--recipe") == 0
    assert _run("build", *common, "-o", tmp_path / "m.zarr") == 0
    capsys.readouterr()
    assert _run("info", tmp_path / "r.zarr") == 0
    assert "kind: recipe store (computed on read)" in capsys.readouterr().out
    assert _run("info", tmp_path / "m.zarr") == 0
    assert "kind: materialised store" in capsys.readouterr().out
    assert _run("verify", tmp_path / "r.zarr") == 0
    assert "all intact" in capsys.readouterr().out
    _assert_same_dataset(st.open_store(tmp_path / "m.zarr"), st.open_store(tmp_path / "r.zarr"))
    assert _run("materialize", tmp_path / "r.zarr", "-o", tmp_path / "out/m2.zarr", "--quiet") == 0
    assert "(materialised store)" in capsys.readouterr().out
    assert _run("materialize", "--recipe", tmp_path / "m.zarr", "-o", tmp_path / "r2.zarr") == 0
    assert "(recipe store (computed on read))" in capsys.readouterr().out
    for p in ("out/m2.zarr", "r2.zarr"):
        _assert_same_dataset(st.open_store(tmp_path / "m.zarr"), st.open_store(tmp_path / p))
    assert _run("materialize", tmp_path / "r.zarr", "-o", tmp_path / "r2.zarr") == 2
    assert "--overwrite" in capsys.readouterr().err
    assert _run("build", *common, "-o", tmp_path / "r3.zarr", "--recipe", "--init-only") == 2
    assert "cannot be combined with --init-only" in capsys.readouterr().err
    assert _run("materialize", tmp_path / "nothing.zarr", "-o", tmp_path / "x.zarr") == 2
    assert "does not exist" in capsys.readouterr().err
    # tampering is reported by verify (exit 1) and refused by a reading command (exit 2)
    arr = zarr.open_group(str(tmp_path / "r.zarr"), mode="r+")["z"]
    arr[0] = arr[0] + 0.01
    assert _run("verify", tmp_path / "r.zarr") == 1
    assert "catalogue variable 'z' changed since the recipe was written" in capsys.readouterr().out
    assert _run("summary", tmp_path / "r.zarr", "-o", tmp_path / "s.csv") == 2
    assert "changed since the recipe was written" in capsys.readouterr().err


def test_cli_reading_commands_agree(tmp_path, pair):
    mat, rec = pair
    outs = {}
    for kind, store in (("m", mat), ("r", rec)):
        assert _run("summary", store, "-o", tmp_path / f"{kind}_summary.csv") == 0
        assert _run("sample", store, "-n", 8, "-o", tmp_path / f"{kind}_samples.nc") == 0
        assert _run("map", store, "--flat", 2.0, "-n", 8, "-o", tmp_path / f"{kind}_map.nc") == 0
        assert _run("map", store, "--healpix", 64, "-n", 8, "-o", tmp_path / f"{kind}_hpx.nc") == 0
        assert _run("kappa", store, "--flat", 2.0, "--z-source", 1.5, "-n", 4, "-o", tmp_path / f"{kind}_k.nc") == 0
        outs[kind] = tmp_path
    assert (tmp_path / "m_summary.csv").read_bytes() == (tmp_path / "r_summary.csv").read_bytes()
    for name in ("samples", "map", "hpx", "k"):
        with xr.open_dataset(tmp_path / f"m_{name}.nc") as a, xr.open_dataset(tmp_path / f"r_{name}.nc") as b:
            xr.testing.assert_identical(a.load(), b.load())


@pytest.mark.slow
def test_recipe_on_a_local_cluster_matches_threads(tmp_path):
    distributed = pytest.importorskip("distributed")
    cube = table_prior_cube(120, 8, chunks=16)[0]
    st.to_store(cube, tmp_path / "m.zarr", progress=False)
    st.to_store(cube, tmp_path / "r.zarr", materialize=False)
    with dask.config.set(scheduler="threads"):
        ref = st.open_store(tmp_path / "m.zarr")
        want = {"posterior": ref["posterior"].values, **{k: v.values for k, v in ref.massmap.summary().compute().items()},
                "samples": ref.massmap.sample(12, seed=4).values}
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                 local_directory=str(tmp_path / "dask-worker-space")) as cluster,
        distributed.Client(cluster) as client,
    ):
        with distributed.get_task_stream(client) as stream:
            ds = st.open_store("file://" + str(tmp_path / "r.zarr"))
            post, summ, samples = dask.compute(ds["posterior"], ds.massmap.summary(), ds.massmap.sample(12, seed=4))
        assert len({t["worker"] for t in stream.data}) == 2  # both worker processes recomputed blocks
    got = {"posterior": post.values, **{k: v.values for k, v in summ.items()}, "samples": samples.values}
    for k, v in want.items():
        np.testing.assert_array_equal(got[k], v, err_msg=k)
