"""Edge checks: the cube's edge_fraction, the build-time warnings in bounded memory, and the default grid."""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest

from massmap_xr import build_posterior, mock_catalog, reddick2013, seed_field
from massmap_xr.cube import _warn_edge_collapse
from massmap_xr.errors import CatalogWarning
from massmap_xr.kernels.edges import EDGE_THRESHOLD
from massmap_xr.model.prior import TinkerPrior, default_mass_grid


def _check_inputs(n, n_r, seed=0):
    rng = np.random.default_rng(seed)
    cat = seed_field()
    idx = rng.integers(0, cat.sizes["halo"], n)
    z = cat["z"].values[idx]
    log_lobs = np.log(cat["lum_obs"].values[idx])
    return np.arange(n), log_lobs, z, np.full(n, 0.05), reddick2013(n_r, seed=1)


def _peak_mb(n, n_r, mass, zn, lt):
    ids, ll, z, sig, hyper = _check_inputs(n, n_r)
    tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CatalogWarning)
            _warn_edge_collapse(ids, ll, z, sig, hyper, mass, zn, lt)
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def test_edge_check_memory_is_bounded_independent_of_size():
    mass = default_mass_grid()
    zn, lt = TinkerPrior().log_table(mass)
    small = _peak_mb(20_000, 100, mass, zn, lt)
    big = _peak_mb(200_000, 100, mass, zn, lt)
    # the old check held ~55 bytes per (halo, realization): 1.1 GB here
    assert big < 40.0, big
    assert big < small + 8.0, (small, big)


def test_edge_fraction_definition_and_warning_names_halos_with_fraction():
    cat = mock_catalog(40, seed=3, mass=np.logspace(10, 15.5, 400))  # halos above 1e10 M_sun
    hyper = reddick2013(3, seed=1)
    narrow = np.logspace(10.5, 15.5, 300)  # cuts the low-mass posteriors
    with pytest.warns(CatalogWarning, match=r"halo\(s\) have more than 0.001 of their posterior probability in the "
                                            r"outermost cells .*first ids, with the largest edge fraction: \d+ \(") as rec:
        cube = build_posterior(cat, hyper, mass=narrow)
    c = cube.compute()
    lg = np.log10(narrow)
    p = c.posterior.values.astype(np.float64)
    ref = 0.5 * (lg[1] - lg[0]) * (p[:, 0] + p[:, 1]) + 0.5 * (lg[-1] - lg[-2]) * (p[:, -2] + p[:, -1])
    np.testing.assert_allclose(c.edge_fraction.values, ref, rtol=1e-6, atol=1e-12)
    exact = c.edge_fraction.max("realization").values
    text = str(rec[0].message)
    n_warned = int(text.split(" halo(s)")[0])
    # the estimate flags the halos whose exact fraction is clearly above the threshold, and no clearly-clean one
    assert n_warned >= int((exact > 3 * EDGE_THRESHOLD).sum())
    assert n_warned <= int((exact > EDGE_THRESHOLD / 3).sum())
    first = int(text.split("edge fraction: ")[1].split(" ")[0])
    assert exact[list(c.halo.values).index(first)] > EDGE_THRESHOLD / 3


def test_collapse_warning_still_fires_and_is_not_repeated():
    cat = mock_catalog(10, seed=1, mass=np.logspace(10, 15.5, 400))  # halos above 1e10 M_sun
    lum = cat.lum_obs.values.copy()
    lum[[2, 5]] = [1e-30, 1e30]
    with pytest.warns(CatalogWarning) as rec:
        build_posterior(cat.assign(lum_obs=("halo", lum)), reddick2013(3, seed=1))
    texts = [str(r.message) for r in rec]
    assert any("2 halo(s) have L_obs so far" in t and "first ids: 2, 5" in t for t in texts)
    assert not any("outermost cells" in t and ("first ids, with the largest edge fraction: 2 " in t
                                               or "edge fraction: 5 " in t) for t in texts)


def test_no_edge_warning_on_the_default_grid_for_mocks():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = build_posterior(mock_catalog(300, seed=5, mass=np.logspace(10, 15.5, 400)), reddick2013(20, seed=2)).compute()  # halos above 1e10 M_sun
    assert float(c.edge_fraction.max()) < EDGE_THRESHOLD


