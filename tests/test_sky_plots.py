"""Map plots: what is drawn matches the maps, on the right axes."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import xarray as xr

from massmap_xr.errors import ProjectionError
from massmap_xr.sky import map_statistics, project_flat, project_healpix
from massmap_xr.sky import plots as mapplot

CENTER = (150.0, 2.0)


@pytest.fixture(scope="module")
def maps():
    rng = np.random.default_rng(3)
    n = 1500
    ra = CENTER[0] + rng.uniform(-0.3, 0.3, n)
    dec = CENTER[1] + rng.uniform(-0.3, 0.3, n)
    truth = 10 ** rng.uniform(11, 14, n)
    coords = {"ra": ("halo", ra), "dec": ("halo", dec)}
    samples = xr.DataArray(truth[:, None] * rng.lognormal(0, 0.3, (n, 6)), dims=("halo", "sample"), coords=coords)
    t = xr.DataArray(truth, dims="halo", coords=coords)
    kw = {"center": CENTER, "size": 36.0, "pixel_scale": 1.0}
    flat = project_flat(samples, **kw)
    stats = map_statistics(flat, truth=project_flat(t, **kw))
    hstats = map_statistics(project_healpix(samples, 1024), truth=project_healpix(t, 1024))
    return flat, stats, hstats, samples


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_plot_map_wcs_axes_show_the_map(maps):
    _, stats, _, _ = maps
    ax = mapplot.plot_map(stats["mean"].assign_attrs(stats.attrs))
    assert hasattr(ax, "coords")  # astropy WCSAxes with ra/dec ticks
    assert ax.wcs.wcs.ctype[0] == "RA---TAN"
    np.testing.assert_allclose(ax.wcs.wcs.crpix, [stats.attrs["CRPIX1"], stats.attrs["CRPIX2"]])
    img = ax.images[0].get_array()
    np.testing.assert_allclose(np.asarray(img), stats["mean"].values)
    assert ax.images[0].get_cmap().name == "gray"
    cbar_label = ax.figure.axes[-1].get_ylabel()
    assert cbar_label.startswith("mass per ") and "′ pixel [M$_\\odot$]" in cbar_label


def test_plot_map_offsets_east_left(maps):
    flat, _, _, _ = maps
    ax = mapplot.plot_map(flat.isel(sample=0), coords="offsets", stretch="linear")
    x0, x1 = ax.get_xlim()
    assert x0 > x1  # east (positive x) on the left
    assert x0 == pytest.approx(flat.x.values[0] + 0.5) and x1 == pytest.approx(flat.x.values[-1] - 0.5)
    assert "arcmin" in ax.get_xlabel() and "east" in ax.get_xlabel()
    norm = ax.images[0].norm
    assert norm.vmin == 0.0 and norm.vmax == pytest.approx(np.percentile(flat.isel(sample=0).values, 99.5))


def test_plot_map_smoothing_conserves_mass(maps):
    *_, samples = maps
    m = project_flat(samples.isel(sample=0), center=CENTER, size=60.0, pixel_scale=1.0)  # 12' margin
    ax = mapplot.plot_map(m, smooth=2.0, stretch="log")
    img = np.asarray(ax.images[0].get_array())
    assert not np.allclose(img, m.values)
    assert img.sum() == pytest.approx(float(m.sum()), rel=1e-6)


def test_plot_map_refuses_a_stack(maps):
    flat, _, _, _ = maps
    with pytest.raises(ProjectionError, match="select one"):
        mapplot.plot_map(flat)
    with pytest.raises(ProjectionError, match="stretch"):
        mapplot.plot_map(flat.isel(sample=0), stretch="cubic")


def test_plot_statistics_side_by_side_shared_scale(maps):
    _, stats, _, _ = maps
    fig = mapplot.plot_statistics(stats)
    image_axes = [a for a in fig.axes if a.images]
    assert [a.get_title() for a in image_axes] == ["posterior mean", "posterior standard deviation",
                                                   "signal-to-noise mean / std", "truth (true masses)",
                                                   "residual (mean − truth) / std"]
    mean_im, std_im, _, truth_im, _ = (a.images[0] for a in image_axes)
    assert mean_im.get_clim() == truth_im.get_clim()
    assert std_im.get_clim() != mean_im.get_clim()
    np.testing.assert_allclose(np.asarray(truth_im.get_array()), stats["truth"].values)
    with pytest.raises(ProjectionError, match="no variable"):
        mapplot.plot_statistics(stats, fields=["mean", "bias"])


@pytest.mark.parametrize("view", ["gnomview", "cartview", "mollview"])
def test_plot_healpix_healpy_views(maps, view):
    _, _, hstats, _ = maps
    fig = mapplot.plot_healpix(hstats["truth"], view=view, title="truth")
    axes = mapplot._healpy_axes(fig)
    assert len(axes) >= 1 and isinstance(fig, matplotlib.figure.Figure)
    img = np.ma.masked_invalid(np.asarray(axes[0].images[0].get_array(), dtype=float))
    assert img.count() > 0 and float(img.max()) > 0


def test_plot_healpix_healpy_view_degrades_high_nside(maps):
    import healpy as hp

    *_, samples = maps
    hmap = project_healpix(samples.isel(sample=0), 4096)
    fig = mapplot.plot_healpix(hmap, view="gnomview", max_nside=512, stretch="linear")
    ax = mapplot._healpy_axes(fig)[0]
    texts = [x.get_text() for a in fig.axes for x in (*a.texts, a.xaxis.label, a.yaxis.label)]
    assert any("nside 512" in x for x in texts)
    # masses are summed into the parent cells: the largest display cell holds at least the largest cell
    img = np.asarray(ax.images[0].get_array(), dtype=float)
    assert np.nanmax(np.where(img == hp.UNSEEN, np.nan, img)) >= float(hmap.max()) * (1 - 1e-12)


def test_plot_healpix_gnomonic_is_centred_and_samples_the_cells(maps):
    import healpy as hp

    _, _, hstats, _ = maps
    fig = mapplot.plot_healpix(hstats["mean"], xsize=120, stretch="linear")
    ax = next(a for a in fig.axes if a.images)
    assert hasattr(ax, "coords")  # WCSAxes with ra/dec ticks
    crval = ax.wcs.wcs.crval
    assert crval[0] == pytest.approx(CENTER[0], abs=0.05) and crval[1] == pytest.approx(CENTER[1], abs=0.05)
    img = np.asarray(ax.images[0].get_array(), dtype=float)
    assert 0.3 < np.isfinite(img).mean() < 0.95  # the 36' field inside, grey (NaN) around it
    # every screen pixel shows the cell containing its centre
    grid = mapplot.FlatGrid.from_header(dict(ax.wcs.to_header()) | {"NAXIS1": 120, "NAXIS2": 120})
    ra, dec = grid.radec()
    pix = hp.ang2pix(1024, ra, dec, nest=True, lonlat=True)
    lookup = dict(zip(hstats["cell_ids"].values.tolist(), hstats["mean"].values.tolist(), strict=True))
    expected = np.array([lookup.get(p, np.nan) for p in pix.ravel()]).reshape(img.shape)
    np.testing.assert_array_equal(img, expected)


def test_plot_statistics_healpix_panels(maps):
    _, _, hstats, _ = maps
    fig = mapplot.plot_statistics(hstats, fields=["mean", "std", "truth", "residual"])
    assert len([a for a in fig.axes if a.images]) == 4
    fig = mapplot.plot_statistics(hstats, view="gnomview")
    assert len(mapplot._healpy_axes(fig)) == 5


def test_plot_residuals_histogram(maps):
    _, stats, _, _ = maps
    ax = mapplot.plot_residuals(stats)
    assert ax.patches and "residuals" in ax.get_title()
    with pytest.raises(ProjectionError, match="residual"):
        mapplot.plot_residuals(stats.drop_vars("residual"))


def test_plot_maps_dispatch(maps):
    flat, stats, hstats, _ = maps
    assert len([a for a in mapplot.plot_maps(flat).axes if a.images]) == 3  # mean, std, snr (no truth)
    assert len([a for a in mapplot.plot_maps(stats).axes if a.images]) == 5  # and truth, residual
    assert len([a for a in mapplot.plot_maps(flat.isel(sample=1)).axes if a.images]) == 1
    assert isinstance(mapplot.plot_maps(hstats["mean"]), matplotlib.figure.Figure)
    ax = mapplot.plot_map(hstats["truth"], xsize=64)
    assert hasattr(ax, "coords") and ax.images
