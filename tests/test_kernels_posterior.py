"""The posterior kernel: accuracy against float64 and brute-force references, robustness.

The float32 kernel (recurrence across the log-uniform mass grid) is checked against the plain
float64 evaluation, against numerical integration of P(L_obs | L) P(L | M) over ln L with
scipy, and against the Monte Carlo estimator of the original study in the limit of many
draws.  Tolerances are the ones documented in :mod:`massmap_xr.kernels.posterior`.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import integrate
from strategies import QUICK

from massmap_xr.catalog import make_catalog, mock_catalog, seed_field
from massmap_xr.cube import build_posterior
from massmap_xr.errors import MassmapError
from massmap_xr.kernels import posterior as kernel
from massmap_xr.kernels.posterior import (
    posterior_block,
    posterior_reference,
    prior_rows,
    trapezoid_weights,
)
from massmap_xr.model.hyper import reddick2013
from massmap_xr.model.prior import TinkerPrior, default_mass_grid

#: documented float32 tolerances (two float32 roundings: 2**-23 ≈ 1.2e-7)
REL_TOL = 2.5e-7  # relative, where the density exceeds 1e-3 of its peak
ABS_TOL = 2.5e-7  # absolute, in units of the peak, everywhere
HYPER_NAMES = ("alpha1", "alpha2", "alpha3", "alpha4", "S")
LN10 = np.log(10.0)


@pytest.fixture(scope="module")
def grid():
    mass = default_mass_grid(400, 10.0, 15.5)  # the grid these tolerances and block lengths were derived on
    z_nodes, log_table = TinkerPrior().log_table(mass)
    return {"mass": mass, "z_nodes": z_nodes, "log_table": log_table}


@pytest.fixture(scope="module")
def seed_halos():
    cat = seed_field()
    idx = np.sort(np.random.default_rng(7).choice(cat.sizes["halo"], 150, replace=False))
    return np.log(cat["lum_obs"].values[idx]), cat["z"].values[idx]


def _hyper(n, seed=3, **fixed):
    h = reddick2013(n, seed=seed)
    out = {k: np.asarray(h[k].values, dtype=float) for k in HYPER_NAMES}
    for k, v in fixed.items():
        out[k] = np.broadcast_to(np.asarray(v, dtype=float), (n,)).copy()
    return out


def _ln_mu(mass, z, a1, a2, a3, a4):
    """ln mean luminosity of the relation, written out independently of massmap_xr.model.relation."""
    return a1 + a2 * np.log(mass / a3) + a4 * np.log(1.0 + z)


def _lobs_at(ln_mass, z, hyp, r=0, offset=0.0):
    """ln L_obs whose μ_L inverse is ``ln_mass`` (realization r), shifted by ``offset`` (ln units)."""
    return _ln_mu(np.exp(ln_mass), z, *(hyp[k][r] for k in HYPER_NAMES[:4])) + offset


def _assert_close(post, ref, rel=REL_TOL, abs_=ABS_TOL, where=1e-3):
    """Relative error where ref > ``where`` × peak, absolute error (per peak) everywhere."""
    assert post.shape == ref.shape
    assert np.all(np.isfinite(post)) and np.all(post >= 0)
    peak = ref.max(axis=1, keepdims=True)
    mask = ref > where * peak
    rel_err = np.abs(post - ref)[mask] / ref[mask]
    abs_err = np.abs(post - ref) / peak
    assert rel_err.max() < rel, f"max relative error {rel_err.max():.3g}"
    assert abs_err.max() < abs_, f"max absolute error {abs_err.max():.3g} of the peak"


def _norms(post, mass):
    return np.einsum("m,hmr->hr", trapezoid_weights(np.log10(mass)), post.astype(np.float64))


# --------------------------------------------------------------------------- float32 vs float64
def test_matches_float64_reference_on_seed_field(grid, seed_halos):
    log_lobs, z = seed_halos
    hyp = _hyper(30)
    post = posterior_block(log_lobs, z, 0.05, **grid, **hyp)
    ref = posterior_reference(log_lobs, z, 0.05, **grid, **hyp)
    assert post.dtype == np.float32 and post.shape == (150, 400, 30)
    _assert_close(post, ref)
    np.testing.assert_allclose(_norms(post, grid["mass"]), 1.0, rtol=0, atol=1e-6)


def test_float64_recurrence_error_is_negligible_and_has_no_block_seams(grid):
    """The recurrence itself, in float64: no error steps where blocks restart.

    Scatters from Reddick's 0.155 down to 0.002 make the block length run from the 128-cell
    cap (1000-point grid) through 85, 7 and 2 cells to one exact ``exp`` per cell.
    """
    rng = np.random.default_rng(11)
    for n_mass, S, sigma in [(1000, 0.155, 0.05), (400, 0.155, 0.05), (400, 0.01, 0.01), (400, 0.004, 0.0),
                             (400, 0.002, 0.0005)]:
        mass = default_mass_grid(n_mass, 10.0, 15.5)
        zn, lt = TinkerPrior().log_table(mass)
        hyp = _hyper(8, S=S)
        z = rng.uniform(0.0, 3.0, 40)
        ln_m = rng.uniform(np.log(3e10), np.log(2e15), 40)
        log_lobs = _lobs_at(ln_m, z, hyp, offset=0.3 * S * rng.standard_normal(40))
        args = kernel._prepare(log_lobs, z, sigma, zn, lt, mass, *(hyp[k] for k in HYPER_NAMES))
        out = np.empty((40, n_mass, 8))
        fallback = kernel._fill(args, out)
        assert fallback.size == 0, (S, sigma)
        ref = posterior_reference(log_lobs, z, sigma, z_nodes=zn, log_table=lt, mass=mass, **hyp)
        peak = ref.max(axis=1, keepdims=True)
        mask = ref > 1e-30 * peak
        rel = np.where(mask, np.abs(out - ref) / np.where(mask, ref, 1.0), 0.0)
        assert rel.max() < 1e-10, (S, sigma, rel.max())
        # a seam would show as a jump of the error between neighbouring cells
        jump = np.abs(np.diff(np.where(mask, (out - ref) / np.where(mask, ref, 1.0), 0.0), axis=1))
        assert jump.max() < 2e-10, (S, sigma, jump.max())


@pytest.mark.parametrize(("S", "sigma"), [(0.005, 0.005), (0.002, 0.001), (0.02, 0.0), (1e-5, 1e-5)])
def test_narrow_likelihoods_keep_their_peak(grid, S, sigma):
    """Tiny scatters: the peak may fall anywhere inside a block that starts in the far tail."""
    hyp = _hyper(3, S=S)
    n = 120
    z = np.linspace(0.05, 2.5, n)
    ln_m = np.linspace(np.log(2e10), np.log(2e15), n)  # the peak sweeps every offset in a block
    log_lobs = _lobs_at(ln_m, z, hyp)
    post = posterior_block(log_lobs, z, sigma, **grid, **hyp)
    ref = posterior_reference(log_lobs, z, sigma, **grid, **hyp)
    _assert_close(post, ref)
    np.testing.assert_allclose(_norms(post, grid["mass"]), 1.0, rtol=0, atol=1e-6)
    # narrower than a grid cell in ln M: the posterior peaks at the grid mass nearest the
    # relation's inverse (the prior's slope cannot move it further)
    if np.hypot(S, sigma) / hyp["alpha2"].max() > np.log(grid["mass"][1] / grid["mass"][0]):
        return
    nearest = np.abs(np.log(grid["mass"])[None, :] - ln_m[:, None]).argmin(axis=1)
    assert np.all(np.abs(post[:, :, 0].argmax(axis=1) - nearest) <= 1)


def test_far_off_grid_rows_use_the_log_space_fallback(grid):
    hyp = _hyper(4)
    z = np.array([0.3, 0.3, 1.2, 2.0, 0.8, 0.1])
    ln_top, ln_bottom = np.log(grid["mass"][-1]), np.log(grid["mass"][0])
    log_lobs = np.array([
        _lobs_at(np.log(1e13), z[0], hyp),          # ordinary halo
        _lobs_at(ln_top, z[1], hyp, offset=50.0),   # u ≈ 300 above the top of the grid
        _lobs_at(ln_bottom, z[2], hyp, offset=-30.0),
        _lobs_at(ln_top, z[3], hyp, offset=400.0),  # u in the thousands: exp(-u²/2) is 0 everywhere
        _lobs_at(ln_bottom, z[4], hyp, offset=-7.0),
        _lobs_at(np.log(3e14), z[5], hyp),
    ])
    args = kernel._prepare(log_lobs, z, 0.05, grid["z_nodes"], grid["log_table"], grid["mass"],
                           *(hyp[k] for k in HYPER_NAMES))
    out = np.empty((6, 400, 4), dtype=np.float32)
    fallback = kernel._fill(args, out)
    assert set(fallback.tolist()) == {1, 2, 3, 4}
    ref = posterior_reference(log_lobs, z, 0.05, **grid, **hyp)
    _assert_close(out, ref)
    np.testing.assert_array_equal(out, posterior_block(log_lobs, z, 0.05, **grid, **hyp))
    # the far rows pile up on the grid edge they are beyond
    assert np.all(out[[1, 3], -1, :] == out[[1, 3]].max(axis=1))
    assert np.all(out[[2, 4], 0, :] == out[[2, 4]].max(axis=1))


def test_non_uniform_grid_takes_the_log_space_path(seed_halos):
    log_lobs, z = seed_halos[0][:40], seed_halos[1][:40]
    rng = np.random.default_rng(5)
    mass = np.sort(10 ** rng.uniform(10.0, 15.5, 300))
    zn, lt = TinkerPrior().log_table(mass)
    hyp = _hyper(5)
    assert kernel._uniform_step(np.log(mass)) is None
    args = kernel._prepare(log_lobs, z, 0.05, zn, lt, mass, *(hyp[k] for k in HYPER_NAMES))
    out = np.empty((40, 300, 5), dtype=np.float32)
    np.testing.assert_array_equal(kernel._fill(args, out), np.arange(40))
    _assert_close(out, posterior_reference(log_lobs, z, 0.05, z_nodes=zn, log_table=lt, mass=mass, **hyp))
    np.testing.assert_allclose(_norms(out, mass), 1.0, rtol=0, atol=1e-6)


def test_nearly_uniform_grid_still_uses_the_recurrence(seed_halos, grid):
    mass = grid["mass"] * (1.0 + 1e-13 * np.random.default_rng(2).standard_normal(400))
    assert kernel._uniform_step(np.log(mass)) is not None
    hyp = _hyper(5)
    log_lobs, z = seed_halos[0][:40], seed_halos[1][:40]
    post = posterior_block(log_lobs, z, 0.05, z_nodes=grid["z_nodes"], log_table=grid["log_table"], mass=mass, **hyp)
    _assert_close(post, posterior_reference(log_lobs, z, 0.05, z_nodes=grid["z_nodes"], log_table=grid["log_table"],
                                            mass=mass, **hyp))


def test_sigma_obs_per_halo(grid, seed_halos):
    log_lobs, z = seed_halos[0][:12], seed_halos[1][:12]
    sigma = np.geomspace(1e-3, 0.8, 12)
    hyp = _hyper(6)
    post = posterior_block(log_lobs, z, sigma, **grid, **hyp)
    _assert_close(post, posterior_reference(log_lobs, z, sigma, **grid, **hyp))
    for k in (0, 5, 11):  # each halo uses its own sigma_obs, not its neighbours'
        one = posterior_block(log_lobs[k:k + 1], z[k:k + 1], float(sigma[k]), **grid, **hyp)
        np.testing.assert_array_equal(post[k], one[0])
    # a wider observational scatter widens the posterior
    x = np.log10(grid["mass"])
    w = trapezoid_weights(x)
    mean = np.einsum("m,hm->h", w * x, post[:, :, 0])
    var = np.einsum("m,hm->h", w * x**2, post[:, :, 0]) - mean**2
    wide = posterior_block(log_lobs, z, sigma * 3, **grid, **hyp)[:, :, 0]
    var_wide = np.einsum("m,hm->h", w * x**2, wide) - np.einsum("m,hm->h", w * x, wide) ** 2
    assert np.all(var_wide > var)


def test_flat_relation_gives_the_prior_and_negative_slope_matches_reference(grid):
    z = np.array([0.0, 0.7, 2.4])
    log_lobs = np.array([10.0, 11.0, 12.0])
    flat = posterior_block(log_lobs, z, 0.05, **grid, **_hyper(2, alpha2=0.0))
    # α2 = 0: the likelihood does not depend on mass, so the posterior is the prior per dex
    prior = np.exp(TinkerPrior().log_density(z, grid["mass"])) * grid["mass"][None, :]
    prior /= (prior @ trapezoid_weights(np.log10(grid["mass"])))[:, None]
    for r in range(2):
        _assert_close(flat[:, :, r:r + 1], prior[:, :, None])
    hyp = _hyper(4, alpha2=-0.3)
    _assert_close(posterior_block(log_lobs, z, 0.05, **grid, **hyp),
                  posterior_reference(log_lobs, z, 0.05, **grid, **hyp))


# --------------------------------------------------------------------------- robustness
_CORNER_S = (5e-324, 1e-300, 1e-160, 1e-8, 1e-4, 10.0, 1e300)


@QUICK
@given(
    n_halo=st.integers(1, 4),
    n_r=st.integers(1, 3),
    n_mass=st.sampled_from([2, 3, 17, 400]),
    uniform=st.booleans(),
    data=st.data(),
)
def test_never_nan_and_always_normalised(grid, n_halo, n_r, n_mass, uniform, data):
    floats = st.floats
    log_lobs = np.array(data.draw(st.lists(st.one_of(floats(-50, 100), st.sampled_from([-744.4, 709.7, 0.0])),
                                           min_size=n_halo, max_size=n_halo)))
    z = np.array(data.draw(st.lists(floats(0.0, 4.0), min_size=n_halo, max_size=n_halo)))
    sigma = np.array(data.draw(st.lists(st.one_of(floats(0.0, 3.0), st.sampled_from((0.0, *_CORNER_S))),
                                        min_size=n_halo, max_size=n_halo)))

    def draw_r(s):
        return np.array(data.draw(st.lists(s, min_size=n_r, max_size=n_r)))

    hyp = {
        "alpha1": draw_r(st.one_of(floats(8.0, 13.0), st.sampled_from([-1e3, 1e3]))),
        "alpha2": draw_r(st.one_of(floats(-1.0, 2.0), st.sampled_from([0.0, 1e-12, 100.0, -100.0]))),
        "alpha3": draw_r(st.one_of(floats(1e12, 1e16), st.sampled_from([5e-324, 1.0, 1e300]))),
        "alpha4": draw_r(st.one_of(floats(-2.0, 2.0), st.sampled_from([1e3, -5.0]))),
        "S": draw_r(st.one_of(floats(1e-3, 2.0), st.sampled_from(_CORNER_S))),
    }
    if uniform:
        mass = default_mass_grid(n_mass, 10.0, data.draw(floats(10.5, 16.0)))
    else:
        mass = np.sort(10 ** np.random.default_rng(n_mass).uniform(9.0, 16.0, n_mass))
        mass = np.unique(mass)
    post = posterior_block(log_lobs, z, sigma, **_steep_prior(mass), **hyp)
    assert np.all(np.isfinite(post)) and np.all(post >= 0)
    np.testing.assert_allclose(_norms(post, mass), 1.0, rtol=0, atol=1e-5)


def _steep_prior(mass, cut=1e13):
    """A Schechter-like table, ln dn/dM = -1.9 ln M - M (1+z)² / cut, dropping by up to e^-9000."""
    z_nodes = np.linspace(0.0, 4.0, 5)
    log_table = -1.9 * np.log(mass)[None, :] - mass[None, :] * (1 + z_nodes[:, None]) ** 2 / cut
    return {"z_nodes": z_nodes, "log_table": log_table, "mass": mass}


def test_prior_tiny_where_the_likelihood_peaks(grid):
    """Unnormalised values below the float32 range (prior 1e-40 .. 1e-400 at the peak) stay exact."""
    prior = _steep_prior(grid["mass"], cut=1e12)
    hyp = _hyper(3)
    z = np.array([0.0, 0.0, 0.0, 0.2, 0.5, 3.0])
    # log10 of the unnormalised rows' integrals: about -2.5, -25, -39, -44, -48, -55; the last
    # four are below the recurrence's 1e-30 limit (float32 denormals or zeros before rescaling)
    log_lobs = _lobs_at(np.log(np.array([1e12, 6e14, 3e15, 3e15, 3e15, 1e15])), z, hyp)
    args = kernel._prepare(log_lobs, z, 0.05, prior["z_nodes"], prior["log_table"], prior["mass"],
                           *(hyp[k] for k in HYPER_NAMES))
    out = np.empty((6, 400, 3), dtype=np.float32)
    np.testing.assert_array_equal(kernel._fill(args, out), [2, 3, 4, 5])
    _assert_close(out, posterior_reference(log_lobs, z, 0.05, **prior, **hyp))
    np.testing.assert_allclose(_norms(out, grid["mass"]), 1.0, rtol=0, atol=1e-6)


def test_prior_zero_on_part_of_the_grid(grid):
    """A prior table that is zero (-inf or LOG_ZERO) on a mass range gives zero posterior there."""
    lt = grid["log_table"].copy()
    lt[:, :100] = -np.inf
    hyp = _hyper(3)
    log_lobs = np.array([_lobs_at(np.log(2e10), 0.5, hyp), _lobs_at(np.log(1e13), 0.5, hyp)])
    post = posterior_block(log_lobs, np.array([0.5, 0.5]), 0.05, z_nodes=grid["z_nodes"], log_table=lt,
                           mass=grid["mass"], **hyp)
    assert np.all(post[:, :100] == 0) and np.all(np.isfinite(post))
    np.testing.assert_allclose(_norms(post, grid["mass"]), 1.0, rtol=0, atol=1e-6)


def test_bad_inputs_raise_massmap_errors(grid):
    hyp = _hyper(2)
    ok = {"log_lobs": np.array([10.0, 11.0]), "z": np.array([0.1, 0.2]), "sigma_obs": 0.05}

    def call(**kw):
        args = {**ok, **grid, **hyp, **kw}
        return posterior_block(args.pop("log_lobs"), args.pop("z"), args.pop("sigma_obs"), **args)

    cases = [
        ({"log_lobs": np.array([10.0, np.nan])}, "log_lobs has 1 non-finite value(s) (first at index [1])"),
        ({"z": np.array([0.1])}, "z must have shape (2,), got (1,)"),
        ({"sigma_obs": np.array([0.05, -0.1])}, "sigma_obs must be >= 0, 1 value(s) are negative (first at index [1])"),
        ({"S": np.array([0.15, 0.0])}, "S (intrinsic scatter) must be > 0, 1 of 2 realization(s) are not"),
        ({"alpha3": np.array([-1.0, 2e14])}, "alpha3 (pivot mass, M_sun) must be > 0"),
        ({"alpha4": np.array([1.0])}, "hyperparameters must share one length, got [2, 2, 2, 1, 2]"),
        ({"mass": grid["mass"][::-1]}, "mass must be a positive, strictly increasing grid"),
        ({"out": np.empty((2, 400, 2), dtype=np.float64)},
         "out must be a C-contiguous float32 array of shape (2, 400, 2)"),
        ({"log_table": np.full_like(grid["log_table"], np.nan)}, "log_table (ln dn/dM) must not contain NaN or +inf"),
    ]
    for kw, words in cases:
        with pytest.raises(MassmapError) as err:
            call(**kw)
        assert words in str(err.value), (kw.keys(), str(err.value))


def test_out_is_filled_in_place_and_inputs_are_not_mutated(grid, seed_halos):
    log_lobs, z = seed_halos[0][:5].copy(), seed_halos[1][:5].copy()
    hyp = _hyper(3)
    before = {k: v.copy() for k, v in hyp.items()}
    table = grid["log_table"].copy()
    out = np.full((5, 400, 3), np.nan, dtype=np.float32)
    res = posterior_block(log_lobs, z, 0.05, out=out, **grid, **hyp)
    assert res is out and np.all(np.isfinite(out))
    np.testing.assert_array_equal(log_lobs, seed_halos[0][:5])
    np.testing.assert_array_equal(z, seed_halos[1][:5])
    np.testing.assert_array_equal(table, grid["log_table"])
    for k in hyp:
        np.testing.assert_array_equal(hyp[k], before[k])


def test_trapezoid_weights_and_prior_rows_match_independent_computations(grid):
    x = np.sort(np.random.default_rng(3).uniform(0, 5, 50))
    f = np.sin(x) + x**2
    assert np.isclose(trapezoid_weights(x) @ f, integrate.trapezoid(f, x), rtol=1e-14)
    z = np.array([0.0, 0.33, 1.5, 3.19])
    rows = prior_rows(z, grid["z_nodes"], grid["log_table"], np.log(grid["mass"]))
    expect = TinkerPrior().log_density(z, grid["mass"]) + np.log(grid["mass"])[None, :]
    np.testing.assert_allclose(rows, expect - expect.max(axis=1, keepdims=True), rtol=0, atol=1e-9)


# --------------------------------------------------------------------------- physics
def _brute_force_posterior(mass, z, ln_lobs, sigma, a, prior_per_dex):
    """∫ N(ln L_obs; ln L, σ_obs) N(ln L; ln μ_L(M, z), S) d ln L by quadrature, × prior, normalised."""
    S = a["S"]
    like = np.empty(mass.size)
    for m, M in enumerate(mass):
        mu = _ln_mu(M, z, a["alpha1"], a["alpha2"], a["alpha3"], a["alpha4"])

        def f(ln_l, mu=mu):
            return (np.exp(-0.5 * ((ln_lobs - ln_l) / sigma) ** 2 - 0.5 * ((ln_l - mu) / S) ** 2)
                    / (2 * np.pi * sigma * S))

        centre = (ln_lobs * S**2 + mu * sigma**2) / (S**2 + sigma**2)
        half = 40 * S * sigma / np.hypot(S, sigma)
        like[m] = integrate.quad(f, centre - half, centre + half, points=[centre], epsabs=0.0, epsrel=1e-11,
                                 limit=200)[0]
    p = like * prior_per_dex
    return p / (trapezoid_weights(np.log10(mass)) @ p)


def test_closed_form_matches_numerical_integration_over_ln_l():
    """relation.lobs_log_likelihood + kernel normalisation, through the public cube builder."""
    mass = default_mass_grid()
    hyper = reddick2013(2, seed=9)
    z = np.array([0.05, 0.62, 1.37, 2.9])
    log10_mass_true = np.array([11.2, 12.8, 13.9, 14.6])
    h0 = {k: float(hyper[k].values[0]) for k in HYPER_NAMES}
    lum = np.exp(_ln_mu(10 ** log10_mass_true, z, *(h0[k] for k in HYPER_NAMES[:4])) + np.array([0.1, -0.2, 0.0, 0.25]))
    sigma = np.array([0.05, 0.05, 0.2, 0.02])
    cat = make_catalog(z, lum, np.full(4, 10.0), np.full(4, 1.0), sigma_obs=sigma)
    post = build_posterior(cat, hyper, mass=mass).posterior.values
    prior = TinkerPrior()
    for k in range(4):
        prior_per_dex = np.exp(prior.log_density([z[k]], mass)[0]) * mass * LN10
        for r in range(2):
            a = {n: float(hyper[n].values[r]) for n in HYPER_NAMES}
            ref = _brute_force_posterior(mass, z[k], np.log(lum[k]), sigma[k], a, prior_per_dex)
            mask = ref > 1e-3 * ref.max()
            err = np.abs(post[k, mask, r] - ref[mask]) / ref[mask]
            assert err.max() < 1e-4, (k, r, err.max())


def test_montecarlo_converges_to_analytic_as_inverse_sqrt_n():
    cat = mock_catalog(40, seed=3)
    hyper = reddick2013(2, seed=4)
    exact = build_posterior(cat, hyper).posterior.values.astype(np.float64)
    peak = exact.max(axis=1, keepdims=True)
    n_lum = np.array([50, 200, 800])
    err = [np.sqrt(np.mean(((build_posterior(cat, hyper, method="montecarlo", n_lum=int(n), seed=1).posterior.values
                             - exact) / peak) ** 2)) for n in n_lum]
    slope = np.polyfit(np.log(n_lum), np.log(err), 1)[0]
    assert -0.7 <= slope <= -0.3, (err, slope)
    assert err[-1] < 0.03
