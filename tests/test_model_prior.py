"""The hmf-backed prior against the original study's table, and the table prior."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from massmap_xr.errors import PriorError
from massmap_xr.model.prior import TablePrior, TinkerPrior, read_prior_table


def test_hmf_configuration_reproduces_original_table(shared_data):
    """Same hmf configuration (Tinker10, WMAP5, EH, hmf's default sigma_8 and n_s, which the original
    study used) and the original's 0.73 mass factor."""
    from astropy.cosmology import WMAP5

    ref = np.loadtxt(shared_data / "seed_tinker10_prior.txt")
    zs = np.unique(ref[:, 0])
    assert zs.size == 20
    h = WMAP5.h
    prior = TinkerPrior(z_max=3.5, dz=3.5 / 19, sigma_8=0.8159, n_s=0.9667)
    for z in zs[[0, 6, 10, 19]]:
        rows = ref[ref[:, 0] == z]
        m_col = rows[:, 1]
        mass_msun = m_col / (0.73 * h)  # the column is hmf's M_sun/h times 0.73
        lnp = prior.log_density([z], mass_msun)[0]
        # the original normalised dn/dm (hmf units) to unit integral over its mass column
        p = np.exp(lnp - lnp.max())
        p /= np.trapezoid(p, m_col)
        err = np.max(np.abs(p / rows[:, 2] - 1))
        assert err < 5e-3, (z, err)


def test_tinker_units_follow_h(shared_data):
    """dn/dM in Mpc^-3 M_sun^-1 at M in M_sun equals h^4 dn/dm(hmf) at m = M h (independent hmf call)."""
    import warnings

    from astropy.cosmology import WMAP5
    from hmf import MassFunction

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mf = MassFunction(z=0.5, Mmin=11, Mmax=14, dlog10m=0.01, hmf_model="Tinker10", cosmo_model=WMAP5,
                          transfer_model="EH", sigma_8=0.817, n=0.962)
        m_h, dndm_h = np.array(mf.m), np.array(mf.dndm)
    h = WMAP5.h
    prior = TinkerPrior(z_max=1.0, dz=0.5)
    lnp = prior.log_density([0.5], m_h[10:-10] / h)[0]
    np.testing.assert_allclose(np.exp(lnp), dndm_h[10:-10] * h**4, rtol=2e-3)
    assert prior.describe()["h"] == pytest.approx(0.702)


def test_redshift_interpolation_is_linear_in_log_density():
    prior = TinkerPrior(z_max=2.0, dz=0.5)
    mass = np.logspace(11, 14, 30)
    lo, mid, hi = prior.log_density([0.5, 0.6, 1.0], mass)
    np.testing.assert_allclose(mid, 0.8 * lo + 0.2 * hi, rtol=1e-12)
    with pytest.raises(PriorError, match="outside the prior's range"):
        prior.log_density([2.5], mass)


def test_table_prior_matches_its_table_and_is_zero_outside(shared_data):
    t = read_prior_table(shared_data / "seed_tinker10_prior.txt")
    prior = TablePrior(t)
    mass = t["mass"].values
    z = t["z"].values
    lnp = prior.log_density(z[[3]], mass)[0]
    np.testing.assert_allclose(np.exp(lnp), t.values[3], rtol=1e-10)
    outside = prior.log_density([z[3]], [mass[0] / 2, mass[-1] * 2])[0]
    assert np.all(np.exp(outside) == 0)
    # halfway between two redshift nodes: geometric mean of the rows
    half = prior.log_density([(z[3] + z[4]) / 2], mass)[0]
    np.testing.assert_allclose(np.exp(half), np.sqrt(t.values[3] * t.values[4]), rtol=1e-10)


@pytest.mark.parametrize(
    "table, words",
    [
        (xr.DataArray(np.ones((2, 3)), dims=("a", "mass")), "dims"),
        (xr.DataArray(-np.ones((2, 3)), dims=("z", "mass"), coords={"z": [0, 1], "mass": [1, 2, 3]}), "negative"),
        (xr.DataArray(np.ones((2, 3)), dims=("z", "mass"), coords={"z": [1, 0], "mass": [1, 2, 3]}), "increasing"),
    ],
)
def test_table_prior_rejects_bad_tables(table, words):
    with pytest.raises(PriorError, match=words):
        TablePrior(table)