@pytest.mark.slow
def test_default_grid_covers_every_seed_field_posterior():
    cat = seed_field()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the build-time check finds nothing either
        cube = build_posterior(cat, reddick2013(100, seed=0))
    worst = float(cube.edge_fraction.max().compute())
    assert worst < EDGE_THRESHOLD, worst
    # the old grid (1e10) cut most of them
    old = build_posterior(cat.isel(halo=slice(0, 2000)), reddick2013(20, seed=0), mass=default_mass_grid(400, 10, 15.5),
                          check_edges=False)
    assert float((old.edge_fraction.max("realization") > EDGE_THRESHOLD).mean().compute()) > 0.8


def _collapsed_by_definition(log_lobs, z, sig, hyp, x0, x1):
    """The collapse rule written out with numpy over every (halo, realization) pair."""
    a = {k: np.asarray(hyp[k], dtype=float)[None, :] for k in ("alpha1", "alpha2", "alpha3", "alpha4", "S")}
    with np.errstate(all="ignore"):
        inv = 1.0 / np.hypot(a["S"], sig[:, None])
        base = log_lobs[:, None] - a["alpha1"] - a["alpha4"] * np.log1p(z)[:, None]
        u_lo = (base - a["alpha2"] * (x0 - np.log(a["alpha3"]))) * inv
        u_hi = (base - a["alpha2"] * (x1 - np.log(a["alpha3"]))) * inv
        return np.all((np.minimum(np.abs(u_lo), np.abs(u_hi)) > 5) & (np.sign(u_lo) == np.sign(u_hi))
                      & (a["alpha2"] != 0), axis=1)


@pytest.mark.parametrize("case", ["plain", "extreme"])
def test_collapsed_halos_follows_the_rule_pair_by_pair(case):
    from massmap_xr.kernels.edges import collapsed_halos

    rng = np.random.default_rng(11)
    n, r = 3000, 7
    log_lobs = rng.normal(24.5, 4.0, n)
    z = rng.uniform(0.0, 3.0, n)
    sig = rng.uniform(0.0, 0.5, n)
    hyp = {"alpha1": rng.normal(10.7, 0.1, r), "alpha2": rng.normal(0.36, 0.02, r),
           "alpha3": np.full(r, 2.35e14), "alpha4": rng.normal(1.65, 0.05, r), "S": rng.uniform(0.1, 0.3, r)}
    if case == "extreme":  # overflowing u, flat likelihoods, zero and infinite widths, NaN luminosities
        hyp["alpha1"][0], hyp["alpha2"][1], hyp["S"][2], hyp["alpha4"][3] = 1e308, 0.0, np.inf, -1e308
        sig[:10], log_lobs[10:20], hyp["S"][4] = 0.0, np.nan, 0.0
        log_lobs[20:40] = 1e300
    x0, x1 = np.log(1e10), np.log(10**15.5)
    want = _collapsed_by_definition(log_lobs, z, sig, hyp, x0, x1)
    got = collapsed_halos(log_lobs, z, sig, hyp, x0, x1)
    assert got.dtype == bool and np.array_equal(got, want)
    if case == "plain":
        assert 0 < want.sum() < n  # both kinds of halo occur
        one = {k: v[:1] for k, v in hyp.items()}  # one realization: the rule per pair
        assert np.array_equal(collapsed_halos(log_lobs, z, sig, one, x0, x1),
                              _collapsed_by_definition(log_lobs, z, sig, one, x0, x1))


def test_prior_row_max_is_the_largest_interpolated_prior():
    from massmap_xr.kernels.posterior import prior_row_max
    from massmap_xr.model.prior import LOG_ZERO

    rng = np.random.default_rng(12)
    z_nodes = np.array([0.0, 0.3, 1.0, 2.5])
    table = rng.normal(-20, 5, (4, 50))
    table[1, 10:] = -np.inf  # zeros, stored as -inf
    z = np.concatenate([rng.uniform(0, 2.5, 500), z_nodes, [0.15, 2.5]])
    i = np.clip(np.searchsorted(z_nodes, z, side="right") - 1, 0, 2)
    w = np.clip((z - z_nodes[i]) / (z_nodes[i + 1] - z_nodes[i]), 0, 1)
    t = np.maximum(table, LOG_ZERO)
    want = ((1 - w)[:, None] * t[i] + w[:, None] * t[i + 1]).max(axis=1)
    np.testing.assert_array_equal(prior_row_max(z, z_nodes, table), want)
