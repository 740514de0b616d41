"""Photometric redshifts: the redshift quadrature (model/redshift.py) and its use in the posterior kernel."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats

from massmap_xr.errors import CatalogError, CatalogWarning
from massmap_xr.model.redshift import redshift_nodes


def _truncated_mean(f, z0, s, lo, hi):
    """E[f(z)] under N(z0, s²) truncated to [lo, hi], by scipy quadrature over ±14σ."""
    a, b = max(lo, z0 - 14 * s), min(hi, z0 + 14 * s)
    num = integrate.quad(lambda z: stats.norm.pdf(z, z0, s) * f(z), a, b, epsrel=1e-13, epsabs=0, limit=200)[0]
    den = integrate.quad(lambda z: stats.norm.pdf(z, z0, s), a, b, epsrel=1e-13, epsabs=0, limit=200)[0]
    return num / den


@pytest.mark.parametrize("z0", [0.01, 0.05, 0.3, 0.5, 1.5, 3.0])
def test_gaussian_quadrature_matches_scipy(z0):
    s = 0.03 * (1 + z0)
    zj, lw = redshift_nodes([z0], z_err=[s], z_range=(0.0, 4.0), warn=False)
    assert zj.shape == (1, 20) and np.all(zj > 0) and np.all(zj <= 4.0)
    worst_strong, worst_mild = 0.0, 0.0
    for a in (-20, -3, 0, 3, 20):
        for b in (-2, 0, 2):
            def f(z, a=a, b=b):
                return np.exp(a * z + b * z * z) * (1 + 0.3 * np.sin(3 * z))
            err = abs(np.exp(lw[0]) @ f(zj[0]) / _truncated_mean(f, z0, s, 0.0, 4.0) - 1)
            worst_strong = max(worst_strong, err)
            if abs(a + 2 * b * z0) * s <= 2:
                worst_mild = max(worst_mild, err)
    assert worst_strong < 1e-4
    if z0 - 8 * s >= 0:  # window inside the range: Gauss-Hermite
        assert worst_mild < 1e-8


def test_spectroscopic_rows_are_one_node_of_weight_one():
    z = np.array([0.2, 0.4, 0.6])
    r = redshift_nodes(z, z_err=np.array([0.0, 0.05, 0.0]))
    zj, lw = r
    assert zj.shape == (3, 20)
    np.testing.assert_array_equal(zj[[0, 2], 0], z[[0, 2]])
    assert np.all(lw[[0, 2], 0] == 0.0) and np.all(np.isneginf(lw[[0, 2], 1:]))
    assert r.photometric.tolist() == [False, True, False]
    np.testing.assert_allclose(np.exp(lw).sum(axis=1), 1.0, rtol=1e-14)
    # no z_err at all: one column
    zj1, lw1 = redshift_nodes(z)
    assert zj1.shape == (3, 1) and np.all(lw1 == 0.0)


def test_truncation_at_zero_is_silent_and_at_zmax_warns():
    # z = 0.02 with error 0.05: 34 % of the Gaussian lies below 0, dropped silently and renormalised
    zj, lw = redshift_nodes([0.02], z_err=[0.05], z_range=(0.0, 4.0))
    assert np.all(zj > 0)
    mean = np.exp(lw[0]) @ zj[0]
    ref = stats.truncnorm.mean(-0.02 / 0.05, np.inf, loc=0.02, scale=0.05)
    np.testing.assert_allclose(mean, ref, rtol=1e-8)
    with pytest.warns(CatalogWarning, match=r"outside the prior's redshift range \[0, 4\].*first ids: 7"):
        zj, lw = redshift_nodes([3.95], z_err=[0.1], z_range=(0.0, 4.0), ids=[7])
    assert zj.max() <= 4.0
    ref = stats.truncnorm.mean(-np.inf, 0.05 / 0.1, loc=3.95, scale=0.1)
    np.testing.assert_allclose(np.exp(lw[0]) @ zj[0], ref, rtol=1e-6)


def test_tabulated_pz():
    grid = np.linspace(0.0, 2.0, 201)
    dens = np.stack([stats.norm.pdf(grid, 0.7, 0.05), np.full(grid.size, np.nan), 3.0 * stats.gamma.pdf(grid, 3, scale=0.2)])
    r = redshift_nodes([0.7, 0.4, 0.4], z_err=[0.0, 0.0, 0.0], pz=dens, pz_z=grid, z_range=(0.0, 4.0))
    zj, lw = r
    assert r.photometric.tolist() == [True, False, True]
    np.testing.assert_allclose(np.exp(lw[0]) @ zj[0], 0.7, rtol=1e-6)
    g = stats.gamma(3, scale=0.2)  # truncated at the grid's end, z = 2
    ref = integrate.quad(lambda z: z * g.pdf(z), 0, 2)[0] / g.cdf(2.0)
    np.testing.assert_allclose(np.exp(lw[2]) @ zj[2], ref, rtol=1e-3)
    assert zj[1, 0] == 0.4 and lw[1, 0] == 0.0 and np.all(np.isneginf(lw[1, 1:]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"z_err": [-0.1]}, "z_err .*>= 0"),
        ({"z_err": [np.nan]}, "z_err .*finite"),
        ({"pz": np.ones((1, 3))}, "pz_z"),
        ({"pz": -np.ones((1, 3)), "pz_z": [0.1, 0.2, 0.3]}, "pz must be finite and >= 0"),
        ({"pz": np.ones((1, 3)), "pz_z": [0.3, 0.2, 0.1]}, "strictly increasing"),
        ({"pz": np.ones((1, 3)), "pz_z": [5.0, 5.1, 5.2]}, "no weight inside"),
        ({"n_nodes": 0}, "n_nodes"),
    ],
)
def test_bad_redshift_inputs(kwargs, match):
    with pytest.raises(CatalogError, match=match):
        redshift_nodes([0.3], z_range=(0.0, 4.0), **kwargs)


# --------------------------------------------------------------------------- the kernel against scipy
from massmap_xr import build_posterior, mock_catalog  # noqa: E402
from massmap_xr.kernels.posterior import posterior_outputs  # noqa: E402
from massmap_xr.model.hyper import REDDICK2013  # noqa: E402
from massmap_xr.model.prior import TinkerPrior, default_mass_grid  # noqa: E402

TRUTH = {k: REDDICK2013[k][0] for k in ("alpha1", "alpha2", "alpha3", "alpha4", "S")}
LN10 = np.log(10.0)


def _continuous_model(zn, lt, mass):
    """ln P̂(log10 M | z) (unit integral over the grid's log10 range, by scipy) and ln p(ln L_obs | M, z)."""
    lg = np.log10(mass)

    def lnprior_raw(z, x):  # ln dn/dM interpolated linearly in z and in ln M, plus ln M (per log10 M)
        i = np.clip(np.searchsorted(zn, z, side="right") - 1, 0, zn.size - 2)
        w = (z - zn[i]) / (zn[i + 1] - zn[i])
        row = (1 - w) * lt[i] + w * lt[i + 1]
        return np.interp(x, lg, row) + x * LN10

    def norm(z):
        ref = lnprior_raw(z, lg).max()
        return ref + np.log(integrate.quad(lambda x: np.exp(lnprior_raw(z, x) - ref), lg[0], lg[-1],
                                           limit=400, epsrel=1e-10, points=lg[::20])[0])

    def lnlike(ll, x, z, sig):
        w2 = TRUTH["S"] ** 2 + sig**2
        mu = TRUTH["alpha1"] + TRUTH["alpha2"] * (x * LN10 - np.log(TRUTH["alpha3"])) + TRUTH["alpha4"] * np.log1p(z)
        return -0.5 * (ll - mu) ** 2 / w2 - 0.5 * np.log(2 * np.pi * w2)

    return lnprior_raw, norm, lnlike


def test_kernel_matches_brute_force_integration_over_z_and_mass():
    mass = default_mass_grid()
    zn, lt = TinkerPrior().log_table(mass)
    lnprior_raw, norm, lnlike = _continuous_model(zn, lt, mass)
    lg = np.log10(mass)
    z = np.array([0.35, 1.2, 0.04])
    ll = np.array([10.2, 11.5, 9.0])
    ze = np.array([0.0, 0.03 * 2.2, 0.05])
    nodes = redshift_nodes(z, z_err=ze, z_range=(0.0, 4.0))
    post, log_ev, edge = posterior_outputs(ll, z, 0.05, z_nodes=zn, log_table=lt, mass=mass,
                                           nodes=tuple(nodes), **{k: [v] for k, v in TRUTH.items()})
    for k in range(3):
        lk, zk, ek = ll[k], z[k], ze[k]

        def joint(x, zz, lnz, lk=lk):
            return np.exp(lnprior_raw(zz, x) - lnz + lnlike(lk, x, zz, 0.05))

        def mass_integral(zz, lk=lk):
            lnz = norm(zz)
            return integrate.quad(joint, lg[0], lg[-1], args=(zz, lnz), limit=400, points=lg[::20])[0]

        if ek == 0:
            ev = mass_integral(zk)
            dens = joint(lg, zk, norm(zk)) / ev
        else:
            a, b = max(0.0, zk - 8 * ek), zk + 8 * ek
            pz_norm = stats.norm.cdf(b, zk, ek) - stats.norm.cdf(a, zk, ek)
            zq = np.linspace(a, b, 161)  # outer integral over z by scipy's Simpson rule on a fine grid
            pzq = stats.norm.pdf(zq, zk, ek) / pz_norm
            inner = np.array([mass_integral(zz) for zz in zq])
            ev = integrate.simpson(pzq * inner, x=zq)
            lnzq = np.array([norm(zz) for zz in zq])
            dens = np.full(lg.size, np.nan)
            for j in range(0, lg.size, 25):
                vals = np.array([joint(lg[j], zz, lz) for zz, lz in zip(zq, lnzq, strict=True)])
                dens[j] = integrate.simpson(pzq * vals, x=zq) / ev
        np.testing.assert_allclose(log_ev[k, 0], np.log(ev), atol=2e-3)
        ok = np.isfinite(dens) & (dens > 1e-3 * np.nanmax(dens))
        np.testing.assert_allclose(post[k, ok, 0], dens[ok], rtol=3e-3)
        assert edge[k, 0] < 1e-3


def _truth_hyper():
    return {k: [v] for k, v in TRUTH.items()}


def test_spectroscopic_halos_are_bit_identical_with_a_z_err_column():
    cat = mock_catalog(60, seed=4)
    ze = np.where(np.arange(60) % 3 == 0, 0.05, 0.0)
    plain = build_posterior(cat, _truth_hyper(), chunks=25).compute()
    photo = build_posterior(cat.assign(z_err=("halo", ze)), _truth_hyper(), chunks=25).compute()
    spec = ze == 0
    np.testing.assert_array_equal(photo.posterior.values[spec], plain.posterior.values[spec])
    np.testing.assert_array_equal(photo.log_evidence.values[spec], plain.log_evidence.values[spec])
    assert not np.array_equal(photo.posterior.values[~spec], plain.posterior.values[~spec])
    assert photo.attrs["n_photometric"] == int((~spec).sum()) and photo.attrs["redshift_n_nodes"] == 20


def test_one_kernel_call_per_block_for_posterior_and_its_outputs(monkeypatch):
    import dask

    from massmap_xr import cube as cube_mod

    calls = []
    real = cube_mod._run_block

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(cube_mod, "_run_block", counting)
    c = build_posterior(mock_catalog(90, seed=2), _truth_hyper(), chunks=30)
    post, lev, edge = dask.compute(c.posterior.data, c.log_evidence.data, c.edge_fraction.data)
    assert len(calls) == 3  # three halo blocks, each computed once for all three outputs
    c.load()
    assert len(calls) == 6
    assert lev.dtype == np.float64 and edge.dtype == np.float32 and post.shape == (90, 400, 1)
    assert c.log_evidence.attrs["units"] == "1" and "long_name" in c.edge_fraction.attrs


# --------------------------------------------------------------------------- calibration on mocks
def _calibrated(cube):
    cal = cube.massmap.calibration()
    return cal, cal.attrs["verdict"].startswith("calibrated")


def test_photoz_calibration_and_posteriors_wider_than_spectroscopic():
    mass = default_mass_grid()
    cat = mock_catalog(3000, seed=21, z_err=lambda z: 0.03 * (1 + z), mass=mass)
    cube = build_posterior(cat, _truth_hyper(), mass=mass, check_edges=False)
    cal, ok = _calibrated(cube)
    assert ok, cal.attrs["verdict"]
    assert float(cal.ks_pvalue) > 0.01
    cov = cal.coverage.sel(level=[0.68, 0.95]).values
    err = cal.coverage_err.sel(level=[0.68, 0.95]).values
    assert np.all(np.abs(cov - [0.68, 0.95]) < 3 * err)
    # the same catalogue read as spectroscopic gives narrower posteriors (the redshift spread is left out);
    # at 0.03 (1 + z) the mass posteriors are dominated by the luminosity scatter, so both calibrate
    spec = build_posterior(cat.drop_vars("z_err"), _truth_hyper(), mass=mass, check_edges=False)
    w_photo = cube.massmap.summary()["std"].mean().compute()
    w_spec = spec.massmap.summary()["std"].mean().compute()
    assert float(w_photo) > float(w_spec)


def test_calibration_with_large_sigma_obs():
    mass = default_mass_grid()
    cat = mock_catalog(3000, seed=22, sigma_obs=0.15, mass=mass)
    cal, ok = _calibrated(build_posterior(cat, _truth_hyper(), mass=mass, check_edges=False))
    assert ok, cal.attrs["verdict"]
    assert float(cal.ks_pvalue) > 0.01
    # ignoring it (the default 0.05) is over-confident
    cal0, ok0 = _calibrated(build_posterior(cat.drop_vars("sigma_obs"), _truth_hyper(), mass=mass, check_edges=False,
                                            sigma_obs=0.05))
    assert not ok0, cal0.attrs["verdict"]
