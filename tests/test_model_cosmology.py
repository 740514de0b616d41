"""The Tinker prior's cosmology: sigma_8 and n_s of the named cosmology reach hmf, a user cosmology is
accepted, and the whole cosmology is recorded so that a store's prior is rebuilt exactly."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from astropy.cosmology import WMAP5, FlatLambdaCDM, LambdaCDM

from massmap_xr.catalog import mock_catalog
from massmap_xr.cube import build_posterior
from massmap_xr.errors import PriorError
from massmap_xr.model.hyper import reddick2013
from massmap_xr.model.prior import TinkerPrior, prior_from_attrs, resolve_cosmology


def hmf_by_hand(cosmo, sigma_8, n, z, log10_lo=11.0, log10_hi=15.5):
    """dn/dM in Mpc^-3 M_sun^-1 at M in M_sun from hmf configured here, independently of the package."""
    from hmf import MassFunction

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mf = MassFunction(z=z, Mmin=log10_lo, Mmax=log10_hi, dlog10m=0.01, hmf_model="Tinker10",
                          cosmo_model=cosmo, transfer_model="EH", sigma_8=sigma_8, n=n)
        m_h, dndm_h = np.array(mf.m), np.array(mf.dndm)
    h = cosmo.h
    return m_h / h, dndm_h * h**4


@pytest.mark.parametrize("z", [0.5, 2.0])
def test_wmap5_sigma8_and_ns_reach_hmf(z):
    assert (WMAP5.meta["sigma8"], WMAP5.meta["n"]) == (0.817, 0.962)
    mass, ref = hmf_by_hand(WMAP5, 0.817, 0.962, z)
    prior = TinkerPrior(z_max=2.0, dz=0.5)
    assert (prior.sigma_8, prior.n_s) == (0.817, 0.962)
    got = np.exp(prior.log_density([z], mass[5:-5])[0])
    np.testing.assert_allclose(got, ref[5:-5], rtol=2e-3)
    # hmf's own defaults (0.8159, 0.9667, Planck 2015) differ by far more at the high-mass end
    _, other = hmf_by_hand(WMAP5, 0.8159, 0.9667, z)
    assert np.max(np.abs(other[5:-5] / ref[5:-5] - 1)) > (0.1 if z == 2.0 else 0.02)


def test_user_cosmology_with_sigma8_and_ns():
    cosmo = LambdaCDM(H0=68.0, Om0=0.31, Ode0=0.68, Ob0=0.049, Tcmb0=2.7255)
    prior = TinkerPrior(z_max=1.0, dz=0.5, cosmology=cosmo, sigma_8=0.81, n_s=0.965)
    mass, ref = hmf_by_hand(cosmo, 0.81, 0.965, 1.0)
    np.testing.assert_allclose(np.exp(prior.log_density([1.0], mass[5:-5])[0]), ref[5:-5], rtol=2e-3)
    assert prior.describe()["h"] == pytest.approx(0.68)
    # equal cosmologies give equal (and equally hashed) priors: the likelihood cache relies on it
    twin = TinkerPrior(z_max=1.0, dz=0.5, cosmology=cosmo.clone(), sigma_8=0.81, n_s=0.965)
    assert twin == prior and hash(twin) == hash(prior)
    assert TinkerPrior(z_max=1.0, dz=0.5, cosmology=cosmo, sigma_8=0.8, n_s=0.965) != prior


def test_user_cosmology_needs_sigma8_and_ns():
    with pytest.raises(PriorError, match=r"does not state sigma8.*sigma_8="):
        TinkerPrior(cosmology=FlatLambdaCDM(H0=70, Om0=0.3, Ob0=0.05, Tcmb0=2.725))
    with pytest.raises(PriorError, match="not an astropy realisation"):
        TinkerPrior(cosmology="WMAP99")
    with pytest.raises(PriorError, match="sigma_8 must be finite"):
        TinkerPrior(sigma_8=-1.0)
    with pytest.raises(PriorError, match="no finite mass function"), np.errstate(all="ignore"):
        TinkerPrior(z_max=0.5, dz=0.5, cosmology=FlatLambdaCDM(H0=70, Om0=0.3, Ob0=0.05), sigma_8=0.8,
                    n_s=0.96).log_table(np.logspace(12, 14, 5))


def test_cube_records_the_full_cosmology_and_rebuilds_it():
    cosmo = FlatLambdaCDM(H0=67.7, Om0=0.31, Ob0=0.049, Tcmb0=2.7255, name="my-survey")
    prior = TinkerPrior(z_max=1.5, dz=0.5, cosmology=cosmo, sigma_8=0.81, n_s=0.965)
    cube = build_posterior(mock_catalog(30, seed=3, z=np.linspace(0.1, 1.4, 30), prior=prior), reddick2013(2, seed=1), prior=prior)
    a = cube.attrs
    assert (a["prior_sigma_8"], a["prior_n_s"]) == (0.81, 0.965)
    assert a["prior_cosmology"] == "my-survey"
    back = resolve_cosmology(a["prior_cosmology_parameters"])
    assert back == cosmo and back.H0.value == 67.7 and back.Tcmb0.value == 2.7255
    rebuilt = prior_from_attrs(a, cube["prior_z"])
    assert rebuilt == prior
    mass = cube["mass"].values
    np.testing.assert_array_equal(rebuilt.log_table(mass)[1], prior.log_table(mass)[1])
    # the default records WMAP5 with its own sigma_8 and n_s; old stores (no sigma_8 recorded) used hmf's
    old = {k: v for k, v in TinkerPrior().describe().items() if k not in ("sigma_8", "n_s", "cosmology_parameters")}
    old = {f"prior_{k}" if not k.startswith("prior") else k: v for k, v in old.items()}
    assert (prior_from_attrs(old).sigma_8, prior_from_attrs(old).n_s) == (0.8159, 0.9667)
