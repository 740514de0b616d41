"""The ``.massmap`` accessor: a thin facade over the topic modules.

Every method delegates to a plain function that takes the cube as its first argument and is
documented there: storage in :mod:`massmap_xr.store`, analysis in :mod:`massmap_xr.analysis`,
figures in :mod:`massmap_xr.plot`.  The accessor adds no behaviour of its own.
"""

from __future__ import annotations

import importlib

import xarray as xr

__all__ = ["MassmapAccessor"]


def _delegate(module: str, name: str):
    """An accessor method calling ``massmap_xr.<module>.<name>(ds, ...)``, with its docstring."""

    def method(self, *args, **kwargs):
        func = getattr(importlib.import_module(f"massmap_xr.{module}"), name)
        return func(self._ds, *args, **kwargs)

    method.__name__ = name
    method.__qualname__ = f"MassmapAccessor.{name}"
    method.__doc__ = f"See :func:`massmap_xr.{module}.{name}` (the cube is passed as first argument)."
    return method


@xr.register_dataset_accessor("massmap")
class MassmapAccessor:
    """Posterior-cube methods on an :class:`xarray.Dataset`: ``ds.massmap.<method>(...)``.

    Methods: ``to_store``, ``marginalize``, ``cdf``, ``summary``, ``quantile``, ``fit_normal``,
    ``sample``, ``calibration``, ``halo_prior``, ``plot_posterior``, ``plot_calibration``,
    ``plot_fit``.
    """

    def __init__(self, ds: xr.Dataset):
        self._ds = ds

    to_store = _delegate("store", "to_store")
    marginalize = _delegate("analysis", "marginalize")
    cdf = _delegate("analysis", "cdf")
    summary = _delegate("analysis", "summary")
    quantile = _delegate("analysis", "quantile")
    fit_normal = _delegate("analysis", "fit_normal")
    sample = _delegate("analysis", "sample")
    calibration = _delegate("analysis", "calibration")
    halo_prior = _delegate("analysis", "halo_prior")
    plot_posterior = _delegate("plot", "plot_posterior")
    plot_calibration = _delegate("plot", "plot_calibration")
    plot_fit = _delegate("plot", "plot_fit")


