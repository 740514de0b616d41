"""massmap_xr: probabilistic halo mass maps with xarray and Zarr."""

from __future__ import annotations

__version__ = "0.1.0"
SCHEMA_VERSION = "1.0"

from massmap_xr import errors  # noqa: E402,F401
from massmap_xr import accessor  # noqa: E402,F401
from massmap_xr.catalog import mock_catalog, read_catalog, seed_field  # noqa: E402
from massmap_xr.cube import build_posterior  # noqa: E402
from massmap_xr.hyper import from_arviz, read_hyper, reddick2013  # noqa: E402
from massmap_xr.prior import TablePrior, TinkerPrior  # noqa: E402

__all__ = [
    "__version__",
    "SCHEMA_VERSION",
    "build_posterior",
    "mock_catalog",
    "read_catalog",
    "seed_field",
    "reddick2013",
    "read_hyper",
    "from_arviz",
    "TinkerPrior",
    "TablePrior",
]
from massmap_xr.store import open_store, verify_store  # noqa: E402

__all__ += ["open_store", "verify_store"]
