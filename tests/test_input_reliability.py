"""Input reliability of the kernel, the catalogue likelihood and mock catalogues.

Every bad input must raise a massmap_xr error (a ValueError) naming the variable, the rule, the
offenders and what to do; every accepted extreme input must give the right numbers, checked
against direct numpy evaluations of the model (never against the package's own output):

- a prior that is zero on the whole mass grid at a halo's redshift (kernel and likelihood);
- redshifts outside the prior's nodes, nodes that are not increasing;
- ``mock_catalog`` arguments, and its per-halo ``sigma_obs``;
- hyperparameters at the float limits in the likelihood's log-space path (α1 = 1e300, S = 1e200);
- a likelihood constant in mass (α2 = 0) with vanishing scatter: the posterior is the prior.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from massmap_xr.catalog import make_catalog, mock_catalog
from massmap_xr.errors import CatalogError, PriorError
from massmap_xr.inference import CatalogLikelihood
from massmap_xr.kernels.posterior import posterior_block, prior_rows, trapezoid_weights
from massmap_xr.model.prior import MassPrior, TablePrior

REDDICK = {"alpha1": 10.709, "alpha2": 0.359, "alpha3": 2.35e14, "alpha4": 1.10, "S": 0.155}
Z_NODES = np.array([0.0, 1.0, 2.0, 3.0])
MASS = np.logspace(10.0, 15.5, 200)  # log-uniform: the kernel's recurrence path


def _ln_dndm(z, mass):
    """Analytic ln dn/dM, linear in z at fixed mass (so interpolating between nodes is exact)."""
    return -1.9 * np.log(mass) - mass * (1.0 + z) / 1e14 + 40.0


def _table(mass=MASS, z_nodes=Z_NODES):
    return _ln_dndm(np.asarray(z_nodes)[:, None], np.asarray(mass)[None, :])


def _table_prior(mass=MASS, z_nodes=Z_NODES, values=None):
    v = np.exp(_table(mass, z_nodes)) if values is None else values
    return TablePrior(xr.DataArray(v, dims=("z", "mass"), coords={"z": list(z_nodes), "mass": mass}))


def _hyp(n=1, **fixed):
    return {k: np.full(n, float(fixed.get(k, v))) for k, v in REDDICK.items()}


def _prior_per_dex(z, mass=MASS):
    """The prior per unit log10 M at redshift z, normalised by the trapezoid rule, directly."""
    p = np.exp(_ln_dndm(z, mass) - _ln_dndm(z, mass).max()) * mass
    return p / (trapezoid_weights(np.log10(mass)) @ p)


def _catalog(z, lum, ids=None, sigma_obs=0.05):
    n = len(z)
    return make_catalog(z, lum, np.full(n, 150.0), np.full(n, 2.0), halo=ids, sigma_obs=sigma_obs)


def _block(log_lobs, z, sigma=0.05, mass=MASS, z_nodes=Z_NODES, log_table=None, **kw):
    hyp = _hyp(1)
    hyp.update({k: np.atleast_1d(np.asarray(v, dtype=float)) for k, v in kw.items() if k in REDDICK})
    extra = {k: v for k, v in kw.items() if k not in REDDICK}
    return posterior_block(np.asarray(log_lobs, float), np.asarray(z, float), sigma, z_nodes=z_nodes,
                           log_table=_table(mass, z_nodes) if log_table is None else log_table, mass=mass,
                           **hyp, **extra)


def _words(err, *words):
    text = str(err.value)
    for w in words:
        assert w in text, f"{w!r} not in message:\n{text}"


# ------------------------------------------------------------------ 12: prior zero at a redshift
def test_kernel_refuses_a_prior_zero_on_the_whole_grid_at_a_halo_redshift():
    lt = _table()
    lt[0] = -np.inf  # the node at z = 0 is zero at every grid mass
    with pytest.raises(PriorError) as err:
        _block([10.0, 11.0, 12.0], [0.0, 0.02, 1.5], log_table=lt, ids=np.array([101, 102, 103]))
    assert isinstance(err.value, ValueError)
    _words(err, "prior is zero on the whole mass grid", "2 of 3 halos", "first ids: 101, 102", "values: 0, 0.02",
           "drop these halos")
    # the package's finite log-zero stand-in is refused too; without ids the positions are named
    lt[0] = -1.0e4
    with pytest.raises(PriorError) as err:
        _block([10.0], [0.0], log_table=lt)
    _words(err, "1 of 1 halos", "positions in the input arrays")
    with pytest.raises(PriorError, match="prior is zero on the whole mass grid"):
        prior_rows(np.array([0.0]), Z_NODES, lt, np.log(MASS), ids=[7])
    # halos whose redshift has a prior are unaffected: the posterior is prior x likelihood
    post = _block([11.0], [2.0], log_table=lt)
    assert np.all(np.isfinite(post))


def test_likelihood_refuses_a_prior_zero_on_the_whole_grid_at_a_halo_redshift():
    # dn/dM at z = 0 is positive only below the mass grid (the grid's masses are table nodes)
    m_tab = np.concatenate([[1e8], MASS])
    v = np.exp(_table(m_tab))
    v[0, 1:] = 0.0
    prior = _table_prior(m_tab, values=v)
    cat = _catalog([0.0, 2.0, 0.01, 1.5], [1e4, 2e4, 3e4, 1e4], ids=[7, 8, 9, 10])
    for kwargs in ({}, {"group_tol": 0.05}):
        with pytest.raises(PriorError) as err:
            CatalogLikelihood(cat, prior, MASS, **kwargs)
        _words(err, "CatalogLikelihood", "prior is zero on the whole mass grid", "2 of 4 halos", "first ids: 7, 9")
    # without those halos the likelihood is the direct trapezoid integral
    ok = cat.isel(halo=[1, 3])
    got = CatalogLikelihood(ok, prior, MASS).per_halo(*REDDICK.values())
    x = np.log(MASS)
    for k, (z, lum) in enumerate(zip(ok.z.values, ok.lum_obs.values, strict=True)):
        p = np.exp(_ln_dndm(z, MASS)) * MASS
        p /= np.trapezoid(p, x)
        mu = REDDICK["alpha1"] + REDDICK["alpha2"] * (x - np.log(REDDICK["alpha3"])) + REDDICK["alpha4"] * np.log1p(z)
        sd = np.hypot(REDDICK["S"], 0.05)
        want = np.log(np.trapezoid(p * np.exp(-0.5 * ((np.log(lum) - mu) / sd) ** 2), x))
        want -= np.log(sd * np.sqrt(2 * np.pi))
        assert got[k] == pytest.approx(want, abs=1e-10)


def test_build_posterior_refuses_a_prior_zero_at_a_halo_redshift_before_any_compute():
    """build_posterior checks every halo's prior row when called (not at compute, inside a store write)."""
    from massmap_xr.cube import build_posterior

    m_tab = np.concatenate([[1e8], MASS])
    v = np.exp(_table(m_tab))
    v[0, 1:] = 0.0
    prior = _table_prior(m_tab, values=v)
    cat = _catalog([0.0, 2.0, 0.01], [1e4, 2e4, 3e4], ids=[7, 8, 9])
    hyper = xr.Dataset({k: ("realization", x) for k, x in _hyp(2).items()})
    with pytest.raises(PriorError) as err:
        build_posterior(cat, hyper, prior=prior, mass=MASS, check_edges=False)
    _words(err, "build_posterior", "prior is zero on the whole mass grid", "2 of 3 halos", "first ids: 7, 9")
    # the remaining halo's posterior is the normalised prior x likelihood, by direct quadrature
    cube = build_posterior(cat.isel(halo=[1]), hyper, prior=prior, mass=MASS, check_edges=False)
    x = np.log10(MASS)
    mu = REDDICK["alpha1"] + REDDICK["alpha2"] * np.log(MASS / REDDICK["alpha3"]) + REDDICK["alpha4"] * np.log(3.0)
    p = _prior_per_dex(2.0) * np.exp(-0.5 * ((np.log(2e4) - mu) / np.hypot(REDDICK["S"], 0.05)) ** 2)
    p /= np.trapezoid(p, x)
    np.testing.assert_allclose(cube["posterior"].values[0, :, 0], p, rtol=2e-5, atol=1e-6 * p.max())


