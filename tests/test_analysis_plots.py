"""Tests of massmap_xr.analysis.plots: what the figures show, not how they look."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from builders import chunked
from builders import gaussian_cube as make_cube
from matplotlib.figure import Figure

from massmap_xr import analysis
from massmap_xr.analysis import plots as plot
from massmap_xr.errors import AnalysisError


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def cube():
    return make_cube(n_halo=12, n_real=3, shift_sd=0.2, seed=3)[0]


def _lines(ax, gid):
    return [ln for ln in ax.get_lines() if ln.get_gid() == gid]


@pytest.mark.parametrize("backend", ["numpy", "dask"])
def test_plot_posterior_draws_posterior_prior_and_truth(cube, backend):
    ds = cube if backend == "numpy" else chunked(cube, halo=5)
    ids = [1007, 1021, 1035]
    ax = plot.plot_posterior(ds, ids)
    assert ax.get_xscale() == "log"
    post, prior, truth = _lines(ax, "posterior"), _lines(ax, "prior"), _lines(ax, "truth")
    assert (len(post), len(prior), len(truth)) == (3, 3, 3)
    sub = cube.sel(halo=ids)
    marg = analysis.marginalize(sub).values
    for i in range(3):
        np.testing.assert_allclose(post[i].get_xdata(), cube["mass"].values)
        np.testing.assert_allclose(post[i].get_ydata(), marg[i], rtol=1e-12)
        np.testing.assert_allclose(truth[i].get_xdata(), [sub["mass_true"].values[i]] * 2)
        assert truth[i].get_color() == post[i].get_color() == prior[i].get_color()
        lo, hi = ax.get_xlim()
        assert lo < sub["mass_true"].values[i] < hi
    np.testing.assert_allclose(prior[0].get_ydata(), analysis.halo_prior(sub).values[0], rtol=1e-12)
    from matplotlib.legend import Legend

    legends = ax.findobj(Legend)
    labels = [t.get_text() for lg in legends for t in lg.get_texts()]
    assert "halo 1007" in labels and "true mass" in labels and "prior p(log M | z)" in labels
    # the line styles are explained once for every halo, the colours per halo; the figure has a title
    assert {lg.get_title().get_text() for lg in legends} == {"colour: halo", "line style: every halo"}
    assert ax.get_title().startswith("Halo mass posteriors")


def test_plot_posterior_per_realization_and_options(cube):
    ax = plot.plot_posterior(cube, 1014, marginal=False, show_prior=False)
    post = _lines(ax, "posterior")
    assert len(post) == cube.sizes["realization"]
    for r, ln in enumerate(post):
        np.testing.assert_allclose(ln.get_ydata(), cube["posterior"].sel(halo=1014).isel(realization=r).values)
    assert _lines(ax, "prior") == []

    ax = plot.plot_posterior(cube.drop_vars(["mass_true", "prior_dndm"]))
    assert len(_lines(ax, "posterior")) == 4  # default: the first four halos
    assert _lines(ax, "truth") == [] and _lines(ax, "prior") == []


def test_plot_posterior_uses_the_given_axes(cube):
    _, axes = plt.subplots(1, 2)
    out = plot.plot_posterior(cube, [1000], ax=axes[1])
    assert out is axes[1]
    assert len(axes[0].get_lines()) == 0 and len(axes[1].get_lines()) == 3


def test_plot_posterior_rejects_unknown_halos(cube):
    with pytest.raises(AnalysisError) as err:
        plot.plot_posterior(cube, [1000, 3, 4])
    assert str(err.value) == "halo id(s) not in the cube: 3, 4; pick ids from ds.halo"


def test_plot_fit_shows_posterior_and_its_normal_fit(cube):
    ax = plot.plot_fit(cube, [1000, 1049])
    assert ax.get_xscale() == "log"
    post, fit_lines = _lines(ax, "posterior"), _lines(ax, "fit")
    assert len(post) == len(fit_lines) == 2
    fit = analysis.fit_normal(cube.sel(halo=[1000, 1049]))
    x = cube["log10_mass"].values
    for i in range(2):
        mu, sigma = float(fit["mu"][i]), float(fit["sigma"][i])
        expected = np.exp(-0.5 * ((x - mu) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
        np.testing.assert_allclose(fit_lines[i].get_ydata(), expected, rtol=1e-12)
        assert f"ks={float(fit['ks'][i]):.3f}" in fit_lines[i].get_label()
    assert len(_lines(plot.plot_fit(cube), "fit")) == 1


def test_plot_calibration_shows_pit_histogram_and_coverage():
    ds = make_cube(n_halo=200, n_real=2, seed=5, truth_offset=0.4)[0]
    cal = analysis.calibration(ds)
    fig = plot.plot_calibration(ds, bins=8)
    assert isinstance(fig, Figure)
    ax_pit, ax_cov = fig.axes
    bars = [p for p in ax_pit.patches if p.get_gid() == "pit"]
    assert len(bars) == 8
    np.testing.assert_allclose([b.get_width() for b in bars], 1 / 8)
    heights = np.array([b.get_height() for b in bars])
    np.testing.assert_allclose((heights / 8).sum(), 1.0)  # a density
    np.testing.assert_allclose(heights, np.histogram(cal["pit"].values, bins=8, range=(0, 1), density=True)[0])
    (cov,) = ax_cov.containers  # the errorbar
    xy = cov.lines[0].get_xydata()
    assert cov.lines[0].get_gid() == "coverage"
    np.testing.assert_allclose(xy[:, 0], cal["level"].values)
    np.testing.assert_allclose(xy[:, 1], cal["coverage"].values)
    assert fig._suptitle.get_text().replace("\n", " ") == cal.attrs["verdict"]
    assert cal.attrs["verdict"].startswith("miscalibrated")


def test_plot_calibration_accepts_a_calibration_result_and_checks_bins(cube):
    cal = analysis.calibration(cube)
    fig = plot.plot_calibration(cal)
    assert len(fig.axes) == 2
    with pytest.raises(AnalysisError, match="bins must be a positive integer, got 0"):
        plot.plot_calibration(cal, bins=0)
