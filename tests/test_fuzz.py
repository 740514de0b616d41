"""Fuzzing the input checks with hypothesis.

Every catalogue / hyperparameter input either builds a normalised, finite posterior cube or
raises a :class:`~massmap_xr.errors.MassmapError`: never another exception, never NaN.  Inputs
come from the shared strategies in ``strategies.py`` (NaN, inf, zeros, negatives, huge and tiny
values, duplicates, empty tables, odd dtypes, ra/dec extremes, z at the prior's limits, extreme
L_obs).  Cubes are small (at most 5 halos, 60 masses, 4 realizations) and computed for real.
"""

from __future__ import annotations

import copy
import pickle
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from hypothesis import given
from hypothesis import strategies as st
from strategies import (
    CORRUPTIONS,
    FUZZ,
    QUICK,
    catalogs,
    hyper_mappings,
    hypers,
    mass_grids,
    sky_fields,
    valid_catalogs,
    valid_hypers,
)

from massmap_xr.catalog import check_position_units, read_catalog, validate_catalog, wrap_ra_degrees
from massmap_xr.cube import build_posterior
from massmap_xr.errors import CatalogError, CatalogWarning, HyperparameterError, MassmapError, MassmapWarning
from massmap_xr.model.hyper import as_hyper
from massmap_xr.model.prior import TinkerPrior
from massmap_xr.model.relation import HYPER_NAMES

MASS = np.logspace(10, 15.5, 60)
PRIOR = TinkerPrior()


def build(cat, hyper, **kwargs) -> xr.Dataset:
    """Build and compute a cube (single-threaded).

    Package warnings are not the subject here, nor numpy's overflow warnings on degenerate
    hyperparameters (see test_degenerate_inputs_emit_no_numpy_warnings).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MassmapWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        if "sigma_obs" not in cat.variables:  # the scatter is stated, never assumed
            kwargs.setdefault("sigma_obs", 0.05)
        cube = build_posterior(
            cat, hyper, prior=kwargs.pop("prior", PRIOR), mass=kwargs.pop("mass", MASS), **kwargs
        )
        return cube.compute(scheduler="synchronous")


def assert_normalised(cube: xr.Dataset) -> None:
    """Finite, non-negative densities integrating to 1 over log10 M (numpy's trapezoid rule)."""
    p = cube["posterior"].values.astype(float)
    assert p.shape == (cube.sizes["halo"], cube.sizes["mass"], cube.sizes["realization"])
    assert np.all(np.isfinite(p)), "NaN or inf in the posterior"
    assert np.all(p >= 0)
    norm = np.trapezoid(p, np.log10(cube["mass"].values), axis=1)
    np.testing.assert_allclose(norm, 1.0, rtol=1e-5)
    w = cube["weight"].values
    assert np.all(np.isfinite(w)) and np.all(w >= 0)
    np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-12)


def accepted(cat, hyper) -> bool:
    """Whether the validators accept the inputs (build_posterior must then succeed)."""
    try:
        as_hyper(hyper)
        validate_catalog(cat, z_range=PRIOR.z_range, warn=False)
    except MassmapError:
        return False
    return True


def check_build(cat, hyper, method="analytic") -> None:
    ok = accepted(cat, hyper)
    try:
        cube = build(cat, hyper, method=method, n_lum=16)
    except MassmapError as err:
        # the analytic kernel has no failure mode of its own: only invalid input may raise
        assert not ok or method == "montecarlo", f"valid input raised {err!r}"
        return
    assert ok, "build_posterior accepted input that the validators reject"
    assert_normalised(cube)


METHODS = st.sampled_from(["analytic", "analytic", "analytic", "montecarlo"])


@FUZZ
@given(cat=catalogs(corruptions=CORRUPTIONS), hyper=hypers(), method=METHODS)
def test_any_input_gives_a_normalised_cube_or_a_massmap_error(cat, hyper, method):
    check_build(cat, hyper, method)


@FUZZ
@given(cat=valid_catalogs(), hyper=valid_hypers())
def test_valid_extremes_give_a_normalised_cube(cat, hyper):
    """Valid corners only: z at the prior's limits, L_obs and scatters near the float limits."""
    assert accepted(cat, hyper)
    assert_normalised(build(cat, hyper))


