"""Writers for the command line: per-halo summaries to CSV or NetCDF, mass samples to Zarr or NetCDF.

Both refuse to replace an existing output unless ``overwrite=True``
(:func:`massmap_xr.errors.check_output`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import xarray as xr

from massmap_xr.analysis.reductions import rows_per_batch, summary
from massmap_xr.errors import AnalysisError, check_output

__all__ = ["write_samples", "write_summary"]


def _level_tag(level: float) -> str:
    """``0.68 -> "68"``, ``0.997 -> "99p7"`` (for flat column names)."""
    return f"{100 * level:g}".replace(".", "p")


def _flat_summary(summ: xr.Dataset) -> xr.Dataset:
    """Replace ``lower``/``upper(level, halo)`` by ``lower_68``, ``upper_68``, ... columns."""
    out = summ.drop_vars(["lower", "upper", "level"])
    for v in summ["level"].values:
        tag = _level_tag(float(v))
        for name in ("lower", "upper"):
            out[f"{name}_{tag}"] = summ[name].sel(level=v, drop=True)
    return out


def write_summary(ds: xr.Dataset, path, *, levels: Sequence[float] = (0.68, 0.95), overwrite: bool = False) -> str:
    """Write per-halo summaries to CSV or NetCDF.

    Parameters
    ----------
    ds : xarray.Dataset
        A posterior cube (summarised with :func:`summary` at ``levels``, plus its catalogue
        variables ``z``, ``lum_obs``, ``mass_true``, ``sigma_obs`` where present) or a Dataset
        already returned by :func:`summary` (written as it is).
    path : str or path-like
        ``.csv``: one row per halo; columns ``halo``, ``ra``, ``dec`` (deg), catalogue variables
        (``mass_true`` in M_sun), ``mean``, ``std``, ``median``, ``mode`` and ``lower_<L>``,
        ``upper_<L>`` for each level in percent (``lower_68``; ``99p7`` for 0.997), all log
        masses in log10(M / M_sun).  ``.nc``: the Dataset with its ``level`` dimension and
        units attributes (h5netcdf engine).
    levels : sequence of float, default (0.68, 0.95)
        Central credible levels, used when ``ds`` is a cube.
    overwrite : bool, default False
        Replace an existing file (otherwise :class:`~massmap_xr.errors.OutputExistsError`).

    Returns
    -------
    str
        The path written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".nc", ".nc4"):
        raise AnalysisError(f"write_summary: cannot write {str(path)!r}; use a .csv or .nc file name")
    check_output(path, overwrite=overwrite, what="write_summary")
    if isinstance(ds, xr.Dataset) and "posterior" in ds.data_vars:
        summ = summary(ds, levels)
        catalogue = {k: ds[k].variable for k in ("z", "lum_obs", "mass_true", "sigma_obs") if k in ds and ds[k].dims == ("halo",)}
        summ = xr.Dataset({**catalogue, **summ.data_vars}, coords=summ.coords, attrs=summ.attrs)
    elif isinstance(ds, xr.Dataset) and {"median", "lower", "upper"} <= set(ds.data_vars):
        summ = ds
    else:
        raise AnalysisError("write_summary: expected a posterior cube or a Dataset returned by summary()")
    summ = summ.compute()
    if suffix == ".csv":
        _flat_summary(summ).to_dataframe().to_csv(path)
    else:
        summ.to_netcdf(path, engine="h5netcdf")
    return str(path)


def write_samples(samples: xr.DataArray, path, *, overwrite: bool = False) -> str:
    """Write mass samples from :func:`sample` to a Zarr (format 3) store or a NetCDF file.

    The output holds variable ``mass(halo, sample)`` (M_sun) with coordinates ``halo``,
    ``sample``, ``realization(sample)``, ``ra``/``dec`` and the sampling attributes (method,
    correlated or independent, seed).  Dask-backed samples are written halo slab by halo slab.

    Parameters
    ----------
    samples : xarray.DataArray
        Output of :func:`sample`, dims ``(halo, sample)``.
    path : str or path-like
        A name ending in ``.nc`` writes NetCDF-4 (h5netcdf engine); anything else is a Zarr store
        (a directory, or any URL Zarr understands), chunked by halo slab and written without
        consolidated metadata (not part of the Zarr 3 specification).
    overwrite : bool, default False
        Replace an existing store or file instead of failing.

    Returns
    -------
    str
        The path written.
    """
    if not isinstance(samples, xr.DataArray) or set(samples.dims) != {"halo", "sample"}:
        raise AnalysisError("write_samples: expected the (halo, sample) DataArray returned by sample()")
    path = str(path)
    check_output(path, overwrite=overwrite, what="write_samples")
    out = samples.transpose("halo", "sample").rename("mass").to_dataset().drop_encoding()
    if Path(path).suffix.lower() in (".nc", ".nc4"):
        out.to_netcdf(path, mode="w", engine="h5netcdf")
        return path
    chunks = out["mass"].variable.chunksizes
    size = chunks["halo"][0] if chunks else max(1, min(out.sizes["halo"], rows_per_batch(out.sizes["sample"])))
    out = out.chunk({"halo": size, "sample": -1})  # Zarr needs regular chunks
    out.to_zarr(path, mode="w" if overwrite else "w-", zarr_format=3, consolidated=False)
    return path
