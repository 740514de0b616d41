"""The posterior cube: structure, normalisation, calibration, store round trip."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy import stats

import massmap_xr
from massmap_xr.catalog import mock_catalog
from massmap_xr.cube import build_posterior
from massmap_xr.errors import MassmapError, StoreError
from massmap_xr.model.hyper import reddick2013
from massmap_xr.store import open_store, to_store


def test_cube_layout_and_attrs(small_cube, small_catalog, small_hyper):
    ds = small_cube
    assert ds["posterior"].dims == ("halo", "mass", "realization")
    assert ds["posterior"].dtype == np.float32
    assert ds["posterior"].chunks is not None  # lazy
    assert ds.sizes == {"halo": 60, "mass": 400, "realization": 6, "prior_z": ds.sizes["prior_z"]}
    np.testing.assert_allclose(ds["mass"].values[[0, -1]], [1e8, 10**15.5])  # the default grid
    np.testing.assert_allclose(ds["log10_mass"].values, np.log10(ds["mass"].values))
    np.testing.assert_array_equal(ds["ra"].values, small_catalog["ra"].values)
    np.testing.assert_array_equal(ds["alpha1"].values, small_hyper["alpha1"].values)
    assert ds["weight"].sum() == pytest.approx(1.0)
    assert ds["mass"].attrs["units"] == "solMass"
    assert ds.attrs["massmap_schema_version"] == massmap_xr.SCHEMA_VERSION
    assert ds.attrs["method"] == "analytic"
    assert ds.attrs["prior_cosmology"] == "WMAP5"
    assert ds["prior_dndm"].dims == ("prior_z", "mass")


def test_every_slice_is_normalised(small_cube):
    p = small_cube["posterior"].values.astype(np.float64)
    norm = np.trapezoid(p, small_cube["log10_mass"].values, axis=1)
    np.testing.assert_allclose(norm, 1.0, atol=2e-6)
    assert np.isfinite(p).all() and (p >= 0).all()


def test_posterior_is_prior_times_likelihood(small_cube):
    """One (halo, realization) slice equals prior(z) x Normal(ln L_obs; ln mu_L, S^2+sigma^2) computed by hand."""
    from massmap_xr.model.prior import TinkerPrior

    ds = small_cube
    k, r = 7, 3
    h = {v: float(ds[v][r]) for v in ("alpha1", "alpha2", "alpha3", "alpha4", "S")}
    z, lobs = float(ds["z"][k]), float(ds["lum_obs"][k])
    m = ds["mass"].values
    mu = h["alpha1"] + h["alpha2"] * np.log(m / h["alpha3"]) + h["alpha4"] * np.log(1 + z)
    like = stats.norm.pdf(np.log(lobs), mu, np.hypot(h["S"], 0.05))
    prior = np.exp(TinkerPrior().log_density([z], m)[0]) * m  # per unit ln M, up to a constant
    dens = prior * like
    dens /= np.trapezoid(dens, np.log10(m))
    got = ds["posterior"][k, :, r].values
    peak = dens.max()
    sel = dens > 1e-3 * peak
    np.testing.assert_allclose(got[sel], dens[sel], rtol=2e-5)


def test_calibration_on_a_mock_is_uniform():
    """PIT of mass_true under the true-hyperparameter posterior is uniform; 68 % interval covers ~68 %."""
    cat = mock_catalog(1500, seed=3, mass=np.logspace(10, 15.5, 400))  # halos above 1e10 M_sun
    truth = {k: [cat.attrs[f"true_{k}"]] for k in ("alpha1", "alpha2", "alpha3", "alpha4", "S")}
    # the mock's masses are drawn on 1e10..10^15.5, so the posterior uses that grid (the prior it was drawn from)
    ds = build_posterior(cat, truth, mass=np.logspace(10, 15.5, 400), check_edges=False).compute()
    x = ds["log10_mass"].values
    p = ds["posterior"].values[:, :, 0].astype(float)
    cdf = np.concatenate([np.zeros((p.shape[0], 1)), np.cumsum(0.5 * (p[:, 1:] + p[:, :-1]) * np.diff(x), axis=1)], axis=1)
    cdf /= cdf[:, -1:]
    lt = np.log10(ds["mass_true"].values)
    pit = np.array([np.interp(lt[i], x, cdf[i]) for i in range(lt.size)])
    assert stats.kstest(pit, "uniform").pvalue > 1e-3
    cover = np.mean((pit > 0.16) & (pit < 0.84))
    assert abs(cover - 0.68) < 3 * np.sqrt(0.68 * 0.32 / pit.size)


def test_miscalibrated_hyperparameters_are_detected():
    cat = mock_catalog(1500, seed=4, mass=np.logspace(10, 15.5, 400))  # halos above 1e10 M_sun
    wrong = {k: [cat.attrs[f"true_{k}"]] for k in ("alpha1", "alpha2", "alpha3", "alpha4", "S")}
    wrong["alpha1"] = [wrong["alpha1"][0] + 0.3]
    ds = build_posterior(cat, wrong).compute()
    x = ds["log10_mass"].values
    p = ds["posterior"].values[:, :, 0].astype(float)
    cdf = np.cumsum(p, axis=1)
    cdf /= cdf[:, -1:]
    pit = np.array([np.interp(np.log10(ds["mass_true"].values[i]), x, cdf[i]) for i in range(p.shape[0])])
    assert stats.kstest(pit, "uniform").pvalue < 1e-6


def test_marginal_respects_weights(small_cube):
    from massmap_xr.analysis import marginalize

    w = np.array([0, 0, 1, 3, 0, 0], dtype=float)
    ds = small_cube.assign(weight=("realization", w / w.sum()))
    got = marginalize(ds).values
    p = small_cube["posterior"].values
    np.testing.assert_allclose(got, 0.25 * p[:, :, 2] + 0.75 * p[:, :, 3], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ds.massmap.marginalize().values, got)


def test_user_prior_table_and_custom_mass_grid(small_catalog):
    m = np.logspace(10, 15.5, 120)
    table = xr.DataArray(np.vstack([m**-1.9, m**-1.95, m**-2.0]), dims=("z", "mass"), coords={"z": [0.0, 2.0, 4.0], "mass": m})
    with pytest.warns(massmap_xr.errors.CatalogWarning, match="outermost cells"):  # this grid cuts posteriors
        ds = build_posterior(small_catalog, reddick2013(2, seed=1), prior=table, mass=np.logspace(10.5, 15, 90))
    p = ds["posterior"].values
    assert p.shape == (60, 90, 2)
    np.testing.assert_allclose(np.trapezoid(p, ds["log10_mass"].values, axis=1), 1.0, atol=2e-6)
    assert ds.attrs["prior"] == "TablePrior"


def test_montecarlo_method_is_seeded_and_close(small_catalog):
    cat = small_catalog.isel(halo=slice(0, 5))
    h = reddick2013(2, seed=1)
    old = np.logspace(10, 15.5, 400)  # the grid the tolerance below was set on
    a = build_posterior(cat, h, method="montecarlo", n_lum=400, seed=1, mass=old, check_edges=False).posterior.values
    b = build_posterior(cat, h, method="montecarlo", n_lum=400, seed=1, chunks=2, mass=old, check_edges=False).posterior.values
    np.testing.assert_array_equal(a, b)  # chunking does not change the draws
    exact = build_posterior(cat, h, mass=old, check_edges=False).posterior.values
    assert np.abs(a - exact).max() < 0.2 * exact.max()


def test_store_round_trip_is_exact(small_cube, tmp_path):
    path = tmp_path / "cube.zarr"
    small_cube.massmap.to_store(path, progress=False)
    back = open_store(path)
    assert back["posterior"].chunks is not None
    mem = small_cube.compute()
    xr.testing.assert_equal(back.compute(), mem)
    np.testing.assert_array_equal(back["posterior"].values, mem["posterior"].values)  # bitwise float32
    for k, v in mem.attrs.items():
        assert back.attrs[k] == v, k
    for k in mem.variables:
        assert back[k].attrs == mem[k].attrs, k


def test_store_refuses_overwrite_and_foreign_zarr(small_cube, tmp_path):
    path = tmp_path / "cube.zarr"
    to_store(small_cube, path, progress=False)
    with pytest.raises(StoreError, match="already exists"):
        to_store(small_cube, path, progress=False)
    to_store(small_cube.isel(halo=slice(0, 10)), path, mode="w", progress=False)
    assert open_store(path).sizes["halo"] == 10
    foreign = tmp_path / "foreign.zarr"
    xr.Dataset({"a": ("x", np.arange(3.0))}).to_zarr(foreign, zarr_format=3, consolidated=False)
    with pytest.raises(StoreError, match="not a massmap cube"):
        open_store(foreign)
    with pytest.raises(StoreError, match="does not exist"):
        open_store(tmp_path / "nope.zarr")


def test_build_rejects_bad_arguments(small_catalog):
    with pytest.raises(MassmapError, match="method"):
        build_posterior(small_catalog, 2, method="magic")
    with pytest.raises(MassmapError, match="strictly increasing"):
        build_posterior(small_catalog, 2, mass=[1e12, 1e11])
    with pytest.raises(ValueError):  # every package error is a ValueError
        build_posterior(small_catalog, 2, sigma_obs=-1)
