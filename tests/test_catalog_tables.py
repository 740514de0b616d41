"""Survey catalogues in every common table form: FITS, Parquet, HDF5, ECSV, astropy Tables, DataFrames,
Datasets, structured arrays; the column mapping; units converted by astropy; sigma_obs stated, never assumed."""

from __future__ import annotations

import subprocess
import sys

import astropy.units as u
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from astropy.table import MaskedColumn, QTable, Table

from massmap_xr.catalog import mock_catalog, read_catalog
from massmap_xr.cube import build_posterior
from massmap_xr.errors import CatalogError
from massmap_xr.inference import log_likelihood
from massmap_xr.model.hyper import reddick2013
from massmap_xr.model.prior import TablePrior, default_mass_grid

N = 40


@pytest.fixture(scope="module")
def truth():
    """A small survey-like catalogue, in the package's units."""
    rng = np.random.default_rng(5)
    return {
        "z": rng.uniform(0.1, 1.5, N),
        "lum_obs": 10 ** rng.uniform(9.5, 11.0, N),
        "ra": rng.uniform(149.5, 150.5, N),
        "dec": rng.uniform(1.5, 2.5, N),
        "mass_true": 10 ** rng.uniform(11, 14, N),
        "id": np.arange(1000, 1000 + N),
    }


def survey_table(truth) -> QTable:
    """The same catalogue as a survey ships it: upper-case names, radians, erg/s, its own ids."""
    t = QTable()
    t["ID"] = truth["id"]
    t["ZPHOT"] = truth["z"]
    t["LUM_R"] = (truth["lum_obs"] * u.L_sun).to(u.erg / u.s)
    t["RA"] = (truth["ra"] * u.deg).to(u.rad)
    t["DEC"] = (truth["dec"] * u.deg).to(u.rad)
    t["MASS"] = truth["mass_true"] * u.M_sun
    return t


MAP = {"z": "ZPHOT", "lum_obs": "LUM_R", "halo": "ID", "mass_true": "MASS"}


def check_same(cat: xr.Dataset, truth, rtol=1e-12):
    np.testing.assert_array_equal(cat["halo"].values, truth["id"])
    for k in ("z", "lum_obs", "ra", "dec", "mass_true"):
        np.testing.assert_allclose(cat[k].values, truth[k], rtol=rtol, err_msg=k)
        assert cat[k].dtype.isnative


def test_fits_binary_table_units_honoured(tmp_path, truth):
    path = tmp_path / "survey.fits"
    survey_table(truth).write(path)
    # the file is a FITS binary table with TUNIT keywords (checked with astropy.io.fits, not our reader)
    from astropy.io import fits

    with fits.open(path) as hdul:
        assert hdul[1].header["TTYPE4"] == "RA" and hdul[1].header["TUNIT4"] == "rad"
    cat = read_catalog(path, columns=MAP, sigma_obs=0.05)
    check_same(cat, truth)
    assert "ra: rad -> deg" in cat.attrs["unit_conversions"]
    assert "lum_obs: erg / s -> solLum" in cat.attrs["unit_conversions"]
    # the mapping can also be given as the CLI writes it
    again = read_catalog(path, columns="z=ZPHOT,lum_obs=LUM_R,halo=ID,mass_true=MASS", sigma_obs=0.05)
    xr.testing.assert_identical(cat, again)


def test_fits_upper_case_names_found_without_mapping_and_hdu(tmp_path, truth):
    from astropy.io import fits

    t = Table({"Z": truth["z"], "LUM_OBS": truth["lum_obs"], "RA": truth["ra"], "DEC": truth["dec"]})
    t["RA"].unit = "deg"
    hdus = fits.HDUList([fits.PrimaryHDU(), fits.table_to_hdu(Table({"X": [1, 2]})), fits.table_to_hdu(t)])
    hdus[2].name = "HALOS"
    path = tmp_path / "two.fits"
    hdus.writeto(path)
    cat = read_catalog(path, hdu="HALOS", sigma_obs=0.1)
    np.testing.assert_allclose(cat["lum_obs"].values, truth["lum_obs"])
    np.testing.assert_allclose(cat["ra"].values, truth["ra"])
    assert np.all(cat["sigma_obs"].values == 0.1)
    with pytest.raises(CatalogError, match="lum_obs"):  # the first table HDU has none of the columns
        read_catalog(path, sigma_obs=0.1)


