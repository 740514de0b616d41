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
