"""Hyperparameter inference: the catalogue likelihood against independent integrals, calibration
of the inferred intervals on mocks, round trips into cubes, stores and files, and diagnostics."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr
from scipy import integrate, stats

from massmap_xr.catalog import make_catalog, mock_catalog
from massmap_xr.errors import ConvergenceWarning, InferenceError, MassmapError
from massmap_xr.inference import (
    CatalogLikelihood,
    HyperPrior,
    infer_hyperparameters,
    infer_to_file,
    log_likelihood,
    to_arviz,
)
from massmap_xr.model.prior import TablePrior
from massmap_xr.model.relation import HYPER_NAMES

REDDICK = (10.709, 0.359, 2.35e14, 1.10, 0.155)
FREE = ("alpha1", "alpha2", "alpha4", "S")
#: a hyperprior several times broader than the Reddick (2013) constraints, so that the data matter
BROAD = {"alpha1": (10.709, 0.1), "alpha2": (0.359, 0.03), "alpha4": (1.10, 0.2), "S": (0.155, 0.03)}


# ------------------------------------------------------------------------------------------
# an analytic prior whose ln dn/dM is linear in z, tabulated on nodes that contain the grids
# ------------------------------------------------------------------------------------------

LNM_TAB = np.linspace(np.log(1e10), np.log(10**15.5), 4 * 399 + 1)
Z_TAB = np.array([0.0, 1.0, 2.0, 3.0])


def _ln_dndm(z, lnm):
    """Power law with an exponential cut-off; + 40 keeps the numbers O(1) after exp."""
    return -1.9 * lnm - np.exp(lnm) * (1.0 + z) / 1e14 + 40.0


@pytest.fixture(scope="module")
def analytic_prior():
    tab = xr.DataArray(np.exp(_ln_dndm(Z_TAB[:, None], LNM_TAB[None, :])), dims=("z", "mass"),
                       coords={"z": Z_TAB, "mass": np.exp(LNM_TAB)})
    return TablePrior(tab)


@pytest.fixture(scope="module")
def four_halos():
    z = np.array([0.12, 0.8, 1.7, 2.6])
    lobs = np.array([6000.0, 9000.0, 30000.0, 7000.0])
    return make_catalog(z, lobs, np.full(4, 150.0), np.full(4, 2.0), sigma_obs=0.05)


def _double_integral(z, lobs, a1, a2, a3, a4, S, so):
    """ln ∫∫ N(ln L_obs; ln L, so) N(ln L; μ(M), S) p(ln M | z) d ln L d ln M with scipy.quad.

    p is the analytic prior normalised with quad over the same mass range as the grid; nothing
    of the package is used.
    """
    lo, hi = LNM_TAB[0], LNM_TAB[-1]
    norm = integrate.quad(lambda x: np.exp(_ln_dndm(z, x) + x), lo, hi, limit=500, epsabs=0, epsrel=1e-12)[0]
    ll = np.log(lobs)

    def inner(x):
        mu = a1 + a2 * (x - np.log(a3)) + a4 * np.log1p(z)

        def f(lnl):
            return np.exp(-0.5 * ((ll - lnl) / so) ** 2 - 0.5 * ((lnl - mu) / S) ** 2) / (2 * np.pi * so * S)

        return integrate.quad(f, mu - 12 * S, mu + 12 * S, epsabs=0, epsrel=1e-11, limit=200)[0]

    x_peak = np.log(a3) + (ll - a1 - a4 * np.log1p(z)) / a2
    pts = [p for p in (x_peak - 1, x_peak, x_peak + 1) if lo < p < hi]
    val = integrate.quad(lambda x: inner(x) * np.exp(_ln_dndm(z, x) + x), lo, hi, points=pts, limit=500,
                         epsabs=0, epsrel=1e-10)[0]
    return np.log(val / norm)


def test_likelihood_matches_double_integral(analytic_prior, four_halos):
    """Per-halo likelihoods equal an independent double integral over (ln M, ln L).

    The only approximation left in the package is the trapezoid rule in ln M, whose error is
    O(Δ²) (Euler–Maclaurin): about 1e-4 in ln L on the default 400-point grid (Δ ln M = 0.032).
    So the test asserts (i) |error| < 3e-4 on 400 points, (ii) the error falls by 4 ± 0.4 when
    Δ halves (second order: it *is* quadrature error), and (iii) the Richardson extrapolation
    of the two grids agrees with the double integral to 2e-6.
    """
    cat = four_halos
    brute = np.array([_double_integral(z, lo, *REDDICK, 0.05)
                      for z, lo in zip(cat.z.values, cat.lum_obs.values, strict=True)])
    coarse = CatalogLikelihood(cat, analytic_prior, np.exp(LNM_TAB[::4])).per_halo(*REDDICK)
    fine = CatalogLikelihood(cat, analytic_prior, np.exp(LNM_TAB[::2])).per_halo(*REDDICK)
    err_c, err_f = coarse - brute, fine - brute
    assert np.all(np.abs(err_c) < 3e-4), err_c
    assert np.all(np.abs(err_c / err_f - 4.0) < 0.4), err_c / err_f
    assert np.all(np.abs((4 * fine - coarse) / 3 - brute) < 2e-6)
    # the catalogue log-likelihood is the sum of the halos'
    total = log_likelihood(cat, *REDDICK, prior=analytic_prior, mass=np.exp(LNM_TAB[::4]))
    assert float(total) == pytest.approx(coarse.sum(), abs=1e-10)


def test_vectorised_broadcast_equals_pointwise(small_catalog):
    a2 = np.array([0.33, 0.359, 0.39])[:, None]
    s = np.array([0.12, 0.155, 0.2, 0.3])[None, :]
    grid = log_likelihood(small_catalog, 10.709, a2, 2.35e14, 1.10, s)
    assert grid.shape == (3, 4) and grid.dtype == np.float64
    for i in range(3):
        for j in range(4):
            one = log_likelihood(small_catalog, 10.709, float(a2[i, 0]), 2.35e14, 1.10, float(s[0, j]))
            assert float(one) == pytest.approx(grid[i, j], abs=1e-9)


def test_threaded_kernel_equals_serial():
    """Many points at once take the threaded kernel; fixed halo blocks keep the summation order."""
    cat = mock_catalog(3000, seed=4)
    like = CatalogLikelihood(cat)
    a4 = np.linspace(0.9, 1.3, 8)
    many = like(10.709, 0.359, 2.35e14, a4, 0.155)  # 3000 x 8 pairs: threaded
    one = np.array([float(like(10.709, 0.359, 2.35e14, v, 0.155)) for v in a4])  # serial
    np.testing.assert_allclose(many, one, rtol=1e-14, atol=0)
    assert like.n_evaluations == 16


def test_window_and_gradient(small_catalog):
    """The ±8σ window changes nothing beyond round-off; gradients match finite differences."""
    like = CatalogLikelihood(small_catalog)
    full = CatalogLikelihood(small_catalog, window=1e3)  # the whole grid for every halo
    pts = [REDDICK, (10.6, 0.40, 2.35e14, 0.8, 0.25), (10.8, 0.30, 2.35e14, 1.4, 0.1)]
    for p in pts:
        assert abs(float(like(*p)) - float(full(*p))) < 1e-9 * abs(float(full(*p)))
    p = np.array(pts[1])
    _, g = like.value_and_grad(*p)
    for j in range(5):
        h = 1e-6 * abs(p[j])
        up, dn = p.copy(), p.copy()
        up[j] += h
        dn[j] -= h
        fd = (float(like(*up)) - float(like(*dn))) / (2 * h)
        assert g[j] == pytest.approx(fd, rel=1e-5, abs=1e-6 * np.max(np.abs(g * p)) / abs(p[j]))


def test_non_uniform_grid_matches_numpy_trapezoid(small_catalog):
    """Grids that are not log-uniform take the exp-per-cell path; check it against scipy's trapezoid."""
    from massmap_xr.model.prior import TinkerPrior

    rng = np.random.default_rng(3)
    x = np.sort(np.concatenate([[np.log(1e10), np.log(10**15.5)], rng.uniform(np.log(1e10), np.log(10**15.5), 500)]))
    mass = np.exp(x)
    got = CatalogLikelihood(small_catalog, mass=mass).per_halo(*REDDICK)
    z = small_catalog.z.values
    lp = TinkerPrior().log_density(z, mass) + x
    prior = np.exp(lp) / integrate.trapezoid(np.exp(lp), x, axis=1)[:, None]
    mu = REDDICK[0] + REDDICK[1] * (x[None, :] - np.log(REDDICK[2])) + REDDICK[3] * np.log1p(z)[:, None]
    gauss = stats.norm.pdf(np.log(small_catalog.lum_obs.values)[:, None], mu, np.hypot(REDDICK[4], 0.05))
    want = np.log(integrate.trapezoid(prior * gauss, x, axis=1))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)


