"""Catalogue and hyperparameter sources: files, ArviZ posteriors, mocks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import stats

from massmap_xr.catalog import mock_catalog, read_catalog, seed_field
from massmap_xr.cube import build_posterior
from massmap_xr.errors import CatalogError, HyperparameterError
from massmap_xr.model.hyper import REDDICK2013, as_hyper, from_arviz, read_hyper, reddick2013


def test_reddick2013_draws_follow_the_stated_distributions():
    h = reddick2013(4000, seed=9)
    for k, (mu, sd) in REDDICK2013.items():
        v = h[k].values
        if sd == 0:
            assert np.all(v == mu)
        else:
            assert stats.kstest(v, "norm", args=(mu, sd)).pvalue > 1e-3, k
    assert np.array_equal(reddick2013(5, seed=1)["alpha1"], reddick2013(5, seed=1)["alpha1"])


def test_hyper_from_csv_netcdf_and_arviz(tmp_path):
    h = reddick2013(8, seed=2)
    df = h.to_dataframe()
    df["weight"] = np.arange(1, 9)
    df.to_csv(tmp_path / "h.csv", index=False)
    got = read_hyper(tmp_path / "h.csv")
    np.testing.assert_allclose(got["alpha2"].values, h["alpha2"].values)
    np.testing.assert_allclose(got["weight"].values, np.arange(1, 9) / 36)
    h.to_netcdf(tmp_path / "h.nc")
    np.testing.assert_allclose(read_hyper(tmp_path / "h.nc")["S"].values, h["S"].values)

    post = xr.Dataset({k: (("chain", "draw"), h[k].values.reshape(2, 4)) for k in ("alpha1", "alpha2", "alpha3", "alpha4", "S")})
    st = from_arviz(post)
    assert st.sizes["realization"] == 8 and "realization" in st.indexes
    np.testing.assert_array_equal(st["chain"].values, [0, 0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_allclose(st["alpha1"].values, h["alpha1"].values)
    post.to_netcdf(tmp_path / "post.nc", group="posterior")
    np.testing.assert_allclose(read_hyper(tmp_path / "post.nc")["alpha4"].values, h["alpha4"].values)
    with pytest.raises(HyperparameterError, match="missing column"):
        df.drop(columns="S").to_csv(tmp_path / "bad.csv", index=False)
        read_hyper(tmp_path / "bad.csv")


def test_arviz_inference_data_round_trips_through_a_store(tmp_path, small_catalog):
    az = pytest.importorskip("arviz")
    h = reddick2013(6, seed=3)
    idata = az.from_dict(posterior={k: h[k].values.reshape(2, 3) for k in ("alpha1", "alpha2", "alpha3", "alpha4", "S")})
    cube = build_posterior(small_catalog.isel(halo=slice(0, 8)), idata)
    cube.massmap.to_store(tmp_path / "c.zarr", progress=False)
    from massmap_xr.store import open_store

    back = open_store(tmp_path / "c.zarr")
    np.testing.assert_allclose(back["alpha1"].values, h["alpha1"].values)
    np.testing.assert_array_equal(back["draw"].values, [0, 1, 2, 0, 1, 2])


def test_read_catalog_text_csv_netcdf_zarr(tmp_path):
    cat = mock_catalog(50, seed=1)
    x = np.linspace(-19, 19, 50)
    y = np.linspace(-15, 15, 50)
    np.savetxt(tmp_path / "orig.txt", np.column_stack([cat.z, cat.lum_obs, cat.mass_true, x, y]))
    got = read_catalog(tmp_path / "orig.txt", columns="original", center=(30.0, -10.0))
    np.testing.assert_allclose(got["mass_true"].values, cat["mass_true"].values)
    # offsets are tangent-plane arcmin about the centre: check against astropy's gnomonic projection
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [30.0, -10.0]
    w.wcs.crpix = [1.0, 1.0]  # FITS pixel 1 is array index 0
    w.wcs.cdelt = [1 / 60, 1 / 60]
    ra, dec = w.wcs_pix2world(x, y, 0)
    np.testing.assert_allclose(got["ra"].values, ra % 360, atol=1e-9)
    np.testing.assert_allclose(got["dec"].values, dec, atol=1e-9)

    df = pd.DataFrame({"id": cat.halo.values + 100, "z": cat.z, "lum_obs": cat.lum_obs, "ra": cat.ra, "dec": cat.dec})
    df.to_csv(tmp_path / "c.csv", index=False)
    got = read_catalog(tmp_path / "c.csv")
    np.testing.assert_array_equal(got["halo"].values, cat.halo.values + 100)
    np.testing.assert_allclose(got["ra"].values, cat["ra"].values)
    cat.to_netcdf(tmp_path / "c.nc")
    xr.testing.assert_allclose(read_catalog(tmp_path / "c.nc")[["z", "lum_obs"]], cat[["z", "lum_obs"]])
    cat.to_zarr(tmp_path / "c.zarr", zarr_format=3, consolidated=False)
    np.testing.assert_allclose(read_catalog(tmp_path / "c.zarr")["lum_obs"].values, cat["lum_obs"].values)
    with pytest.raises(CatalogError, match="no header"):
        read_catalog(tmp_path / "orig.txt")


def test_mock_masses_follow_the_prior():
    """Masses drawn at a fixed redshift follow the prior's CDF (computed independently by quadrature)."""
    from massmap_xr.model.prior import TinkerPrior

    mass = np.logspace(11, 14, 200)
    cat = mock_catalog(3000, seed=5, z=np.array([0.5]), mass=mass)
    lnp = TinkerPrior().log_density([0.5], mass)[0]
    dens = np.exp(lnp) * mass  # per unit ln M
    cdf = np.concatenate([[0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(np.log(mass)))])
    cdf /= cdf[-1]
    u = np.interp(np.log(cat["mass_true"].values), np.log(mass), cdf)
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    # luminosity residuals have the model's total scatter
    ln_mu = 10.709 + 0.359 * np.log(cat.mass_true / 2.35e14) + 1.10 * np.log(1.5)
    resid = np.log(cat.lum_obs) - ln_mu
    assert np.std(resid) == pytest.approx(np.hypot(0.155, 0.05), rel=0.05)
    # positions fill the 40' x 40' field
    assert float(cat.dec.max() - cat.dec.min()) == pytest.approx(40 / 60, rel=0.02)


def test_seed_field_is_the_original(shared_data):
    ref = np.loadtxt(shared_data / "seed_field_z_lobs.txt")
    cat = seed_field(seed=1)
    assert cat.sizes["halo"] == 115919
    np.testing.assert_array_equal(cat["z"].values, ref[:, 0])
    np.testing.assert_array_equal(cat["lum_obs"].values, ref[:, 1])


def test_as_hyper_accepts_mappings_and_ints():
    h = as_hyper({"alpha1": [10.7, 10.8], "alpha2": 0.36, "alpha3": 2.35e14, "alpha4": 1.1, "S": 0.15})
    assert h.sizes["realization"] == 2 and np.allclose(h.weight, 0.5)
    assert as_hyper(3).sizes["realization"] == 3
