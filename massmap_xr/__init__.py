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

from massmap_xr import accessor, errors  # noqa: F401
from massmap_xr._version import KERNEL_VERSION, SCHEMA_VERSION, __version__

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

_LAZY_MODULES = ("analysis", "sky", "inference", "model", "kernels", "demo", "cli", "catalog", "cube", "store",
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
