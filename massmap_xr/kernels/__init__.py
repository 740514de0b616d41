"""Compiled numerics: the stage that turns a catalogue, hyperparameters and a prior into numbers.

- :mod:`~massmap_xr.kernels.numerics`: shared pieces (trapezoid weights, the overflow-safe
  hyperparameter scale, the inlined helpers of the log-space paths);
- :mod:`~massmap_xr.kernels.posterior`: the posterior-cube kernel (:func:`posterior_block`),
  its float64 reference, the prior rows and the prior checks; :func:`posterior_outputs` adds the
  log-evidence and edge fraction (and photometric halos) in the same pass;
- :mod:`~massmap_xr.kernels.photoz`: the posterior kernel over redshift nodes (photometric halos);
- :mod:`~massmap_xr.kernels.edges`: the build-time estimate of posterior mass at the grid ends;
- :mod:`~massmap_xr.kernels.likelihood`: the catalogue log-likelihood kernels (serial and
  threaded builds) behind :class:`massmap_xr.inference.CatalogLikelihood`.
"""

from massmap_xr.kernels.numerics import hyper_scale, trapezoid_weights
from massmap_xr.kernels.posterior import (
    ZERO_PRIOR_LOG,
    check_prior_nonzero,
    check_prior_redshifts,
    edge_fraction,
    posterior_block,
    posterior_outputs,
    posterior_reference,
    prior_rows,
)

__all__ = ["ZERO_PRIOR_LOG", "check_prior_nonzero", "check_prior_redshifts", "edge_fraction", "hyper_scale",
           "posterior_block", "posterior_outputs", "posterior_reference", "prior_rows", "trapezoid_weights"]
