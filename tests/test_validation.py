"""Bad input gets a clear error: catalogue, hyperparameter, mass-grid and prior validation.

One test per rule.  Each asserts the exception class and the key words of the message: the
variable, the rule broken, how many entries break it, the first offending halo ids or
realization labels, and what to do.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import xarray as xr

from massmap_xr.catalog import (
    check_position_units,
    make_catalog,
    read_catalog,
    uniform_field_positions,
    validate_catalog,
    wrap_ra_degrees,
)
from massmap_xr.cube import build_posterior
from massmap_xr.errors import (
    CatalogError,
    CatalogWarning,
    HyperparameterError,
    MassmapError,
    PriorError,
    describe_offenders,
)
from massmap_xr.model.hyper import as_hyper, read_hyper, reddick2013, validate_hyper
from massmap_xr.model.prior import TablePrior, TinkerPrior, as_prior, default_mass_grid

IDS = np.arange(101, 109)
MASS = np.logspace(10, 15.5, 60)


# --- helpers ---------------------------------------------------------------------------------
def good_catalog() -> xr.Dataset:
    """Eight halos in a 40′ field at (150, 2) deg with realistic z and L_obs."""
    ra, dec = uniform_field_positions(IDS.size, np.random.default_rng(7))
    return make_catalog(np.linspace(0.1, 0.9, IDS.size), np.geomspace(2e3, 4e4, IDS.size), ra, dec, halo=IDS,
                        sigma_obs=0.05)


def with_values(cat: xr.Dataset, name: str, changes: dict) -> xr.Dataset:
    """A copy of ``cat`` with ``name`` set to new values at the given halo ids."""
    a = np.array(cat[name].values, dtype=float)
    for hid, v in changes.items():
        a[int(np.flatnonzero(cat["halo"].values == hid)[0])] = v
    var = ("halo", a, dict(cat[name].attrs))
    return cat.assign_coords({name: var}) if name in cat.coords else cat.assign({name: var})


def table_prior(z=(0.0, 0.5, 1.0)) -> TablePrior:
    """A smooth power-law-with-cutoff dn/dM on a wide mass range, for redshifts ``z``."""
    m = np.logspace(9, 16.5, 200)
    rows = [m**-1.9 * np.exp(-m / (1e15 / (1 + zi))) for zi in z]
    return TablePrior(xr.DataArray(np.vstack(rows), dims=("z", "mass"), coords={"z": list(z), "mass": m}))


def assert_message(err: pytest.ExceptionInfo, *words: str) -> None:
    text = str(err.value)
    missing = [w for w in words if w not in text]
    assert not missing, f"{missing} not in message:\n{text}"


# --- catalogue rules ---------------------------------------------------------------------------
def test_missing_required_variable_via_build_posterior():
    cat = good_catalog().drop_vars("lum_obs")
    with pytest.raises(CatalogError) as err:
        build_posterior(cat, reddick2013(2, seed=0), prior=table_prior(), mass=MASS)
    assert_message(err, "missing required variable", "'lum_obs'", "found", "rename")


def test_non_numeric_entries_named_with_their_halos(tmp_path):
    path = tmp_path / "cat.csv"
    path.write_text("id,z,lum_obs,ra,dec\n1,0.1,2e4,150.0,2.0\n2,0.2,abc,150.1,2.1\n3,0.3,3e4,150.2,2.2\n")
    with pytest.raises(CatalogError) as err:
        read_catalog(path)
    assert_message(err, "lum_obs: must be numeric", "1 of 3 halos", "first ids: 2", "abc", "fix or drop")


def test_nan_and_inf_listed_with_counts_and_ids():
    cat = with_values(good_catalog(), "z", {102: np.nan, 105: np.inf})
    with pytest.raises(CatalogError) as err:
        validate_catalog(cat)
    assert_message(err, "z: must be finite", "NaN or inf", "2 of 8 halos", "first ids: 102, 105", "drop or fix")


def test_non_positive_luminosity():
    cat = good_catalog()
    lum = cat["lum_obs"].values.copy()
    lum[[2, 5]] = [-1.0, 0.0]
    with pytest.raises(CatalogError) as err:
        make_catalog(cat.z.values, lum, cat.ra.values, cat.dec.values, halo=IDS)
    assert_message(err, "lum_obs: must be > 0", "not a magnitude or a log", "2 of 8 halos", "103, 106",
                   "values: -1, 0", "convert magnitudes")


def test_negative_redshift():
    cat = with_values(good_catalog(), "z", {104: -0.01})
    with pytest.raises(CatalogError) as err:
        validate_catalog(cat)
    assert_message(err, "z: must be >= 0", "1 of 8 halos", "first ids: 104", "-0.01", "fix or drop")


def test_redshift_outside_the_prior_range_via_build_posterior():
    cat = with_values(good_catalog(), "z", {103: 1.5, 107: 2.0})
    with pytest.raises(CatalogError) as err:
        build_posterior(cat, reddick2013(2, seed=0), prior=table_prior(z=(0.0, 0.5, 1.0)), mass=MASS)
    assert_message(err, "z: outside the prior's redshift range [0, 1]", "2 of 8 halos", "103, 107",
                   "TinkerPrior(z_max=...)", "drop these halos")


def test_ra_outside_0_360_suggests_wrapping():
    cat = good_catalog()
    ra = cat.ra.values.copy()
    ra[[0, 3]] = [-10.0, 360.0]
    with pytest.raises(CatalogError) as err:
        make_catalog(cat.z.values, cat.lum_obs.values, ra, cat.dec.values, halo=IDS)
    assert_message(err, "ra: must be in [0, 360) degrees", "2 of 8 halos", "101, 104", "wrap_ra=True", "ra % 360")


def test_wrap_ra_option_of_make_catalog_and_read_catalog(tmp_path):
    ra = np.array([-10.0, -1e-20, 360.0, 725.5, 0.0])
    np.testing.assert_array_equal(wrap_ra_degrees(ra), [350.0, 0.0, 0.0, 5.5, 0.0])
    cat = make_catalog(np.full(5, 0.3), np.full(5, 2e4), ra, np.zeros(5), wrap_ra=True)
    assert np.all((cat.ra.values >= 0) & (cat.ra.values < 360))
    # same direction on the sky as the input (independent of the wrapping arithmetic)
    np.testing.assert_allclose(np.cos(np.radians(cat.ra.values)), np.cos(np.radians(ra)), atol=1e-12)
    np.testing.assert_allclose(np.sin(np.radians(cat.ra.values)), np.sin(np.radians(ra)), atol=1e-12)
    path = tmp_path / "neg.csv"
    path.write_text("z,lum_obs,ra,dec\n0.1,2e4,-0.2,0.0\n0.2,3e4,0.1,0.1\n0.3,4e4,0.2,-0.1\n")
    with pytest.raises(CatalogError, match="wrap_ra=True"):
        read_catalog(path)
    np.testing.assert_allclose(read_catalog(path, wrap_ra=True).ra.values, [359.8, 0.1, 0.2])


def test_dec_outside_range():
    cat = with_values(good_catalog(), "dec", {108: 95.0})
    with pytest.raises(CatalogError) as err:
        validate_catalog(cat)
    assert_message(err, "dec: must be in [-90, 90] degrees", "1 of 8 halos", "first ids: 108", "values: 95",
                   "cannot be wrapped", "check the units")


def test_dec_hint_when_ra_and_dec_are_swapped():
    cat = good_catalog()
    swapped = cat.assign_coords(ra=("halo", cat.dec.values), dec=("halo", cat.ra.values))
    with pytest.raises(CatalogError, match="ra and dec look swapped"):
        validate_catalog(swapped)


def test_non_positive_sigma_obs():
    cat = good_catalog().assign(sigma_obs=("halo", np.full(IDS.size, 0.05)))
    cat = with_values(cat, "sigma_obs", {101: 0.0, 102: -0.05, 103: -1.0, 104: 0.0, 105: 0.0, 106: -2.0})
    with pytest.raises(CatalogError) as err:
        validate_catalog(cat)
    assert_message(err, "sigma_obs: must be > 0", "6 of 8 halos", "101, 102, 103, 104, 105 (and 1 more)",
                   "positive scatter")


def test_non_positive_true_mass():
    cat = good_catalog().assign(mass_true=("halo", np.full(IDS.size, 1e13)))
    cat = with_values(cat, "mass_true", {106: 13.0 - 20})
    with pytest.raises(CatalogError) as err:
        validate_catalog(cat)
    assert_message(err, "mass_true: must be > 0", "1 of 8 halos", "106", "10**x")


def test_duplicate_halo_ids(tmp_path):
    path = tmp_path / "dup.csv"
    rows = [f"{i},0.{i},{2e4 + i},150.{i},2.{i}" for i in (7, 3, 7, 4, 3, 7)]
    path.write_text("halo,z,lum_obs,ra,dec\n" + "\n".join(rows) + "\n")
    with pytest.raises(CatalogError) as err:
        read_catalog(path)
    assert_message(err, "halo: ids must be unique", "2 id(s) repeated", "5 of 6 halos", "first: 3, 7",
                   "renumber")


def test_non_integer_halo_ids():
    cat = good_catalog().assign_coords(halo=IDS + 0.5)
    with pytest.raises(CatalogError) as err:
        validate_catalog(cat)
    assert_message(err, "halo: ids must be integers", "float64", "assign_coords(halo=numpy.arange")


def test_empty_catalogue(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("z,lum_obs,ra,dec\n")
    with pytest.raises(CatalogError) as err:
        read_catalog(path)
    assert_message(err, "catalogue is empty (0 halos)", "check the file")
    with pytest.raises(CatalogError, match="is empty"):
        validate_catalog(good_catalog().isel(halo=slice(0, 0)))
    blank = tmp_path / "blank.txt"
    blank.write_text("# nothing here\n\n")
    with pytest.raises(CatalogError, match="empty"):
        read_catalog(blank, columns="original")


def test_extra_dimension_is_reported():
    cat = good_catalog()
    cat = cat.assign(lum_obs=(("halo", "band"), np.repeat(cat.lum_obs.values[:, None], 2, axis=1)))
    with pytest.raises(CatalogError) as err:
        validate_catalog(cat)
    assert_message(err, "lum_obs: must be 1-D along 'halo'", "('halo', 'band')", "squeeze")


def test_position_units_in_attrs_must_be_degrees():
    cat = good_catalog()
    cat["ra"].attrs["units"] = "rad"
    with pytest.raises(CatalogError) as err:
        validate_catalog(cat)
    assert_message(err, "ra: labelled with units 'rad'", "must be in degrees", "numpy.degrees", "units='deg'")


def test_not_a_dataset_and_no_halo_dimension():
    with pytest.raises(CatalogError, match="must be an xarray.Dataset.*got dict.*make_catalog"):
        validate_catalog({"z": [0.1]})
    with pytest.raises(CatalogError, match="no 'halo' dimension.*rename"):
        validate_catalog(good_catalog().rename({"halo": "row"}))


def test_every_invalid_variable_is_reported_at_once():
    cat = with_values(good_catalog(), "lum_obs", {101: -1.0})
    cat = with_values(cat, "z", {102: np.nan})
    cat = with_values(cat, "dec", {103: -91.0})
    cat = cat.assign(sigma_obs=("halo", np.where(IDS == 104, 0.0, 0.05)))
    with pytest.raises(CatalogError) as err:
        validate_catalog(cat)
    assert len(err.value.problems) == 4
    assert [p.split(":")[0] for p in err.value.problems] == ["z", "lum_obs", "dec", "sigma_obs"]
    assert_message(err, "4 problem(s)", "first ids: 101", "first ids: 102", "first ids: 103", "first ids: 104")


def test_catalogue_errors_are_value_errors():
    with pytest.raises(ValueError):
        validate_catalog(with_values(good_catalog(), "lum_obs", {101: -1.0}))


# --- read_catalog error paths ------------------------------------------------------------------
def test_read_catalog_missing_file_and_unreadable_files(tmp_path):
    with pytest.raises(CatalogError, match="does not exist"):
        read_catalog(tmp_path / "nope.csv")
    binary = tmp_path / "cat.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x00")
    with pytest.raises(CatalogError, match="not a text file"):
        read_catalog(binary, columns="original")
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("z,lum_obs,ra,dec\n0.1,2e4,150,2\n0.2,3e4,150,2,7,8\n")
    with pytest.raises(CatalogError, match="cannot be parsed.*same number of columns"):
        read_catalog(ragged)
    bad_nc = tmp_path / "cat.nc"
    bad_nc.write_text("not netcdf")
    with pytest.raises(CatalogError, match="cannot be read as NetCDF"):
        read_catalog(bad_nc)
    bad_zarr = tmp_path / "cat.zarr"
    bad_zarr.mkdir()
    with pytest.raises(CatalogError, match="cannot be read as Zarr"):
        read_catalog(bad_zarr)


def test_read_catalog_column_errors(tmp_path):
    path = tmp_path / "cat.txt"
    path.write_text("0.1 2e4 1e13 1.0 2.0\n0.2 3e4 2e13 -3.0 4.0\n")
    with pytest.raises(CatalogError, match="no header line; pass columns="):
        read_catalog(path)
    with pytest.raises(CatalogError, match="5 columns in the file but 4 names given"):
        read_catalog(path, columns=["z", "lum_obs", "ra", "dec"])
    with pytest.raises(CatalogError, match="column names must be unique"):
        read_catalog(path, columns="z,z,mass,ra_arcmin,dec_arcmin")
    with pytest.raises(CatalogError, match=r"center must be finite with dec in \[-90, 90\]"):
        read_catalog(path, columns="original", center=(150.0, 95.0))
    with pytest.raises(CatalogError, match="ra_arcmin and dec_arcmin must be given together"):
        read_catalog(path, columns="z,lum_obs,mass,ra_arcmin,dec")
    cat = read_catalog(path, columns="z, lum_obs, mass, ra_arcmin, dec_arcmin")  # a string is split
    assert cat.sizes["halo"] == 2 and "mass_true" in cat


def test_read_catalog_skips_leading_comment_lines(tmp_path):
    path = tmp_path / "commented.csv"
    path.write_text("# written by a survey pipeline\n\nz,lum_obs,ra,dec\n0.1,2e4,150.0,2.0\n0.2,3e4,150.1,2.1\n")
    cat = read_catalog(path)
    assert list(cat.z.values) == [0.1, 0.2]


def test_read_catalog_netcdf_with_two_row_dimensions(tmp_path):
    ds = xr.Dataset({"z": ("a", [0.1, 0.2]), "lum_obs": ("b", [2e4, 3e4, 4e4])})
    path = tmp_path / "two.nc"
    ds.to_netcdf(path)
    with pytest.raises(CatalogError, match=r"has dims \('a', 'b'\).*one row dimension named 'halo'"):
        read_catalog(path)


def test_make_catalog_shape_errors():
    with pytest.raises(CatalogError, match=r"different lengths \{'z': 2, 'lum_obs': 3"):
        make_catalog([0.1, 0.2], [1e4, 2e4, 3e4], [150.0, 150.1], [2.0, 2.1])
    with pytest.raises(CatalogError, match=r"1-D array with one entry per halo; z has shape \(\)"):
        make_catalog(0.1, [1e4], [150.0], [2.0])
    with pytest.raises(CatalogError, match="sigma_obs must be a number or one number per halo"):
        make_catalog([0.1, 0.2], [1e4, 2e4], [150.0, 150.1], [2.0, 2.1], sigma_obs=[0.1, 0.2, 0.3])


def test_cli_reports_catalogue_errors_in_one_line(tmp_path, capsys):
    from massmap_xr.cli import main

    path = tmp_path / "bad.csv"
    path.write_text("z,lum_obs,ra,dec\n0.1,-2e4,150.0,2.0\n0.2,3e4,150.1,2.1\n")
    code = main(["build", str(path), "-o", str(tmp_path / "out.zarr"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("massmap: error: invalid catalogue")
    assert "lum_obs: must be > 0" in err and "first ids: 0" in err
    assert not (tmp_path / "out.zarr").exists()


# --- suspicious positions (warnings) ------------------------------------------------------------
def _field(center, size_arcmin, n=400, seed=3):
    return uniform_field_positions(n, np.random.default_rng(seed), center=center, size_arcmin=size_arcmin)


def _uniform_region(ra_lo, ra_hi, dec_lo, dec_hi, n=400, seed=4):
    rng = np.random.default_rng(seed)
    ra = rng.uniform(ra_lo, ra_hi, n) % 360.0
    dec = np.degrees(np.arcsin(rng.uniform(np.sin(np.radians(dec_lo)), np.sin(np.radians(dec_hi)), n)))
    return ra, dec


ORDINARY_FIELDS = {
    "40' at ra=150": _field((150.0, 2.0), 40.0),
    "40' straddling ra=0": _field((0.05, 0.0), 40.0),
    "40' near the origin": _field((1.0, 1.0), 40.0),
    "4 deg at ra=0, dec=-30": _field((0.0, -30.0), 240.0),
    "wide survey ra 100-250, dec -5..60": _uniform_region(100, 250, -5, 60),
    "stripe ra -50..60, dec +-1.25": _uniform_region(-50, 60, -1.25, 1.25),
    "wide survey ra -60..100, dec -65..0": _uniform_region(-60, 100, -65, 0),
    "full sky": _uniform_region(0, 360, -90, 90),
}


@pytest.mark.parametrize("name", list(ORDINARY_FIELDS))
def test_no_false_alarm_on_ordinary_fields(name):
    ra, dec = ORDINARY_FIELDS[name]
    cat = make_catalog(np.full(ra.size, 0.5), np.full(ra.size, 2e4), ra, dec)  # warnings are errors here
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        validate_catalog(cat)
        assert check_position_units(ra, dec) is None


def test_arcmin_offsets_given_as_degrees_warn():
    rng = np.random.default_rng(5)
    x, y = rng.uniform(0, 40, 300), rng.uniform(0, 40, 300)  # offsets from the field corner
    with pytest.warns(CatalogWarning, match="look like tangent-plane offsets in arcmin.*ra_arcmin/dec_arcmin"):
        make_catalog(np.full(300, 0.5), np.full(300, 2e4), x, y)
    # centred offsets wrapped into [0, 360) are caught too
    with pytest.warns(CatalogWarning, match="offsets in arcmin"):
        make_catalog(np.full(300, 0.5), np.full(300, 2e4), x - 20, y - 20, wrap_ra=True)


def test_arcmin_offset_columns_are_converted_without_warning(tmp_path):
    path = tmp_path / "orig.txt"
    rng = np.random.default_rng(6)
    rows = [f"{z:.3f} {2e4:.1f} {1e13:.3g} {x:.4f} {y:.4f}"
            for z, x, y in zip(rng.uniform(0.1, 1, 50), rng.uniform(-20, 20, 50), rng.uniform(-20, 20, 50), strict=False)]
    path.write_text("\n".join(rows) + "\n")
    cat = read_catalog(path, columns="original", center=(150.0, 2.0))  # warnings are errors here
    assert abs(float(cat.ra.mean()) - 150.0) < 0.1 and abs(float(cat.dec.mean()) - 2.0) < 0.1
    assert float(np.ptp(cat.dec.values)) < 40 / 60


@pytest.mark.parametrize("field", [((150.0, 2.0), 40.0), ((30.0, -45.0), 120.0), ((0.0, 10.0), 40.0)])
def test_radians_given_as_degrees_warn(field):
    ra, dec = _field(*field)
    with pytest.warns(CatalogWarning, match="look like radians given as degrees.*numpy.degrees"):
        make_catalog(np.full(ra.size, 0.5), np.full(ra.size, 2e4), np.radians(ra), np.radians(dec))


def test_wide_survey_in_radians_warns():
    ra, dec = _uniform_region(0, 360, -90, 90)
    with pytest.warns(CatalogWarning, match="radians"):
        assert check_position_units(np.radians(ra), np.radians(dec)) == "radians"


def test_edge_collapse_warning_lists_the_halos():
    cat = with_values(good_catalog(), "lum_obs", {103: 1e-30, 106: 1e30})
    with pytest.warns(CatalogWarning) as rec:
        build_posterior(cat, reddick2013(3, seed=1), prior=table_prior(), mass=MASS)
    text = str(rec[0].message)
    assert "2 halo(s)" in text and "first ids: 103, 106" in text
    assert "collapses onto a grid edge" in text and "widen the mass grid" in text


def test_no_edge_collapse_warning_for_ordinary_halos():
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        build_posterior(good_catalog(), reddick2013(3, seed=1), prior=table_prior(), mass=MASS)
    # this grid cuts two posteriors (an edge-fraction warning), but none collapses
    assert not any("collapses onto a grid edge" in str(r.message) for r in rec)


# --- hyperparameters ---------------------------------------------------------------------------
def good_hyper(n=4) -> xr.Dataset:
    return reddick2013(n, seed=3)


def with_hyper(h: xr.Dataset, name: str, changes: dict) -> xr.Dataset:
    a = np.array(h[name].values, dtype=float) if name in h else np.ones(h.sizes["realization"])
    for r, v in changes.items():
        a[r] = v
    return h.assign({name: ("realization", a)})


def test_hyper_missing_names():
    with pytest.raises(HyperparameterError) as err:
        as_hyper({"alpha1": 10.7, "alpha2": 0.36, "alpha3": 2.35e14, "alpha4": 1.1})
    assert_message(err, "missing variable(s) ['S']", "need ['alpha1', 'alpha2', 'alpha3', 'alpha4', 'S']")


def test_hyper_nan():
    with pytest.raises(HyperparameterError) as err:
        validate_hyper(with_hyper(good_hyper(), "alpha4", {1: np.nan, 3: -np.inf}))
    assert_message(err, "alpha4: must be finite", "2 of 4 realizations", "first labels: 1, 3", "drop these draws")


def test_hyper_non_positive_scatter():
    with pytest.raises(HyperparameterError) as err:
        as_hyper(with_hyper(good_hyper(), "S", {0: 0.0, 2: -0.1}))
    assert_message(err, "S: must be > 0", "2 of 4 realizations", "first labels: 0, 2", "values: 0, -0.1")


def test_hyper_non_positive_pivot_mass():
    h = with_hyper(good_hyper(), "alpha3", {3: -2.35e14})
    with pytest.raises(HyperparameterError) as err:
        validate_hyper(h)
    assert_message(err, "alpha3: must be > 0 (pivot mass in M_sun", "1 of 4 realizations", "first labels: 3", "10**alpha3")


def test_hyper_negative_weights():
    with pytest.raises(HyperparameterError) as err:
        as_hyper(with_hyper(good_hyper(), "weight", {1: -0.5}))
    assert_message(err, "weight: must be >= 0", "1 of 4 realizations", "first labels: 1", "negative")


def test_hyper_all_zero_weights():
    h = good_hyper().assign(weight=("realization", np.zeros(4)))
    with pytest.raises(HyperparameterError) as err:
        as_hyper(h)
    assert_message(err, "all 4 weights are zero", "positive weight", "drop the variable")


def test_hyper_zero_realizations():
    with pytest.raises(HyperparameterError, match="zero realizations; provide at least one draw"):
        validate_hyper(good_hyper().isel(realization=slice(0, 0)))
    with pytest.raises(HyperparameterError, match="n must be a positive integer, got 0"):
        as_hyper(0)
    with pytest.raises(HyperparameterError, match="zero realizations"):
        as_hyper({k: [] for k in ("alpha1", "alpha2", "alpha3", "alpha4", "S")})


def test_hyper_non_numeric():
    h = good_hyper().assign(alpha2=("realization", np.array(["0.3", "0.4", "x", "0.36"])))
    with pytest.raises(HyperparameterError) as err:
        validate_hyper(h)
    assert_message(err, "alpha2: must be numeric", "<U4", "astype(float)")
    with pytest.raises(HyperparameterError, match="alpha1 must be numeric"):
        as_hyper({"alpha1": ["a"], "alpha2": 0.36, "alpha3": 2.35e14, "alpha4": 1.1, "S": 0.15})
    with pytest.raises(HyperparameterError, match="S must be real numbers"):
        as_hyper({"alpha1": 10.7, "alpha2": 0.36, "alpha3": 2.35e14, "alpha4": 1.1, "S": True})
    with pytest.raises(HyperparameterError, match="must be an xarray.Dataset, got list"):
        as_hyper([1, 2])


def test_hyper_mapping_shape_errors():
    with pytest.raises(HyperparameterError, match=r"different lengths \{'alpha1': 2, 'alpha2': 3"):
        as_hyper({"alpha1": [10.7, 10.8], "alpha2": [0.3, 0.35, 0.4], "alpha3": 2.35e14, "alpha4": 1.1, "S": 0.15})
    with pytest.raises(HyperparameterError, match=r"S must be a number or a 1-D array, has shape \(1, 2\)"):
        as_hyper({"alpha1": 10.7, "alpha2": 0.36, "alpha3": 2.35e14, "alpha4": 1.1, "S": [[0.1, 0.2]]})
    with pytest.raises(HyperparameterError, match="empty mapping"):
        as_hyper({})


def test_hyper_every_problem_reported_at_once():
    h = with_hyper(good_hyper(), "S", {0: -1.0})
    h = with_hyper(h, "alpha1", {2: np.nan})
    h = with_hyper(h, "weight", {3: -1.0})
    with pytest.raises(HyperparameterError) as err:
        validate_hyper(h)
    assert [p.split(":")[0] for p in err.value.problems] == ["alpha1", "S", "weight"]


def test_huge_weights_normalise_without_overflow():
    h = good_hyper().assign(weight=("realization", [1.7e308, 1.7e308, 0.0, 5e-324]))
    w = as_hyper(h)["weight"].values
    np.testing.assert_allclose(w, [0.5, 0.5, 0.0, 0.0], atol=1e-300)


def test_read_hyper_malformed_files(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("alpha1,alpha2,alpha3,alpha4,S\n10.7,0.36,2.35e14,1.1,0.15\n10.7,0.36\n10.7,0.3,1,2,3,4,5\n")
    with pytest.raises(HyperparameterError, match="cannot be parsed as a hyperparameter table"):
        read_hyper(path)
    empty = tmp_path / "e.csv"
    empty.write_text("")
    with pytest.raises(HyperparameterError, match="cannot be parsed"):
        read_hyper(empty)
    bad_nc = tmp_path / "h.nc"
    bad_nc.write_text("junk")
    with pytest.raises(HyperparameterError, match="cannot be read as NetCDF"):
        read_hyper(bad_nc)


def test_build_posterior_reports_hyperparameter_errors():
    with pytest.raises(HyperparameterError, match="S: must be > 0"):
        build_posterior(good_catalog(), with_hyper(good_hyper(), "S", {0: -0.1}), prior=table_prior(), mass=MASS)


# --- mass grid and prior tables ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mass", "words"),
    [
        (np.logspace(10, 15, 10)[::-1], "strictly increasing"),
        (np.r_[np.logspace(10, 15, 9), 1e15], "strictly increasing"),
        (np.r_[-1e10, np.logspace(10, 15, 9)], "positive"),
        (np.r_[0.0, np.logspace(10, 15, 9)], "positive"),
        (np.r_[np.nan, np.logspace(10, 15, 9)], "finite"),
        (np.array([1e12]), "at least 2 points"),
        (np.ones((2, 5)), "1-D"),
    ],
    ids=["decreasing", "repeated", "negative", "zero", "nan", "one point", "2-D"],
)
def test_bad_mass_grid(mass, words):
    with pytest.raises(MassmapError) as err:
        build_posterior(good_catalog(), good_hyper(2), prior=table_prior(), mass=mass)
    assert_message(err, "mass grid", words)


def test_default_mass_grid_arguments():
    with pytest.raises(PriorError, match="need n >= 2 and log10_max > log10_min"):
        default_mass_grid(n=1)


def _table(values=None, z=(0.0, 1.0), mass=None, dims=("z", "mass")):
    mass = np.logspace(10, 15, 5) if mass is None else mass
    values = np.ones((len(z), len(mass))) if values is None else values
    return xr.DataArray(values, dims=dims, coords={dims[0]: list(z), dims[1]: mass})


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: np.ones((2, 5)), "must be an xarray.DataArray with dims (z, mass), got ndarray"),
        (lambda: _table(dims=("redshift", "mass")), "must have dims ('z', 'mass')"),
        (lambda: _table().drop_vars("z"), "coordinate 'z' is missing"),
        (lambda: _table(mass=np.array([1e12])), "at least 1 redshift and 2 masses"),
        (lambda: _table(z=(1.0, 0.0)), "strictly increasing"),
        (lambda: _table(mass=np.logspace(15, 10, 5)), "strictly increasing"),
        (lambda: _table(mass=np.r_[-1.0, np.logspace(10, 15, 4)]), "mass > 0"),
        (lambda: _table(values=np.r_[[np.ones(5)], [[1, 1, np.nan, -1, 1]]]), "2 values are negative, NaN or infinite"),
        (lambda: _table(values=np.r_[[np.ones(5)], [np.zeros(5)]]), "a redshift row is zero everywhere"),
    ],
    ids=["ndarray", "dims", "no-coord", "one-mass", "z-decreasing", "mass-decreasing", "mass-negative", "nan",
         "zero-row"],
)
def test_malformed_prior_table(make, words):
    with pytest.raises(PriorError) as err:
        TablePrior(make())
    assert_message(err, "prior table", words)


def test_bad_prior_objects():
    with pytest.raises(PriorError, match="prior must be None, a MassPrior.*got str"):
        as_prior("tinker")
    with pytest.raises(PriorError, match="z_max and dz must be > 0"):
        TinkerPrior(z_max=0.0)
    with pytest.raises(PriorError, match=r"dlog10m must be in \(0, 0.05\]"):
        TinkerPrior(dlog10m=0.1)


# --- validation does not modify its input --------------------------------------------------------
def _snapshot(ds: xr.Dataset):
    return ds.copy(deep=True), copy.deepcopy(ds.attrs), {k: copy.deepcopy(v.attrs) for k, v in ds.variables.items()}


def _unchanged(ds, snap):
    ref, attrs, var_attrs = snap
    return ds.identical(ref) and ds.attrs == attrs and {k: v.attrs for k, v in ds.variables.items()} == var_attrs


@pytest.mark.parametrize("valid", [True, False])
def test_validate_catalog_does_not_mutate(valid):
    cat = good_catalog().assign(sigma_obs=("halo", np.full(IDS.size, 0.05)))
    if not valid:
        cat = with_values(cat, "ra", {101: -10.0})
        cat = with_values(cat, "lum_obs", {102: np.nan})
    snap = _snapshot(cat)
    try:
        validate_catalog(cat, z_range=(0.0, 1.0))
    except CatalogError:
        assert not valid
    assert _unchanged(cat, snap)


@pytest.mark.parametrize("valid", [True, False])
def test_validate_and_as_hyper_do_not_mutate(valid):
    h = good_hyper().assign(weight=("realization", [1.0, 2.0, 3.0, 0.0]))
    h["S"].attrs = {"note": "kept"}
    if not valid:
        h = with_hyper(h, "S", {1: -1.0})
    snap = _snapshot(h)
    for f in (validate_hyper, as_hyper):
        try:
            f(h)
        except HyperparameterError:
            assert not valid
    assert _unchanged(h, snap)
    mapping = {"alpha1": np.array([10.7, 10.8]), "alpha2": 0.36, "alpha3": 2.35e14, "alpha4": 1.1, "S": 0.15}
    before = copy.deepcopy(mapping)
    as_hyper(mapping)
    assert mapping.keys() == before.keys() and np.array_equal(mapping["alpha1"], before["alpha1"])


def test_make_catalog_does_not_modify_the_input_arrays():
    ra = np.array([-10.0, 20.0, 370.0])
    z = np.array([0.1, 0.2, 0.3])
    make_catalog(z, np.full(3, 2e4), ra, np.zeros(3), wrap_ra=True)
    np.testing.assert_array_equal(ra, [-10.0, 20.0, 370.0])


def test_describe_offenders_format():
    text = describe_offenders(np.arange(10, 20), np.arange(10) % 2 == 1, values=np.arange(10) * 1.5)
    assert text == "5 of 10 halos (first ids: 11, 13, 15, 17, 19; values: 1.5, 4.5, 7.5, 10.5, 13.5)"
    text = describe_offenders(np.arange(8), np.ones(8, bool), noun="realization", n_show=2)
    assert text == "8 of 8 realizations (first labels: 0, 1 (and 6 more))"
