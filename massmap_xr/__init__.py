"""massmap_xr: probabilistic halo mass maps with xarray and Zarr.

Data flow: catalogue + hyperparameter samples + mass prior → posterior cube
(:func:`build_posterior`) → Zarr store (:func:`to_store`, :func:`open_store`) → analysis
(``ds.massmap.summary()``, ``ds.massmap.sample(n)``, ...) → sky maps
(:func:`massmap_xr.sky.project_flat`, :func:`massmap_xr.sky.project_healpix`).

The topic modules ``analysis``, ``sky``, ``inference``, ``plot`` and ``mapplot`` load on first
use (``massmap_xr.sky.project_flat`` works after a plain ``import massmap_xr``).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

from massmap_xr import errors  # noqa: F401
from massmap_xr._version import KERNEL_VERSION, SCHEMA_VERSION, __version__


class _AccessorRegistration(importlib.abc.MetaPathFinder):
    """Registers the ``.massmap`` accessors right after xarray's first import.

    ``import massmap_xr`` must make ``ds.massmap`` work, but importing xarray (and pandas behind
    it) costs most of a second, which ``massmap --help`` should not pay.  Until xarray is loaded
    this finder sits on :data:`sys.meta_path`; it answers only for ``xarray``, lets the normal
    finders locate it, and runs :mod:`massmap_xr.accessor` once xarray's own module has executed.
    """

    def find_spec(self, name, path=None, target=None):
        if name != "xarray":
            return None
        _remove_hook()
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _RegisterAfter(spec.loader)
        return spec


class _RegisterAfter(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__spec__.loader = self.loader  # xarray sees its own loader (resources, reloads)
        self.loader.exec_module(module)
        importlib.import_module("massmap_xr.accessor")

    def __getattr__(self, name):  # get_resource_reader, is_package, ... of the real loader
        return getattr(self.loader, name)


def _remove_hook() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _AccessorRegistration)]


if "xarray" in sys.modules:
    from massmap_xr import accessor  # noqa: F401
else:
    _remove_hook()
    sys.meta_path.insert(0, _AccessorRegistration())

# Everything else loads on first use, so ``import massmap_xr`` (and ``massmap --help``) does not
# import dask, zarr, numba or hmf.
_LAZY_EAGER = {
    "mock_catalog": "catalog", "read_catalog": "catalog", "seed_field": "catalog",
    "build_posterior": "cube",
    "from_arviz": "model.hyper", "read_hyper": "model.hyper", "reddick2013": "model.hyper",
    "TablePrior": "model.prior", "TinkerPrior": "model.prior", "read_prior_table": "model.prior",
    "append_halos": "store", "append_realizations": "store", "build_like_store": "store",
    "open_store": "store", "store_info": "store", "to_store": "store", "verify_store": "store",
}

_LAZY_MODULES = ("accessor", "analysis", "sky", "inference", "model", "kernels", "demo", "cli", "catalog", "cube", "store",
                 "lensing", "geometry", "units", "log")
_LAZY_FUNCTIONS = {
    **_LAZY_EAGER,
    "infer_hyperparameters": "inference",
    "log_likelihood": "inference",
    "project_flat": "sky",
    "project_healpix": "sky",
    "map_statistics": "sky",
}

__all__ = [
    "__version__",
    "SCHEMA_VERSION",
    "KERNEL_VERSION",
    "build_posterior",
    "mock_catalog",
    "read_catalog",
    "seed_field",
    "reddick2013",
    "read_hyper",
    "from_arviz",
    "TinkerPrior",
    "TablePrior",
    "read_prior_table",
    "to_store",
    "open_store",
    "verify_store",
    "store_info",
    "append_halos",
    "append_realizations",
    "build_like_store",
    *(k for k in _LAZY_FUNCTIONS if k not in _LAZY_EAGER),
]


def __getattr__(name: str):
    if name in _LAZY_MODULES:
        return importlib.import_module(f"massmap_xr.{name}")
    if name in _LAZY_FUNCTIONS:
        return getattr(importlib.import_module(f"massmap_xr.{_LAZY_FUNCTIONS[name]}"), name)
    raise AttributeError(f"module 'massmap_xr' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_LAZY_MODULES, *_LAZY_FUNCTIONS})