# ------------------------------------------------------------------ 13: redshift nodes
def test_kernel_refuses_redshifts_outside_the_nodes_and_unsorted_nodes():
    with pytest.raises(PriorError) as err:
        _block([10.0, 11.0, 12.0], [0.5, 3.5, -0.1], ids=[4, 5, 6])
    _words(err, "z outside the prior's redshift nodes [0, 3]", "2 of 3 halos", "first ids: 5, 6", "values: 3.5, -0.1",
           "not extrapolated")
    with pytest.raises(PriorError) as err:
        _block([10.0], [0.5], z_nodes=Z_NODES[::-1].copy())
    _words(err, "z_nodes", "strictly increasing", "3 of 3 step(s)")
    dup = np.array([0.0, 1.0, 1.0, 3.0])
    with pytest.raises(PriorError) as err:
        _block([10.0], [0.5], z_nodes=dup)
    _words(err, "strictly increasing", "1 of 3 step(s)", "node index 2")
    # the end nodes themselves are inside: the posterior there is the analytic one
    hyp = _hyp(1)
    post = _block([11.0, 11.0], [0.0, 3.0], sigma=0.05)
    x = np.log(MASS)
    for k, z in enumerate((0.0, 3.0)):
        mu = hyp["alpha1"][0] + hyp["alpha2"][0] * (x - np.log(hyp["alpha3"][0])) + hyp["alpha4"][0] * np.log1p(z)
        want = _prior_per_dex(z) * np.exp(-0.5 * ((11.0 - mu) / np.hypot(0.155, 0.05)) ** 2)
        want /= trapezoid_weights(np.log10(MASS)) @ want
        np.testing.assert_allclose(post[k, :, 0], want, rtol=1e-5, atol=1e-7 * want.max())


