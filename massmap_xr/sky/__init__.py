"""Sky maps: the last stage, halo masses (posterior draws or point values) projected onto the sky.

Masses along ``halo`` with ``ra``/``dec`` are summed into the pixels of a flat gnomonic grid
or into HEALPix cells, one map per sample; the stacks are reduced to per-pixel posterior
statistics and written to Zarr, NetCDF, FITS or a figure.  Imports run downwards: ``export``
→ ``plots`` / ``fits`` → ``statistics`` / ``project`` → ``grid``.

- ``grid``: :class:`FlatGrid` (the gnomonic pixel grid and its FITS WCS), ``flat_header``,
  ``flat_wcs``, the map dims and kinds (``map_kind``, ``spatial_dims``) and shared checks.
- ``project``: ``project_flat`` and ``project_healpix``, with the checks of masses and
  positions and the accumulation of masses into pixels.
- ``statistics``: ``map_statistics`` (mean, std, quantiles, snr, residuals against a truth map).
- ``fits``: ``to_fits`` and ``read_fits`` (flat images with WCS, HEALPix binary tables).
- ``plots``: the figures (``plot_map``, ``plot_healpix``, ``plot_statistics``,
  ``plot_residuals``, ``plot_maps``, ``rasterize_healpix``); loaded, with matplotlib, on first use.
- ``export``: ``write_map``, the writer chosen by the file's suffix.
"""

import importlib

from massmap_xr.geometry import field_center
from massmap_xr.sky.export import write_map
from massmap_xr.sky.fits import read_fits, to_fits
from massmap_xr.sky.grid import (
    CELL_DIM,
    FLAT_DIMS,
    WCS_KEYS,
    FlatGrid,
    flat_header,
    flat_wcs,
    map_kind,
    spatial_dims,
)
from massmap_xr.sky.project import (
    accumulate_cells,
    flat_grid_shape,
    project_flat,
    project_healpix,
    sample_coords,
    validate_masses,
    validate_pixel_scale,
    validate_positions,
    validate_quantity,
)
from massmap_xr.sky.statistics import map_statistics

_PLOTS = ("plot_map", "plot_healpix", "plot_statistics", "plot_residuals", "plot_maps", "rasterize_healpix")
__all__ = [
    "WCS_KEYS",
    "FlatGrid",
    "field_center",
    "flat_header",
    "flat_wcs",
    "map_statistics",
    "project_flat",
    "project_healpix",
    "read_fits",
    "to_fits",
    "write_map",
    *_PLOTS,
    # the grids, map kinds and projection steps, for other map makers
    "CELL_DIM",
    "FLAT_DIMS",
    "map_kind",
    "spatial_dims",
    "accumulate_cells",
    "flat_grid_shape",
    "sample_coords",
    "validate_masses",
    "validate_pixel_scale",
    "validate_positions",
    "validate_quantity",
]


def __getattr__(name):  # the figures load matplotlib on first use
    if name in _PLOTS:
        return getattr(importlib.import_module("massmap_xr.sky.plots"), name)
    raise AttributeError(f"module 'massmap_xr.sky' has no attribute {name!r}")
