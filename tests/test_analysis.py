"""Tests of massmap_xr.analysis: summaries, fits, sampling, calibration and writers."""

from __future__ import annotations

import copy

import dask.array as da
import numpy as np
import pytest
import xarray as xr

# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
from builders import X, chunked, raise_if_dask_computes
from builders import gaussian_cube as make_cube
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats
from scipy.integrate import cumulative_trapezoid
from strategies import QUICK

from massmap_xr import analysis
from massmap_xr.analysis import reductions
from massmap_xr.errors import AnalysisError, OutputExistsError


def numpy_marginal(ds: xr.Dataset) -> np.ndarray:
    p = ds["posterior"].transpose("halo", "mass", "realization").values.astype(float)
    w = ds["weight"].values / ds["weight"].values.sum()
    return p @ w


def numpy_cdf(p: np.ndarray) -> np.ndarray:
    c = cumulative_trapezoid(p, X, initial=0.0, axis=-1)
    return c / c[..., -1:]


@pytest.fixture(scope="module")
def cube():
    return make_cube()[0]


@pytest.fixture(params=["numpy", "dask"])
def backend_cube(request, cube):
    return cube if request.param == "numpy" else chunked(cube)


# ----------------------------------------------------------------------------------------------
# marginal, CDF, summaries, quantiles
# ----------------------------------------------------------------------------------------------
def test_marginalize_is_the_weighted_mean(backend_cube, cube):
    marg = analysis.marginalize(backend_cube)
    assert marg.dims == ("halo", "mass")
    assert marg.attrs["cell_methods"] == "realization: mean"
    assert marg.attrs["units"] == "dex-1"
    np.testing.assert_allclose(marg.values, numpy_marginal(cube), rtol=1e-12)
    np.testing.assert_allclose(np.trapezoid(marg.values, X, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(marg["ra"].values, cube["ra"].values)


def test_marginalize_without_weight_is_uniform(cube):
    marg = analysis.marginalize(cube.drop_vars("weight"))
    np.testing.assert_allclose(marg.values, cube["posterior"].values.astype(float).mean(axis=2), rtol=1e-12)


def test_marginalize_keeps_nan_of_unwritten_regions(cube):
    holed = cube.copy(deep=True)
    holed["posterior"][2, :, 1] = np.nan
    marg = analysis.marginalize(holed)
    assert np.isnan(marg.values[2]).all()
    assert np.isfinite(marg.values[3]).all()
    assert np.isnan(analysis.summary(holed)["median"].values[2])


@pytest.mark.parametrize("per_realization", [False, True])
def test_cdf_is_the_normalised_cumulative_trapezoid(backend_cube, cube, per_realization):
    out = analysis.cdf(backend_cube, per_realization=per_realization)
    if per_realization:
        assert out.dims == ("halo", "mass", "realization")
        expected = numpy_cdf(np.moveaxis(cube["posterior"].values.astype(float), 1, 2))
        expected = np.moveaxis(expected, 2, 1)
    else:
        assert out.dims == ("halo", "mass")
        expected = numpy_cdf(numpy_marginal(cube))
    values = out.values
    np.testing.assert_allclose(values, expected, atol=1e-12)
    assert np.all(values[:, 0] == 0.0)
    assert np.all(values[:, -1] == 1.0)  # exactly, not approximately
    assert np.all(np.diff(values, axis=1) >= 0)


def test_summary_agrees_with_numpy(backend_cube, cube):
    s = analysis.summary(backend_cube, levels=(0.68, 0.95)).compute()
    p = numpy_marginal(cube)
    for i in range(cube.sizes["halo"]):
        norm = np.trapezoid(p[i], X)
        mean = np.trapezoid(X * p[i], X) / norm
        std = np.sqrt(np.trapezoid((X - mean) ** 2 * p[i], X) / norm)
        c = numpy_cdf(p[i])
        np.testing.assert_allclose(s["mean"].values[i], mean, rtol=0, atol=1e-10)
        np.testing.assert_allclose(s["std"].values[i], std, rtol=1e-9)
        np.testing.assert_allclose(s["median"].values[i], np.interp(0.5, c, X), atol=1e-9)
        for lv in (0.68, 0.95):
            lo, hi = np.interp([(1 - lv) / 2, (1 + lv) / 2], c, X)
            np.testing.assert_allclose(s["lower"].sel(level=lv).values[i], lo, atol=1e-9)
            np.testing.assert_allclose(s["upper"].sel(level=lv).values[i], hi, atol=1e-9)
        k = np.argmax(p[i])
        assert abs(s["mode"].values[i] - X[k]) <= 0.5 * (X[1] - X[0]) + 1e-12
    assert s["lower"].dims == ("level", "halo")
    assert s["mean"].attrs["units"] == "dex(solMass)"
    assert s["std"].attrs["units"] == "dex"
    np.testing.assert_array_equal(s["level"].values, [0.68, 0.95])
    np.testing.assert_array_equal(s["dec"].values, cube["dec"].values)


def test_summary_per_realization_recovers_gaussian_parameters():
    ds, mu, sig = make_cube(n_halo=10, n_real=3, shift_sd=0.2, seed=4, mu_range=(11.5, 14.0))
    s = analysis.summary(ds, levels=(0.68,), per_realization=True)
    assert s["mean"].dims == ("halo", "realization")
    assert s["lower"].dims == ("level", "halo", "realization")
    sig2 = np.broadcast_to(sig[:, None], mu.shape)
    np.testing.assert_allclose(s["mean"].values, mu, atol=1e-6)
    np.testing.assert_allclose(s["std"].values, sig2, rtol=1e-4)
    np.testing.assert_allclose(s["median"].values, mu, atol=2e-4)
    np.testing.assert_allclose(s["mode"].values, mu, atol=2e-4)  # refined: well inside a 0.014 dex cell
    z = stats.norm.ppf(0.16)
    np.testing.assert_allclose(s["lower"].sel(level=0.68).values, mu + z * sig2, atol=5e-4)
    np.testing.assert_allclose(s["upper"].sel(level=0.68).values, mu - z * sig2, atol=5e-4)


def test_mode_is_refined_off_the_grid():
    ds, mu, _ = make_cube(n_halo=6, n_real=1, seed=2)
    mode = analysis.summary(ds)["mode"].values
    off_grid = np.min(np.abs(mode[:, None] - X[None, :]), axis=1)
    assert np.all(off_grid > 1e-9)
    # the nearest grid point can be 0.007 dex away; the parabola lands much closer
    assert np.all(np.abs(mode - mu[:, 0]) < 2e-4)


def test_quantile_scalar_and_vector(backend_cube, cube):
    qs = analysis.quantile(backend_cube, [0.16, 0.5, 0.84])
    assert qs.dims == ("quantile", "halo")
    np.testing.assert_array_equal(qs["quantile"].values, [0.16, 0.5, 0.84])
    assert qs.attrs["units"] == "dex(solMass)"
    one = analysis.quantile(backend_cube, 0.5)
    assert one.dims == ("halo",)
    assert float(one["quantile"]) == 0.5
    np.testing.assert_allclose(one.values, qs.sel(quantile=0.5).values, rtol=0, atol=0)
    s = analysis.summary(cube, levels=(0.68,))
    np.testing.assert_allclose(qs.sel(quantile=0.5).values, s["median"].values, atol=1e-12)
    assert np.all(np.diff(qs.values, axis=0) > 0)


def test_quantile_ends_are_the_support_of_the_posterior():
    p = np.zeros((1, X.size, 1), dtype=np.float32)
    p[0, 100:201, 0] = 1.0  # box from X[100] to X[200]
    ds = make_cube(n_halo=1, n_real=1)[0]
    ds["posterior"] = (("halo", "mass", "realization"), p)
    q = analysis.quantile(ds, [0.0, 1.0]).values[:, 0]
    np.testing.assert_allclose(q, [X[99], X[201]], atol=1e-12)


@QUICK
@given(
    mus=st.lists(st.floats(10.5, 15.0), min_size=1, max_size=3),
    sigma=st.floats(0.02, 1.0),
    q=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=5),
)
def test_quantile_inverts_the_cdf(mus, sigma, q):
    dens = sum(np.exp(-0.5 * ((X - m) / sigma) ** 2) for m in mus)
    ds = make_cube(n_halo=1, n_real=1)[0]
    ds["posterior"] = (("halo", "mass", "realization"), dens[None, :, None].astype(np.float32))
    qv = analysis.quantile(ds, q).values[:, 0]
    c = analysis.cdf(ds).values[0]
    assert np.all((qv >= X[0]) & (qv <= X[-1]))
    np.testing.assert_allclose(np.interp(qv, X, c), q, atol=1e-9)
    order = np.argsort(q)
    assert np.all(np.diff(qv[order]) >= -1e-12)


# ----------------------------------------------------------------------------------------------
# laziness
# ----------------------------------------------------------------------------------------------
def test_everything_stays_lazy_on_a_dask_cube(cube):
    lazy = chunked(cube, halo=5, realization=2)
    with raise_if_dask_computes():
        results = {
            "marginalize": analysis.marginalize(lazy),
            "cdf": analysis.cdf(lazy),
            "cdf_r": analysis.cdf(lazy, per_realization=True),
            "summary": analysis.summary(lazy)["median"],
            "quantile": analysis.quantile(lazy, [0.1, 0.9]),
            "fit": analysis.fit_normal(lazy)["kl"],
            "prior": analysis.halo_prior(lazy),
            "sample": analysis.sample(lazy, 20, seed=1),
            "sample_normal": analysis.sample(lazy, 20, method="normal", seed=1),
            "sample_indep": analysis.sample(lazy, 20, correlated=False, seed=1),
        }
    for name, res in results.items():
        assert isinstance(res.data, da.Array), name
        assert res.variable.chunksizes["halo"] == (5, 5, 5, 5, 4), name  # computed halo slab by halo slab
    assert isinstance(results["sample"]["realization"].data, da.Array)
    eager = {
        "marginalize": analysis.marginalize(cube),
        "summary": analysis.summary(cube)["median"],
        "quantile": analysis.quantile(cube, [0.1, 0.9]),
        "fit": analysis.fit_normal(cube)["kl"],
        "sample": analysis.sample(cube, 20, seed=1),
        "sample_indep": analysis.sample(cube, 20, correlated=False, seed=1),
    }
    for name, res in eager.items():
        np.testing.assert_allclose(results[name].values, res.values, rtol=1e-12, atol=1e-12, err_msg=name)


def test_results_do_not_depend_on_batching_or_mass_chunks(cube, monkeypatch):
    funcs = {
        "summary": lambda ds: analysis.summary(ds, per_realization=True).to_array(),
        "fit": lambda ds: analysis.fit_normal(ds).to_array(),
        "quantile": lambda ds: analysis.quantile(ds, [0.0, 0.3, 1.0]),
        "grid": lambda ds: analysis.sample(ds, 30, seed=2),
        "normal": lambda ds: analysis.sample(ds, 30, seed=2, method="normal"),
        "indep": lambda ds: analysis.sample(ds, 30, seed=2, correlated=False),
    }
    ref = {k: f(cube).values for k, f in funcs.items()}
    monkeypatch.setattr(reductions, "BATCH_ELEMENTS", 1000)  # a few rows per batch
    for k, f in funcs.items():
        np.testing.assert_array_equal(f(cube).values, ref[k], err_msg=k)
        np.testing.assert_allclose(f(cube.chunk({"halo": 10, "mass": 64})).values, ref[k], rtol=1e-12, err_msg=k)


def test_store_backed_cube_is_read_lazily(tmp_path):
    from massmap_xr.cube import build_posterior
    from massmap_xr.store import open_store, to_store

    cat, hyper = _mock(40, seed=3)
    path = to_store(build_posterior(cat, hyper, chunks=16), tmp_path / "cube.zarr", progress=False)
    opened = open_store(path)
    with raise_if_dask_computes():
        s = analysis.summary(opened)
        draws = analysis.sample(opened, 10, seed=2)
    assert isinstance(s["median"].data, da.Array)
    assert len(s["median"].chunks[0]) == len(opened["posterior"].chunks[0]) > 1
    mem = opened.compute()
    np.testing.assert_allclose(s["median"].values, analysis.summary(mem)["median"].values, rtol=1e-12)
    np.testing.assert_array_equal(draws.values, analysis.sample(mem, 10, seed=2).values)


# ----------------------------------------------------------------------------------------------
# normal fits
# ----------------------------------------------------------------------------------------------
def test_fit_normal_of_gaussian_posteriors_is_exact():
    ds, mu, sig = make_cube(n_halo=8, n_real=1, seed=5, mu_range=(11.5, 14.0))
    fit = analysis.fit_normal(ds)
    np.testing.assert_allclose(fit["mu"].values, mu[:, 0], atol=1e-6)
    np.testing.assert_allclose(fit["sigma"].values, sig, rtol=1e-4)
    assert np.all(fit["ks"].values < 2e-3)
    assert np.all(np.abs(fit["kl"].values) < 1e-4)
    assert fit["sigma"].attrs["units"] == "dex"


def test_fit_normal_flags_bimodal_posteriors():
    ds = make_cube(n_halo=4, n_real=2, seed=6)[0]
    good = analysis.fit_normal(ds.isel(realization=[0]))
    p = ds["posterior"].values.copy()
    p[:, :, 1] = np.roll(p[:, :, 1], 90, axis=1)  # second realization 1.24 dex away
    ds["posterior"] = (ds["posterior"].dims, p)
    ds["weight"] = ("realization", [0.5, 0.5])
    bad = analysis.fit_normal(ds)
    assert np.all(bad["ks"].values > 0.05)
    assert np.all(bad["kl"].values > 0.1)
    assert np.all(bad["ks"].values > 10 * good["ks"].values)


# ----------------------------------------------------------------------------------------------
# sampling
# ----------------------------------------------------------------------------------------------
def test_grid_samples_follow_the_gridded_posterior(backend_cube, cube):
    draws = analysis.sample(backend_cube, 3000, method="grid", seed=11, correlated=False)
    assert draws.dims == ("halo", "sample")
    assert draws.attrs["units"] == "solMass"
    np.testing.assert_array_equal(draws["ra"].values, cube["ra"].values)
    np.testing.assert_array_equal(draws["realization"].values, -1)
    logm = np.log10(draws.values)
    c = numpy_cdf(numpy_marginal(cube))
    pvalues = [stats.kstest(logm[i], lambda v, i=i: np.interp(v, X, c[i])).pvalue for i in range(4)]
    assert min(pvalues) > 1e-3
    # a clearly wrong CDF (shifted by 0.05 dex) is rejected: the test has power
    assert stats.kstest(logm[0], lambda v: np.interp(v - 0.05, X, c[0])).pvalue < 1e-6
    # continuous draws, not grid points
    on_grid = np.isclose(logm[:, :, None], X[None, None, :], rtol=0, atol=1e-9).any(axis=2)
    assert on_grid.sum() == 0
    assert np.unique(logm[0]).size == logm.shape[1]


def test_normal_samples_match_the_fit(backend_cube):
    n = 4000
    draws = analysis.sample(backend_cube, n, method="normal", correlated=False, seed=3)
    fit = analysis.fit_normal(backend_cube)
    logm = np.log10(draws.values)
    se_mu = fit["sigma"].values / np.sqrt(n)
    assert np.all(np.abs(logm.mean(axis=1) - fit["mu"].values) < 4.5 * se_mu)
    se_sd = fit["sigma"].values / np.sqrt(2 * n)
    assert np.all(np.abs(logm.std(axis=1) - fit["sigma"].values) < 4.5 * se_sd)
    assert stats.kstest((logm[0] - fit["mu"].values[0]) / fit["sigma"].values[0], "norm").pvalue > 1e-3


def test_correlated_samples_pick_realizations_by_weight():
    ds = make_cube(n_halo=3, n_real=5, seed=7, shift_sd=0.3)[0]
    ds["weight"] = ("realization", [0.0, 0.1, 0.2, 0.3, 0.4])
    draws = analysis.sample(ds, 5000, seed=1)
    counts = np.bincount(draws["realization"].values, minlength=5) / 5000
    assert counts[0] == 0
    np.testing.assert_allclose(counts, [0, 0.1, 0.2, 0.3, 0.4], atol=0.03)
    # each halo's draw follows the posterior of the realization recorded for that sample
    fit = analysis.fit_normal(ds, per_realization=True)
    r = draws["realization"].values
    z = (np.log10(draws.values) - fit["mu"].values[:, r]) / fit["sigma"].values[:, r]
    assert stats.kstest(z.ravel(), "norm").pvalue > 1e-3


def test_correlated_sum_has_more_variance_when_hyperparameters_are_uncertain():
    ds = make_cube(n_halo=40, n_real=10, seed=8, shift_sd=0.25, sigma=(0.1, 0.2), mu_range=(12.0, 12.5))[0]
    total_c = analysis.sample(ds, 3000, seed=5, correlated=True).sum("halo").values
    total_i = analysis.sample(ds, 3000, seed=5, correlated=False).sum("halo").values
    assert total_c.var() > 4 * total_i.var()
    np.testing.assert_allclose(total_c.mean(), total_i.mean(), rtol=0.1)


def test_identical_realizations_make_correlated_equal_independent():
    ds = make_cube(n_halo=30, n_real=6, seed=9, shift_sd=0.0)[0]
    corr = analysis.sample(ds, 500, seed=5, correlated=True)
    indep = analysis.sample(ds, 500, seed=5, correlated=False)
    np.testing.assert_allclose(corr.values, indep.values, rtol=1e-10)
    ratio = corr.sum("halo").var().values / indep.sum("halo").var().values
    np.testing.assert_allclose(ratio, 1.0, rtol=1e-8)


@pytest.mark.parametrize("method", ["grid", "normal"])
@pytest.mark.parametrize("correlated", [True, False])
def test_same_seed_same_samples_whatever_the_chunking(cube, method, correlated):
    ref = analysis.sample(cube, 64, method=method, correlated=correlated, seed=42).values
    for halo_chunk, real_chunk in ((5, -1), (13, -1), (1, 2), (24, 1)):
        got = analysis.sample(chunked(cube, halo_chunk, real_chunk), 64, method=method, correlated=correlated, seed=42)
        if correlated or real_chunk == -1:
            np.testing.assert_array_equal(got.values, ref)
        else:  # the marginal's sum over realization chunks is regrouped: last-bit differences only
            np.testing.assert_allclose(got.values, ref, rtol=1e-12)
    other = analysis.sample(cube, 64, method=method, correlated=correlated, seed=43).values
    assert not np.any(other == ref)


def test_a_subset_of_halos_gets_the_same_draws(cube):
    full = analysis.sample(cube, 50, seed=8)
    sub = analysis.sample(cube.isel(halo=[3, 7, 11]), 50, seed=8)
    np.testing.assert_array_equal(sub.values, full.isel(halo=[3, 7, 11]).values)
    np.testing.assert_array_equal(sub["realization"].values, full["realization"].values)


def test_unseeded_samples_differ_and_record_their_seed(cube):
    a = analysis.sample(cube, 10)
    b = analysis.sample(cube, 10)
    assert not np.array_equal(a.values, b.values)
    again = analysis.sample(cube, 10, seed=a.attrs["seed"])
    np.testing.assert_array_equal(again.values, a.values)


# ----------------------------------------------------------------------------------------------
# inputs are not mutated
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "func",
    [
        analysis.marginalize,
        analysis.cdf,
        analysis.summary,
        analysis.fit_normal,
        analysis.halo_prior,
        analysis.calibration,
        lambda ds: analysis.quantile(ds, [0.2, 0.8]),
        lambda ds: analysis.sample(ds, 5, seed=1),
        lambda ds: analysis.sample(ds, 5, seed=1, correlated=False, method="normal"),
    ],
)
def test_inputs_are_not_mutated(backend_cube, func):
    before = backend_cube.copy(deep=True)
    attrs = copy.deepcopy(backend_cube.attrs)
    var_attrs = {k: dict(v.attrs) for k, v in backend_cube.variables.items()}
    out = func(backend_cube)
    if hasattr(out, "compute"):
        out.compute()
    xr.testing.assert_identical(backend_cube, before)
    assert backend_cube.attrs == attrs
    assert {k: dict(v.attrs) for k, v in backend_cube.variables.items()} == var_attrs