def test_masked_fits_values_are_reported_not_read_as_numbers(tmp_path, truth):
    t = Table({"z": truth["z"], "lum_obs": MaskedColumn(truth["lum_obs"], mask=np.arange(N) == 3),
               "ra": truth["ra"], "dec": truth["dec"]})
    path = tmp_path / "masked.fits"
    t.write(path)
    with pytest.raises(CatalogError, match="lum_obs"):
        read_catalog(path, sigma_obs=0.05)
    cat = read_catalog(path, sigma_obs=0.05, validate=False)
    assert np.isnan(cat["lum_obs"].values[3]) and np.isfinite(cat["lum_obs"].values[4])


def test_parquet_round_trip_with_units(tmp_path, truth):
    pytest.importorskip("pyarrow")
    path = tmp_path / "survey.parquet"
    survey_table(truth).write(path)  # astropy keeps the units in the Parquet metadata
    check_same(read_catalog(path, columns=MAP, sigma_obs=0.05), truth)
    # a Parquet file written by pandas has no units: read in the package's units
    plain = tmp_path / "plain.parquet"
    pd.DataFrame({k: truth[k] for k in ("z", "lum_obs", "ra", "dec", "mass_true", "id")}).to_parquet(plain)
    check_same(read_catalog(plain, sigma_obs=0.05), truth)


def test_parquet_without_pyarrow_names_the_extra(tmp_path, truth, monkeypatch):
    path = tmp_path / "x.parquet"
    path.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(CatalogError, match=r"massmap_xr\[parquet\]"):
        read_catalog(path, sigma_obs=0.05)


def test_hdf5_and_ecsv_tables(tmp_path, truth):
    t = survey_table(truth)
    h5 = tmp_path / "survey.hdf5"
    t.write(h5, path="halos", serialize_meta=True)
    check_same(read_catalog(h5, columns=MAP, sigma_obs=0.05), truth)
    ecsv = tmp_path / "survey.ecsv"
    t.write(ecsv)
    check_same(read_catalog(ecsv, columns=MAP, sigma_obs=0.05), truth)


def test_in_memory_tables(truth):
    qt = survey_table(truth)
    check_same(read_catalog(qt, columns=MAP, sigma_obs=0.05), truth)
    check_same(read_catalog(Table(qt), columns=MAP, sigma_obs=0.05), truth)  # Table with unit attributes
    df = pd.DataFrame({k: truth[k] for k in ("z", "lum_obs", "ra", "dec", "mass_true", "id")})
    check_same(read_catalog(df, sigma_obs=0.05), truth)
    rec = df.to_records(index=False)
    check_same(read_catalog(np.asarray(rec), sigma_obs=0.05), truth)
    check_same(read_catalog({k: truth[k] for k in truth}, sigma_obs=0.05), truth)
    ds = xr.Dataset({k: ("row", truth[k]) for k in ("z", "lum_obs", "mass_true")})
    ds["ra"] = ("row", np.radians(truth["ra"]), {"units": "rad"})
    ds["dec"] = ("row", truth["dec"] * 60, {"units": "arcmin"})
    ds = ds.assign_coords(row=truth["id"])
    cat = read_catalog(ds, sigma_obs=0.05)
    check_same(cat, truth)


def test_logarithmic_luminosity_and_dex_scatter(truth):
    t = QTable({"z": truth["z"], "ra": truth["ra"], "dec": truth["dec"]})
    t["lum_obs"] = u.Dex(truth["lum_obs"] * u.L_sun)
    t["sigma_obs"] = np.full(N, 0.1) * u.dex
    cat = read_catalog(t)
    np.testing.assert_allclose(cat["lum_obs"].values, truth["lum_obs"], rtol=1e-12)
    np.testing.assert_allclose(cat["sigma_obs"].values, 0.1 * np.log(10), rtol=1e-12)