def test_far_luminosity_stays_finite():
    """A luminosity far above every μ_L on the grid takes the log-space path: finite, and exact."""
    cat = make_catalog([0.3, 0.5], [1e9, 8000.0], [150.0, 150.01], [2.0, 2.0], sigma_obs=0.05)
    like = CatalogLikelihood(cat)
    ll = like.per_halo(*REDDICK)
    assert np.all(np.isfinite(ll)) and like.n_fallback >= 1
    # the Gaussian at the top of the grid dominates: ln L ≈ ln prior_top + ln N(u_top)
    x = np.log(like.mass)
    u = (np.log(1e9) - (REDDICK[0] + REDDICK[1] * (x - np.log(REDDICK[2])) + REDDICK[3] * np.log1p(0.3)))
    u /= np.hypot(REDDICK[4], 0.05)
    assert ll[0] < -0.5 * np.min(u**2) + 5


def test_grouping_error_is_small_and_measured():
    cat = mock_catalog(20000, seed=21)
    grouped = CatalogLikelihood(cat, group_tol=0.03)
    assert grouped.n_terms < 0.9 * cat.sizes["halo"]
    rng = np.random.default_rng(0)
    pts = {k: mu + 2 * sd * rng.standard_normal(6) for k, (mu, sd) in BROAD.items()}
    err = np.array([grouped.grouping_error(pts["alpha1"][i], pts["alpha2"][i], 2.35e14, pts["alpha4"][i], pts["S"][i])
                    for i in range(6)])
    # what matters for inference is the variation across hyperparameters (<< 1 in ln L)
    assert np.ptp(err) < 0.01 and np.max(np.abs(err)) < 0.01
    assert np.all(CatalogLikelihood(cat).grouping_error(*REDDICK) == 0)