# ----------------------------------------------------------------------------------------------
# calibration
# ----------------------------------------------------------------------------------------------
def test_calibration_of_a_calibrated_synthetic_cube_passes():
    ds = make_cube(n_halo=400, n_real=3, shift_sd=0.2, seed=12)[0]
    cal = analysis.calibration(chunked(ds, halo=100))
    assert cal.attrs["verdict"].startswith("calibrated"), cal.attrs["verdict"]
    assert float(cal["ks_pvalue"]) > 0.01
    assert cal["pit"].dims == ("halo",)
    np.testing.assert_array_equal(cal["level"].values, [0.5, 0.68, 0.9, 0.95])
    assert np.all(np.abs(cal["coverage"] - cal["level"]) < 3 * cal["coverage_err"])
    np.testing.assert_allclose(cal["coverage_err"].values, np.sqrt(cal["level"] * (1 - cal["level"]) / 400))
    assert cal.attrs["n_halos"] == 400


def test_calibration_pit_is_the_marginal_cdf_at_the_truth(cube):
    cal = analysis.calibration(cube)
    c = numpy_cdf(numpy_marginal(cube))
    expected = [np.interp(np.log10(m), X, c[i]) for i, m in enumerate(cube["mass_true"].values)]
    np.testing.assert_allclose(cal["pit"].values, expected, atol=1e-12)
    s = analysis.summary(cube, levels=(0.68,))
    inside = (np.log10(cube["mass_true"]) >= s["lower"].sel(level=0.68)) & (
        np.log10(cube["mass_true"]) <= s["upper"].sel(level=0.68)
    )
    np.testing.assert_allclose(float(cal["coverage"].sel(level=0.68)), float(inside.mean()), atol=1 / cube.sizes["halo"])


