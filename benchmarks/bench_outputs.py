"""Output formats computed once: ``massmap map`` to .png / .fits against .nc, summaries and samples.

Every writer computes the maps (or summaries, or samples) in ONE dask computation, so an image or
a FITS file costs what a NetCDF file costs plus drawing.  This script times, on one store in the
same run (alternating formats ``--repeat`` times so that load drifts hit all alike):

- ``massmap map STORE --flat 1 -n N -o OUT`` for OUT = .nc (the floor), .fits, .png;
- the old FITS path, ``to_fits`` of the lazy statistics (one dask compute per variable), for
  comparison;
- ``massmap summary`` to .csv against .nc, ``massmap sample`` to .nc against .zarr;

and prints the best time of each, its ratio to the floor, the number of dask computations, the
machine and the load average before and after.

The store is ``--path`` (built there first when missing: ``--n-halos`` mock halos in a 40′ field,
``--n-realizations`` Reddick 2013 draws).  Run ``python benchmarks/bench_outputs.py``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from machine import machine_line


class _Count:
    def __init__(self):
        from dask.callbacks import Callback

        outer = self
        self.n = 0

        class C(Callback):
            def _start(self, dsk):
                outer.n += 1

        self.cb = C()


def _timed(fn):
    c = _Count()
    t0 = time.perf_counter()
    with c.cb:
        fn()
    return time.perf_counter() - t0, c.n


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--path", default="/tmp/bench_outputs.zarr")
    p.add_argument("--n-halos", type=int, default=30000)
    p.add_argument("--n-realizations", type=int, default=20)
    p.add_argument("-n", type=int, default=50, help="mass samples (maps)")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--only", default="", help="comma-separated case groups: map,old,summary,sample (default all)")
    args = p.parse_args(argv)

    import massmap_xr as mm
    from massmap_xr.cli import main as massmap
    from massmap_xr.sky import map_statistics, project_flat
    from massmap_xr.sky.fits import to_fits

    print(machine_line())
    print(f"load average before: {os.getloadavg()}")
    if not Path(args.path).exists():
        cube = mm.build_posterior(mm.mock_catalog(args.n_halos, seed=1), mm.reddick2013(args.n_realizations, seed=2))
        mm.to_store(cube, args.path, progress=False)
    ds = mm.open_store(args.path)
    print(f"store: {ds.sizes['halo']} halos x {ds.sizes['mass']} masses x {ds.sizes['realization']} realizations; "
          f"{args.n} samples, 1' pixels over {ds.attrs['field_size_arcmin']}'")
    tmp = Path(tempfile.mkdtemp(prefix="bench_outputs_"))

    def cli(*a):
        assert massmap([*a, "--quiet", "--overwrite"]) == 0

    def old_fits():
        s = mm.analysis.sample(ds, args.n, seed=0)
        grid = {"center": (ds.attrs["field_center_ra"], ds.attrs["field_center_dec"]),
                "size": ds.attrs["field_size_arcmin"], "pixel_scale": 1.0}
        out = map_statistics(project_flat(s, **grid), truth=project_flat(ds["mass_true"], **grid))
        to_fits(out, tmp / "old.fits", overwrite=True)

    cases = {
        "map .nc (floor)": lambda: cli("map", args.path, "--flat", "1", "-n", str(args.n), "-o", str(tmp / "m.nc")),
        "map .fits": lambda: cli("map", args.path, "--flat", "1", "-n", str(args.n), "-o", str(tmp / "m.fits")),
        "map .png": lambda: cli("map", args.path, "--flat", "1", "-n", str(args.n), "-o", str(tmp / "m.png")),
        "old FITS path (compute per variable)": old_fits,
        "summary .nc (floor)": lambda: cli("summary", args.path, "-o", str(tmp / "s.nc")),
        "summary .csv": lambda: cli("summary", args.path, "-o", str(tmp / "s.csv")),
        "sample .zarr (floor)": lambda: cli("sample", args.path, "-n", str(args.n), "-o", str(tmp / "x.zarr")),
        "sample .nc": lambda: cli("sample", args.path, "-n", str(args.n), "-o", str(tmp / "x.nc")),
    }
    if args.only:
        cases = {k: v for k, v in cases.items() if k.split()[0] in args.only.split(",")}
    best: dict[str, float] = {}
    computes: dict[str, int] = {}
    for r in range(args.repeat):
        for name, fn in cases.items():
            t, n = _timed(fn)
            best[name] = min(best.get(name, t), t)
            computes[name] = n
            print(f"  round {r + 1}: {name}: {t:.2f} s, {n} dask computation(s)", flush=True)
    floor_of = {"map": "map .nc (floor)", "old": "map .nc (floor)", "summary": "summary .nc (floor)",
                "sample": "sample .zarr (floor)"}
    print(f"{'case':40s} {'best s':>8s} {'x floor':>8s} {'computes':>9s}")
    for name in cases:
        floor = best.get(floor_of[name.split()[0]], float("nan"))
        print(f"{name:40s} {best[name]:8.2f} {best[name] / floor:8.2f} {computes[name]:9d}")
    print(f"load average after: {os.getloadavg()}")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