def _weighted_quantile(v, w, q):
    o = np.argsort(v)
    c = np.cumsum(w[o])
    c = (c - 0.5 * w[o]) / c[-1]
    return np.interp(q, c, v[o])


def test_simulation_based_calibration():
    """Truths drawn from the hyperprior fall in the central 68 % intervals about 68 % of the time.

    24 mock catalogues of 400 halos, hyperparameters drawn from ``BROAD``; Laplace + importance
    sampling with the same hyperprior.  Each of the 4 × 24 intervals covers its truth with
    probability 0.68 if the inference is exact; the assertions use two-sided 99.9 % binomial
    bounds (pooled over 96, and per parameter over 24; the parameters of one catalogue are
    correlated, which widens the pooled spread a little, so the pooled bound is loose enough).
    """
    hp = HyperPrior(BROAD, FREE)
    rng = np.random.default_rng(2024)
    hits = []
    for i in range(24):
        truth = dict(zip(FREE, hp.sample(1, rng)[0], strict=True))
        cat = mock_catalog(400, seed=int(rng.integers(2**30)), truth=truth)
        post = infer_hyperparameters(cat, hyperprior=BROAD, n=400, seed=i)
        assert post.attrs["ess_fraction"] > 0.3 and post.attrs["map_offset_sd"] < 1e-2
        w = post.weight.values
        hits.append([_weighted_quantile(post[k].values, w, 0.16) <= truth[k] <= _weighted_quantile(post[k].values, w, 0.84)
                     for k in FREE])
    hits = np.array(hits)
    lo, hi = stats.binom.ppf([0.0005, 0.9995], hits.size, 0.68)
    assert lo <= hits.sum() <= hi, hits.mean(axis=0)
    lo1, hi1 = stats.binom.ppf([0.0005, 0.9995], hits.shape[0], 0.68)
    assert np.all((hits.sum(axis=0) >= lo1) & (hits.sum(axis=0) <= hi1)), hits.mean(axis=0)


@pytest.fixture(scope="module")
def inferred():
    cat = mock_catalog(300, seed=8, truth={"alpha1": 10.72, "S": 0.17})
    return cat, infer_hyperparameters(cat, hyperprior=BROAD, n=12, seed=3)


def test_round_trip_through_cube_and_store(inferred, tmp_path):
    from massmap_xr.cube import build_posterior
    from massmap_xr.store import open_store, to_store

    cat, post = inferred
    cube = build_posterior(cat, post, chunks=100)
    assert cube.sizes["realization"] == 12
    to_store(cube, tmp_path / "c.zarr", progress=False)
    ds = open_store(tmp_path / "c.zarr")
    for k in HYPER_NAMES:
        np.testing.assert_array_equal(ds[k].values, post[k].values)
    np.testing.assert_allclose(ds["weight"].values, post["weight"].values / post["weight"].values.sum(), rtol=1e-12)
    assert np.all(np.isfinite(ds.posterior.values))


