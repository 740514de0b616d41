"""The ``.massmap`` accessor: a thin facade over the topic modules.

Every method delegates to a plain function that takes the cube as its first argument and is
documented there: storage in :mod:`massmap_xr.store`, analysis in :mod:`massmap_xr.analysis`,
figures in :mod:`massmap_xr.plot`.  The accessor adds no behaviour of its own; the topic
modules are imported on first use, so ``import massmap_xr`` stays light.
"""

from __future__ import annotations

import functools
import importlib

import xarray as xr

__all__ = ["MassmapAccessor"]


class _Delegate:
    """Accessor attribute calling ``massmap_xr.<module>.<name>(ds, *args, **kwargs)``.

    Accessed on an accessor instance it returns a bound callable that carries the target
    function's signature and docstring (so ``help(ds.massmap.summary)`` shows the real
    documentation).
    """

    def __init__(self, module: str, name: str, *, cube_arg: int = 0):
        self.module, self.name, self.cube_arg = module, name, cube_arg
        self.__doc__ = f"See :func:`massmap_xr.{module}.{name}` (the cube is passed for you)."

    def _target(self):
        return getattr(importlib.import_module(f"massmap_xr.{self.module}"), self.name)

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        func = self._target()
        ds = obj._ds
        if self.cube_arg == 0:
            def bound(*args, **kwargs):
                return func(ds, *args, **kwargs)
        else:  # functions written as f(path, ds, ...)
            def bound(path, *args, **kwargs):
                return func(path, ds, *args, **kwargs)
        return functools.update_wrapper(bound, func)


@xr.register_dataset_accessor("massmap")
class MassmapAccessor:
    """Posterior-cube methods on an :class:`xarray.Dataset`: ``ds.massmap.<method>(...)``.

    Storage: ``to_store(path)``, ``init_store(path)`` + ``write_slabs(path, halo_range=...)``
    (several writers), ``append_halos_to(path)``, ``append_realizations_to(path)``.
    Analysis: ``marginalize``, ``cdf``, ``summary``, ``quantile``, ``fit_normal``, ``sample``,
    ``calibration``, ``halo_prior``.  Figures: ``plot_posterior``, ``plot_calibration``,
    ``plot_fit``.  Lensing: ``kappa_map(n, flat=ARCMIN | nside=NSIDE, z_source=Z)``.
    """

    def __init__(self, ds: xr.Dataset):
        self._ds = ds

    to_store = _Delegate("store", "to_store")
    init_store = _Delegate("store", "init_store")
    write_slabs = _Delegate("store", "write_slabs")
    append_halos_to = _Delegate("store", "append_halos", cube_arg=1)
    append_realizations_to = _Delegate("store", "append_realizations", cube_arg=1)
    marginalize = _Delegate("analysis", "marginalize")
    cdf = _Delegate("analysis", "cdf")
    summary = _Delegate("analysis", "summary")
    quantile = _Delegate("analysis", "quantile")
    fit_normal = _Delegate("analysis", "fit_normal")
    sample = _Delegate("analysis", "sample")
    calibration = _Delegate("analysis", "calibration")
    halo_prior = _Delegate("analysis", "halo_prior")
    plot_posterior = _Delegate("plot", "plot_posterior")
    plot_calibration = _Delegate("plot", "plot_calibration")
    plot_fit = _Delegate("plot", "plot_fit")
    kappa_map = _Delegate("lensing.maps", "kappa_map")
