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
from massmap_xr.catalog import mock_catalog, read_catalog, seed_field
from massmap_xr.cube import build_posterior
from massmap_xr.model.hyper import from_arviz, read_hyper, reddick2013
from massmap_xr.model.prior import TablePrior, TinkerPrior, read_prior_table
from massmap_xr.store import (
    append_halos,
    append_realizations,
    build_like_store,
    open_store,
    store_info,
    to_store,
    verify_store,
)

_LAZY_MODULES = ("analysis", "sky", "inference", "model", "kernels", "demo", "cli")
_LAZY_FUNCTIONS = {
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
    *_LAZY_FUNCTIONS,
]


def __getattr__(name: str):
    if name in _LAZY_MODULES:
        return importlib.import_module(f"massmap_xr.{name}")
    if name in _LAZY_FUNCTIONS:
        return getattr(importlib.import_module(f"massmap_xr.{_LAZY_FUNCTIONS[name]}"), name)
    raise AttributeError(f"module 'massmap_xr' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_LAZY_MODULES, *_LAZY_FUNCTIONS})
