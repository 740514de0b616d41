"""The ``.massmap`` accessors: a thin facade over the stage modules.

Every method delegates to a plain function that takes the object as its first argument and is
documented there: storage in :mod:`massmap_xr.store`, analysis in :mod:`massmap_xr.analysis`,
figures in :mod:`massmap_xr.analysis.plots` and :mod:`massmap_xr.sky`.  The accessors add no
behaviour of their own; the stage modules are imported on first use, so ``import massmap_xr``
stays light.  Their signatures are spelled out for type checkers and IDEs in ``accessor.pyi``
(a test holds it against the functions).

- ``ds.massmap`` on a posterior cube (:class:`xarray.Dataset`): storage, analysis, figures.
- ``da.massmap`` on a :class:`xarray.DataArray` of sampled masses (``sample()`` output) or of
  maps: projection, map statistics, export and figures.
"""

from __future__ import annotations

import functools
import importlib

import xarray as xr

__all__ = ["MassmapAccessor", "MassmapArrayAccessor"]


class _Delegate:
    """Accessor attribute calling ``massmap_xr.<module>.<name>(obj, *args, **kwargs)``.

    Accessed on an accessor instance it returns a bound callable that carries the target
    function's signature and docstring (so ``help(ds.massmap.summary)`` shows the real
    documentation).
    """

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name
        self.__doc__ = f"See :func:`massmap_xr.{module}.{name}` (the object is passed for you)."

    def target(self):
        """The delegated function."""
        return getattr(importlib.import_module(f"massmap_xr.{self.module}"), self.name)

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        func = self.target()
        data = obj._obj

        def bound(*args, **kwargs):
            return func(data, *args, **kwargs)

        return functools.update_wrapper(bound, func)


class _Accessor:
    def __init__(self, obj):
        self._obj = obj

    @classmethod
    def delegates(cls) -> dict[str, _Delegate]:
        """Method name → delegate, for documentation and tests."""
        return {k: v for k, v in vars(cls).items() if isinstance(v, _Delegate)}


@xr.register_dataset_accessor("massmap")
class MassmapAccessor(_Accessor):
    """Posterior-cube methods on an :class:`xarray.Dataset`: ``ds.massmap.<method>(...)``.

    Storage: ``to_store(path)`` (``materialize=False``: a recipe store, computed on read), ``init_store(path)`` + ``write_slabs(path, halo_range=...)``
    (several writers), ``append_halos_to(path)``, ``append_realizations_to(path)``.
    Analysis: ``marginalize``, ``cdf``, ``summary``, ``quantile``, ``fit_normal``, ``sample``,
    ``calibration``, ``halo_prior``.  Figures: ``plot_posterior``, ``plot_calibration``,
    ``plot_fit``.  Lensing: ``kappa_map(n, flat=ARCMIN | nside=NSIDE, z_source=Z)``.
    """

    to_store = _Delegate("store", "to_store")
    init_store = _Delegate("store", "init_store")
    write_slabs = _Delegate("store", "write_slabs")
    append_halos_to = _Delegate("store", "append_halos")
    append_realizations_to = _Delegate("store", "append_realizations")
    marginalize = _Delegate("analysis", "marginalize")
    cdf = _Delegate("analysis", "cdf")
    summary = _Delegate("analysis", "summary")
    quantile = _Delegate("analysis", "quantile")
    fit_normal = _Delegate("analysis", "fit_normal")
    sample = _Delegate("analysis", "sample")
    calibration = _Delegate("analysis", "calibration")
    halo_prior = _Delegate("analysis", "halo_prior")
    plot_posterior = _Delegate("analysis.plots", "plot_posterior")
    plot_calibration = _Delegate("analysis.plots", "plot_calibration")
    plot_fit = _Delegate("analysis.plots", "plot_fit")
    kappa_map = _Delegate("lensing", "kappa_map")


@xr.register_dataarray_accessor("massmap")
class MassmapArrayAccessor(_Accessor):
    """Methods on sampled masses and maps (:class:`xarray.DataArray`): ``da.massmap.<method>(...)``.

    On sampled masses (``ds.massmap.sample(n)``): ``project_flat``, ``project_healpix``.
    On maps: ``statistics`` (mean, std, quantiles, S/N), ``write`` (by suffix: .zarr, .nc, .fits,
    .png), ``to_fits``, ``plot`` (one map), ``plot_maps`` (a sample stack or statistics).
    Lensing, on sampled masses: ``kappa_flat``, ``kappa_healpix``, ``shear_flat``,
    ``shear_healpix``; on a flat κ map: ``kaiser_squires``.
    """

    project_flat = _Delegate("sky", "project_flat")
    project_healpix = _Delegate("sky", "project_healpix")
    statistics = _Delegate("sky", "map_statistics")
    write = _Delegate("sky", "write_map")
    to_fits = _Delegate("sky", "to_fits")
    plot = _Delegate("sky", "plot_map")
    plot_maps = _Delegate("sky", "plot_maps")
    kappa_flat = _Delegate("lensing", "kappa_flat")
    kappa_healpix = _Delegate("lensing", "kappa_healpix")
    shear_flat = _Delegate("lensing", "shear_flat")
    shear_healpix = _Delegate("lensing", "shear_healpix")
    kaiser_squires = _Delegate("lensing", "kaiser_squires")
