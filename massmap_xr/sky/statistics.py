"""Per-pixel posterior statistics of stacks of sampled sky maps (:func:`map_statistics`).

The mean, standard deviation, quantiles and signal-to-noise of every pixel (or HEALPix
cell) over the samples, and with a truth map on the same grid (aligned by
:func:`align_truth`) the standardised residuals ``(mean - truth) / std``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from massmap_xr.errors import ProjectionError
from massmap_xr.sky.grid import CELL_DIM, QUANTILE_DIM, attrs_scalar, map_kind, spatial_dims

__all__ = ["align_truth", "map_statistics"]


def align_truth(maps: xr.DataArray, truth, kind):
    """``(truth, maps)`` on one grid: ``truth`` checked against ``maps`` (of map kind ``kind``).

    A flat truth map must have the same pixels and tangent point; HEALPix maps with
    different occupied cells are both reindexed onto the union of their cells (missing
    cells hold 0).  Raises :class:`~massmap_xr.errors.ProjectionError` otherwise.
    """
    if not isinstance(truth, xr.DataArray):
        raise ProjectionError(f"truth must be a DataArray map made with the same grid, got {type(truth).__name__}")
    spatial = spatial_dims(kind)
    extra = [d for d in truth.dims if d not in spatial]
    for d in extra:
        if truth.sizes[d] != 1:
            raise ProjectionError(
                f"truth must be a single map with dims {spatial}, got dims {tuple(truth.dims)} "
                f"({d!r} has length {truth.sizes[d]})"
            )
    truth = truth.squeeze(extra, drop=True) if extra else truth
    if set(truth.dims) != set(spatial):
        raise ProjectionError(f"truth map has dims {tuple(truth.dims)}, the maps have {spatial}: not the same grid")
    mu, tu = maps.attrs.get("units"), truth.attrs.get("units")
    if mu is not None and tu is not None and mu != tu:
        raise ProjectionError(f"truth map has units {tu!r} but the maps have {mu!r}; project both with the same quantity")
    if kind == "flat":
        for d in spatial:
            a, b = np.asarray(maps[d].values), np.asarray(truth[d].values)
            if a.shape != b.shape or not np.allclose(a, b, rtol=0, atol=1e-9 * max(1.0, np.abs(a).max())):
                raise ProjectionError(f"truth map grid differs from the maps along {d!r}; project both with the same grid")
        for k in ("CRVAL1", "CRVAL2"):
            if k in maps.attrs and k in truth.attrs and not np.isclose(maps.attrs[k], truth.attrs[k], rtol=0, atol=1e-12):
                raise ProjectionError(f"truth map has a different tangent point ({k}); project both with the same center")
        return truth.transpose(*spatial).assign_coords({d: maps[d] for d in spatial}), maps
    lv_m, lv_t = maps["cell_ids"].attrs, truth["cell_ids"].attrs
    if (lv_m.get("level"), lv_m.get("indexing_scheme")) != (lv_t.get("level"), lv_t.get("indexing_scheme")):
        raise ProjectionError(
            f"truth map is HEALPix level {lv_t.get('level')} ({lv_t.get('indexing_scheme')}), the maps are "
            f"level {lv_m.get('level')} ({lv_m.get('indexing_scheme')}); project both with the same nside/nest"
        )
    # occupied-cell maps: a cell missing from one map holds no mass in it
    ids_m = np.asarray(maps["cell_ids"].values)
    ids_t = np.asarray(truth["cell_ids"].values)
    if ids_m.shape == ids_t.shape and np.array_equal(ids_m, ids_t):
        return truth, maps
    cell_attrs = dict(maps["cell_ids"].attrs)
    union = np.union1d(ids_m, ids_t)
    maps = _reindex_cells(maps, union, cell_attrs)
    truth = _reindex_cells(truth, union, cell_attrs)
    return truth, maps


def _reindex_cells(obj, union, cell_attrs):
    out = obj.swap_dims({CELL_DIM: "cell_ids"}).reindex(cell_ids=union, fill_value=0.0)
    out = out.swap_dims({"cell_ids": CELL_DIM})
    out["cell_ids"].attrs = dict(cell_attrs)
    return out


def _safe_ratio(num, den):
    """num / den where den > 0; 0 where num == den == 0; NaN where den == 0 and num != 0."""
    pos = den > 0
    return xr.where(pos, num / den.where(pos), xr.where(num == 0, 0.0, np.nan))


def map_statistics(
    maps: xr.DataArray,
    *,
    truth: xr.DataArray | None = None,
    quantiles: Sequence[float] = (0.16, 0.5, 0.84),
) -> xr.Dataset:
    """Per-pixel posterior statistics of a stack of sampled maps.

    Parameters
    ----------
    maps : xarray.DataArray
        Maps from :func:`project_flat` / :func:`project_healpix` with a sample dimension
        (dims ``(sample, y, x)`` or ``(sample, cells)``), numpy- or dask-backed.
    truth : xarray.DataArray, optional
        A map of the true masses on the same grid and quantity (e.g. ``project_flat(
        ds.mass_true, ...)`` with the same center/size/pixel_scale).  HEALPix maps with
        different occupied cells are aligned on the union of their cells (missing = 0).
    quantiles : sequence of float, default (0.16, 0.5, 0.84)
        Quantile levels in [0, 1].

    Returns
    -------
    xarray.Dataset
        ``mean``, ``std`` (over samples, ddof=0; units of the maps), ``quantiles``
        (dim ``quantile``), ``snr = mean / std`` (0 where mean = std = 0, NaN where only
        std = 0) and, with ``truth``, ``truth`` and ``residual = (mean - truth) / std``
        (same rule where std = 0).  Map coordinates and grid attrs are kept; lazy for dask
        input.

    Examples
    --------
    >>> import xarray as xr
    >>> from massmap_xr.sky import project_flat
    >>> m = xr.DataArray([[1e12, 3e12]], dims=("halo", "sample"),
    ...                  coords={"ra": ("halo", [150.0]), "dec": ("halo", [2.0])})
    >>> st = map_statistics(project_flat(m, pixel_scale=1.0))
    >>> float(st["mean"].max()), float(st["std"].max()), float(st["snr"].max())
    (2000000000000.0, 1000000000000.0, 2.0)
    """
    if not isinstance(maps, xr.DataArray):
        raise ProjectionError(f"maps must be a DataArray of sampled maps, got {type(maps).__name__}")
    kind = map_kind(maps)
    spatial = spatial_dims(kind)
    others = [d for d in maps.dims if d not in spatial]
    if len(others) != 1:
        raise ProjectionError(
            f"map_statistics needs maps with exactly one sample dimension besides {spatial}, got dims {tuple(maps.dims)}"
        )
    sdim = others[0]
    if maps.sizes[sdim] == 0:
        raise ProjectionError(f"map_statistics: the sample dimension {sdim!r} is empty")
    try:
        if isinstance(quantiles, (str, bytes)):
            raise TypeError
        q = np.atleast_1d(np.asarray(quantiles, dtype=float))
    except (TypeError, ValueError):
        raise ProjectionError(f"quantiles must be a sequence of levels in [0, 1] (e.g. (0.16, 0.5, 0.84)), got {quantiles!r}") from None
    if q.ndim != 1 or q.size == 0 or not np.all((q >= 0) & (q <= 1)):
        raise ProjectionError(f"quantiles must be levels in [0, 1], got {quantiles!r}")
    if truth is not None:
        truth, maps = align_truth(maps, truth, kind)
    m = maps.drop_vars([c for c in maps.coords if sdim in maps[c].dims and c != sdim])
    if m.chunks is not None:
        m = m.chunk({sdim: -1})
    units = maps.attrs.get("units", "")
    name = maps.attrs.get("long_name", "map")
    mean = m.mean(sdim)
    std = m.std(sdim)
    qs = m.quantile(q, dim=sdim)
    if qs.dims[0] != QUANTILE_DIM:
        qs = qs.transpose(QUANTILE_DIM, ...)
    snr = _safe_ratio(mean, std)
    out = xr.Dataset(
        {
            "mean": mean.assign_attrs(units=units, long_name=f"posterior mean of {name}", cell_methods=f"{sdim}: mean"),
            "std": std.assign_attrs(units=units, long_name=f"posterior standard deviation of {name}",
                                    cell_methods=f"{sdim}: standard_deviation"),
            "quantiles": qs.assign_attrs(units=units, long_name=f"posterior quantiles of {name}",
                                         cell_methods=f"{sdim}: quantile"),
            "snr": snr.assign_attrs(units="1", long_name="signal-to-noise ratio mean / std"),
        }
    )
    if truth is not None:
        tr = truth.drop_vars([c for c in truth.coords if c not in out.coords and c not in truth.dims], errors="ignore")
        out["truth"] = (tr.dims, tr.data, {"units": units, "long_name": f"true {name}"})
        out["residual"] = _safe_ratio(out["mean"] - out["truth"], out["std"]).assign_attrs(
            units="1", long_name="standardised residual (mean - truth) / std"
        )
    if "pixel_area" in out.coords:  # CF: per-pixel quantities point to the pixels' solid angle
        for k in ("mean", "std", "quantiles", "truth"):
            if k in out:
                out[k].attrs["cell_measures"] = "area: pixel_area"
    out[QUANTILE_DIM].attrs = {"long_name": "quantile level", "units": "1"}
    out.attrs = {k: attrs_scalar(v) for k, v in maps.attrs.items() if k not in ("units", "long_name", "cell_measures")}
    out.attrs["n_samples"] = int(maps.sizes[sdim])
    return out


# --------------------------------------------------------------------------------------
