"""The mass–luminosity relation and the likelihood P(L_obs | M).

Model (Reddick et al. 2013 form), for one hyperparameter draw (α1, α2, α3, α4, S):

- mean luminosity   ln μ_L(M, z) = α1 + α2 ln(M / α3) + α4 ln(1 + z)
- true luminosity   ln L ~ Normal(ln μ_L, S²)
- observation       ln L_obs ~ Normal(ln L, σ_obs²)

The convolution over the unobserved true luminosity has a closed form: ln L_obs given M is
normal with mean ln μ_L and width √(S² + σ_obs²).  :func:`lobs_log_likelihood` evaluates it;
:func:`lobs_likelihood_montecarlo` reproduces the original Monte Carlo estimator (average of
P(L_obs | L) over draws of L), kept for comparison and for non-Gaussian scatter models.

Masses are in M_sun, luminosities in the catalogue's units (the seed field uses
L_sun h^-2, as Reddick 2013), all logarithms natural unless stated.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "HYPER_NAMES",
    "mean_log_luminosity",
    "lobs_log_likelihood",
    "lobs_likelihood_montecarlo",
]

#: Names of the hyperparameters, in the order of the relation.
HYPER_NAMES = ("alpha1", "alpha2", "alpha3", "alpha4", "S")

_LOG_SQRT_2PI = 0.5 * np.log(2.0 * np.pi)


def mean_log_luminosity(mass, z, alpha1, alpha2, alpha3, alpha4):
    """Mean natural-log luminosity ln μ_L(M, z) of the relation.

    Parameters
    ----------
    mass : array_like
        Halo mass in M_sun.
    z : array_like
        Redshift.
    alpha1, alpha2, alpha3, alpha4 : array_like
        Normalisation (ln L units), slope, pivot mass (M_sun) and redshift evolution.

    Returns
    -------
    numpy.ndarray
        ln μ_L, broadcast over all inputs.

    Examples
    --------
    >>> float(mean_log_luminosity(2.35e14, 0.0, 10.709, 0.359, 2.35e14, 1.10))
    10.709
    """
    return (
        np.asarray(alpha1)
        + np.asarray(alpha2) * np.log(np.asarray(mass) / np.asarray(alpha3))
        + np.asarray(alpha4) * np.log1p(np.asarray(z))
    )


def lobs_log_likelihood(lum_obs, mass, z, alpha1, alpha2, alpha3, alpha4, S, sigma_obs=0.05):
    """Closed-form ln P(ln L_obs | M, z, α, S): a normal density in ln L_obs.

    The density is per unit ln L_obs, with width √(S² + σ_obs²) about ln μ_L(M, z).
    All arguments broadcast.

    Parameters
    ----------
    lum_obs : array_like
        Observed luminosity (linear units, > 0).
    mass : array_like
        Halo mass in M_sun.
    z : array_like
        Redshift.
    alpha1, alpha2, alpha3, alpha4, S : array_like
        Hyperparameters of the relation; S is the intrinsic log-normal scatter (natural log).
    sigma_obs : array_like, default 0.05
        Observational log-normal scatter of L_obs (natural log).

    Returns
    -------
    numpy.ndarray
        The log-likelihood, float64.
    """
    width2 = np.asarray(S, dtype=float) ** 2 + np.asarray(sigma_obs, dtype=float) ** 2
    resid = np.log(np.asarray(lum_obs, dtype=float)) - mean_log_luminosity(
        mass, z, alpha1, alpha2, alpha3, alpha4
    )
    return -0.5 * resid**2 / width2 - 0.5 * np.log(width2) - _LOG_SQRT_2PI


def lobs_likelihood_montecarlo(
    lum_obs, mass, z, alpha1, alpha2, alpha3, alpha4, S, sigma_obs=0.05, *, n_lum=100, rng=None
):
    """Monte Carlo estimate of P(ln L_obs | M, z, α, S), the original study's estimator.

    Draws ``n_lum`` true luminosities ln L ~ Normal(ln μ_L, S²) per mass point and averages the
    observation density Normal(ln L_obs; ln L, σ_obs²) over them.  The standard normal draws are
    shared by all mass points of one call (common random numbers), so the estimate is a smooth
    function of mass whose error falls as 1/√n_lum.

    Parameters
    ----------
    lum_obs, mass, z, alpha1, alpha2, alpha3, alpha4, S, sigma_obs : array_like
        As in :func:`lobs_log_likelihood`; all broadcast together.
    n_lum : int, default 100
        Number of luminosity draws per point.
    rng : numpy.random.Generator or int or None
        Source of the draws (seeded for reproducibility).

    Returns
    -------
    numpy.ndarray
        The likelihood (not its logarithm), float64, with the broadcast shape of the inputs.
    """
    rng = np.random.default_rng(rng)
    mu = mean_log_luminosity(mass, z, alpha1, alpha2, alpha3, alpha4)
    log_lobs = np.log(np.asarray(lum_obs, dtype=float))
    S = np.asarray(S, dtype=float)
    sigma_obs = np.asarray(sigma_obs, dtype=float)
    shape = np.broadcast_shapes(mu.shape, log_lobs.shape, S.shape, sigma_obs.shape)
    eps = rng.standard_normal(n_lum)
    acc = np.zeros(shape)
    with np.errstate(over="ignore"):  # a residual that squares to inf is a zero likelihood
        for e in eps:  # loop over draws keeps memory at one copy of the output
            resid = (log_lobs - (mu + S * e)) / sigma_obs
            acc += np.exp(-0.5 * resid**2)
    return acc / (n_lum * sigma_obs * np.sqrt(2.0 * np.pi))