@pytest.mark.parametrize("offset, where", [(0.3, "above"), (-0.3, "below")])
def test_calibration_of_biased_posteriors_fails_and_says_which_way(offset, where):
    ds = make_cube(n_halo=400, n_real=3, shift_sd=0.1, seed=12, truth_offset=offset)[0]
    cal = analysis.calibration(ds)
    verdict = cal.attrs["verdict"]
    assert verdict.startswith("miscalibrated: "), verdict
    assert f"true masses tend to lie {where} the posteriors" in verdict
    assert float(cal["ks_pvalue"]) < 1e-6


def test_calibration_of_over_confident_posteriors_fails():
    ds, mu, _ = make_cube(n_halo=400, n_real=1, seed=13)
    wide = np.log10(ds["mass_true"].values) - mu[:, 0]
    ds["mass_true"] = ("halo", 10.0 ** (mu[:, 0] + 2.0 * wide))  # truth scattered twice as wide
    verdict = analysis.calibration(ds).attrs["verdict"]
    assert verdict.startswith("miscalibrated: intervals too narrow (over-confident)"), verdict


def test_calibration_needs_mass_true(cube):
    with pytest.raises(AnalysisError) as err:
        analysis.calibration(cube.drop_vars("mass_true"))
    assert str(err.value) == (
        "calibration needs true halo masses: the cube has no 'mass_true' variable (M_sun, along halo); "
        "calibrate on a mock catalogue (massmap_xr.mock_catalog) or add mass_true to the catalogue"
    )


