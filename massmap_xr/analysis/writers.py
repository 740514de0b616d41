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
from massmap_xr.log import compute_once, logger, progress_bar

__all__ = ["write_samples", "write_summary"]


def _level_tag(level: float) -> str:
    """``0.68 -> "68"``, ``0.997 -> "99p7"`` (for flat column names)."""
    return f"{100 * level:g}".replace(".", "p")


#: CSV column names of the summary statistics (log10 masses) and of catalogue variables with units
_LOG_COLUMNS = ("mean", "std", "median", "mode")
_UNIT_COLUMNS = {"mass_true": "mass_true_solMass", "lum_obs": "lum_obs_solLum"}


def _flat_summary(summ: xr.Dataset) -> xr.Dataset:
    """The summary as CSV columns: ``lower``/``upper(level, halo)`` as ``log10_mass_lower_68``,
    ``log10_mass_upper_68``, ...; ``mean`` ... as ``log10_mass_mean`` ...; linear masses and
    luminosities named with their unit (``mass_true_solMass``, ``lum_obs_solLum``)."""
    out = summ.drop_vars(["lower", "upper", "level"])
    for v in summ["level"].values:
        tag = _level_tag(float(v))
        for name in ("lower", "upper"):
            var = summ[name].sel(level=v, drop=True)
            out[f"{name}_{tag}"] = var.assign_attrs(
                long_name=f"{'lower' if name == 'lower' else 'upper'} end of the central {100 * float(v):g} % "
                          "credible interval of log10(M / M_sun)")
    out = out.rename({k: f"log10_mass_{k}" for k in out.data_vars if k in _LOG_COLUMNS or k[:6] in ("lower_", "upper_")})
    return out.rename({k: v for k, v in _UNIT_COLUMNS.items() if k in out.data_vars})


def _csv_header(table: xr.Dataset, columns) -> str:
    """``#`` lines naming every column with its units and meaning (``pandas.read_csv(path, comment="#")``)."""
    lines = ["# massmap_xr per-halo posterior summary, one row per halo. Columns [units, astropy spelling]:",
             "#   halo: halo id"]
    for name in columns:
        var = table[name]
        lines.append(f"#   {name}: [{var.attrs.get('units') or '1'}] {var.attrs.get('long_name', name)}")
    lines.append("# log10_mass_* columns are log10(M / M_sun) (masses in M_sun, not M_sun/h); "
                 "log10_mass_std is in dex")
    return "\n".join(lines) + "\n"


def write_summary(ds: xr.Dataset, path, *, levels: Sequence[float] = (0.68, 0.95), overwrite: bool = False,
                  progress: bool = False) -> str:
    """Write per-halo summaries to CSV or NetCDF.

    Parameters
    ----------
    ds : xarray.Dataset
        A posterior cube (summarised with :func:`summary` at ``levels``, plus its catalogue
        variables ``z``, ``lum_obs``, ``mass_true``, ``sigma_obs`` where present) or a Dataset
        already returned by :func:`summary` (written as it is).
    path : str or path-like
        ``.csv``: a header of ``#`` lines naming every column with its units, then one row per
        halo; columns ``halo``, ``ra``, ``dec`` (deg), catalogue variables (``z``,
        ``lum_obs_solLum``, ``mass_true_solMass``, ``sigma_obs``), ``log10_mass_mean``,
        ``log10_mass_std`` (dex), ``log10_mass_median``, ``log10_mass_mode`` and
        ``log10_mass_lower_<L>``, ``log10_mass_upper_<L>`` for each level in percent
        (``..._68``; ``99p7`` for 0.997), log masses in log10(M / M_sun).  Read it with
        ``pandas.read_csv(path, comment="#")``.  ``.nc``: the Dataset with its ``level``
        dimension and units attributes (h5netcdf engine).
    levels : sequence of float, default (0.68, 0.95)
        Central credible levels, used when ``ds`` is a cube.
    overwrite : bool, default False
        Replace an existing file (otherwise :class:`~massmap_xr.errors.OutputExistsError`).
    progress : bool, default False
        Show a progress bar (standard error) while dask computes the summaries (computed once,
        in one ``dask.compute``).

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
        summ = summ.assign_coords({c: ds[c].variable for c in summ.coords if c in ds.coords and c != "halo"
                                   and ds[c].dims == ("halo",)})  # with their units
    elif isinstance(ds, xr.Dataset) and {"median", "lower", "upper"} <= set(ds.data_vars):
        summ = ds
    else:
        raise AnalysisError("write_summary: expected a posterior cube or a Dataset returned by summary()")
    summ = compute_once(summ, progress=progress, what=f"summarising {summ.sizes.get('halo', 0)} halos")
    if suffix == ".csv":
        table = _flat_summary(summ)
        frame = table.to_dataframe()
        with open(path, "w", newline="") as fh:
            fh.write(_csv_header(table, frame.columns))
            frame.to_csv(fh)
    else:
        summ.to_netcdf(path, engine="h5netcdf")
    return str(path)


def write_samples(samples: xr.DataArray, path, *, overwrite: bool = False, progress: bool = False) -> str:
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
    progress : bool, default False
        Show a progress bar (standard error) while dask draws the samples (drawn once, in the
        one ``to_zarr`` / ``to_netcdf`` pass).

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
    logger.info("drawing %d samples of %d halos into %s", out.sizes["sample"], out.sizes["halo"], path)
    if Path(path).suffix.lower() in (".nc", ".nc4"):
        with progress_bar(progress and bool(out.chunks)):
            out.to_netcdf(path, mode="w", engine="h5netcdf")
        return path
    chunks = out["mass"].variable.chunksizes
    size = chunks["halo"][0] if chunks else max(1, min(out.sizes["halo"], rows_per_batch(out.sizes["sample"])))
    out = out.chunk({"halo": size, "sample": -1})  # Zarr needs regular chunks
    with progress_bar(progress):
        out.to_zarr(path, mode="w" if overwrite else "w-", zarr_format=3, consolidated=False)
    return path