def _wide_table_prior():
    """dn/dM ~ M^-1.9 exp(-M / 1e15) from 1e6 to 1e22 M_sun at z = 0 and 4 (fast, any grid)."""
    from massmap_xr.model.prior import TablePrior

    m = np.logspace(6, 22, 400)
    row = -1.9 * np.log(m) - m / 1e15
    table = np.exp(np.vstack([row, row - 1.0]) - row.max())
    return TablePrior(xr.DataArray(table, dims=("z", "mass"), coords={"z": [0.0, 4.0], "mass": m}))


TABLE = _wide_table_prior()


@FUZZ
@given(cat=valid_catalogs(extreme=False), hyper=valid_hypers(extreme=False), mass=mass_grids())
def test_mass_grids_give_a_normalised_cube_or_a_massmap_error(cat, hyper, mass):
    if isinstance(mass, list):  # text in the grid: see test_bad_build_arguments_raise_massmap_error
        return
    try:
        cube = build(cat, hyper, mass=mass, prior=TABLE)
    except MassmapError as err:
        grid = np.asarray(mass, dtype=float)
        bad = (grid.ndim != 1 or grid.size < 2 or not np.all(np.isfinite(grid)) or np.any(grid <= 0)
               or np.any(np.diff(grid) <= 0))
        assert bad or "prior is zero on the whole mass grid" in str(err), f"valid grid {grid} raised {err!r}"
        return
    assert_normalised(cube)


def _catalogue_rules_hold(cat: xr.Dataset, z_range) -> bool:
    """An independent restatement of the catalogue rules."""
    if cat.sizes.get("halo", 0) == 0 or cat["halo"].dtype.kind not in "iu":
        return False
    if np.unique(cat["halo"].values).size != cat.sizes["halo"]:
        return False
    bounds = {"z": (z_range[0], z_range[1]), "ra": (0.0, np.nextafter(360.0, 0)), "dec": (-90.0, 90.0)}
    for k in ("z", "lum_obs", "ra", "dec", "sigma_obs", "mass_true"):
        if k not in cat.variables:
            if k in ("sigma_obs", "mass_true"):
                continue
            return False
        v = cat[k]
        if v.dims != ("halo",) or v.dtype.kind not in "iuf":
            return False
        a = v.values.astype(float)
        lo, hi = bounds.get(k, (np.nextafter(0.0, 1), np.inf))
        if not (np.all(np.isfinite(a)) and np.all(a >= lo) and np.all(a <= hi)):
            return False
    return True


@FUZZ
@given(cat=catalogs())
def test_validate_catalog_accepts_exactly_the_valid_catalogues_and_never_mutates(cat):
    before = cat.copy(deep=True)
    attrs = {k: copy.deepcopy(v.attrs) for k, v in cat.variables.items()}
    z_range = (0.0, 4.0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CatalogWarning)
            validate_catalog(cat, z_range=z_range)
        ok = True
    except CatalogError as err:
        ok = False
        names = set(map(str, cat.variables)) | {"halo"}
        assert all(p.split(":")[0] in names for p in err.problems), err.problems
    assert ok == (_catalogue_rules_hold(cat, z_range) and not _has_angle_units(cat))
    assert cat.identical(before)
    assert {k: v.attrs for k, v in cat.variables.items()} == attrs


def _has_angle_units(cat):
    return any(str(cat[c].attrs.get("units", "deg")) != "deg" for c in ("ra", "dec") if c in cat.variables)


@FUZZ
@given(hyper=st.one_of(hypers(), hyper_mappings()))
def test_as_hyper_gives_valid_hyperparameters_or_a_hyperparameter_error(hyper):
    before = hyper.copy(deep=True) if isinstance(hyper, xr.Dataset) else pickle.dumps(hyper)
    try:
        out = as_hyper(hyper)
    except HyperparameterError as err:
        assert str(err)
    else:
        for k in HYPER_NAMES:
            a = out[k].values
            assert out[k].dims == ("realization",) and a.dtype == np.float64 and np.all(np.isfinite(a))
        assert np.all(out["S"].values > 0) and np.all(out["alpha3"].values > 0)
        w = out["weight"].values
        assert np.all(np.isfinite(w)) and np.all(w >= 0)
        np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-12)
    if isinstance(hyper, xr.Dataset):
        assert hyper.identical(before), "as_hyper modified its input"
    else:
        assert pickle.dumps(hyper) == before, "as_hyper modified its input"