def test_calibration_skips_halos_without_a_usable_true_mass(cube):
    ds = cube.copy(deep=True)
    ds["mass_true"][[0, 5]] = [np.nan, -1.0]
    cal = analysis.calibration(ds)
    assert cal.attrs["n_halos"] == cube.sizes["halo"] - 2
    assert np.isnan(cal["pit"].values[[0, 5]]).all()


def _mock(n: int, seed: int, shift: float = 0.0, n_real: int = 1):
    """Mock catalogue and a hyperparameter table at its true values (alpha1 shifted by ``shift``)."""
    from massmap_xr.catalog import mock_catalog
    from massmap_xr.model.hyper import reddick2013
    from massmap_xr.model.prior import default_mass_grid

    cat = mock_catalog(n, seed=seed, mass=default_mass_grid())  # masses from the prior on the posterior's grid
    hyper = reddick2013(n_real, seed=seed, kind="posterior")  # the true values, not draws of a prior
    for k in ("alpha1", "alpha2", "alpha3", "alpha4", "S"):
        hyper[k] = xr.full_like(hyper[k], cat.attrs[f"true_{k}"])
    hyper["alpha1"] = hyper["alpha1"] + shift
    return cat, hyper


@pytest.fixture(scope="module")
def mock_cubes():
    from massmap_xr.cube import build_posterior

    cat, truth = _mock(400, seed=21)
    _, shifted = _mock(400, seed=21, shift=0.3)
    return build_posterior(cat, truth, chunks=100), build_posterior(cat, shifted, chunks=100)


