"""Peak memory of large builds: a 10⁶-halo lazy cube, a 10⁶-halo store, mock_catalog.

Each stage runs in its own child process, whose peak RSS (``ru_maxrss`` from ``os.wait4``) is
reported next to the floor measured in the same run: a child that only imports massmap_xr and
loads the seed field.

- ``cube``: ``build_posterior`` of the seed field tiled to ``--n-halos`` halos (default 10⁶;
  halo ids renumbered) × 400 masses × ``--n-realizations`` (default 10), lazy: graph and inputs;
- ``store``: that cube written with ``to_store`` (``--n-halos`` × 400 × 10 = 16 GB of float32
  for 10⁶ halos, about half that on disk; skipped with ``--no-store``);
- ``mock``: ``mock_catalog(--mock-halos)`` (default 200,000; its prior rows are evaluated in
  blocks of ``MOCK_BLOCK`` halos).

Run ``python benchmarks/bench_memory.py`` (``--n-halos 200000`` for a quick run).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

import numpy as np
from machine import cpu_model


def tiled_field(n: int):
    import xarray as xr

    from massmap_xr.catalog import seed_field

    base = seed_field()
    reps = -(-n // base.sizes["halo"])
    cat = xr.concat([base] * reps, dim="halo").isel(halo=slice(0, n))
    return cat.assign_coords(halo=np.arange(n, dtype=np.int64))


def stage(name: str, args) -> None:
    from massmap_xr.catalog import seed_field

    if name == "floor":
        seed_field()
        return
    if name == "mock":
        from massmap_xr import mock_catalog

        mock_catalog(args.mock_halos, seed=1)
        return
    from massmap_xr.cube import build_posterior
    from massmap_xr.model.hyper import reddick2013

    cube = build_posterior(tiled_field(args.n_halos), reddick2013(args.n_realizations, seed=2))
    if name == "store":
        cube.massmap.to_store(args.path, progress=False)


def run_child(name: str, args) -> tuple[float, float]:
    cmd = [sys.executable, __file__, "--stage", name, "--n-halos", str(args.n_halos), "--n-realizations",
           str(args.n_realizations), "--mock-halos", str(args.mock_halos), "--path", args.path]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    if status:
        raise SystemExit(f"stage {name} failed (status {status})")
    return usage.ru_maxrss * 1024 / 2**30, time.perf_counter() - t


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-halos", type=int, default=1_000_000)
    p.add_argument("--n-realizations", type=int, default=10)
    p.add_argument("--mock-halos", type=int, default=200_000)
    p.add_argument("--path", default="/tmp/massmap_bench/million.zarr")
    p.add_argument("--no-store", action="store_true")
    p.add_argument("--stage", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.stage:
        stage(args.stage, args)
        return
    print(f"  cpu {cpu_model()} x {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}")
    os.makedirs(os.path.dirname(os.path.abspath(args.path)), exist_ok=True)
    if os.path.exists(args.path):
        raise SystemExit(f"{args.path} exists; remove it first")
    floor, _ = run_child("floor", args)
    print(f"  floor (import + seed field)             peak RSS {floor:6.2f} GiB")
    names = ["cube", *([] if args.no_store else ["store"]), "mock"]
    for name in names:
        rss, wall = run_child(name, args)
        what = {"cube": f"lazy cube {args.n_halos:,} x 400 x {args.n_realizations}",
                "store": f"store  {args.n_halos:,} x 400 x {args.n_realizations}",
                "mock": f"mock_catalog({args.mock_halos:,})"}[name]
        print(f"  {what:38s}  peak RSS {rss:6.2f} GiB = floor + {rss - floor:5.2f} GiB "
              f"({rss / floor:.1f}x floor), {wall:.0f} s", flush=True)
    shutil.rmtree(args.path, ignore_errors=True)
    print(f"  load average end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
