"""Cost of evidence weighting: prior-draw cubes (per-halo weights) against posterior-draw cubes.

On one synthetic dask cube (``--n-halos`` × ``--n-mass`` × ``--n-real``, float32, chunked by halo
slab like a store), in the same run and alternating so that load drifts hit both alike, times

- ``marginalize(cube).compute()`` with ``hyper_kind="posterior"`` (one weight per realization,
  the floor) and with ``hyper_kind="prior"`` (per-halo weights from ``log_evidence``);
- ``sample(cube, n).compute()`` (correlated) with both kinds.

Prints the best and median of each, the ratios prior / posterior, the machine and the load
average before and after.  Run ``python benchmarks/bench_evidence.py``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import dask.array as da
import numpy as np
import xarray as xr
from machine import machine_line

from massmap_xr.analysis import marginalize, sample


def cube(n_halo: int, n_mass: int, n_real: int, chunk: int) -> xr.Dataset:
    x = np.linspace(10.0, 15.5, n_mass)
    rng = np.random.default_rng(0)
    mu = rng.uniform(11.0, 14.0, n_halo)[:, None] + rng.normal(0.0, 0.1, n_real)[None, :]
    dens = np.exp(-0.5 * ((x[None, :, None] - mu[:, None, :]) / 0.2) ** 2).astype(np.float32)
    dens /= np.trapezoid(dens, x, axis=1)[:, None, :]
    return xr.Dataset(
        {"posterior": (("halo", "mass", "realization"), da.from_array(dens, chunks=(chunk, -1, -1))),
         "weight": ("realization", np.full(n_real, 1.0 / n_real)),
         "log_evidence": (("halo", "realization"),
                          da.from_array(rng.normal(0.0, 2.0, (n_halo, n_real)), chunks=(chunk, -1)))},
        coords={"halo": np.arange(n_halo), "mass": 10.0**x, "realization": np.arange(n_real)},
    )


def timed(fn, repeat):
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-halos", type=int, default=4000)
    p.add_argument("--n-mass", type=int, default=400)
    p.add_argument("--n-real", type=int, default=100)
    p.add_argument("--chunk", type=int, default=400)
    p.add_argument("--n-samples", type=int, default=100)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    print(machine_line())
    print(f"load average before: {os.getloadavg()}")
    ds = cube(args.n_halos, args.n_mass, args.n_real, args.chunk)
    kinds = {k: ds.assign_attrs(hyper_kind=k) for k in ("posterior", "prior")}
    res = {}
    for _ in range(args.repeat):  # alternate the kinds
        for k, d in kinds.items():
            res.setdefault(("marginal", k), []).extend(timed(lambda d=d: marginalize(d).compute(), 1))
            res.setdefault(("sample", k), []).extend(
                timed(lambda d=d: sample(d, args.n_samples, seed=1).compute(), 1))
    print(f"cube {args.n_halos} x {args.n_mass} x {args.n_real} float32, slabs of {args.chunk} halos; "
          f"sample n = {args.n_samples}")
    for what in ("marginal", "sample"):
        a, b = res[(what, "posterior")], res[(what, "prior")]
        print(f"{what:8s} posterior draws best {min(a):.3f} s median {statistics.median(a):.3f} s | "
              f"prior draws best {min(b):.3f} s median {statistics.median(b):.3f} s | "
              f"ratio prior/posterior best {min(b) / min(a):.2f} median {statistics.median(b) / statistics.median(a):.2f}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
