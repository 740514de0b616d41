"""Plots of sky mass maps.

Flat maps (from :func:`massmap_xr.sky.project_flat`) are drawn in grayscale on
:class:`astropy.visualization.wcsaxes.WCSAxes` with ra/dec ticks and a coordinate grid
(``coords="wcs"``, east to the left as on the sky), or on plain axes labelled with the
tangent-plane offsets in arcmin (``coords="offsets"``).  HEALPix maps (from
:func:`massmap_xr.sky.project_healpix`) are drawn with healpy's ``gnomview`` (default,
zoomed on the occupied cells), ``cartview`` or ``mollview``.

:func:`plot_statistics` puts the posterior mean, the posterior standard deviation and the
signal-to-noise side by side, and with a truth map the truth (on the mean's colour scale, so
they compare by eye) and the residual (mean − truth) / std in σ; :func:`plot_residuals` checks
the calibration of the posterior with the standardised residuals.  Colour bars name the
quantity and the pixel (``mass per 1′ pixel [M_sun]``) and carry a few evenly spaced ticks whose
labels never overlap; cells without data (HEALPix cells holding no halo) are drawn in
:data:`NO_DATA_COLOR`, a colour outside every colour map used, with a legend entry; a map made
from mock positions says so under the figure.  Every function returns the matplotlib Figure or
Axes it drew on; none selects a backend.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import xarray as xr

from massmap_xr.errors import ProjectionError
from massmap_xr.sky.grid import FlatGrid, map_kind, spatial_dims
from massmap_xr.sky.plotstyle import (
    NO_DATA_COLOR,
    RESIDUAL_CMAP,
    SNR_CMAP,
    add_colorbar,
    no_data_legend,
    position_note,
    quantity_label,
)
from massmap_xr.sky.statistics import map_statistics

__all__ = ["plot_healpix", "plot_map", "plot_maps", "plot_residuals", "plot_statistics", "rasterize_healpix"]

Stretch = Literal["linear", "log", "asinh"]


_HEALPIX_VIEWS = ("gnomonic", "gnomview", "cartview", "mollview")


def _single_map(map: xr.DataArray) -> xr.DataArray:
    if not isinstance(map, xr.DataArray):
        raise ProjectionError(f"expected a map DataArray, got {type(map).__name__}")
    kind = map_kind(map)
    spatial = spatial_dims(kind)
    extra = [d for d in map.dims if d not in spatial]
    long_extra = [d for d in extra if map.sizes[d] != 1]
    if long_extra:
        d = long_extra[0]
        raise ProjectionError(
            f"a map to plot must be one image, but it has dim {d!r} of length {map.sizes[d]}; "
            f"select one (map.isel({d}=0)) or plot map_statistics(map) with plot_statistics"
        )
    return map.squeeze(extra, drop=True).transpose(*spatial) if extra else map.transpose(*spatial)


def _label(map: xr.DataArray, default: str = "map") -> str:
    if map.attrs.get("units") in ("solMass", "solMass arcmin-2", "solMass deg-2", "solMass sr-1"):
        return quantity_label(map.attrs)
    name = map.attrs.get("long_name", map.name or default)
    units = map.attrs.get("units")
    return f"{name} [{units}]" if units not in (None, "", "1") else str(name)


def _limits(values: np.ndarray, stretch: str, vmin, vmax, percentile: float) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return (0.0 if vmin is None else vmin, 1.0 if vmax is None else vmax)
    if vmax is None:
        vmax = float(np.percentile(finite, percentile))
        if vmax <= 0:
            vmax = float(finite.max()) if finite.max() > 0 else 1.0
    if vmin is None:
        if stretch == "log":
            pos = finite[finite > 0]
            vmin = float(np.percentile(pos, 100.0 - percentile)) if pos.size else vmax / 1e3
        else:
            vmin = min(0.0, float(np.percentile(finite, 100.0 - percentile)))
    if vmin >= vmax:
        vmax = vmin + (abs(vmin) if vmin else 1.0)
    return float(vmin), float(vmax)


def _norm(values: np.ndarray, stretch: str, vmin=None, vmax=None, percentile: float = 99.5):
    """A matplotlib norm for ``values`` with limits from percentiles unless given."""
    from matplotlib import colors

    if stretch not in ("linear", "log", "asinh"):
        raise ProjectionError(f"unknown stretch {stretch!r}; use 'linear', 'log' or 'asinh'")
    vmin, vmax = _limits(np.asarray(values, dtype=float), stretch, vmin, vmax, percentile)
    if stretch == "linear":
        return colors.Normalize(vmin=vmin, vmax=vmax)
    if stretch == "log":
        if vmin <= 0:
            vmin = vmax / 1e3
        return colors.LogNorm(vmin=vmin, vmax=vmax, clip=True)
    finite = np.asarray(values, dtype=float)
    pos = finite[np.isfinite(finite) & (finite > 0)]
    width = float(np.median(pos)) if pos.size else (vmax - vmin) / 10.0
    return colors.AsinhNorm(linear_width=max(width, 1e-300), vmin=vmin, vmax=vmax)


def _smoothed(map: xr.DataArray, smooth: float | None) -> np.ndarray:
    values = np.asarray(map.values, dtype=float)
    if not smooth:
        return values
    if smooth < 0:
        raise ProjectionError(f"smooth must be a Gaussian sigma >= 0 in arcmin, got {smooth!r}")
    from scipy.ndimage import gaussian_filter

    grid = FlatGrid.from_coords(map)
    sig = (smooth / abs(grid.cdelt2 * 60.0), smooth / abs(grid.cdelt1 * 60.0))
    return gaussian_filter(np.nan_to_num(values), sig, mode="constant")


def _radec_ticks(ax) -> None:
    """Sexagesimal ra/dec ticks, few enough that the labels do not collide."""
    ax.coords[0].set_major_formatter("hh:mm:ss")
    ax.coords[1].set_major_formatter("dd:mm")
    ax.coords[0].set_ticks(number=4)
    ax.coords[1].set_ticks(number=5)


def plot_map(
    map: xr.DataArray,
    *,
    ax=None,
    coords: Literal["wcs", "offsets"] = "wcs",
    cmap: str = "gray",
    stretch: Stretch = "asinh",
    vmin: float | None = None,
    vmax: float | None = None,
    smooth: float | None = None,
    colorbar: bool = True,
    title: str | None = None,
    label: str | None = None,
    **healpix_kwargs,
):
    """Draw one map in grayscale.

    Parameters
    ----------
    map : xarray.DataArray
        A flat ``(y, x)`` or HEALPix ``(cells,)`` map (length-1 extra dims are dropped).
    ax : matplotlib.axes.Axes, optional
        Axes to draw on (a WCSAxes for ``coords="wcs"``; plain axes switch to offsets).
        Default: a new figure.
    coords : {"wcs", "offsets"}, default "wcs"
        ra/dec ticks and grid via astropy WCSAxes, or tangent-plane offsets in arcmin.
    cmap : str, default "gray"
        Colour map (high values white).
    stretch : {"linear", "log", "asinh"}, default "asinh"
        Brightness scaling; ``asinh`` is linear below the median positive value and
        logarithmic above, which suits mass maps dominated by a few massive halos.
    vmin, vmax : float, optional
        Display limits in the map's units (default: 0 or the 0.5th percentile, and the
        99.5th percentile).
    smooth : float, optional
        Gaussian sigma in arcmin applied for display only (flat maps; the sum is conserved).
    colorbar : bool, default True
        Add a colour bar labelled with the map's long_name and units.
    title : str, optional
        Axes title.
    label : str, optional
        Colour-bar label (default: the map's long_name and units).
    **healpix_kwargs
        Passed to :func:`plot_healpix` for HEALPix maps.

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on.
    """
    import matplotlib.pyplot as plt

    m = _single_map(map)
    if map_kind(m) == "healpix":
        kw = {"view": "gnomonic", "rot": None, "reso": None, "xsize": 400, "fill": None, "fig": None,
              "sub": None, "max_nside": 1024}
        unknown = set(healpix_kwargs) - set(kw)
        if unknown:
            raise TypeError(f"plot_map: unexpected keyword(s) {sorted(unknown)}")
        kw.update(healpix_kwargs)
        if ax is not None:
            raise ProjectionError("plot_map draws HEALPix maps in a figure panel: pass fig= and sub=, not ax=")
        return _draw_healpix(m, cmap=cmap, stretch=stretch, vmin=vmin, vmax=vmax, title=title,
                             colorbar=colorbar, label=label, **kw)[1]
    if coords not in ("wcs", "offsets"):
        raise ProjectionError(f"coords must be 'wcs' or 'offsets', got {coords!r}")
    grid = FlatGrid.from_coords(m)
    values = _smoothed(m, smooth)
    norm = _norm(values, stretch, vmin, vmax)
    if ax is None:
        fig = plt.figure(figsize=(6.4, 5.6))
        ax = fig.add_subplot(projection=grid.to_wcs()) if coords == "wcs" else fig.add_subplot()
    use_wcs = coords == "wcs" and hasattr(ax, "coords")
    if use_wcs:
        im = ax.imshow(values, origin="lower", cmap=cmap, norm=norm, interpolation="nearest")
        ra_ax, dec_ax = ax.coords[0], ax.coords[1]
        ra_ax.set_axislabel("right ascension (ICRS)")
        dec_ax.set_axislabel("declination (ICRS)")
        _radec_ticks(ax)
        ax.coords.grid(color="tab:orange", alpha=0.35, linestyle="dotted")
    else:
        x, y = grid.x, grid.y
        dx = grid.cdelt1 * 60.0
        dy = grid.cdelt2 * 60.0
        extent = (x[0] - dx / 2, x[-1] + dx / 2, y[0] - dy / 2, y[-1] + dy / 2)
        im = ax.imshow(values, origin="lower", cmap=cmap, norm=norm, extent=extent, interpolation="nearest")
        ax.set_xlabel("offset towards east [arcmin]")
        ax.set_ylabel("offset towards north [arcmin]")
    if colorbar:
        label = _label(m) if label is None else label
        if smooth:
            label += f"\nGaussian-smoothed, σ = {smooth:g}′"
        add_colorbar(ax.figure, im, ax, label, norm)
    if title:
        ax.set_title(title)
    return ax


def _healpy_axes(fig):
    from healpy.projaxes import SphericalProjAxes

    axes = [a for a in fig.axes if isinstance(a, SphericalProjAxes)]
    return axes or fig.axes


def _healpix_info(m: xr.DataArray) -> tuple[int, bool, np.ndarray, np.ndarray]:
    info = m["cell_ids"].attrs
    nside = 2 ** int(info["level"])
    nest = info.get("indexing_scheme") == "nested"
    return nside, nest, np.asarray(m["cell_ids"].values, dtype=np.int64), np.asarray(m.values, dtype=float)


def _healpix_center(ids, nside, nest):
    """Centre (lon, lat) in degrees and radius in degrees of a set of cells."""
    import healpy as hp

    vecs = np.asarray(hp.pix2vec(nside, ids, nest=nest))
    mean = vecs.sum(axis=1)
    mean /= np.linalg.norm(mean)
    lon, lat = hp.vec2ang(mean, lonlat=True)
    cosd = np.clip(vecs.T @ mean, -1.0, 1.0)
    radius = math.degrees(float(np.arccos(cosd.min()))) + math.degrees(hp.nside2resol(nside))
    return float(lon[0]), float(lat[0]), radius


def rasterize_healpix(map: xr.DataArray, grid: FlatGrid, fill: float = np.nan) -> np.ndarray:
    """Sample a HEALPix map at the pixel centres of a flat grid.

    Each grid pixel takes the value of the HEALPix cell containing its centre (``fill`` where
    that cell is absent from a partial map).  No full-sky array is made, so this works at any
    nside.

    Parameters
    ----------
    map : xarray.DataArray
        ``(cells,)`` HEALPix map.
    grid : massmap_xr.sky.FlatGrid
        Target grid.
    fill : float, default NaN
        Value for cells absent from the map.

    Returns
    -------
    numpy.ndarray
        Shape ``grid.shape``.
    """
    import healpy as hp

    nside, nest, ids, values = _healpix_info(_single_map(map))
    ra, dec = grid.radec()
    pix = hp.ang2pix(nside, ra, dec, nest=nest, lonlat=True)
    pos = np.clip(np.searchsorted(ids, pix), 0, max(ids.size - 1, 0))
    found = ids[pos] == pix if ids.size else np.zeros(pix.shape, bool)
    return np.where(found, values[pos] if ids.size else fill, fill)


def _degrade(ids, values, nside, nest, target, average):
    """Cells of a coarser nested grid: mass summed (or density averaged) over children."""
    import healpy as hp

    if not nest:
        ids = hp.ring2nest(nside, ids)
    shift = 2 * round(math.log2(nside // target))
    parent = ids >> shift
    up, inv = np.unique(parent, return_inverse=True)
    vals = np.bincount(inv.ravel(), weights=values, minlength=up.size)
    if average:
        vals = vals / 4**(shift // 2)
    return up, vals


def plot_healpix(
    map: xr.DataArray,
    *,
    view: Literal["gnomonic", "gnomview", "cartview", "mollview"] = "gnomonic",
    rot: Sequence[float] | None = None,
    reso: float | None = None,
    xsize: int = 400,
    fill: float | None = None,
    cmap: str = "gray",
    stretch: Stretch = "asinh",
    vmin: float | None = None,
    vmax: float | None = None,
    title: str | None = None,
    colorbar: bool = True,
    label: str | None = None,
    fig=None,
    sub: tuple[int, int, int] | None = None,
    max_nside: int = 1024,
):
    """Draw a HEALPix map.

    Parameters
    ----------
    map : xarray.DataArray
        A ``(cells,)`` map with a ``cell_ids`` coordinate carrying the xdggs attrs.
    view : {"gnomonic", "gnomview", "cartview", "mollview"}, default "gnomonic"
        ``"gnomonic"``: the cells sampled on a gnomonic grid (:func:`rasterize_healpix`) and drawn
        on astropy WCSAxes with ra/dec ticks, like a flat map; needs no full-sky array, so it
        suits the high nside of small fields.  The others are healpy's views, drawn from a
        full-sky array; above ``max_nside`` the map is first degraded to ``max_nside`` for
        display (masses summed over the child cells, surface densities averaged).
    rot : (float, float), optional
        View centre (ra, dec) in degrees; default the centre of the occupied cells.
    reso : float, optional
        Screen pixel size in arcmin for ``gnomonic``/``gnomview``; default fits the occupied
        cells in ``xsize`` pixels.
    xsize : int, default 400
        Screen pixels across.
    fill : float, optional
        Value of cells absent from a partial map; default: drawn grey (NaN / ``UNSEEN``).
    cmap, stretch, vmin, vmax, title, colorbar, label
        As in :func:`plot_map`.
    fig : matplotlib.figure.Figure, optional
        Figure to draw in (default a new one).
    sub : (int, int, int), optional
        Panel ``(nrows, ncols, index)`` of ``fig`` to draw in (default the whole figure).
    max_nside : int, default 1024
        Largest nside drawn by the healpy views.

    Returns
    -------
    matplotlib.figure.Figure
    """
    return _draw_healpix(map, view=view, rot=rot, reso=reso, xsize=xsize, fill=fill, cmap=cmap,
                         stretch=stretch, vmin=vmin, vmax=vmax, title=title, colorbar=colorbar,
                         label=label, fig=fig, sub=sub, max_nside=max_nside)[0]


def _draw_healpix(map, *, view, rot, reso, xsize, fill, cmap, stretch, vmin, vmax, title,
                  colorbar, label, fig, sub, max_nside):
    import healpy as hp
    import matplotlib.pyplot as plt

    m = _single_map(map)
    if map_kind(m) != "healpix":
        raise ProjectionError("plot_healpix needs a HEALPix map (dim 'cells' with a 'cell_ids' coordinate)")
    if view not in _HEALPIX_VIEWS:
        raise ProjectionError(f"unknown view {view!r}; use one of {', '.join(_HEALPIX_VIEWS)}")
    nside, nest, ids, values = _healpix_info(m)
    if ids.size == 0:
        raise ProjectionError("plot_healpix: the map has no cells")
    norm = _norm(values, stretch, vmin, vmax)
    lon, lat, radius = _healpix_center(ids, nside, nest)
    center = (lon, lat) if rot is None else (float(rot[0]), float(rot[1]))
    label = _label(m) if label is None else label
    if fig is None:
        fig = plt.figure(figsize=(9.0, 5.4) if view == "mollview" else (6.4, 6.0))
    if view == "gnomonic":
        if reso is None:
            reso = max(1.6 * radius * 60.0 / xsize, 1e-4)
        grid = FlatGrid.centered(center, reso, (xsize, xsize))
        img = rasterize_healpix(m, grid, np.nan if fill is None else float(fill))
        ax = fig.add_subplot(*(sub or (1, 1, 1)), projection=grid.to_wcs())
        from matplotlib import colormaps

        cm = colormaps[cmap].with_extremes(bad=NO_DATA_COLOR)
        im = ax.imshow(img, origin="lower", cmap=cm, norm=norm, interpolation="nearest")
        if np.isnan(img).any():
            no_data_legend(ax)
        ax.coords[0].set_axislabel("right ascension (ICRS)")
        ax.coords[1].set_axislabel("declination (ICRS)")
        _radec_ticks(ax)
        ax.coords.grid(color="tab:orange", alpha=0.35, linestyle="dotted")
        if colorbar:
            add_colorbar(fig, im, ax, label, norm)
        ax.set_title(title or f"HEALPix nside {nside} ({'nested' if nest else 'ring'})")
        return fig, ax
    if nside > max_nside:
        average = m.attrs.get("quantity") == "surface_density"
        ids, values = _degrade(ids, values, nside, nest, max_nside, average)
        nside, nest = max_nside, True
        label = f"{label} (nside {nside})"
        norm = _norm(values, stretch, vmin, vmax)
    full = np.full(hp.nside2npix(nside), hp.UNSEEN if fill is None else float(fill))
    full[ids] = values
    plt.figure(fig.number)  # healpy draws into the current figure
    common = {
        "nest": nest, "cmap": cmap, "norm": norm, "min": norm.vmin, "max": norm.vmax, "title": title or "",
        "unit": label, "cbar": colorbar, "sub": sub or (1, 1, 1), "badcolor": NO_DATA_COLOR,
        "margins": (0.01, 0.0, 0.01, 0.06),
    }
    with warnings.catch_warnings():
        # healpy's own axes still call Colormap.set_over/set_under/set_bad (deprecated by matplotlib)
        warnings.filterwarnings("ignore", message=r"The set_(over|under|bad) function will be deprecated",
                                category=PendingDeprecationWarning, module=r"healpy\.")
        _healpy_view(full, view, center, radius, reso, xsize, nside, rot, common)
    return fig, _healpy_axes(fig)[-1]


def _healpy_view(full, view, center, radius, reso, xsize, nside, rot, common):
    import healpy as hp

    if view == "gnomview":
        if reso is None:
            reso = max(1.6 * radius * 60.0 / xsize, 1e-3)
        hp.gnomview(full, rot=(center[0], center[1], 0.0), reso=reso, xsize=xsize, **common)
    elif view == "cartview":
        half = max(0.8 * radius, math.degrees(hp.nside2resol(nside)))
        hp.cartview(full, rot=(center[0], center[1], 0.0), lonra=[-half, half], latra=[-half, half],
                    xsize=xsize, **common)
    else:
        hp.mollview(full, rot=None if rot is None else (center[0], center[1], 0.0), xsize=max(xsize, 800), **common)
        hp.graticule(dpar=30, dmer=30, alpha=0.3)


def plot_statistics(
    stats: xr.Dataset,
    *,
    fields: Sequence[str] | None = None,
    coords: Literal["wcs", "offsets"] = "wcs",
    cmap: str = "gray",
    stretch: Stretch = "asinh",
    smooth: float | None = None,
    share_scale: bool = True,
    figsize: tuple[float, float] | None = None,
    **healpix_kwargs,
):
    """Posterior mean, std and signal-to-noise maps, and with a truth map the truth and the residual.

    Parameters
    ----------
    stats : xarray.Dataset
        Output of :func:`massmap_xr.sky.map_statistics`.
    fields : sequence of str, optional
        Variables to draw, left to right and top to bottom, three per row (default ``mean``,
        ``std``, ``snr`` and, when present, ``truth`` and ``residual``).  ``snr`` is drawn in
        :data:`SNR_CMAP` from 0, ``residual`` in σ in :data:`RESIDUAL_CMAP` from -4 to 4.
    coords, cmap, stretch, smooth
        As in :func:`plot_map`.
    share_scale : bool, default True
        Give ``mean``, the quantiles and ``truth`` one colour scale (from the truth when
        present, else from the mean), so that they compare by eye.
    figsize : (float, float), optional
        Figure size in inches.
    **healpix_kwargs
        Passed to :func:`plot_healpix` for HEALPix statistics.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    if not isinstance(stats, xr.Dataset) or "mean" not in stats:
        raise ProjectionError("plot_statistics needs the Dataset returned by map_statistics (with 'mean')")
    if fields is None:
        fields = [f for f in ("mean", "std", "snr", "truth", "residual") if f in stats]
    missing = [f for f in fields if f not in stats]
    if missing:
        raise ProjectionError(f"plot_statistics: no variable(s) {missing} in the statistics; have {sorted(stats.data_vars)}")
    kind = map_kind(stats)
    n = len(fields)
    ncol = min(n, 3)
    nrow = -(-n // ncol)
    figsize = figsize or ((5.6 * ncol, 5.0 * nrow + 0.4) if kind == "flat" else (5.2 * ncol, 5.4 * nrow + 0.4))
    view = healpix_kwargs.get("view", "gnomonic")
    fig = plt.figure(figsize=figsize, layout="constrained" if kind == "flat" or view == "gnomonic" else None)
    ref = "truth" if "truth" in stats else "mean"
    ref_vals = np.asarray(stats[ref].values, dtype=float)
    if kind == "flat" and smooth:
        ref_vals = _smoothed(stats[ref].assign_attrs(stats.attrs), smooth)
    shared = _norm(ref_vals, stretch)
    titles = {"mean": "posterior mean", "std": "posterior standard deviation", "truth": "truth (true masses)",
              "snr": "signal-to-noise mean / std", "residual": "residual (mean − truth) / std",
              "quantiles": "posterior median"}
    what = {"mean": "posterior mean", "std": "posterior std of", "truth": "true", "quantiles": "posterior median"}
    grid = FlatGrid.from_coords(stats) if kind == "flat" else None
    for i, f in enumerate(fields, start=1):
        da = stats[f].assign_attrs({**stats.attrs, **stats[f].attrs})
        if "quantile" in da.dims:
            da = da.isel(quantile=da.sizes["quantile"] // 2)
        limits = {}
        if share_scale and f in ("mean", "truth", "quantiles"):
            limits = {"vmin": shared.vmin, "vmax": shared.vmax}
        this_cmap = cmap
        if f == "snr":
            this_cmap, limits = SNR_CMAP, {"vmin": 0.0}
        elif f == "residual":
            this_cmap, limits = RESIDUAL_CMAP, {"vmin": -4.0, "vmax": 4.0}
        this_stretch = "linear" if f in ("residual", "snr") else stretch
        if f == "residual":
            label = "(mean − truth) / std [σ]"
        elif f == "snr":
            label = "signal-to-noise mean / std"
        else:
            label = quantity_label(da.attrs, what.get(f, ""))
        if kind == "flat":
            ax = fig.add_subplot(nrow, ncol, i, projection=grid.to_wcs()) if coords == "wcs" else \
                fig.add_subplot(nrow, ncol, i)
            plot_map(da, ax=ax, coords=coords, cmap=this_cmap, stretch=this_stretch, smooth=smooth,
                     title=titles.get(f, f), label=label, **limits)
        else:
            plot_healpix(da, fig=fig, sub=(nrow, ncol, i), cmap=this_cmap, stretch=this_stretch,
                         title=titles.get(f, f), label=label, **limits, **healpix_kwargs)
    n_samples = stats.attrs.get("n_samples")
    fig.suptitle(f"Posterior halo mass map{f' from {n_samples} joint mass samples' if n_samples else ''}")
    note = position_note(stats.attrs)
    if note:
        fig.text(0.5, 0.005, note, ha="center", va="bottom", fontsize="small", style="italic")
    return fig


def plot_residuals(stats: xr.Dataset, *, ax=None, bins: int = 60, min_std: float = 0.0):
    """Histogram of the standardised residuals ``(mean - truth) / std`` against N(0, 1).

    A calibrated posterior gives residuals close to a unit normal.  Pixels with ``std`` <=
    ``min_std`` (e.g. empty pixels) are left out.

    Returns
    -------
    matplotlib.axes.Axes
    """
    import matplotlib.pyplot as plt

    if not isinstance(stats, xr.Dataset) or "residual" not in stats:
        raise ProjectionError("plot_residuals needs map_statistics(..., truth=...) output (variable 'residual')")
    r = np.asarray(stats["residual"].values, dtype=float)
    s = np.asarray(stats["std"].values, dtype=float)
    r = r[np.isfinite(r) & (s > min_std)]
    if ax is None:
        ax = plt.figure(figsize=(5.6, 4.2)).add_subplot()
    lim = max(4.0, float(np.percentile(np.abs(r), 99.5))) if r.size else 4.0
    ax.hist(r, bins=bins, range=(-lim, lim), density=True, histtype="stepfilled", color="0.6", label=f"{r.size} pixels")
    t = np.linspace(-lim, lim, 400)
    ax.plot(t, np.exp(-0.5 * t * t) / math.sqrt(2 * math.pi), "k-", label="N(0, 1)")
    if r.size:
        ax.set_title(f"residuals: mean {r.mean():.2f}, std {r.std():.2f}")
    ax.set_xlabel("(posterior mean - truth) / posterior std")
    ax.set_ylabel("density")
    ax.legend()
    return ax


def plot_maps(maps: xr.DataArray | xr.Dataset, **kwargs):
    """Draw whatever a projection or statistics call returned; used by ``write_map``.

    A statistics Dataset goes to :func:`plot_statistics`; a stack of sampled maps is first
    reduced with :func:`massmap_xr.sky.map_statistics`; a single map goes to
    :func:`plot_map`.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if isinstance(maps, xr.Dataset):
        return plot_statistics(maps, **kwargs)
    kind = map_kind(maps)
    extra = [d for d in maps.dims if d not in spatial_dims(kind) and maps.sizes[d] > 1]
    if extra:
        return plot_statistics(map_statistics(maps), **kwargs)
    if kind == "healpix":
        return plot_healpix(maps, **kwargs)
    return plot_map(maps, **kwargs).figure
