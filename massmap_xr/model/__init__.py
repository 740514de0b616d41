"""The model: the mass–luminosity relation, the halo-mass prior P(M | z) and hyperparameter samples."""

from massmap_xr.model.hyper import *  # noqa: F401,F403
from massmap_xr.model.prior import *  # noqa: F401,F403
from massmap_xr.model.relation import *  # noqa: F401,F403
