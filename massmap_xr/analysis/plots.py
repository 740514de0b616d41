"""Figures of posteriors, their normal fits and their calibration.

Each function takes the cube as first argument and returns the matplotlib
:class:`~matplotlib.axes.Axes` (or :class:`~matplotlib.figure.Figure`) it drew on, so callers
can restyle or save it.  Only the few halos being drawn are read from a lazy cube.  Masses are
on a logarithmic axis in M_sun; densities are per unit log10 M (``dex-1``).

Artists carry a ``gid`` naming what they show (``"posterior"``, ``"prior"``, ``"truth"``,
``"fit"``, ``"pit"``, ``"coverage"``), which makes figures easy to inspect or restyle.
"""

from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from massmap_xr.analysis.calibrate import calibration
from massmap_xr.analysis.reductions import fit_normal, halo_prior, marginalize
from massmap_xr.cube import validate_cube
from massmap_xr.errors import AnalysisError, format_offenders

__all__ = ["plot_calibration", "plot_fit", "plot_posterior"]

_DEFAULT_N_HALOS = 4
_MASS_LABEL = r"halo mass $M$ [$M_\odot$]"
_DENSITY_LABEL = r"$p(\log_{10} M)$ [dex$^{-1}$]"


def _select_halos(ds: xr.Dataset, halo) -> xr.Dataset:
    """The cube restricted to halo ids ``halo`` (default: the first few), loaded in memory."""
    validate_cube(ds)
    if halo is None:
        ids = np.asarray(ds["halo"].values[:_DEFAULT_N_HALOS])
    else:
        ids = np.atleast_1d(np.asarray(halo))
        if ids.ndim != 1 or ids.size == 0:
            raise AnalysisError(f"halo must be a halo id or a non-empty sequence of ids, got {halo!r}")
    missing = ids[~np.isin(ids, ds["halo"].values)]
    if missing.size:
        raise AnalysisError(f"halo id(s) not in the cube: {format_offenders(missing)}; pick ids from ds.halo")
    return ds.sel(halo=ids).compute()


def _axes(ax: Axes | None) -> Axes:
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4.0))
    return ax


def _mass_limits(ax: Axes, mass: np.ndarray, curves: np.ndarray, extra: np.ndarray, pad_dex: float = 0.3) -> None:
    """Zoom the mass axis onto where the curves are above 1e-3 of their peak (and ``extra``)."""
    x = np.log10(mass)
    c = np.nan_to_num(np.atleast_2d(curves))
    live = c > 1e-3 * c.max(axis=1, keepdims=True)
    pts = [x[live.any(axis=0)], np.log10(extra[np.isfinite(extra) & (extra > 0)])]
    pts = np.concatenate(pts)
    if pts.size:
        lo, hi = max(pts.min() - pad_dex, x[0]), min(pts.max() + pad_dex, x[-1])
        ax.set_xlim(10.0**lo, 10.0**hi)


def plot_posterior(
    ds: xr.Dataset,
    halo=None,
    *,
    ax: Axes | None = None,
    marginal: bool = True,
    show_prior: bool = True,
) -> Axes:
    """Posterior of a few halos against mass, with their prior and true mass.

    Parameters
    ----------
    ds : xarray.Dataset
        Posterior cube.
    halo : int or sequence of int, optional
        Halo id(s) (labels of ``ds.halo``, not positions); default the first four halos.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on (default: a new figure).
    marginal : bool, default True
        True: one line per halo, the hyperparameter-marginal posterior.  False: one thin line
        per realization, showing the spread due to the hyperparameters.
    show_prior : bool, default True
        Also draw each halo's mass prior at its redshift (dashed; see
        :func:`massmap_xr.analysis.halo_prior`), if the cube has the prior table.

    Returns
    -------
    matplotlib.axes.Axes
        Mass (M_sun) on a log x axis, density per unit log10 M on the y axis.  A halo's
        prior, posterior and true mass (dotted vertical line, if ``mass_true`` is present) share
        a colour.
    """
    sub = _select_halos(ds, halo)
    ax = _axes(ax)
    mass = np.asarray(sub["mass"].values)
    if marginal:
        curves = marginalize(sub).values[:, None, :]
    else:
        curves = sub["posterior"].transpose("halo", "realization", "mass").values
    prior = halo_prior(sub).values if show_prior and "prior_dndm" in sub else None
    truth = np.asarray(sub["mass_true"].values, dtype=float) if "mass_true" in sub else np.full(sub.sizes["halo"], np.nan)
    colors = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    for i, h in enumerate(sub["halo"].values):
        color = colors[i % len(colors)]
        for j, row in enumerate(curves[i]):
            kw = {"lw": 1.6} if marginal else {"lw": 0.6, "alpha": 0.5}
            ax.plot(mass, row, color=color, label=f"halo {h}" if j == 0 else None, gid="posterior", **kw)
        if prior is not None:
            ax.plot(mass, prior[i], color=color, ls="--", lw=1.0, alpha=0.8, gid="prior")
        if np.isfinite(truth[i]):
            ax.axvline(truth[i], color=color, ls=":", lw=1.2, gid="truth")
    ax.set_xscale("log")
    _mass_limits(ax, mass, curves.reshape(-1, mass.size), truth)
    ax.set_xlabel(_MASS_LABEL)
    ax.set_ylabel(_DENSITY_LABEL)
    ax.set_ylim(bottom=0)
    _posterior_legends(ax, prior is not None, bool(np.isfinite(truth).any()), marginal)
    n_r = ds.sizes.get("realization", 0)
    ax.set_title(f"Halo mass posteriors ({'marginalised over' if marginal else 'one line per'} {n_r} "
                 "hyperparameter draw" + ("s" if n_r != 1 else "") + ")", fontsize="medium")
    return ax


