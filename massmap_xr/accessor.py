"""The ``.massmap`` accessor: a thin facade over the topic modules.

Every method delegates to a plain function (in :mod:`massmap_xr.store`,
:mod:`massmap_xr.analysis`, :mod:`massmap_xr.plot`) that takes the cube as first argument.
"""

from __future__ import annotations

import xarray as xr

__all__ = ["MassmapAccessor"]


@xr.register_dataset_accessor("massmap")
class MassmapAccessor:
    """Posterior-cube methods on an :class:`xarray.Dataset` (``ds.massmap.<method>``)."""

    def __init__(self, ds: xr.Dataset):
        self._ds = ds

    # storage ----------------------------------------------------------------
    def to_store(self, path, **kwargs):
        """Write the cube to a Zarr store; see :func:`massmap_xr.store.to_store`."""
        from massmap_xr.store import to_store

        return to_store(self._ds, path, **kwargs)

    # analysis ---------------------------------------------------------------
    def marginalize(self):
        """Hyperparameter-marginal posterior (halo, mass); see :func:`massmap_xr.analysis.marginalize`."""
        from massmap_xr.analysis import marginalize

        return marginalize(self._ds)
