"""Building and reading stores on a multi-process dask.distributed cluster gives the threaded result."""

from __future__ import annotations

import dask
import numpy as np
import pytest
from builders import file_digests
from builders import table_prior_cube as make_cube

import massmap_xr.store as st
from massmap_xr.store import slabs

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.slow


def _reduce(ds):
    """Weighted marginal over realizations and each halo's mean log10 mass (a typical read)."""
    from massmap_xr.kernels.posterior import trapezoid_weights

    marginal = (ds["posterior"] * ds["weight"]).sum("realization")
    w = ds["log10_mass"].copy(data=trapezoid_weights(ds["log10_mass"].values))
    return marginal, (marginal * ds["log10_mass"] * w).sum("mass")


def test_build_open_and_reduce_on_a_local_cluster_match_threads(tmp_path):
    cube = make_cube(120, 8, chunks=16)[0]
    with dask.config.set(scheduler="threads"):
        st.to_store(cube, tmp_path / "threads.zarr", progress=False)
        ref = st.open_store(tmp_path / "threads.zarr")
        ref_marginal, ref_mean = (x.compute() for x in _reduce(ref))
        ref_analysis = _analysis(ref)

    url = "file://" + str(tmp_path / "cluster.zarr")
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                 local_directory=str(tmp_path / "dask-worker-space")) as cluster,
        distributed.Client(cluster) as client,
    ):
        assert slabs.n_workers() == 2
        with distributed.get_task_stream(client) as stream:
            st.to_store(cube, url, progress=False)
            ds = st.open_store(url)
            marginal, mean = dask.compute(*_reduce(ds))
            got_analysis = _analysis(ds)
        workers = {t["worker"] for t in stream.data}
        assert len(workers) == 2, workers  # both worker processes did work
        assert st.verify_store(url).ok

    assert file_digests(tmp_path / "cluster.zarr", "posterior") == file_digests(tmp_path / "threads.zarr", "posterior")
    assert np.array_equal(marginal.values, ref_marginal.values)
    assert np.array_equal(mean.values, ref_mean.values)
    assert np.all(np.abs(mean.values - 12.5) < 3.0)  # sane log10 masses
    for name, want in ref_analysis.items():
        np.testing.assert_array_equal(got_analysis[name], want, err_msg=name)


def _analysis(ds):
    """Summaries, seeded correlated samples, and flat and HEALPix maps of them, computed."""
    from massmap_xr import analysis, sky

    summary = analysis.summary(ds).compute()
    samples = analysis.sample(ds, 12, seed=4)
    flat = sky.project_flat(samples, pixel_scale=2.0)
    hpx = sky.project_healpix(samples, 256)
    samples, flat, hpx = dask.compute(samples, flat, hpx)
    return {**{f"summary_{k}": summary[k].values for k in summary.data_vars}, "samples": samples.values,
            "flat": flat.values, "healpix": hpx.values, "cells": hpx["cell_ids"].values}