TOKENS = ("0.5", "2e4", "150.2", "-1", "0", "-0.0", "nan", "inf", "-inf", "1e400", "abc", "", '"3"', "7")
NAMES = ("z", "lum_obs", "ra", "dec", "sigma_obs", "mass", "id", "halo", "ra_arcmin", "dec_arcmin", "x")


@st.composite
def text_tables(draw):
    """(suffix, text, columns) for read_catalog: ragged rows, junk tokens, headers or not."""
    ncol = draw(st.integers(1, 6))
    header = draw(st.one_of(st.none(), st.lists(st.sampled_from(NAMES), min_size=ncol, max_size=ncol)))
    rows = [
        [draw(st.sampled_from(TOKENS)) for _ in range(max(ncol + draw(st.sampled_from([0, 0, 0, 1, -1])), 1))]
        for _ in range(draw(st.integers(0, 4)))
    ]
    sep = draw(st.sampled_from([",", " ", "\t"]))
    lines = ([sep.join(header)] if header else []) + [sep.join(r) for r in rows]
    if draw(st.booleans()):
        lines.insert(0, "# a comment")
    columns = draw(st.one_of(st.none(), st.just("original"), st.lists(st.sampled_from(NAMES), min_size=1, max_size=6)))
    return (".csv" if sep == "," else ".txt"), "\n".join(lines) + "\n", columns


@FUZZ
@given(table=text_tables(), wrap=st.booleans())
def test_read_catalog_text_gives_a_valid_catalogue_or_a_catalog_error(table, wrap):
    suffix, text, columns = table
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"cat{suffix}"
        path.write_text(text)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CatalogWarning)
                cat = read_catalog(path, columns=columns, wrap_ra=wrap)
        except CatalogError:
            return
    assert _catalogue_rules_hold(cat, (0.0, np.inf))


@QUICK
@given(ra=st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=20))
def test_wrap_ra_gives_the_same_direction_within_0_360(ra):
    w = wrap_ra_degrees(ra)
    assert np.all((w >= 0) & (w < 360))
    np.testing.assert_allclose(np.cos(np.radians(w)), np.cos(np.radians(ra)), atol=1e-9)
    np.testing.assert_allclose(np.sin(np.radians(w)), np.sin(np.radians(ra)), atol=1e-9)


@QUICK
@given(field=sky_fields())
def test_ordinary_fields_in_degrees_never_warn(field):
    ra, dec = field
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_position_units(ra, dec) is None


@QUICK
@given(field=sky_fields(max_size_arcmin=150.0))
def test_ordinary_fields_in_radians_always_warn(field):
    ra, dec = field
    with pytest.warns(CatalogWarning, match="radians"):
        assert check_position_units(np.radians(ra), np.radians(dec)) == "radians"


