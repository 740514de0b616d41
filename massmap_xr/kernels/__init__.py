"""Compiled numerics: the posterior kernel."""

from massmap_xr.kernels.posterior import *  # noqa: F401,F403
from massmap_xr.kernels.posterior import __all__  # noqa: F401