def _posterior_legends(ax: Axes, prior: bool, truth: bool, marginal: bool) -> None:
    """Two legends: the colours (one per halo) and the line styles (the same for every halo)."""
    from matplotlib.lines import Line2D

    styles = [Line2D([], [], color="0.25", lw=1.6 if marginal else 0.6,
                     label="posterior p(log M | L_obs, z)" + ("" if marginal else ", per draw"))]
    if prior:
        styles.append(Line2D([], [], color="0.25", ls="--", lw=1.0, label="prior p(log M | z)"))
    if truth:
        styles.append(Line2D([], [], color="0.25", ls=":", lw=1.2, label="true mass"))
    ax.add_artist(ax.legend(handles=styles, fontsize="small", loc="upper left", title="line style: every halo",
                            title_fontsize="small"))
    ax.legend(fontsize="small", loc="upper right", title="colour: halo", title_fontsize="small")  # ax.get_legend()


def plot_fit(ds: xr.Dataset, halo=None, *, ax: Axes | None = None) -> Axes:
    """Marginal posterior of a few halos against their normal fit in log10 M.

    Parameters
    ----------
    ds : xarray.Dataset
        Posterior cube.
    halo : int or sequence of int, optional
        Halo id(s); default the first halo.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on (default: a new figure).

    Returns
    -------
    matplotlib.axes.Axes
        Per halo, the posterior (solid) and the moment-matched normal (dashed, see
        :func:`massmap_xr.analysis.fit_normal`), labelled with the fit's ``ks`` and ``kl``.
    """
    sub = _select_halos(ds, ds["halo"].values[:1] if halo is None else halo)
    ax = _axes(ax)
    mass = np.asarray(sub["mass"].values)
    x = np.log10(mass)
    marg = marginalize(sub).values
    fit = fit_normal(sub)
    colors = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    for i, h in enumerate(sub["halo"].values):
        color = colors[i % len(colors)]
        mu, sigma = float(fit["mu"][i]), float(fit["sigma"][i])
        ks, kl = float(fit["ks"][i]), float(fit["kl"][i])
        normal = np.exp(-0.5 * ((x - mu) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
        ax.plot(mass, marg[i], color=color, lw=1.6, gid="posterior", label=f"halo {h}")
        ax.plot(mass, normal, color=color, lw=1.2, ls="--", gid="fit",
                label=f"normal fit: μ={mu:.2f}, σ={sigma:.2f} dex (ks={ks:.3f}, kl={kl:.3f})")
    ax.set_xscale("log")
    _mass_limits(ax, mass, marg, np.array([]))
    ax.set_xlabel(_MASS_LABEL)
    ax.set_ylabel(_DENSITY_LABEL)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize="small")
    return ax


def plot_calibration(ds: xr.Dataset, *, bins: int = 10, fig: Figure | None = None) -> Figure:
    """PIT histogram and coverage of central intervals, titled with the calibration verdict.

    Parameters
    ----------
    ds : xarray.Dataset
        A posterior cube with ``mass_true`` (passed to
        :func:`massmap_xr.analysis.calibration`), or the Dataset that function returned.
    bins : int, default 10
        Number of PIT histogram bins on [0, 1].
    fig : matplotlib.figure.Figure, optional
        Figure to draw on (default: a new one); two axes are added to it.

    Returns
    -------
    matplotlib.figure.Figure
        Left: PIT density histogram with the uniform expectation and its ±1σ binomial band.
        Right: coverage against interval probability with binomial error bars and the
        diagonal of perfect calibration.
    """
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise AnalysisError(f"bins must be a positive integer, got {bins!r}")
    cal = ds if isinstance(ds, xr.Dataset) and {"pit", "coverage"} <= set(ds.data_vars) else calibration(ds)
    if fig is None:
        fig = plt.figure(figsize=(9.0, 3.8))
    ax_pit, ax_cov = fig.subplots(1, 2)
    pit = np.asarray(cal["pit"].values)
    pit = pit[np.isfinite(pit)]
    n = pit.size
    ax_pit.hist(pit, bins=bins, range=(0, 1), density=True, color="0.6", edgecolor="white", gid="pit")
    band = bins * np.sqrt(n * (1 / bins) * (1 - 1 / bins)) / max(n, 1)
    ax_pit.axhspan(1 - band, 1 + band, color="C0", alpha=0.2, lw=0)
    ax_pit.axhline(1.0, color="C0", lw=1.2, label="uniform (calibrated)")
    ax_pit.set_xlim(0, 1)
    ax_pit.set_xlabel("PIT = CDF(true mass)")
    ax_pit.set_ylabel("density")
    ax_pit.legend(fontsize="small", loc="lower center")
    level = np.asarray(cal["level"].values)
    ax_cov.plot([0, 1], [0, 1], color="0.5", lw=1.0, ls="--", label="perfect calibration")
    ax_cov.errorbar(level, cal["coverage"].values, yerr=cal["coverage_err"].values, fmt="o", color="C3",
                    capsize=3, gid="coverage", label="measured (±1σ)")
    ax_cov.set_xlim(0, 1)
    ax_cov.set_ylim(0, 1)
    ax_cov.set_xlabel("central interval probability")
    ax_cov.set_ylabel("fraction of true masses inside")
    ax_cov.legend(fontsize="small", loc="upper left")
    fig.suptitle(textwrap.fill(str(cal.attrs.get("verdict", "")), 110), fontsize="small")
    fig.tight_layout()
    return fig