def test_mock_built_with_the_true_hyperparameters_is_calibrated(mock_cubes):
    cal = analysis.calibration(mock_cubes[0])
    assert cal.attrs["verdict"].startswith("calibrated"), cal.attrs["verdict"]
    assert float(cal["ks_pvalue"]) > 0.01


def test_mock_with_alpha1_shifted_by_0p3_is_clearly_miscalibrated(mock_cubes):
    cal = analysis.calibration(mock_cubes[1])
    verdict = cal.attrs["verdict"]
    assert verdict.startswith("miscalibrated: true masses tend to lie above the posteriors"), verdict
    assert float(cal["ks_pvalue"]) < 1e-10
    assert float(cal["coverage"].sel(level=0.68)) < 0.5


# ----------------------------------------------------------------------------------------------
# prior
# ----------------------------------------------------------------------------------------------
def test_halo_prior_interpolates_ln_dndm_in_z_and_is_normalised(cube):
    pr = analysis.halo_prior(cube)
    assert pr.dims == ("halo", "mass")
    np.testing.assert_allclose(np.trapezoid(pr.values, X, axis=1), 1.0, rtol=1e-12)
    z = float(cube["z"][0])
    table = np.log(cube["prior_dndm"].values)
    i = int(np.searchsorted(cube["prior_z"].values, z) - 1)
    f = (z - cube["prior_z"].values[i]) / (cube["prior_z"].values[i + 1] - cube["prior_z"].values[i])
    expected = np.exp((1 - f) * table[i] + f * table[i + 1]) * 10.0**X
    expected /= np.trapezoid(expected, X)
    np.testing.assert_allclose(pr.values[0], expected, rtol=1e-9)


