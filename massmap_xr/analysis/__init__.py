"""Analysis stage: from a posterior cube to per-halo numbers, mass samples and calibration.

Every function takes the cube (``posterior(halo, mass, realization)``, see
:mod:`massmap_xr.cube`) as first argument and returns labelled xarray objects with units in
``attrs``, lazily on a dask-backed cube.  Modules, in the order they build on each other:

- :mod:`~massmap_xr.analysis.checks`: argument checks shared by the functions (probabilities, levels);
- :mod:`~massmap_xr.analysis.weights`: realization weights (per halo, by evidence, for prior draws) and the
  weighted sum over realizations;
- :mod:`~massmap_xr.analysis.reductions`: marginalize, cdf, summary, quantile, fit_normal, halo_prior and their row kernels;
- :mod:`~massmap_xr.analysis.sampling`: sample, with counter-based Philox streams and inverse-CDF draws;
- :mod:`~massmap_xr.analysis.halo_draws`: correlated draws when the weights depend on the halo (prior draws);
- :mod:`~massmap_xr.analysis.calibrate`: calibration against true masses and its verdict;
- :mod:`~massmap_xr.analysis.writers`: write_summary and write_samples for the command line;
- :mod:`~massmap_xr.analysis.plots`: figures (not imported here, so matplotlib loads only when used).
"""

from massmap_xr.analysis.calibrate import calibration
from massmap_xr.analysis.reductions import LOG10_MASS_UNITS, cdf, fit_normal, halo_prior, marginalize, quantile, summary
from massmap_xr.analysis.sampling import sample
from massmap_xr.analysis.writers import write_samples, write_summary

__all__ = [
    "LOG10_MASS_UNITS",
    "calibration",
    "cdf",
    "fit_normal",
    "halo_prior",
    "marginalize",
    "quantile",
    "sample",
    "summary",
    "write_samples",
    "write_summary",
]
