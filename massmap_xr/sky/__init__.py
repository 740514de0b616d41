"""sky"""

import importlib

from massmap_xr.sky.core import *  # noqa: F401,F403
from massmap_xr.sky.core import __all__ as _core_all

_PLOTS = ("plot_map", "plot_healpix", "plot_statistics", "plot_residuals", "plot_maps", "rasterize_healpix")
__all__ = [*_core_all, *_PLOTS]


def __getattr__(name):  # the figures load matplotlib on first use
    if name in _PLOTS:
        return getattr(importlib.import_module("massmap_xr.sky.plots"), name)
    raise AttributeError(f"module 'massmap_xr.sky' has no attribute {name!r}")