def test_round_trip_through_files(inferred, tmp_path):
    from massmap_xr.model.hyper import read_hyper

    cat, post = inferred
    for name in ("h.nc", "h.csv"):
        path = infer_to_file(cat, tmp_path / name, hyperprior=BROAD, n=12, seed=3)
        back = read_hyper(path)
        for k in HYPER_NAMES:
            np.testing.assert_allclose(back[k].values, post[k].values, rtol=1e-12)
        np.testing.assert_allclose(back["weight"].values, post["weight"].values, rtol=1e-9)
    with xr.open_dataset(tmp_path / "h.nc", engine="h5netcdf") as raw:
        assert raw.attrs["method"] == "laplace" and raw.attrs["ess"] > 0
    with pytest.raises(InferenceError, match="unknown output type"):
        infer_to_file(cat, tmp_path / "h.json", n=2)


def test_emcee_diagnostics_and_arviz(tmp_path):
    """An easy two-parameter problem: sane acceptance, ESS and R-hat; ArviZ layout round trips."""
    from massmap_xr.model.hyper import as_hyper, from_arviz

    cat = mock_catalog(800, seed=5)
    with warnings.catch_warnings():  # a short run: its convergence warning is tested in test_convergence.py
        warnings.simplefilter("ignore", ConvergenceWarning)
        post = infer_hyperparameters(cat, free=("alpha4", "S"), hyperprior=BROAD, n=16 * 60, method="emcee",
                                     seed=2, n_burn=100, thin=5)
    a = post.attrs
    assert 0.1 < a["acceptance_fraction"] < 0.9
    assert a["rhat_max"] < 1.1
    assert all(a[f"ess_{k}"] > 0.05 * a["n_walkers"] * (a["n_steps"] - a["n_burn"]) for k in ("alpha4", "S"))
    assert a["n_likelihood_evaluations"] >= a["n_walkers"] * a["n_steps"]
    assert a["wall_time_s"] > 0
    assert np.all(post.alpha1.values == 10.709) and np.all(post.alpha3.values == 2.35e14)
    # unstack into (chain, draw) and back
    grid = post.set_index(realization=["chain", "draw"]).unstack("realization")
    assert grid.alpha4.shape == (a["n_walkers"], 60)
    idata = to_arviz(post)
    back = as_hyper(from_arviz(idata))
    np.testing.assert_allclose(back.alpha4.values, post.alpha4.values)
    # arviz's own diagnostics agree with the recorded R-hat
    az = pytest.importorskip("arviz")
    assert float(az.rhat(idata, var_names=["S"])["S"]) == pytest.approx(a["rhat_S"], abs=0.02)


def test_laplace_matches_emcee_and_knows_the_truth():
    cat = mock_catalog(1500, seed=9, truth={"alpha4": 1.2, "S": 0.18})
    lap = infer_hyperparameters(cat, free=("alpha4", "S"), hyperprior="flat", n=600, seed=1)
    with warnings.catch_warnings():  # a short run: its convergence warning is tested in test_convergence.py
        warnings.simplefilter("ignore", ConvergenceWarning)
        mc = infer_hyperparameters(cat, free=("alpha4", "S"), hyperprior="flat", n=16 * 40, method="emcee", seed=1,
                                   n_burn=100, thin=5)
    assert lap.attrs["ess_fraction"] > 0.5
    for k, truth in (("alpha4", 1.2), ("S", 0.18)):
        w = lap.weight.values
        m = np.sum(w * lap[k].values)
        sd = np.sqrt(np.sum(w * (lap[k].values - m) ** 2))
        assert abs(m - truth) < 4 * sd
        assert abs(m - mc[k].values.mean()) < 0.3 * sd
        assert mc[k].values.std() == pytest.approx(sd, rel=0.25)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"free": ("alpha1", "beta")}, "unknown hyperparameter name"),
        ({"n": 0}, "n must be an integer >= 1"),
        ({"method": "nuts"}, "method must be one of"),
        ({"hyperprior": {"alpha1": (10.7, 0.1)}}, r"no entry for free hyperparameter\(s\) \['alpha2', 'alpha4', 'S'\]"),
        ({"hyperprior": {"alpha1": (10.7, -1), "alpha2": (0.3, 0.1), "alpha4": (1, 1), "S": (0.1, 0.1)}}, "sd > 0"),
        ({"hyperprior": "uniform"}, "unknown name 'uniform'"),
        ({"n_walkers": 8}, r"unknown option\(s\) \['n_walkers'\] for method='laplace'"),
        ({"fixed": {"alpha1": 10.0}}, "either fixed or inferred"),
        ({"group_tol": -1}, "group_tol must be a positive"),
    ],
)
def test_bad_settings_raise(small_catalog, kwargs, match):
    with pytest.raises(InferenceError, match=match) as info:
        infer_hyperparameters(small_catalog, **kwargs)
    assert isinstance(info.value, MassmapError)


