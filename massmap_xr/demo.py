"""The embedded demo: a mock seed-like field, its posterior cube, a store and figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["run_demo"]


def run_demo(out_dir="massmap-demo", *, n_halos: int = 300, n_realizations: int = 20, seed: int = 2017,
             progress: bool = True, map_samples: int = 200) -> list[Path]:
    """Build the demo cube and write ``demo.zarr`` and the demo figures into ``out_dir``.

    The default ``massmap-demo`` (relative to the current directory) is ignored by git, so running
    the demo in a clone leaves it clean; the shipped example in ``stores/`` was made with
    ``run_demo("stores")``.

    The field is a mock drawn like the original seed field (redshifts resampled from it, masses
    from the Tinker prior, luminosities from the Reddick 2013 relation, 40′ × 40′ window); the
    cube uses ``n_realizations`` Reddick 2013 hyperparameter draws.

    Returns
    -------
    list of Path
        The files written: the store, the posterior panel figure and the mass maps figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from massmap_xr.analysis.plots import plot_posterior
    from massmap_xr.catalog import mock_catalog
    from massmap_xr.cube import build_posterior
    from massmap_xr.model.hyper import reddick2013
    from massmap_xr.store import open_store, to_store

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cat = mock_catalog(n_halos, seed=seed)
    cube = build_posterior(cat, reddick2013(n_realizations, seed=seed + 1), chunks=100)
    store = out / "demo.zarr"
    to_store(cube, store, mode="w", progress=progress)
    ds = open_store(store)

    # a spread of halos: faint to bright
    order = np.argsort(ds["lum_obs"].values)
    picks = ds["halo"].values[order[[int(f * (order.size - 1)) for f in (0.1, 0.5, 0.8, 0.95, 0.99, 1.0)]]]
    fig = plot_posterior(ds, halo=picks)
    fig = getattr(fig, "figure", fig)
    fig_path = out / "demo_posteriors.png"
    fig.savefig(fig_path, dpi=110)
    plt.close(fig)
    written = [store, fig_path]

    from massmap_xr.analysis import sample
    from massmap_xr.sky import map_statistics, project_flat
    from massmap_xr.sky.plots import plot_statistics

    samples = sample(ds, map_samples, seed=seed)
    grid = {"center": (ds.attrs["field_center_ra"], ds.attrs["field_center_dec"]),
            "size": ds.attrs["field_size_arcmin"], "pixel_scale": 2.0}
    maps = project_flat(samples, **grid)
    truth = project_flat(ds["mass_true"], **grid)
    stats = map_statistics(maps, truth=truth)
    stats.attrs.update({k: ds.attrs[k] for k in ("positions", "source") if k in ds.attrs})  # mock: say so
    fig = plot_statistics(stats)
    fig = getattr(fig, "figure", fig)
    map_path = out / "demo_maps.png"
    fig.savefig(map_path, dpi=110)
    plt.close(fig)
    written.append(map_path)
    return written
