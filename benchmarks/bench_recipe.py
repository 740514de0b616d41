"""Recipe stores (computed on read) against materialised stores: summary, sampling and a map.

Two parts, each in its own process so that its peak RSS is its own:

``--part field`` (default 30,000 halos of the seed field × 400 masses × 100 realizations, Tinker
prior): builds the materialised store (timed: the floor it saves) and the recipe store of one cube,
then, alternating recipe and materialised, times on each

- ``ds.massmap.summary().compute()``;
- ``ds.massmap.sample(100, seed=1)`` computed;
- a flat map as ``massmap map`` makes it: sample, ``project_flat`` (1′ pixels), ``map_statistics``;

and prints every time, the ratio recipe / materialised of each (the floor, measured in the same
run), the stores' sizes on disk, and checks that the results are bit-identical.

``--part synthetic`` (default 10⁶ halos × 400 × 100: the seed field tiled with new ids and fresh
positions, a 160 GB cube if materialised) writes only the recipe, opens it, summarises it and makes
a map of 100 samples (``--compute-halos N``: of its first N halos only), printing each time, the kernel's cell rate in the same run (one slab through
``posterior_block``) as the floor, and the peak RSS.

Run ``python benchmarks/bench_recipe.py --part field`` and ``... --part synthetic``
(``--dir`` for the stores, default ``/tmp/bench_recipe``; it is deleted only if this script made it).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import time

import numpy as np
from machine import machine_line


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _du(path) -> float:
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True).stdout.split()
    return int(out[0]) / 1e9 if out else float("nan")


def _map(ds, n, seed=1):
    import massmap_xr as mm

    s = ds.massmap.sample(n, seed=seed)
    maps = mm.sky.project_flat(s, pixel_scale=1.0, center=(150.0, 2.0), size=40.0)
    return mm.sky.map_statistics(maps).compute()


def part_field(args) -> None:
    import massmap_xr as mm

    n = args.n_halos
    cat = mm.seed_field(seed=0).isel(halo=slice(0, n))
    cube = mm.build_posterior(cat, mm.reddick2013(args.n_realizations, seed=2))
    mat, rec = os.path.join(args.dir, "field.zarr"), os.path.join(args.dir, "field_recipe.zarr")
    t0 = time.perf_counter()
    mm.to_store(cube, mat, progress=False)
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    cube.massmap.to_store(rec, materialize=False)
    t_recipe = time.perf_counter() - t0
    print(f"field: {n:,} halos x {cube.sizes['mass']} masses x {cube.sizes['realization']} realizations "
          f"({n * cube.sizes['mass'] * cube.sizes['realization'] * 4 / 1e9:.2f} GB float32)")
    print(f"  write: materialised {t_build:.1f} s ({_du(mat):.3f} GB on disk), recipe {t_recipe:.2f} s "
          f"({_du(rec) * 1e3:.2f} MB on disk)")
    tasks = {
        "summary": lambda ds: ds.massmap.summary().compute(),
        "sample(100)": lambda ds: ds.massmap.sample(100, seed=1).compute(),
        "map (sample+project+stats)": lambda ds: _map(ds, 100),
    }
    times = {(t, k): [] for t in tasks for k in ("recipe", "materialised")}
    results = {}
    for _ in range(args.repeat):
        for kind, path in (("recipe", rec), ("materialised", mat)):
            ds = mm.open_store(path)
            for t, f in tasks.items():
                t0 = time.perf_counter()
                out = f(ds)
                times[(t, kind)].append(time.perf_counter() - t0)
                results[(t, kind)] = out
            print(f"  run {kind:12s} " + "  ".join(f"{t} {times[(t, kind)][-1]:6.2f} s" for t in tasks)
                  + f"  (load {os.getloadavg()[0]:.2f})", flush=True)
    for t in tasks:
        a, b = results[(t, "recipe")], results[(t, "materialised")]
        same = a.identical(b) if hasattr(a, "identical") else np.array_equal(a, b)
        r, m = times[(t, "recipe")], times[(t, "materialised")]
        print(f"  {t:28s} recipe best {min(r):6.2f} s median {statistics.median(r):6.2f} s | materialised best "
              f"{min(m):6.2f} s median {statistics.median(m):6.2f} s | recipe / materialised best "
              f"{min(r) / min(m):.2f}, median {statistics.median(r) / statistics.median(m):.2f} | identical: {same}")
    print(f"  peak RSS {_rss_gib():.2f} GiB")


def part_synthetic(args) -> None:
    import xarray as xr

    import massmap_xr as mm
    from massmap_xr.catalog.mocks import uniform_field_positions
    from massmap_xr.kernels.posterior import posterior_block

    n = args.n_halos
    seed = mm.seed_field(seed=0)
    rng = np.random.default_rng(7)
    idx = np.arange(n) % seed.sizes["halo"]
    ra, dec = uniform_field_positions(n, rng)
    cat = xr.Dataset({"z": ("halo", seed["z"].values[idx]), "lum_obs": ("halo", seed["lum_obs"].values[idx])},
                     coords={"halo": np.arange(n), "ra": ("halo", ra), "dec": ("halo", dec)},
                     attrs={k: seed.attrs[k] for k in ("field_center_ra", "field_center_dec", "field_size_arcmin")})
    hyper = mm.reddick2013(args.n_realizations, seed=2)
    t0 = time.perf_counter()
    cube = mm.build_posterior(cat, hyper, sigma_obs=0.05)  # the seed field's scatter
    t_cube = time.perf_counter() - t0
    rec = os.path.join(args.dir, "synthetic_recipe.zarr")
    t0 = time.perf_counter()
    cube.massmap.to_store(rec, materialize=False)
    t_write = time.perf_counter() - t0
    n_m, n_r = cube.sizes["mass"], cube.sizes["realization"]
    print(f"synthetic: {n:,} halos x {n_m} masses x {n_r} realizations ({n * n_m * n_r * 4 / 1e9:.0f} GB float32 "
          f"if materialised); build_posterior {t_cube:.1f} s, recipe written in {t_write:.1f} s, "
          f"{_du(rec) * 1e3:.1f} MB on disk")
    del cube
    # floor: the kernel alone on one slab, in this run
    from massmap_xr.model.prior import TinkerPrior, default_mass_grid

    mass = default_mass_grid()
    zn, lt = TinkerPrior().log_table(mass)
    k = slice(0, 416)
    hyp = {h: hyper[h].values for h in ("alpha1", "alpha2", "alpha3", "alpha4", "S")}
    args_k = (np.log(cat["lum_obs"].values[k]), cat["z"].values[k], 0.05)
    posterior_block(*args_k, z_nodes=zn, log_table=lt, mass=mass, **hyp)
    t0 = time.perf_counter()
    for _ in range(3):
        posterior_block(*args_k, z_nodes=zn, log_table=lt, mass=mass, **hyp)
    rate = 3 * 416 * n_m * n_r / (time.perf_counter() - t0)
    floor = n * n_m * n_r / rate
    print(f"  kernel alone: {rate:.3g} cells/s on one slab -> one pass over the cube {floor:.1f} s (the floor)")
    t0 = time.perf_counter()
    ds = mm.open_store(rec)
    t_open = time.perf_counter() - t0
    if args.compute_halos and args.compute_halos < n:
        ds = ds.isel(halo=slice(0, args.compute_halos))  # whole slabs of the opened 10^6-halo recipe
        floor *= args.compute_halos / n
        print(f"  summary and map over the first {args.compute_halos:,} halos of the opened recipe", flush=True)
    t0 = time.perf_counter()
    summ = ds.massmap.summary().compute()
    t_sum = time.perf_counter() - t0
    print(f"  open {t_open:.1f} s; summary {t_sum:.1f} s ({t_sum / floor:.2f} x the kernel floor), "
          f"finite means: {bool(np.isfinite(summ['mean'].values).all())}; peak RSS so far {_rss_gib():.2f} GiB "
          f"(load {os.getloadavg()[0]:.2f})", flush=True)
    t0 = time.perf_counter()
    stats = _map(ds, args.n_samples)
    t_map = time.perf_counter() - t0
    print(f"  map of {args.n_samples} samples (sample + project_flat 1' + map_statistics) {t_map:.1f} s "
          f"({t_map / floor:.2f} x the kernel floor), total mass in the mean map "
          f"{float(stats['mean'].sum()):.3g} M_sun; peak RSS {_rss_gib():.2f} GiB (load {os.getloadavg()[0]:.2f})")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("field", "synthetic"), default="field")
    p.add_argument("--n-halos", type=int, default=None, help="default 30,000 (field) or 1,000,000 (synthetic)")
    p.add_argument("--n-realizations", type=int, default=100)
    p.add_argument("--n-samples", type=int, default=100)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--compute-halos", type=int, default=None,
                   help="synthetic: summarise and map only the first N halos of the opened recipe (default: all)")
    p.add_argument("--dir", default="/tmp/bench_recipe")
    args = p.parse_args(argv)
    if args.n_halos is None:
        args.n_halos = 30_000 if args.part == "field" else 1_000_000
    print(machine_line())
    print(f"load average at start: {os.getloadavg()}")
    made = not os.path.exists(args.dir)
    if not made:
        raise SystemExit(f"{args.dir} exists; give another --dir (this script deletes only what it made)")
    os.makedirs(args.dir)
    try:
        (part_field if args.part == "field" else part_synthetic)(args)
    finally:
        shutil.rmtree(args.dir)
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
