"""Map figures that read themselves: colour-bar labels with quantity and pixel, ticks whose labels
do not overlap (measured on the rendered figure), a no-data colour outside the colour maps with a
legend entry, the panel set with a truth map, the mock-position note, and no plotting warnings."""

from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib import colormaps, colors  # noqa: E402

from massmap_xr.analysis import sample  # noqa: E402
from massmap_xr.catalog import mock_catalog  # noqa: E402
from massmap_xr.cube import build_posterior  # noqa: E402
from massmap_xr.model.hyper import reddick2013  # noqa: E402
from massmap_xr.sky import map_statistics, project_flat, project_healpix  # noqa: E402
from massmap_xr.sky.plots import plot_healpix, plot_statistics  # noqa: E402
from massmap_xr.sky.plotstyle import NO_DATA_COLOR, RESIDUAL_CMAP, SNR_CMAP  # noqa: E402


@pytest.fixture(scope="module")
def stats():
    cube = build_posterior(mock_catalog(150, seed=5), reddick2013(5, seed=6)).compute()
    s = sample(cube, 12, seed=3)
    grid = {"center": (cube.attrs["field_center_ra"], cube.attrs["field_center_dec"]),
            "size": cube.attrs["field_size_arcmin"], "pixel_scale": 2.0}
    flat = map_statistics(project_flat(s, **grid), truth=project_flat(cube["mass_true"], **grid))
    hpx = map_statistics(project_healpix(s, 1024), truth=project_healpix(cube["mass_true"], 1024))
    flat.attrs["source"] = hpx.attrs["source"] = cube.attrs["source"]
    return flat, hpx


def _colorbars(fig):
    """The colour-bar axes of a figure (matplotlib marks them with ``_colorbar``)."""
    return [a for a in fig.axes if getattr(a, "_colorbar", None) is not None]


def _overlaps(boxes):
    boxes = sorted((b for b in boxes if b.width > 0), key=lambda b: b.y0)
    return [(a, b) for a, b in zip(boxes, boxes[1:], strict=False) if a.overlaps(b)]


@pytest.mark.parametrize("kind", ["flat", "healpix"])
def test_colorbar_tick_labels_do_not_overlap(stats, kind):
    fig = plot_statistics(stats[0] if kind == "flat" else stats[1])
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    bars = _colorbars(fig)
    assert len(bars) == 5
    for cax in bars:
        labels = [t for t in cax.yaxis.get_ticklabels() if t.get_visible() and t.get_text()]
        assert len(labels) >= 3, [t.get_text() for t in labels]
        assert not _overlaps([t.get_window_extent(renderer) for t in labels]), [t.get_text() for t in labels]
    plt.close(fig)


def test_colorbar_labels_name_quantity_and_pixel(stats):
    flat, hpx = stats
    fig = plot_statistics(flat)
    labels = [cax.get_ylabel() for cax in _colorbars(fig)]
    assert labels[0] == "posterior mean mass per 2′ pixel [M$_\\odot$]"
    assert labels[1] == "posterior std of mass per 2′ pixel [M$_\\odot$]"
    assert labels[2] == "signal-to-noise mean / std"
    assert labels[3] == "true mass per 2′ pixel [M$_\\odot$]"
    assert labels[4] == "(mean − truth) / std [σ]"
    plt.close(fig)
    fig = plot_statistics(hpx)
    assert _colorbars(fig)[0].get_ylabel().startswith("posterior mean mass per HEALPix cell (nside 1024, 3.44′)")
    plt.close(fig)


def test_panel_set_with_truth_and_without(stats):
    flat, _ = stats
    fig = plot_statistics(flat)
    titles = [a.get_title() for a in fig.axes if a.images]
    assert titles == ["posterior mean", "posterior standard deviation", "signal-to-noise mean / std",
                      "truth (true masses)", "residual (mean − truth) / std"]
    cmaps = [a.images[0].get_cmap().name for a in fig.axes if a.images]
    assert cmaps[2] == SNR_CMAP and cmaps[4] == RESIDUAL_CMAP
    image_axes = [a for a in fig.axes if a.images]
    assert image_axes[4].images[0].get_clim() == (-4.0, 4.0)  # residual in sigma, symmetric
    assert image_axes[2].images[0].get_clim()[0] == 0.0  # S/N from 0
    assert fig.get_suptitle().startswith("Posterior halo mass map from 12 joint mass samples")
    assert any("Mock catalogue" in t.get_text() for t in fig.texts)
    plt.close(fig)
    fig = plot_statistics(flat.drop_vars(["truth", "residual"]).assign_attrs(source="survey"))
    assert [a.get_title() for a in fig.axes if a.images][-1] == "signal-to-noise mean / std"
    assert not any("ock" in t.get_text() for t in fig.texts)
    plt.close(fig)


def test_no_data_colour_is_outside_the_colour_maps_and_in_the_legend(stats):
    _, hpx = stats
    fig = plot_healpix(hpx["mean"].assign_attrs(hpx.attrs))
    ax = next(a for a in fig.axes if a.images)
    im = ax.images[0]
    assert np.isnan(np.asarray(im.get_array(), dtype=float)).any() or np.ma.is_masked(im.get_array())
    bad = colors.to_rgba(NO_DATA_COLOR)
    assert im.get_cmap().get_bad().tolist() == list(bad)
    for name in ("gray", SNR_CMAP, RESIDUAL_CMAP):  # far from every colour of the maps used
        rgb = colormaps[name](np.linspace(0, 1, 256))[:, :3]
        assert np.min(np.linalg.norm(rgb - np.array(bad[:3]), axis=1)) > 0.15, name
    legend = ax.get_legend()
    assert legend is not None and "no data" in legend.get_texts()[0].get_text()
    assert colors.to_rgba(legend.get_patches()[0].get_facecolor()) == bad
    plt.close(ax.figure)


@pytest.mark.parametrize("view", ["gnomonic", "gnomview", "cartview", "mollview"])
def test_no_warnings_from_the_plotting_stack(stats, view):
    _, hpx = stats
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = plot_statistics(hpx, view=view)
        fig.canvas.draw()
    plt.close(fig)