def test_halo_prior_needs_the_table(cube):
    with pytest.raises(AnalysisError, match="the cube has no prior table"):
        analysis.halo_prior(cube.drop_vars("prior_dndm"))


# ----------------------------------------------------------------------------------------------
# validation messages
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "call, message",
    [
        (lambda ds: analysis.sample(ds, 0), "n (number of samples per halo) must be a positive integer, got 0"),
        (lambda ds: analysis.sample(ds, 2.5), "n (number of samples per halo) must be a positive integer, got 2.5"),
        (
            lambda ds: analysis.sample(ds, 3, method="mcmc"),
            "method must be 'grid' (inverse-CDF on the mass grid) or 'normal' (normal fit), got 'mcmc'",
        ),
        (lambda ds: analysis.sample(ds, 3, seed=-1), "seed must be None or a non-negative integer, got -1"),
        (lambda ds: analysis.sample(ds, 3, correlated="yes"), "correlated must be True or False, got 'yes'"),
        (
            lambda ds: analysis.quantile(ds, 1.5),
            "q must be a probability or a 1-D sequence of probabilities in [0, 1], got 1.5",
        ),
        (
            lambda ds: analysis.summary(ds, levels=(0.68, 1.0)),
            "levels must lie strictly between 0 and 1 (e.g. 0.68 for a 68% interval), got (0.68, 1.0)",
        ),
        (
            lambda ds: analysis.calibration(ds, alpha=2),
            "alpha (KS test significance) must lie strictly between 0 and 1, got 2",
        ),
        (
            lambda ds: analysis.marginalize(ds.drop_vars("posterior")),
            (
                "the dataset has no 'posterior' variable; build a cube with massmap_xr.build_posterior "
                "or open one with massmap_xr.store.open_store"
            ),
        ),
        (
            lambda ds: analysis.summary(ds["posterior"]),
            "expected a posterior cube (xarray.Dataset with a 'posterior' variable), got DataArray",
        ),
        (
            lambda ds: analysis.cdf(ds.rename(realization="draw")),
            "'posterior' must have dims ('halo', 'mass', 'realization'), got ('halo', 'mass', 'draw')",
        ),
    ],
)
def test_bad_input_messages(cube, call, message):
    with pytest.raises(AnalysisError) as err:
        call(cube)
    assert str(err.value) == message
    assert isinstance(err.value, ValueError)