def test_bad_likelihood_points_raise(small_catalog):
    with pytest.raises(InferenceError, match=r"S: must be > 0; 1 value\(s\) are not, at flat index 1"):
        log_likelihood(small_catalog, 10.7, 0.36, 2.35e14, 1.1, [0.1, -0.2])
    with pytest.raises(InferenceError, match="do not broadcast"):
        log_likelihood(small_catalog, [10.7, 10.8], 0.36, 2.35e14, 1.1, [0.1, 0.2, 0.3])


def test_hyperprior_forms_and_transforms():
    from massmap_xr.model.hyper import REDDICK2013, reddick2013

    draws = reddick2013(4000, seed=1)
    hp = HyperPrior(draws, FREE)
    assert hp.kinds == ("normal",) * 4
    for j, k in enumerate(FREE):
        assert hp._p1[j] == pytest.approx(REDDICK2013[k][0], abs=3 * REDDICK2013[k][1] / np.sqrt(4000))
        assert hp._p2[j] == pytest.approx(REDDICK2013[k][1], rel=0.05)
    mixed = HyperPrior({"alpha1": ("flat", 10.0, 11.5), "alpha2": (0.36, 0.05), "alpha4": ("normal", 1.1, 0.3),
                        "S": ("flat", 0.01, 1.0)}, FREE)
    theta = np.array([[10.3, 0.31, 0.9, 0.2], [11.4, 0.4, 1.5, 0.02]])
    y = mixed.to_unconstrained(theta)
    np.testing.assert_allclose(mixed.to_natural(y), theta, rtol=1e-12)
    # log |dθ/dy| against finite differences of the map, per coordinate
    h = 1e-6
    for j in range(4):
        dy = np.zeros(4)
        dy[j] = h
        num = (mixed.to_natural(y + dy) - mixed.to_natural(y - dy))[:, j] / (2 * h)
        np.testing.assert_allclose(mixed.dtheta_dy(y)[:, j], num, rtol=1e-6)
    np.testing.assert_allclose(mixed.log_jacobian(y), np.log(np.abs(mixed.dtheta_dy(y))).sum(axis=1), rtol=1e-12)
    assert mixed.log_density(np.array([9.0, 0.36, 1.1, 0.2])) == -np.inf  # outside the flat range
    # a normal prior on S is truncated at 0
    assert HyperPrior("reddick2013", ("S",)).log_density(np.array([-0.1])) == -np.inf


@pytest.mark.parametrize(("alpha2", "S", "lobs"), [(1.0, 0.01, 3.0e5), (0.6, 0.01, 3.0e4), (1.5, 0.1, 1.0e5)])
def test_steep_narrow_relations_match_direct_quadrature(alpha2, S, lobs):
    """Whole-grid sums of steep, narrow likelihoods keep their peak (direct log-space quadrature)."""
    from scipy.special import logsumexp

    from massmap_xr.catalog import make_catalog
    from massmap_xr.inference import CatalogLikelihood
    from massmap_xr.kernels.posterior import trapezoid_weights
    from massmap_xr.model.prior import TinkerPrior, default_mass_grid

    a1, a3, a4, sig, z = 10.709, 2.35e14, 1.10, 0.05, 0.3
    ll = float(CatalogLikelihood(make_catalog([z], [lobs], [150.0], [2.0], sigma_obs=0.05))(a1, alpha2, a3, a4, S))
    m = default_mass_grid()
    x = np.log(m)
    zn, lt = TinkerPrior().log_table(m)
    j = np.searchsorted(zn, z) - 1
    w = (z - zn[j]) / (zn[j + 1] - zn[j])
    lp = (1 - w) * lt[j] + w * lt[j + 1] + x + np.log(trapezoid_weights(x))
    lp -= logsumexp(lp)
    v = S**2 + sig**2
    mu = a1 + alpha2 * (x - np.log(a3)) + a4 * np.log1p(z)
    ref = logsumexp(lp - 0.5 * (np.log(lobs) - mu) ** 2 / v) - 0.5 * np.log(2 * np.pi * v)
    assert abs(ll - ref) < 1e-6 * max(1.0, abs(ref))
