"""Reads of a store against their floors, in one run: summary, sample, zarr's read, decode by hand.

Builds (or reuses, ``--path``) a store of the first ``--n-halos`` seed-field halos × 400 masses ×
100 realizations, then times, alternating ``--repeat`` times:

- floor: ``open_store(path)["posterior"].data.sum().compute()`` (a plain dask sum over the
  same posterior array: every shard read, decoded and checked once);
- ``ds.massmap.summary().compute()`` and ``ds.massmap.sample(100, seed=1).compute()`` on the
  same store (checked reads, the default);
- zarr's own read of every shard (``array[slab]``) against the decode floor: each shard file's
  bytes read and its inner chunks Blosc-decoded (numcodecs) straight into the slab, by hand.

Prints best times, the ratios summary / sum, sample / sum and zarr read / hand decode, the
machine and the load average.  Run ``python benchmarks/bench_reads.py --n-halos 20000``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from machine import cpu_model


def hand_decode(arr, pool) -> float:
    """Read every shard file of ``arr`` and decode its inner chunks into a slab buffer; seconds."""
    from massmap_xr.store.shardenc import _codec, shard_spec

    spec = shard_spec(arr)
    codec = _codec(**spec.blosc)
    root = str(arr.store.root)
    grid = tuple(s // c for s, c in zip(spec.shard, spec.inner, strict=True))
    n_idx = int(np.prod(grid))

    def one(i):
        key = arr.metadata.encode_chunk_key((i, 0, 0))
        with open(os.path.join(root, arr.path, *key.split("/")), "rb") as fh:
            raw = fh.read()
        index = np.frombuffer(raw[-(16 * n_idx + 4):-4], dtype="<u8").reshape(*grid, 2)
        slab = np.empty(spec.shard, dtype=np.float32)
        for idx in np.ndindex(*grid):
            off, n = (int(v) for v in index[idx])
            if off == 2**64 - 1:
                continue
            lo = [a * c for a, c in zip(idx, spec.inner, strict=True)]
            out = slab[lo[0]:lo[0] + spec.inner[0], lo[1]:lo[1] + spec.inner[1], lo[2]:lo[2] + spec.inner[2]]
            if out.flags.c_contiguous:
                codec.decode(raw[off:off + n], out=out)
            else:
                out[...] = np.frombuffer(codec.decode(raw[off:off + n]), dtype="<f4").reshape(spec.inner)
        return None

    n = -(-arr.shape[0] // spec.shard[0])
    t0 = time.perf_counter()
    list(pool.map(one, range(n)))
    return time.perf_counter() - t0


def zarr_read(arr, pool) -> float:
    n, hc = -(-arr.shape[0] // arr.shards[0]), arr.shards[0]
    t0 = time.perf_counter()
    list(pool.map(lambda i: arr[i * hc:(i + 1) * hc], range(n)))
    return time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-halos", type=int, default=20_000)
    p.add_argument("--path", default="/tmp/massmap_bench/reads.zarr")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)

    import dask
    import xarray as xr
    import zarr
    from bench_build import build_inputs

    import massmap_xr
    from massmap_xr.store import open_store

    print(f"  platform {platform.platform()}, python {platform.python_version()}, cpu {cpu_model()} x "
          f"{os.cpu_count()}, dask {dask.__version__}, xarray {xr.__version__}, zarr {zarr.__version__}, "
          f"massmap_xr {massmap_xr.__version__}; load average {os.getloadavg()[0]:.2f}")
    built = not os.path.exists(args.path)
    if built:
        os.makedirs(os.path.dirname(os.path.abspath(args.path)), exist_ok=True)
        cube, _, _ = build_inputs(args.n_halos, 100, 400, 2)
        t = time.perf_counter()
        cube.massmap.to_store(args.path, progress=False)
        print(f"  built {args.path} in {time.perf_counter() - t:.1f} s")
    arr = zarr.open_array(zarr.storage.LocalStore(args.path, read_only=True), path="posterior", mode="r")
    print(f"  store: posterior {arr.shape}, shards {arr.shards}, inner chunks {arr.chunks}")

    times = {k: [] for k in ("sum", "summary", "sample", "zarr", "hand")}
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        for _ in range(args.repeat):
            t = time.perf_counter()
            open_store(args.path)["posterior"].data.sum().compute()
            times["sum"].append(time.perf_counter() - t)
            t = time.perf_counter()
            open_store(args.path).massmap.summary().compute()
            times["summary"].append(time.perf_counter() - t)
            t = time.perf_counter()
            open_store(args.path).massmap.sample(100, seed=1).compute()
            times["sample"].append(time.perf_counter() - t)
            times["zarr"].append(zarr_read(arr, pool))
            times["hand"].append(hand_decode(arr, pool))
            print("  run: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items())
                  + f" (load {os.getloadavg()[0]:.2f})", flush=True)
    b = {k: min(v) for k, v in times.items()}
    gb = arr.size * 4 / 1e9
    print(f"\nreads of {arr.shape[0]:,} halos ({gb:.2f} GB float32), best of {args.repeat}:")
    print(f"  floor: dask sum of the posterior        {b['sum']:7.2f} s")
    print(f"  summary().compute()                     {b['summary']:7.2f} s   ratio {b['summary'] / b['sum']:.2f} "
          "(target <= 1.2)")
    print(f"  sample(100).compute()                   {b['sample']:7.2f} s   ratio {b['sample'] / b['sum']:.2f} "
          "(target <= 1.3)")
    print(f"  zarr read of every shard ({os.cpu_count()} threads)     {b['zarr']:7.2f} s")
    print(f"  hand read + Blosc decode + scatter      {b['hand']:7.2f} s   zarr / hand {b['zarr'] / b['hand']:.2f}")
    print(f"  load average end {os.getloadavg()[0]:.2f}")
    if built and not args.keep:
        shutil.rmtree(args.path)


if __name__ == "__main__":
    main()