class _NodesPrior(MassPrior):
    """A prior whose advertised z_range disagrees with its nodes (or whose nodes are unsorted)."""

    def __init__(self, z_nodes, z_range):
        self._z = np.asarray(z_nodes, dtype=float)
        self.z_range = z_range

    def log_table(self, mass):
        return self._z, _ln_dndm(np.sort(self._z)[:, None], np.asarray(mass)[None, :])


def test_likelihood_refuses_redshifts_outside_the_nodes_and_unsorted_nodes():
    cat = _catalog([0.5, 2.5], [1e4, 2e4], ids=[11, 12])
    with pytest.raises(PriorError) as err:
        CatalogLikelihood(cat, _NodesPrior([0.0, 1.0, 2.0], (0.0, 3.0)), MASS)
    _words(err, "CatalogLikelihood", "outside the prior's redshift nodes [0, 2]", "first ids: 12")
    with pytest.raises(PriorError) as err:
        CatalogLikelihood(cat, _NodesPrior([0.0, 2.0, 1.0, 3.0], (0.0, 3.0)), MASS)
    _words(err, "strictly increasing")


# ------------------------------------------------------------------ 14: mock_catalog
def test_mock_catalog_stores_sigma_obs_per_halo_and_the_likelihood_uses_it():
    cat = mock_catalog(12, seed=3, sigma_obs=0.3, prior=_table_prior(), mass=MASS, z=np.array([0.2, 1.4]))
    assert cat["sigma_obs"].dims == ("halo",)
    np.testing.assert_array_equal(cat["sigma_obs"].values, np.full(12, 0.3))
    assert cat.attrs["sigma_obs"] == 0.3
    # the default sigma_obs of the likelihood (0.05) applies only to catalogues without the variable
    got = CatalogLikelihood(cat, _table_prior(), MASS).per_halo(*REDDICK.values())
    x = np.log(MASS)
    sd = np.hypot(REDDICK["S"], 0.3)
    want = []
    for z, lum in zip(cat.z.values, cat.lum_obs.values, strict=True):
        p = np.exp(_ln_dndm(z, MASS)) * MASS
        p /= np.trapezoid(p, x)
        mu = REDDICK["alpha1"] + REDDICK["alpha2"] * (x - np.log(REDDICK["alpha3"])) + REDDICK["alpha4"] * np.log1p(z)
        want.append(np.log(np.trapezoid(p * np.exp(-0.5 * ((np.log(lum) - mu) / sd) ** 2), x))
                    - np.log(sd * np.sqrt(2 * np.pi)))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"truth": {"S": "big"}}, ["truth", "S must be one real number", "'big'"]),
        ({"truth": "S"}, ["truth must be a dict", "got str"]),
        ({"truth": [1, 2]}, ["truth must be a dict", "got list"]),
        ({"truth": {"S": -0.1, "alpha1": np.nan}}, ["2 problem(s)", "S must be > 0", "alpha1 must be finite"]),
        ({"truth": {"beta": 1.0}}, ["unknown hyperparameter(s) ['beta']"]),
        ({"z": []}, ["z is empty"]),
        ({"z": ["a", "b"]}, ["z must be numbers"]),
        ({"z": [0.5, 9.0, np.nan]}, ["z must be finite and inside the prior's redshift range [0, 4]",
                                     "2 of 3 value(s)", "first at index 1, 2"]),
        ({"seed": "abc"}, ["seed must be a non-negative integer or None", "'abc'"]),
        ({"seed": -1}, ["seed must be a non-negative integer"]),
        ({"seed": True}, ["seed must be a non-negative integer"]),
        ({"sigma_obs": -0.05}, ["sigma_obs must be finite and > 0"]),
        ({"sigma_obs": np.inf}, ["sigma_obs must be finite and > 0"]),
        ({"sigma_obs": "x"}, ["sigma_obs must be one number"]),
        ({"sigma_obs": [0.1, 0.2]}, ["sigma_obs must be one number"]),
        ({"mass": [1e13, 1e12]}, ["mass must be a finite, positive, strictly increasing grid"]),
        ({"size_arcmin": "big"}, ["size_arcmin must be one number"]),
        ({"center": (150.0, 95.0)}, ["center must be finite with dec in [-90, 90]"]),
    ],
)
def test_mock_catalog_bad_arguments_raise_catalog_errors(kwargs, words):
    with pytest.raises(CatalogError) as err:
        mock_catalog(5, **{"seed": 1, **kwargs})
    _words(err, *words)


