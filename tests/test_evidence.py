"""Prior draws vs posterior draws: the hyperparameter kind and evidence-weighted marginals.

The evidence-weighted marginal of prior draws is checked against a direct 2-D quadrature over a
5 x 5 grid of (alpha1, alpha2) with a normal prior, computed here with scipy (not with the
package's kernels): P(M | L) = ∫∫ π(α) p(L | M, α) p(M) dα / ∫∫∫ π(α) p(L | M, α) p(M) dα dM.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from builders import brute_log_evidence, chunked, gaussian_cube, table_prior_cube, with_log_evidence
from scipy import integrate, stats

import massmap_xr as mm
from massmap_xr.analysis import marginalize, sample, summary
from massmap_xr.analysis.weights import evidence_weights, marginal_weights
from massmap_xr.errors import AnalysisError, HyperparameterError
from massmap_xr.model.hyper import as_hyper, from_arviz, hyper_kind, read_hyper, reddick2013

A1 = 10.709 + 0.25 * np.linspace(-1.0, 1.0, 5)
A2 = 0.359 + 0.06 * np.linspace(-1.0, 1.0, 5)
A3, A4, S = 2.35e14, 1.10, 0.155
MSTAR = 1e15


def _log_prior(x, z):
    """ln dn/dlog10 M (unnormalised) of the dense table prior below: M^-0.9 exp(-M (1+z) / M*)."""
    m = 10.0**x
    return -0.9 * np.log(m) - m * (1.0 + z) / MSTAR


def _grid_problem(n_halo=12):
    """Catalogue, prior, mass grid and (alpha1, alpha2) prior-weighted hyper grid."""
    m = np.logspace(9.5, 16.0, 3000)  # dense: ln-ln interpolation of the table is exact to ~1e-5
    zt = np.linspace(0.0, 4.0, 5)  # ln table is linear in z, so interpolation in z is exact
    table = m[None, :] ** -1.9 * np.exp(-m[None, :] * (1.0 + zt[:, None]) / MSTAR)
    prior = mm.TablePrior(xr.DataArray(table, dims=("z", "mass"), coords={"z": zt, "mass": m}))
    mass = np.logspace(11.0, 15.5, 500)
    cat = mm.mock_catalog(n_halo, seed=3, prior=prior, mass=mass)
    g1, g2 = np.meshgrid(A1, A2, indexing="ij")
    pi = stats.norm.pdf(g1, 10.709, 0.2) * stats.norm.pdf(g2, 0.359, 0.03)
    tw = np.outer(np.gradient(A1) * [0.5, 1, 1, 1, 0.5], np.gradient(A2) * [0.5, 1, 1, 1, 0.5])  # 2-D trapezoid
    hyper = {"alpha1": g1.ravel(), "alpha2": g2.ravel(), "alpha3": A3, "alpha4": A4, "S": S,
             "weight": (pi * tw).ravel()}
    return cat, prior, mass, hyper, pi


def _direct(cat, x):
    """P(log10 M | L_obs) on ``x`` by direct quadrature over (alpha1, alpha2, log10 M) (scipy)."""
    z = cat["z"].values
    lobs = np.log(cat["lum_obs"].values)
    sig = cat["sigma_obs"].values if "sigma_obs" in cat else np.full(z.size, 0.05)
    g1, g2 = np.meshgrid(A1, A2, indexing="ij")
    pi = stats.norm.pdf(g1, 10.709, 0.2) * stats.norm.pdf(g2, 0.359, 0.03)
    xf = np.linspace(11.0, 15.5, 6001)
    out = np.empty((z.size, x.size))
    for k in range(z.size):
        def joint(xx, k=k):
            mu = g1[..., None] + g2[..., None] * (np.log(10.0) * xx - np.log(A3)) + A4 * np.log1p(z[k])
            like = stats.norm.pdf(lobs[k], mu, np.hypot(S, sig[k]))
            lp = _log_prior(xx, z[k])
            num = pi[..., None] * like * np.exp(lp - _log_prior(xf, z[k]).max())
            return integrate.trapezoid(integrate.trapezoid(num, A2, axis=1), A1, axis=0)
        out[k] = joint(x) / integrate.trapezoid(joint(xf), xf)
    return out


@pytest.fixture(scope="module")
def grid_cube():
    cat, prior, mass, hyper, _ = _grid_problem()
    cube = mm.build_posterior(cat, as_hyper(hyper, kind="prior"), prior=prior, mass=mass, chunks=5)
    le = brute_log_evidence(cube, log_prior=_log_prior)
    return with_log_evidence(cube, le), cat


def test_hyper_kind_defaults_and_parameter(tmp_path):
    assert reddick2013(3, seed=1).attrs["hyper_kind"] == "prior"
    assert reddick2013(3, seed=1, kind="posterior").attrs["hyper_kind"] == "posterior"
    assert as_hyper(4).attrs["hyper_kind"] == "prior"
    table = {k: np.ones(3) for k in ("alpha1", "alpha2", "alpha3", "alpha4", "S")}
    assert as_hyper(table).attrs["hyper_kind"] == "posterior"
    assert as_hyper(table, kind="prior").attrs["hyper_kind"] == "prior"
    assert as_hyper(reddick2013(3, seed=1)).attrs["hyper_kind"] == "prior"  # kept through as_hyper
    csv = tmp_path / "h.csv"
    csv.write_text("alpha1,alpha2,alpha3,alpha4,S\n10.7,0.36,2.35e14,1.1,0.155\n")
    assert read_hyper(csv).attrs["hyper_kind"] == "posterior"
    assert read_hyper(csv, kind="prior").attrs["hyper_kind"] == "prior"
    nc = tmp_path / "h.nc"
    reddick2013(3, seed=1).to_netcdf(nc)
    assert read_hyper(nc).attrs["hyper_kind"] == "prior"  # a file's own kind is kept
    post = xr.Dataset({k: (("chain", "draw"), np.ones((2, 3))) for k in ("alpha1", "alpha2", "alpha3", "alpha4", "S")})
    assert from_arviz(post).attrs["hyper_kind"] == "posterior"
    assert hyper_kind(xr.Dataset()) == "posterior"
    with pytest.raises(HyperparameterError, match="hyper_kind"):
        reddick2013(3, kind="likelihood")
    with pytest.raises(HyperparameterError, match="hyper_kind"):
        as_hyper(reddick2013(3).assign_attrs(hyper_kind="mixed"))


def test_cube_records_kind():
    cube = table_prior_cube(6, 2, hyper=reddick2013(2, seed=1))[0]
    assert cube.attrs["hyper_kind"] == "prior"
    cube = table_prior_cube(6, 2, hyper=reddick2013(2, seed=1, kind="posterior"))[0]
    assert cube.attrs["hyper_kind"] == "posterior"


def test_brute_force_evidence_matches_cube_normalisation(grid_cube):
    """The evidence is the normalisation of likelihood x prior: exp(log_evidence) times the cube's
    posterior equals likelihood x normalised prior (an independent check of both)."""
    cube, cat = grid_cube
    x = np.log10(cube["mass"].values)
    post = cube["posterior"].values.astype(float)
    z, lobs = cat["z"].values, np.log(cat["lum_obs"].values)
    a1, a2 = cube["alpha1"].values, cube["alpha2"].values
    k = 4
    xf = np.linspace(x[0], x[-1], 6001)
    pnorm = integrate.trapezoid(np.exp(_log_prior(xf, z[k])), xf)
    prior_k = np.exp(_log_prior(x, z[k])) / pnorm
    mu = a1[None, :] + a2[None, :] * (np.log(10.0) * x[:, None] - np.log(A3)) + A4 * np.log1p(z[k])
    joint = stats.norm.pdf(lobs[k], mu, np.hypot(S, 0.05)) * prior_k[:, None]
    want = joint / np.exp(cube["log_evidence"].values[k])[None, :]
    np.testing.assert_allclose(post[k], want, rtol=3e-3, atol=1e-5 * want.max())


@pytest.mark.parametrize("lazy", [False, True])
def test_prior_draws_marginal_matches_direct_quadrature(grid_cube, lazy):
    cube, cat = grid_cube
    ds = cube if lazy else cube.compute()
    x = np.log10(cube["mass"].values)
    want = _direct(cat, x)
    got = marginalize(ds).values
    peak = want.max(axis=1, keepdims=True)
    assert np.max(np.abs(got - want) / peak) < 2e-3
    # the unweighted mean of the per-draw posteriors (what posterior draws would use) is far off:
    # the comparison above can fail
    plain = marginalize(cube.assign_attrs(hyper_kind="posterior")).values
    assert np.max(np.abs(plain - want) / peak) > 0.05
    s = summary(ds)
    xf = np.linspace(x[0], x[-1], 6001)
    pf = _direct(cat, xf)
    mean = integrate.trapezoid(pf * xf, xf, axis=1)
    std = np.sqrt(integrate.trapezoid(pf * (xf - mean[:, None]) ** 2, xf, axis=1))
    np.testing.assert_allclose(s["mean"].values, mean, atol=2e-3)
    np.testing.assert_allclose(s["std"].values, std, rtol=1e-2)
    cdf = integrate.cumulative_trapezoid(pf, xf, axis=1, initial=0.0)
    median = np.array([np.interp(0.5, c, xf) for c in cdf])
    np.testing.assert_allclose(s["median"].values, median, atol=3e-3)


def test_prior_draws_weights_per_halo(grid_cube):
    cube, _ = grid_cube
    w = marginal_weights(cube)
    assert w.dims == ("halo", "realization")
    vals = w.values
    np.testing.assert_allclose(vals.sum(axis=1), 1.0, rtol=1e-12)
    le = cube["log_evidence"].values
    wr = cube["weight"].values
    want = wr[None, :] * np.exp(le) / (wr[None, :] * np.exp(le)).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(vals, want, rtol=1e-10)
    # huge log evidences do not overflow: the weights only depend on differences within a halo
    np.testing.assert_allclose(evidence_weights(le + 800.0, wr), want, rtol=1e-10)


def test_prior_draws_marginal_independent_of_chunking(grid_cube):
    cube, _ = grid_cube
    a = marginalize(cube.compute()).values
    b = marginalize(cube.chunk({"halo": 3, "realization": 7})).values
    assert np.array_equal(a, b)


def test_prior_draws_correlated_sample_follows_weighted_marginal(grid_cube):
    cube, _ = grid_cube
    n = 4000
    s = sample(cube, n, seed=5)
    assert s.attrs["realization_sampling"].startswith("correlated per halo")
    assert np.all(s["realization"].values == -1)
    logm = np.log10(s.values)
    summ = summary(cube).compute()
    err = summ["std"].values / np.sqrt(n)
    assert np.all(np.abs(logm.mean(axis=1) - summ["mean"].values) < 5 * err + 1e-3)
    np.testing.assert_allclose(logm.std(axis=1), summ["std"].values, rtol=0.06)
    # same draws in memory and lazily, whatever the chunking
    s2 = sample(cube.compute(), n, seed=5)
    assert np.array_equal(s.values, s2.values)
    # with equal evidences for every draw the per-halo choice is the shared one: the same draws as
    # posterior-kind correlated sampling (one realization for all halos in each sample)
    flat = with_log_evidence(cube, np.zeros(cube["log_evidence"].shape))
    same = sample(flat, 300, seed=9)
    shared = sample(flat.assign_attrs(hyper_kind="posterior"), 300, seed=9)
    np.testing.assert_allclose(same.values, shared.values, rtol=1e-12)
    for method in ("grid", "normal"):
        a = sample(flat.compute(), 200, seed=4, method=method)
        b = sample(flat.compute().assign_attrs(hyper_kind="posterior"), 200, seed=4, method=method)
        np.testing.assert_allclose(a.values, b.values, rtol=1e-12)


def test_prior_draws_without_evidence_raise():
    cube = table_prior_cube(6, 3, hyper=reddick2013(3, seed=1))[0].drop_vars("log_evidence")  # an older cube
    for call in (marginalize, summary, lambda d: sample(d, 4, seed=1)):
        with pytest.raises(AnalysisError, match="log_evidence.*(?s:.*)[Rr]ebuild"):
            call(cube)
    # per-realization results need no evidence
    assert summary(cube, per_realization=True)["mean"].shape == (6, 3)


def test_posterior_draws_unchanged():
    """Posterior-kind cubes (and cubes without the attribute) give bitwise today's results."""
    ds, _, _ = gaussian_cube(n_halo=10, n_real=5)
    assert "hyper_kind" not in ds.attrs
    lazy = chunked(ds, halo=4, realization=2)
    post = ds["posterior"].values.astype(np.float64)
    w = ds["weight"].values / ds["weight"].values.sum()
    want = np.zeros(post.shape[:2])
    for r in range(w.size):
        want += post[..., r] * w[r]
    for d in (ds, lazy, ds.assign_attrs(hyper_kind="posterior")):
        assert np.array_equal(marginalize(d).values, want)
    # a log_evidence variable is ignored for posterior draws
    le = np.random.default_rng(0).normal(size=(10, 5))
    assert np.array_equal(marginalize(with_log_evidence(ds, le)).values, want)
    a = sample(ds, 50, seed=2)
    b = sample(with_log_evidence(ds.assign_attrs(hyper_kind="posterior"), le), 50, seed=2)
    assert np.array_equal(a.values, b.values) and np.array_equal(a["realization"], b["realization"])


def test_evidence_zero_for_all_draws_is_an_error():
    ds, _, _ = gaussian_cube(n_halo=4, n_real=3)
    le = np.zeros((4, 3))
    le[2] = -np.inf
    with pytest.raises(AnalysisError, match="halo"):
        _ = marginalize(with_log_evidence(ds.assign_attrs(hyper_kind="prior"), le)).values
    le[2] = np.nan  # an unwritten region: NaN marginal for that halo only
    m = marginalize(with_log_evidence(ds.assign_attrs(hyper_kind="prior"), le)).values
    assert np.isnan(m[2]).all() and np.isfinite(m[[0, 1, 3]]).all()


def test_single_prior_draw_needs_no_evidence():
    """With one realization every halo's evidence weight is 1: no log_evidence is needed."""
    ds, _, _ = gaussian_cube(n_halo=6, n_real=1)
    prior = ds.assign_attrs(hyper_kind="prior")
    assert np.array_equal(marginalize(prior).values, marginalize(ds).values)
    assert np.array_equal(sample(prior, 20, seed=1).values, sample(ds, 20, seed=1).values)
