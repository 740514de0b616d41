"""Cost of checked reads: ``summary().compute()`` on a store opened with and without ``verify``.

``open_store(path)`` checks every posterior chunk it hands out against the CRC-32 the store
recorded for that position (``massmap_chunk_crc32``); ``open_store(path, verify=False)`` does not.
This script times, on the same store in the same run, alternating checked and unchecked

- ``open_store`` itself (a checked open also reads the checksum table and checks the recorded
  CRC-32 of every catalogue / hyperparameter variable);
- ``ds.massmap.summary().compute()`` (every posterior chunk read once);

``--repeat`` times each (default 3, alternating so that load drifts hit both alike), and prints
the best and median of each, their ratio, the machine and the load average before and after.
It also times the CRC-32 of one decoded shard against decoding it, the check's own cost.

The store is ``--path`` (default ``/tmp/seed.zarr``, built with
``massmap build seed -o /tmp/seed.zarr --n-realizations 100``: about 9 GB); ``--n-halos`` reads
only the first halos of it (``isel``, whole slabs).

Run ``python benchmarks/bench_checked_read.py --path /tmp/seed.zarr``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
from machine import cpu_model


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--path", default="/tmp/seed.zarr")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--n-halos", type=int, default=None, help="read only the first N halos (default: all)")
    args = p.parse_args(argv)

    import dask
    import xarray as xr
    import zarr

    import massmap_xr
    from massmap_xr.store import open_store
    from massmap_xr.store.cellcrc import cell_crc32s
    from massmap_xr.store.layout import read_layout

    info = {
        "platform": platform.platform(), "python": platform.python_version(), "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(), "numpy": np.__version__, "dask": dask.__version__,
        "xarray": xr.__version__, "zarr": zarr.__version__, "massmap_xr": massmap_xr.__version__,
        "load_average_1min_start": os.getloadavg()[0],
    }
    for k, v in info.items():
        print(f"  {k:24s} {v}")

    def opened(verify):
        ds = open_store(args.path, verify=verify)
        return ds if args.n_halos is None else ds.isel(halo=slice(0, args.n_halos))

    times = {(what, v): [] for what in ("open", "summary") for v in (True, False)}
    for _ in range(args.repeat):
        for verify in (False, True):
            t0 = time.perf_counter()
            ds = opened(verify)
            t1 = time.perf_counter()
            ds.massmap.summary().compute()
            t2 = time.perf_counter()
            times[("open", verify)].append(t1 - t0)
            times[("summary", verify)].append(t2 - t1)
            print(f"  run: {'checked  ' if verify else 'unchecked'} open {t1 - t0:6.2f} s  summary {t2 - t1:7.2f} s  "
                  f"(load {os.getloadavg()[0]:.2f})", flush=True)

    ds = open_store(args.path, verify=False)
    post = ds["posterior"]
    n_h, n_m, n_r = post.shape
    n_read = n_h if args.n_halos is None else min(args.n_halos, n_h)
    print(f"\nstore {args.path}: {n_h:,} halos x {n_m} masses x {n_r} realizations, posterior chunks "
          f"{post.data.chunksize}; summary over {n_read:,} halos ({n_read * n_m * n_r * 4 / 1e9:.1f} GB float32)")
    for what in ("open", "summary"):
        on, off = times[(what, True)], times[(what, False)]
        print(f"  {what:8s} checked   best {min(on):7.2f} s  median {statistics.median(on):7.2f} s")
        print(f"  {what:8s} unchecked best {min(off):7.2f} s  median {statistics.median(off):7.2f} s")
        print(f"  {what:8s} checked / unchecked: best {min(on) / min(off):.3f}, median "
              f"{statistics.median(on) / statistics.median(off):.3f}")

    block = post.data.blocks[0, 0, 0]
    t0 = time.perf_counter()
    arr = np.asarray(block.compute(scheduler="sync"))
    t_dec = time.perf_counter() - t0
    import zarr as _zarr

    rc = read_layout(dict(_zarr.open_group(args.path, mode="r").attrs), args.path).realization_chunk
    cell_crc32s(arr[:1], rc)  # compile / load the cached kernel
    t0 = time.perf_counter()
    for _ in range(5):
        cell_crc32s(arr, rc)
    t_crc = (time.perf_counter() - t0) / 5
    print(f"  one shard ({arr.nbytes / 1e6:.1f} MB): read+decode {t_dec * 1e3:.1f} ms, CRC-32 of its cells "
          f"{t_crc * 1e3:.1f} ms ({arr.nbytes / t_crc / 1e9:.2f} GB/s)")
    print(f"  load_average_1min_end    {os.getloadavg()[0]}")


if __name__ == "__main__":
    main()