def test_mock_catalog_refuses_a_prior_zero_at_a_drawn_redshift():
    v = np.exp(_table())
    v[0] = 0.0
    v[0, 0] = 1e-300  # TablePrior needs some positive value per row: this one is below the grid used
    mass = MASS[10:]
    with pytest.raises(PriorError, match="prior is zero on the whole mass grid"):
        mock_catalog(5, seed=1, prior=_table_prior(values=v), mass=mass, z=np.array([0.0]))


# ------------------------------------------------------------------ 15: log-space likelihood at the float limits
def test_likelihood_at_huge_scatter_and_huge_alpha1_is_never_nan():
    cat = _catalog([0.3, 1.2, 2.5], [8e3, 3e4, 1e9], sigma_obs=0.05)
    like = CatalogLikelihood(cat, _table_prior(), MASS)
    # S = 1e200: the Gaussian is flat over the grid, so ln L = -ln √(2π) - ln √(S² + σ²) exactly
    per = like.per_halo(10.709, 0.359, 2.35e14, 1.1, 1e200)
    np.testing.assert_allclose(per, -np.log(1e200) - 0.5 * np.log(2 * np.pi), rtol=1e-13)
    ll, g = like.value_and_grad(10.709, 0.359, 2.35e14, 1.1, 1e200)
    assert np.isfinite(ll) and np.all(np.isfinite(g))
    assert g[4] == pytest.approx(-3 / 1e200, rel=1e-6)  # d/dS of -3 ln S
    # α1 = 1e300: ln L ≈ -½ (1e300 / 0.16)², below the float64 range: -inf, never NaN
    per = like.per_halo(1e300, 0.359, 2.35e14, 1.1, 0.155)
    assert np.all(per == -np.inf)
    for a4 in (1.1, np.array([1.1, 1.2])):
        ll, g = like.value_and_grad(1e300, 0.359, 2.35e14, a4, 0.155)
        assert np.all(ll == -np.inf) and not np.any(np.isnan(g))
    # grouped terms (coefficients of either sign) still sum to -inf, not NaN
    big = mock_catalog(300, seed=2, prior=_table_prior(), mass=MASS, z=np.array([0.5, 0.52]))
    grouped = CatalogLikelihood(big, _table_prior(), MASS, group_tol=0.5)
    assert float(grouped(1e300, 0.359, 2.35e14, 1.1, 0.155)) == -np.inf
    # hyperparameters at the float64 limits, whose partial sums of ln μ_L overflow: -inf, never NaN
    huge = np.finfo(float).max
    for point in [(1e308, 0.359, 2.35e14, 1.1, 0.155), (-huge, 0.359, 2.35e14, huge, 0.155),
                  (huge, -huge, 5e-324, 1e300, 5e-324)]:
        per = like.per_halo(*point)
        assert np.all(per == -np.inf), (point, per)
        ll, g = like.value_and_grad(*point)
        assert ll == -np.inf and not np.any(np.isnan(g)), point
    # α2 = S = 1e300: u = -(ln M - ln α3) to 1e-297, a finite likelihood computed directly
    per = like.per_halo(10.7, 1e300, 2.35e14, 1.1, 1e300)
    x = np.log(MASS)
    for k, z in enumerate(cat.z.values):
        p = np.exp(_ln_dndm(z, MASS)) * MASS
        p /= np.trapezoid(p, x)
        want = np.log(np.trapezoid(p * np.exp(-0.5 * (x - np.log(2.35e14)) ** 2), x)) - np.log(1e300)
        assert per[k] == pytest.approx(want - 0.5 * np.log(2 * np.pi), abs=1e-10)


