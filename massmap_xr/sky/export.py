"""One-call export of sky maps (:func:`write_map`), the format chosen by the file's suffix.

``.zarr``/``.nc`` store the maps as they are, ``.fits``/``.fit`` go through
:func:`massmap_xr.sky.fits.to_fits`, and ``.png``/``.pdf``/``.svg`` draw a figure with
:func:`massmap_xr.sky.plots.plot_maps` (matplotlib is loaded only then).
"""

from __future__ import annotations

from pathlib import Path

import xarray as xr

from massmap_xr.errors import ProjectionError, check_output
from massmap_xr.log import compute_once, logger, progress_bar
from massmap_xr.sky.fits import to_fits

__all__ = ["write_map"]

_SUFFIXES = (".zarr", ".nc", ".fits", ".fit", ".png", ".pdf", ".svg")


def write_map(maps: xr.DataArray | xr.Dataset, path, *, overwrite: bool = False, progress: bool = False,
              **plot_kwargs) -> Path:
    """Write maps to ``path``, choosing the format from the extension.

    ``.zarr`` (Zarr format 3, no consolidated metadata) and ``.nc`` (NetCDF4 via h5netcdf)
    store the maps as they are (a DataArray is stored as a Dataset variable named after it);
    ``.fits``/``.fit`` use :func:`to_fits`; ``.png``/``.pdf``/``.svg`` draw a figure with
    :func:`massmap_xr.sky.plots.plot_maps` (posterior mean, std, S/N, and with a truth map the
    truth and the residual in σ, for a stack or statistics; a single panel for one map).

    Every format computes dask-backed maps exactly once (one ``dask.compute`` of all the
    variables, :func:`massmap_xr.log.compute_once`, or one ``to_zarr``/``to_netcdf`` pass), so
    the samples behind the maps are drawn, and the store read, a single time.

    Parameters
    ----------
    maps : xarray.DataArray or xarray.Dataset
        Output of :func:`project_flat`, :func:`project_healpix` or :func:`map_statistics`.
    path : str or path-like
        Output path; its extension picks the format.
    overwrite : bool, default False
        Replace an existing file or store.
    progress : bool, default False
        Show a progress bar (standard error) while dask computes the maps.
    **plot_kwargs
        Passed to :func:`massmap_xr.sky.plots.plot_maps` for image formats.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        raise ProjectionError(f"write_map: unknown output extension {suffix!r}; use one of {', '.join(_SUFFIXES)}")
    if not isinstance(maps, (xr.DataArray, xr.Dataset)):
        raise ProjectionError(f"write_map: maps must be a DataArray or Dataset, got {type(maps).__name__}")
    check_output(path, overwrite=overwrite, what="write_map")
    logger.info("computing the maps for %s", path)
    if suffix in (".fits", ".fit", ".png", ".pdf", ".svg"):
        maps = compute_once(maps, progress=progress)
    if suffix in (".fits", ".fit"):
        return to_fits(maps, path, overwrite=overwrite)
    if suffix in (".png", ".pdf", ".svg"):
        from massmap_xr.sky.plots import plot_maps

        fig = plot_maps(maps, **plot_kwargs)
        try:
            fig.savefig(path, dpi=150, bbox_inches="tight")
        finally:
            import matplotlib.pyplot as plt

            plt.close(fig)
        return path
    ds = maps.to_dataset(name=maps.name or "map") if isinstance(maps, xr.DataArray) else maps
    if isinstance(maps, xr.DataArray):
        ds.attrs = {}
    with progress_bar(progress and bool(ds.chunks)):
        if suffix == ".zarr":
            ds.to_zarr(path, mode="w" if overwrite else "w-", zarr_format=3, consolidated=False)
        else:
            ds.to_netcdf(path, engine="h5netcdf", mode="w")
    return path