# ----------------------------------------------------------------------------------------------
# writers
# ----------------------------------------------------------------------------------------------
def test_write_summary_csv_and_netcdf(tmp_path, backend_cube, cube):
    import pandas as pd

    csv = analysis.write_summary(backend_cube, tmp_path / "summary.csv", levels=(0.68, 0.997))
    table = pd.read_csv(csv, comment="#")
    assert len(table) == cube.sizes["halo"]
    for col in ("halo", "ra", "dec", "z", "mass_true_solMass", "log10_mass_mean", "log10_mass_std",
                "log10_mass_median", "log10_mass_mode", "log10_mass_lower_68", "log10_mass_upper_68",
                "log10_mass_lower_99p7", "log10_mass_upper_99p7"):
        assert col in table.columns, col
    s = analysis.summary(cube, levels=(0.68, 0.997))
    np.testing.assert_allclose(table["log10_mass_upper_68"], s["upper"].sel(level=0.68).values, rtol=1e-12)
    np.testing.assert_allclose(table["mass_true_solMass"], cube["mass_true"].values, rtol=1e-12)
    header = [line for line in open(csv) if line.startswith("#")]
    assert any("log10_mass_std: [dex]" in line for line in header)
    assert any("mass_true_solMass: [solMass]" in line for line in header)
    np.testing.assert_array_equal(table["halo"], cube["halo"].values)

    nc = analysis.write_summary(backend_cube, tmp_path / "summary.nc")
    back = xr.open_dataset(nc, engine="h5netcdf")
    xr.testing.assert_allclose(back["lower"], analysis.summary(cube)["lower"])
    assert back["median"].attrs["units"] == "dex(solMass)"
    back.close()

    with pytest.raises(AnalysisError, match="use a .csv or .nc file name"):
        analysis.write_summary(cube, tmp_path / "summary.xlsx")


def test_write_samples_round_trips_through_zarr(tmp_path, backend_cube):
    draws = analysis.sample(backend_cube, 16, seed=4)
    path = analysis.write_samples(draws, tmp_path / "samples.zarr")
    back = xr.open_zarr(path, consolidated=False)
    np.testing.assert_array_equal(back["mass"].values, draws.values)
    np.testing.assert_array_equal(back["realization"].values, draws["realization"].values)
    np.testing.assert_array_equal(back["ra"].values, draws["ra"].values)
    assert back["mass"].attrs["units"] == "solMass"
    assert back["mass"].attrs["seed"] == 4
    with pytest.raises(OutputExistsError, match="already exists; pass overwrite=True"):
        analysis.write_samples(draws, path)
    analysis.write_samples(draws * 2, path, overwrite=True)
    np.testing.assert_array_equal(xr.open_zarr(path, consolidated=False)["mass"].values, 2 * draws.values)

    nc = analysis.write_samples(draws, tmp_path / "samples.nc")
    with xr.open_dataset(nc, engine="h5netcdf") as back:
        np.testing.assert_array_equal(back["mass"].values, draws.values)
        assert back["mass"].attrs["realization_sampling"] == "correlated"
