"""The model: what a halo's mass posterior is made of, before any catalogue is seen.

- :mod:`~massmap_xr.model.relation`: the mass–luminosity relation (mean ln L, P(L_obs | M) in
  closed form and by Monte Carlo) and the hyperparameter names;
- :mod:`~massmap_xr.model.prior`: the halo-mass prior P(M | z) (Tinker 2010 through hmf, or a
  table), the default mass grid, interpolation in z, and rebuilding a prior from store attributes;
- :mod:`~massmap_xr.model.redshift`: redshift uncertainty (Gaussian z_err or a tabulated p(z)) as
  per-halo quadrature nodes and weights;
- :mod:`~massmap_xr.model.hyper`: hyperparameter draws (Reddick 2013, tables, ArviZ both ways),
  their validation and hash.
"""

from massmap_xr.model.hyper import (
    HYPER_ATTRS,
    REDDICK2013,
    as_hyper,
    from_arviz,
    hyper_hash,
    read_hyper,
    reddick2013,
    to_arviz,
    validate_hyper,
)
from massmap_xr.model.prior import (
    MassPrior,
    TablePrior,
    TinkerPrior,
    as_prior,
    check_mass_grid,
    default_mass_grid,
    prior_from_attrs,
    read_prior_table,
)
from massmap_xr.model.redshift import RedshiftNodes, is_photometric, redshift_nodes
from massmap_xr.model.relation import (
    HYPER_NAMES,
    lobs_likelihood_montecarlo,
    lobs_log_likelihood,
    mean_log_luminosity,
)

__all__ = [
    "HYPER_NAMES",
    "mean_log_luminosity",
    "lobs_log_likelihood",
    "lobs_likelihood_montecarlo",
    "MassPrior",
    "TinkerPrior",
    "TablePrior",
    "as_prior",
    "check_mass_grid",
    "default_mass_grid",
    "read_prior_table",
    "prior_from_attrs",
    "HYPER_ATTRS",
    "REDDICK2013",
    "reddick2013",
    "read_hyper",
    "from_arviz",
    "to_arviz",
    "as_hyper",
    "validate_hyper",
    "hyper_hash",
    "RedshiftNodes",
    "is_photometric",
    "redshift_nodes",
]