@QUICK
@given(
    n=st.integers(100, 400), width=st.floats(6.0, 90.0), aspect=st.floats(0.5, 2.0), centred=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_arcmin_offsets_given_as_degrees_always_warn(n, width, aspect, centred, seed):
    rng = np.random.default_rng(seed)
    height = float(np.clip(width * aspect, 6.0, 90.0))  # a 6′ to 90′ field (5′ is the threshold)
    x, y = rng.uniform(0, width, n), rng.uniform(0, height, n)
    if centred:
        x, y = x - width / 2, y - height / 2
    with pytest.warns(CatalogWarning, match="arcmin"):
        assert check_position_units(wrap_ra_degrees(x), y) == "arcmin"


# --- regressions found by fuzzing ------------------------------------------------------------------
def test_far_outlier_posterior_is_normalised():
    cat = xr.Dataset(
        {"z": ("halo", [0.01, 0.5, 0.5]), "lum_obs": ("halo", [100.0, 1e-30, 2e4])},
        coords={"halo": [1, 2, 3], "ra": ("halo", [150.0, 150.1, 150.2]), "dec": ("halo", [2.0, 2.1, 2.2])},
    )
    cube = build(cat, {"alpha1": 10.709, "alpha2": 0.359, "alpha3": 2.35e14, "alpha4": 1.1, "S": 0.155})
    assert_normalised(cube)
    # a halo far below every mean luminosity piles up on the lowest mass
    assert int(np.argmax(cube["posterior"].values[1, :, 0])) == 0


def test_vanishing_scatter_gives_a_cube_or_a_massmap_error():
    cat = xr.Dataset(
        {"z": ("halo", [0.5]), "lum_obs": ("halo", [2e4]), "sigma_obs": ("halo", [1e-300])},
        coords={"halo": [1], "ra": ("halo", [150.0]), "dec": ("halo", [2.0])},
    )
    hyper = {"alpha1": 10.709, "alpha2": 0.359, "alpha3": 2.35e14, "alpha4": 1.1, "S": 1e-300}
    try:
        cube = build(cat, hyper)
    except MassmapError:
        return
    assert_normalised(cube)


def test_positions_stored_as_data_variables():
    cat = xr.Dataset(
        {"z": ("halo", [0.5, 0.6]), "lum_obs": ("halo", [2e4, 3e4]), "ra": ("halo", [150.0, 150.1]),
         "dec": ("halo", [2.0, 2.1])},
        coords={"halo": [1, 2]},
    )
    cube = build(cat, {"alpha1": 10.709, "alpha2": 0.359, "alpha3": 2.35e14, "alpha4": 1.1, "S": 0.155})
    assert_normalised(cube)
    assert "ra" in cube.coords and "ra" not in cube.data_vars


@pytest.mark.parametrize(
    "kwargs", [{"sigma_obs": "x"}, {"sigma_obs": None}, {"mass": ["1e12", "heavy"]}, {"chunks": "a"}],
    ids=["sigma-text", "sigma-none", "mass-text", "chunks-text"],
)
def test_bad_build_arguments_raise_massmap_error(kwargs):
    cat = xr.Dataset(
        {"z": ("halo", [0.5]), "lum_obs": ("halo", [2e4])},
        coords={"halo": [1], "ra": ("halo", [150.0]), "dec": ("halo", [2.0])},
    )
    with pytest.raises(MassmapError):
        build(cat, 2, **kwargs)


@pytest.mark.parametrize(
    ("hyper", "sigma", "method"),
    [
        ({"alpha2": [0.0, 0.359]}, 0.05, "analytic"),
        ({"S": [0.155, 1e300]}, 0.05, "analytic"),
        ({}, 1e-300, "montecarlo"),
    ],
    ids=["alpha2-zero", "huge-S", "montecarlo-tiny-sigma"],
)
def test_degenerate_inputs_emit_no_numpy_warnings(hyper, sigma, method):
    cat = xr.Dataset(
        {"z": ("halo", [0.5, 1.0]), "lum_obs": ("halo", [2e4, 3e4]), "sigma_obs": ("halo", [sigma, sigma])},
        coords={"halo": [1, 2], "ra": ("halo", [150.0, 150.1]), "dec": ("halo", [2.0, 2.1])},
    )
    hyper = {"alpha1": 10.709, "alpha2": 0.359, "alpha3": 2.35e14, "alpha4": 1.1, "S": 0.155, **hyper}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        warnings.simplefilter("ignore", MassmapWarning)
        try:
            build_posterior(cat, hyper, prior=PRIOR, mass=MASS, method=method, n_lum=8,
                            sigma_obs=None if "sigma_obs" in cat else 0.05).compute(scheduler="synchronous")
        except MassmapError:
            pass  # a Monte Carlo likelihood that is zero everywhere is reported as such: fine


@pytest.mark.parametrize("case", ["text-values", "nan-z", "nan-mass"])
def test_table_prior_rejects_non_numeric_and_nan_tables(case):
    from massmap_xr.model.prior import TablePrior

    m = np.logspace(10, 15, 5)
    values, z = np.ones((2, 5)), np.array([0.0, 1.0])
    if case == "text-values":
        values = np.full((2, 5), "a")
    elif case == "nan-z":
        z = np.array([0.0, np.nan])
    else:
        m = np.r_[m[:4], np.nan]
    from massmap_xr.errors import PriorError

    with pytest.raises(PriorError):
        TablePrior(xr.DataArray(values, dims=("z", "mass"), coords={"z": z, "mass": m}))