def test_likelihood_flat_in_mass_with_vanishing_width_is_the_gaussian_constant():
    """α2 = 0 and σ = S = 1e-100: u is the same at every mass; ln L = -u²/2 - ln(√(2π) w)."""
    cat = _catalog([0.4], [2e4], sigma_obs=1e-100)
    like = CatalogLikelihood(cat, _table_prior(), MASS)
    d = np.log(2e4) - 10.709 - 1.1 * np.log1p(0.4)
    w = np.hypot(1e-100, 1e-100)
    want = -0.5 * (d / w) ** 2 - np.log(w) - 0.5 * np.log(2 * np.pi)
    assert float(like(10.709, 0.0, 2.35e14, 1.1, 1e-100)) == pytest.approx(want, rel=1e-13)


def test_kernel_at_the_float_limits_is_a_normalised_spike_at_the_nearest_grid_end():
    """Partial sums of ln μ_L overflow (α1 = -max, α4 = +max): still no NaN, and the right end.

    ln L_obs - ln μ_L = ln L_obs + max - max ln(1.5) - 0.359 ln(M/α3) is about +0.595·max, least
    positive at the highest mass, so |·| is smallest at the highest grid mass.
    """
    huge = np.finfo(float).max
    w = trapezoid_weights(np.log10(MASS))
    post = _block([11.0], [0.5], alpha1=-huge, alpha4=huge)[0, :, 0]
    expect = np.zeros(MASS.size)
    expect[-1] = 1.0 / w[-1]
    np.testing.assert_allclose(post, expect, rtol=1e-6, atol=0)
    # α2 near the limit: the relation's inverse is ln α3 (pivot 1e12), ±1e300 in every other cell
    post = _block([11.0], [0.5], alpha2=1e300, alpha3=1e12)[0, :, 0]
    nearest = np.argmin(np.abs(np.log(MASS) - np.log(1e12)))
    assert post.argmax() == nearest and post[nearest] == pytest.approx(1.0 / w[nearest], rel=1e-6)


# ------------------------------------------------------------------ 16: flat likelihood, vanishing scatter
@pytest.mark.parametrize("S", [1e-7, 1e-100, 1e-300])
@pytest.mark.parametrize("uniform", [True, False])
def test_flat_relation_with_vanishing_scatter_gives_the_prior(S, uniform):
    mass = MASS if uniform else np.sort(np.concatenate([MASS[::2], MASS[1::2] * 1.01]))
    z = np.array([0.0, 0.7, 1.5, 3.0])
    post = _block([10.0, 11.0, 12.0, 30.0], z, sigma=0.0, mass=mass, alpha2=0.0, S=S)
    assert np.all(np.isfinite(post))
    for k in range(z.size):
        want = _prior_per_dex(z[k], mass)
        peak = want.max()
        big = want > 1e-3 * peak
        assert np.max(np.abs(post[k, big, 0] - want[big]) / want[big]) < 2.5e-7
        assert np.max(np.abs(post[k, :, 0] - want)) < 2.5e-7 * peak


@pytest.mark.parametrize(("alpha1", "end"), [(1e300, 0), (-1e300, -1)])
def test_huge_alpha1_puts_the_posterior_at_the_right_end_of_the_grid(alpha1, end):
    """|ln L_obs - ln μ_L| is smallest at the lowest mass for α1 = +1e300, at the highest for -1e300."""
    post = _block([11.0], [0.5], alpha1=alpha1)[0, :, 0]
    w = trapezoid_weights(np.log10(MASS))
    expect = np.zeros(MASS.size)
    expect[end] = 1.0 / w[end]
    np.testing.assert_allclose(post, expect, rtol=1e-6, atol=0)


# ------------------------------------------------------------------ numba cache of the likelihood kernels
def test_serial_and_parallel_likelihood_kernels_have_separate_cache_entries():
    """numba keys cache entries by function name and signature, not by ``parallel=``: the two
    dispatchers must wrap differently named functions, or whichever compiles first is loaded by
    the other (the "parallel" kernel then runs serial code: no faster on 2 threads than on 1)."""
    from massmap_xr.kernels import likelihood as kernels

    par, ser = kernels.loglike_parallel, kernels.loglike_serial
    assert par.targetoptions.get("parallel") and not ser.targetoptions.get("parallel")
    assert par.py_func.__qualname__ != ser.py_func.__qualname__
    assert par.py_func.__code__ is ser.py_func.__code__  # the same kernel
