"""Writing a store to object storage: ``to_store`` against a plain ``xarray.Dataset.to_zarr`` of the
same data, on a real S3 endpoint (moto's server on localhost, reached through s3fs).

The cube (``--n-slabs`` slabs of ``--slab`` halos × 120 masses × ``--n-real`` realizations, the
table-prior cube of the tests) is computed into memory first, so both writes time only the
store: requests and bytes to S3.  The floor is xarray's own ``to_zarr(url, storage_options=...)``;
``to_zarr, 1 GET/read`` is the same through massmap's zarr store (s3fs reads each object with one
request, ``location.zarr_options``).  For each write the script prints the wall time (best of
``--repeat``), the number of HTTP requests the server received (by method and kind, and by the
store's top-level key), and the ratio to the plain ``to_zarr`` measured in the same run.

Run ``python benchmarks/bench_s3.py`` (needs moto[server], s3fs, boto3).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid

from machine import machine_line

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-slabs", type=int, default=2)
    ap.add_argument("--slab", type=int, default=512, help="halos per slab")
    ap.add_argument("--n-real", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--detail", action="store_true", help="print requests per top-level key")
    args = ap.parse_args()

    import zarr
    from builders import table_prior_cube
    from s3_server import S3Server

    from massmap_xr.store import to_store
    from massmap_xr.store.location import zarr_store

    print(machine_line())
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    n = args.n_slabs * args.slab
    cube = table_prior_cube(n, args.n_real, chunks=args.slab)[0].compute()
    cube = cube.chunk({"halo": args.slab})
    size = cube["posterior"].nbytes / 2**20
    print(f"cube: {n} halos x {cube.sizes['mass']} masses x {cube.sizes['realization']} realizations "
          f"({size:.0f} MiB float32), {args.n_slabs} slab(s) of {args.slab} halos")
    server = S3Server().start()
    so = server.storage_options
    try:
        def plain():  # xarray's own path: zarr's FsspecStore with the options as given
            url = server.url(f"plain-{uuid.uuid4().hex[:8]}.zarr")
            cube.to_zarr(url, storage_options=so, mode="w-", zarr_format=3, consolidated=False)

        def tuned():  # the same through massmap's zarr store (s3fs options of location.zarr_options)
            url = server.url(f"tuned-{uuid.uuid4().hex[:8]}.zarr")
            cube.to_zarr(zarr_store(url, so), mode="w-", zarr_format=3, consolidated=False)

        def ours():
            url = server.url(f"store-{uuid.uuid4().hex[:8]}.zarr")
            to_store(cube, url, progress=False, storage_options=so)

        plain(), tuned(), ours()  # warm up: imports, connections, codecs
        results = {}
        for name, fn in (("xarray to_zarr", plain), ("to_zarr, 1 GET/read", tuned), ("massmap to_store", ours)):
            best, counts = float("inf"), None
            for _ in range(args.repeat):
                server.counter.reset()
                t0 = time.perf_counter()
                fn()
                best = min(best, time.perf_counter() - t0)
                counts = (dict(server.counter.counts), dict(server.counter.by_array), server.counter.total)
            results[name] = (best, *counts)
        floor_t, *_, floor_n = results["xarray to_zarr"]
        for name, (t, by_kind, by_key, total) in results.items():
            kinds = ", ".join(f"{m} {k}: {c}" for (m, k), c in sorted(by_kind.items()))
            print(f"{name:>19}: {t:6.2f} s ({t / floor_t:.2f}x to_zarr), {total} requests "
                  f"({total / floor_n:.2f}x) [{kinds}]")
            if args.detail:
                top = sorted(by_key.items(), key=lambda kv: -kv[1])[:12]
                print("                   by key: " + ", ".join(f"{k}: {c}" for k, c in top))
        print(f"zarr {zarr.__version__}; ratio to_store / to_zarr = "
              f"{results['massmap to_store'][0] / floor_t:.2f} (time), "
              f"{results['massmap to_store'][3] / floor_n:.2f} (requests)")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