def test_bad_columns_and_units_are_clear(truth):
    qt = survey_table(truth)
    with pytest.raises(CatalogError, match=r"z='ZSPEC'.*'ZPHOT'"):
        read_catalog(qt, columns={"z": "ZSPEC", "lum_obs": "LUM_R"}, sigma_obs=0.05)
    bad = qt.copy()
    bad["LUM_R"] = truth["lum_obs"] * u.deg
    with pytest.raises(CatalogError, match=r"lum_obs.*'deg'.*solLum"):
        read_catalog(bad, columns=MAP, sigma_obs=0.05)
    odd = Table({"z": truth["z"], "lum_obs": truth["lum_obs"], "ra": truth["ra"], "dec": truth["dec"]})
    odd["ra"].unit = u.Unit("furlongs_per_fortnight", parse_strict="silent")
    with pytest.raises(CatalogError, match="astropy cannot read"):
        read_catalog(odd, sigma_obs=0.05)
    with pytest.raises(CatalogError, match="NAME=COLUMN"):
        read_catalog(qt, columns="z=ZPHOT,LUM_R", sigma_obs=0.05)
    with pytest.raises(CatalogError, match="list of names is for text files"):
        read_catalog(qt, columns=["z", "lum_obs"])
    with pytest.raises(CatalogError, match="cannot read a catalogue from a int"):
        read_catalog(3)


def test_sigma_obs_is_stated_never_assumed(truth):
    t = Table({k: truth[k] for k in ("z", "lum_obs", "ra", "dec")})
    cat = read_catalog(t)
    assert "sigma_obs" not in cat
    hyper = reddick2013(3, seed=1)
    with pytest.raises(CatalogError, match=r"no 'sigma_obs' variable.*--sigma-obs"):
        build_posterior(cat, hyper, prior=_flat_prior())
    with pytest.raises(CatalogError, match="never assumed"):
        log_likelihood(cat, 10.0, 1.0, 1e12, 0.0, 0.2, prior=_flat_prior())
    cube = build_posterior(cat, hyper, prior=_flat_prior(), sigma_obs=0.15, check_edges=False)
    assert np.all(cube["sigma_obs"].values == 0.15)
    assert cube.attrs["sigma_obs_source"] == "sigma_obs=0.15 given to build_posterior"
    mock = mock_catalog(20, seed=2, sigma_obs=0.2)
    cube = build_posterior(mock, hyper, prior=_flat_prior())
    assert cube.attrs["sigma_obs_source"] == "catalogue variable sigma_obs"
    np.testing.assert_array_equal(cube["sigma_obs"].values, mock["sigma_obs"].values)
    with pytest.raises(CatalogError, match="ambiguous"):
        build_posterior(mock, hyper, prior=_flat_prior(), sigma_obs=0.05)
    with pytest.raises(CatalogError, match="> 0"):
        build_posterior(cat, hyper, prior=_flat_prior(), sigma_obs=-1)


def _flat_prior():
    m = default_mass_grid()
    return TablePrior(xr.DataArray(np.vstack([m**-1.9, m**-1.9]), dims=("z", "mass"),
                                   coords={"z": [0.0, 4.0], "mass": m}))


@pytest.mark.slow
def test_cli_build_from_fits_with_column_mapping(tmp_path, truth):
    path = tmp_path / "survey.fits"
    survey_table(truth).write(path)
    out = tmp_path / "s.zarr"
    run = lambda *a: subprocess.run([sys.executable, "-m", "massmap_xr", *a], capture_output=True, text=True)
    r = run("build", str(path), "-o", str(out), "--columns", "z=ZPHOT,lum_obs=LUM_R,halo=ID,mass_true=MASS",
            "--n-realizations", "3", "--quiet")
    assert r.returncode != 0 and "--sigma-obs" in r.stderr and "Traceback" not in r.stderr
    r = run("build", str(path), "-o", str(out), "--columns", "z=ZPHOT,lum_obs=LUM_R,halo=ID,mass_true=MASS",
            "--n-realizations", "3", "--sigma-obs", "0.07", "--quiet")
    assert r.returncode == 0, r.stderr
    ds = xr.open_zarr(out, consolidated=False)
    np.testing.assert_array_equal(ds["halo"].values, truth["id"])
    np.testing.assert_allclose(ds["ra"].values, truth["ra"], rtol=1e-12)
    assert np.all(ds["sigma_obs"].values == 0.07)
