"""Full-field build: the seed field's posterior cube written to a Zarr store on local disk.

Builds ``build_posterior(seed_field(), reddick2013(100, seed=...))`` (115,919 halos × 400 masses
× 100 realizations, 18.5 GB of float32 before compression) and writes it with
``cube.massmap.to_store(path)``, then prints

- wall time of the whole build (graph construction, kernel, compression, checksums, writes) and
  halos per second;
- peak resident memory (``getrusage`` ``ru_maxrss`` of this process and of its children, plus
  the largest RSS sampled every 0.2 s over the process tree with psutil): target ≤ 3 GB;
- the store's size on disk (allocated blocks) and its apparent size, and the compression ratio;
- a spot check: a few halos read back from the store equal the kernel's values bit for bit.

The store goes to ``--path`` (default ``/tmp/massmap_bench/seed.zarr``) and is deleted at the end
unless ``--keep``.  The run aborts before writing anything if the file system has less free space
than the full field needs (40 GB, scaled down for ``--n-halos``).

``--profile`` instead builds ``--n-halos`` halos (default 4,000), then times the stages of writing
one slab separately (kernel, checksums, compression, sharding, disk) and extrapolates each to
the full field.

Run ``python benchmarks/bench_build.py`` (``--n-halos 20000`` for a fraction of the field).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import threading
import time

import numpy as np
from machine import cpu_model

FULL_FIELD = 115_919
FULL_FIELD_FREE_GB = 40.0


class RssSampler:
    """Largest RSS of this process plus its children, sampled every ``interval`` seconds."""

    def __init__(self, interval: float = 0.2):
        import psutil

        self._proc = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        import psutil

        total = 0
        for p in [self._proc, *self._proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):  # a child exited between listing and reading
                total += p.memory_info().rss
        return total

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self.interval)

    def __enter__(self):
        self.peak = self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._sample())


def ru_maxrss_bytes() -> tuple[int, int]:
    """Peak RSS (bytes) of this process and of its waited-for children (Linux reports KiB)."""
    scale = 1 if platform.system() == "Darwin" else 1024
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale)


def disk_usage(path: str) -> tuple[int, int, int]:
    """(allocated bytes, apparent bytes, number of files) under ``path``."""
    alloc = apparent = files = 0
    for root, _dirs, names in os.walk(path):
        for n in names:
            st = os.stat(os.path.join(root, n))
            alloc += st.st_blocks * 512
            apparent += st.st_size
            files += 1
    return alloc, apparent, files


def build_inputs(n_halos: int, n_realizations: int, n_mass: int, seed: int):
    from massmap_xr.catalog import seed_field
    from massmap_xr.cube import build_posterior
    from massmap_xr.model.hyper import reddick2013
    from massmap_xr.model.prior import default_mass_grid

    cat = seed_field()
    if n_halos < cat.sizes["halo"]:
        cat = cat.isel(halo=slice(0, n_halos))
    hyper = reddick2013(n_realizations, seed=seed)
    return build_posterior(cat, hyper, mass=default_mass_grid(n_mass)), cat, hyper


def profile_build(args) -> None:
    """Time the parts of writing one slab: kernel, checksums, compression, sharding, disk.

    A small store (``--n-halos``) is built first, with dask's default scheduler, to learn the
    store's layout (slab size, inner chunks, codecs); one slab of it is then recomputed and
    written again with each stage isolated, single-threaded unless stated.
    """
    import tempfile
    import zlib

    import zarr

    cube, _, _ = build_inputs(args.n_halos, args.n_realizations, args.n_mass, args.seed)
    path = args.path + ".profile"
    shutil.rmtree(path, ignore_errors=True)
    t0 = time.perf_counter()
    cube.massmap.to_store(path, progress=False)
    wall = time.perf_counter() - t0
    stored = zarr.open_array(zarr.storage.LocalStore(path, read_only=True), path="posterior", mode="r")
    slab = int(stored.shards[0] if stored.shards else stored.chunks[0])
    spec = {"chunks": stored.chunks, "shards": stored.shards, "compressors": stored.compressors,
            "filters": stored.filters, "serializer": stored.serializer}
    print(f"profile: {args.n_halos} halos, whole build {wall:.2f} s = {args.n_halos / wall:.0f} halos/s (default "
          f"scheduler, incl. prior table and template)")
    print(f"  layout: slab {slab} halos, shards {stored.shards}, inner chunks {stored.chunks}, "
          f"compressors {[type(c).__name__ + str(getattr(c, 'cname', '')) for c in stored.compressors]}")
    block_da = cube["posterior"].data[:slab]
    block = np.asarray(block_da.compute(scheduler="synchronous"))  # warm-up
    nbytes = block.nbytes

    def timed(fn, repeat=3):
        best = float("inf")
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
        return best

    rows = []
    kernel_t = timed(lambda: block_da.compute(scheduler="synchronous"))
    rows.append(("kernel (one slab, dask block, numba threads)", kernel_t))
    r_chunk = stored.chunks[2]
    rows.append(("CRC-32 per realization chunk (copy + crc32)", timed(
        lambda: [zlib.crc32(np.ascontiguousarray(block[:, :, j:j + r_chunk]).tobytes())
                 for j in range(0, block.shape[2], r_chunk)])))
    rows.append(("crc32 of the contiguous slab only", timed(lambda: zlib.crc32(block))))

    def zarr_write(store, **over):
        kw = {**spec, **over}
        arr = zarr.create_array(store, name="p", shape=block.shape, dtype="float32", overwrite=True, **kw)
        return lambda: arr.__setitem__(slice(None), block)

    mem = zarr.storage.MemoryStore()
    rows.append(("zarr write to memory, store's codecs", timed(zarr_write(mem))))
    rows.append(("zarr write to memory, no compression", timed(zarr_write(mem, compressors=None))))
    rows.append(("zarr write to memory, no compression, no shards",
                 timed(zarr_write(mem, compressors=None, shards=None))))
    want = -(-stored.chunks[0] * stored.chunks[2] // block.shape[2])  # same inner-chunk size, all realizations
    h_inner = max(d for d in range(1, want + 1) if slab % d == 0)
    contiguous = (h_inner, block.shape[1], block.shape[2])
    rows.append((f"zarr write to memory, contiguous inner chunks {contiguous}",
                 timed(zarr_write(mem, chunks=contiguous))))
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(args.path))) as tmp:
        rows.append(("zarr write to local disk, store's codecs", timed(zarr_write(zarr.storage.LocalStore(tmp)))))
        raw_file = os.path.join(tmp, "raw.bin")
        rows.append(("numpy tofile of the slab (disk floor)", timed(lambda: block.tofile(raw_file))))
    import numcodecs

    for c in stored.compressors:
        cname = getattr(c, "cname", None)
        if cname is not None:
            shuffle = {"bitshuffle": numcodecs.Blosc.BITSHUFFLE, "shuffle": numcodecs.Blosc.SHUFFLE}.get(
                str(getattr(c.shuffle, "value", c.shuffle)), numcodecs.Blosc.NOSHUFFLE)
            blosc = numcodecs.Blosc(cname=str(getattr(cname, "value", cname)), clevel=c.clevel, shuffle=shuffle)
            inner = np.ascontiguousarray(block[: stored.chunks[0], :, : stored.chunks[2]])
            n_inner = nbytes / inner.nbytes
            rows.append((f"blosc encode of the slab's inner chunks (numcodecs, x{n_inner:.0f})",
                         timed(lambda b=blosc, x=inner: b.encode(x)) * n_inner))
    n_slabs = -(-FULL_FIELD // slab)
    print(f"  one slab = {nbytes / 2**20:.0f} MiB; per-slab times and the full field's total at that rate "
          f"({n_slabs} slabs, one worker):")
    for name, t in rows:
        print(f"    {name:58s} {t * 1e3:8.1f} ms  {nbytes / t / 2**30:6.2f} GiB/s  -> {n_slabs * t:7.1f} s")
    _, apparent, _ = disk_usage(path)
    print(f"  store of {args.n_halos} halos: {apparent / 2**20:.0f} MiB apparent, "
          f"compression {args.n_halos * args.n_mass * args.n_realizations * 4 / apparent:.2f}x")
    shutil.rmtree(path, ignore_errors=True)


def uncompressed_floor(cube, parent: str) -> dict:
    """The floor of a build: the same cube computed slab by slab (same dask graph, 2 blocks at a
    time) and written uncompressed with ``numpy.tofile`` into one file, then ``fsync``; also the
    time spent in ``tofile`` + ``fsync`` alone (the disk's share)."""
    import dask

    blocks = cube["posterior"].transpose("halo", "mass", "realization").data.to_delayed().ravel()
    fn = os.path.join(parent, "floor.raw")
    t_disk = 0.0
    t0 = time.perf_counter()
    with open(fn, "wb") as fh:
        for b0 in range(0, len(blocks), 2):
            for blk in dask.compute(*blocks[b0:b0 + 2]):
                t = time.perf_counter()
                np.ascontiguousarray(blk).tofile(fh)
                t_disk += time.perf_counter() - t
        t = time.perf_counter()
        fh.flush()
        os.fsync(fh.fileno())
        t_disk += time.perf_counter() - t
    wall = time.perf_counter() - t0
    size = os.path.getsize(fn)
    os.unlink(fn)
    return {"floor_wall_s": wall, "floor_disk_s": t_disk, "floor_bytes": size}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-halos", type=int, default=None, help=f"halos to build (default: all {FULL_FIELD:,})")
    p.add_argument("--n-realizations", type=int, default=100)
    p.add_argument("--n-mass", type=int, default=400)
    p.add_argument("--seed", type=int, default=2, help="seed of the Reddick (2013) draws")
    p.add_argument("--path", default="/tmp/massmap_bench/seed.zarr")
    p.add_argument("--keep", action="store_true", help="keep the store instead of deleting it")
    p.add_argument("--profile", action="store_true", help="profile a small synchronous build instead")
    p.add_argument("--realization-chunk", type=int, default=None,
                   help="passed to to_store (default: the store's own choice)")
    p.add_argument("--inner-halo-chunk", type=int, default=None,
                   help="passed to to_store (default: the store's own choice)")
    p.add_argument("--json", help="also write the numbers to this JSON file")
    args = p.parse_args(argv)
    if args.profile:
        args.n_halos = args.n_halos or 4000
        os.makedirs(os.path.dirname(os.path.abspath(args.path)), exist_ok=True)
        profile_build(args)
        return None
    n_halos = min(args.n_halos or FULL_FIELD, FULL_FIELD)

    parent = os.path.dirname(os.path.abspath(args.path))
    os.makedirs(parent, exist_ok=True)
    if os.path.exists(args.path):
        raise SystemExit(f"{args.path} exists; remove it first (this benchmark never overwrites a store)")
    free_gb = shutil.disk_usage(parent).free / 1e9
    scale = (n_halos / FULL_FIELD) * (args.n_realizations / 100) * (args.n_mass / 400)
    need_gb = max(1.0, FULL_FIELD_FREE_GB * scale)
    print(f"free space on {parent}: {free_gb:.1f} GB (need {need_gb:.1f} GB)")
    if free_gb < need_gb:
        raise SystemExit(f"aborting: less than {need_gb:.1f} GB free on {parent}")

    import dask
    import numba
    import xarray as xr
    import zarr

    import massmap_xr
    from massmap_xr.kernels.posterior import posterior_block
    from massmap_xr.store import open_store

    info = {
        "platform": platform.platform(), "python": platform.python_version(), "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(), "numpy": np.__version__, "numba": numba.__version__,
        "dask": dask.__version__, "xarray": xr.__version__, "zarr": zarr.__version__,
        "massmap_xr": massmap_xr.__version__, "load_average_1min_start": os.getloadavg()[0],
    }
    for k, v in info.items():
        print(f"  {k:24s} {v}")
    rss_before = ru_maxrss_bytes()[0]

    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    with RssSampler() as sampler:
        t0 = time.perf_counter()
        cube, cat, hyper = build_inputs(n_halos, args.n_realizations, args.n_mass, args.seed)
        t_graph = time.perf_counter() - t0
        layout = {k: v for k, v in (("realization_chunk", args.realization_chunk),
                                       ("inner_halo_chunk", args.inner_halo_chunk)) if v is not None}
        cube.massmap.to_store(args.path, progress=True, **layout)
        wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu_user, cpu_sys = ru1.ru_utime - ru0.ru_utime, ru1.ru_stime - ru0.ru_stime
    rss_self, rss_children = ru_maxrss_bytes()
    alloc, apparent, n_files = disk_usage(args.path)
    raw = n_halos * args.n_mass * args.n_realizations * 4
    chunks = cube["posterior"].data.chunks[0]
    stored = zarr.open_array(zarr.storage.LocalStore(args.path, read_only=True), path="posterior", mode="r")
    store_layout = f"shards {stored.shards}, chunks {stored.chunks}"

    # spot check: halos of the first, a middle and the last slab read back bit for bit
    ds = open_store(args.path)
    pick = np.unique(np.array([0, n_halos // 2, n_halos - 1]))
    stored = ds["posterior"].isel(halo=pick).values
    hyp = {k: hyper[k].values for k in ("alpha1", "alpha2", "alpha3", "alpha4", "S")}
    from massmap_xr.model.prior import TinkerPrior

    z_nodes, log_table = TinkerPrior().log_table(ds["mass"].values)
    direct = posterior_block(np.log(cat["lum_obs"].values[pick]), cat["z"].values[pick], 0.05, z_nodes=z_nodes,
                             log_table=log_table, mass=ds["mass"].values, **hyp)
    same = bool(np.array_equal(stored, direct))
    ds.close()

    results = {
        "machine": info, "n_halos": n_halos, "n_mass": args.n_mass, "n_realizations": args.n_realizations,
        "halo_slab": int(chunks[0]), "n_slabs": len(chunks), "store_layout": store_layout, "to_store_options": layout,
        "wall_s": wall, "graph_s": t_graph, "cpu_user_s": cpu_user, "cpu_sys_s": cpu_sys, "halos_per_s": n_halos / wall, "cells_per_s": raw / 4 / wall,
        "peak_rss_self_bytes": rss_self, "peak_rss_children_bytes": rss_children,
        "peak_rss_sampled_tree_bytes": sampler.peak, "rss_before_build_bytes": rss_before,
        "store_allocated_bytes": alloc, "store_apparent_bytes": apparent, "store_files": n_files,
        "raw_float32_bytes": raw, "compression_ratio": raw / max(apparent, 1), "readback_bit_identical": same,
        "load_average_1min_end": os.getloadavg()[0],
    }
    print(f"\nfull-field build: {n_halos:,} halos x {args.n_mass} masses x {args.n_realizations} realizations "
          f"({raw / 1e9:.1f} GB float32), slabs of {chunks[0]} halos ({len(chunks)} slabs)")
    print(f"  layout           : {store_layout} (to_store options {layout or 'default'})")
    print(f"  wall time        : {wall:.1f} s (graph/inputs {t_graph:.1f} s)  ->  {n_halos / wall:,.0f} halos/s, "
          f"{raw / 4 / wall:.3g} cells/s")
    print(f"  CPU time         : {cpu_user + cpu_sys:.1f} CPU-s ({cpu_user:.1f} user, {cpu_sys:.1f} system) on "
          f"{os.cpu_count()} cores")
    print(f"  peak RSS         : {rss_self / 2**30:.2f} GiB (ru_maxrss self), "
          f"{rss_children / 2**30:.2f} GiB (children), "
          f"{sampler.peak / 2**30:.2f} GiB (sampled process tree); {rss_before / 2**30:.2f} GiB before the build; "
          "target <= 3 GB")
    print(f"  store size       : {alloc / 1e9:.2f} GB on disk, {apparent / 1e9:.2f} GB apparent, {n_files} files; "
          f"compression {raw / max(apparent, 1):.2f}x")
    print(f"  read-back check  : {'bit-identical' if same else 'DIFFERENT'} for halos {pick.tolist()}")
    print(f"  load average     : {info['load_average_1min_start']:.2f} at start, "
          f"{results['load_average_1min_end']:.2f} at end "
          f"(other processes share the {os.cpu_count()} cores: the numbers may be pessimistic)")
    if not args.keep:
        shutil.rmtree(args.path)
        print(f"  removed {args.path}")
    floor = uncompressed_floor(cube, parent)
    results.update(floor)
    results["ratio_to_floor"] = wall / floor["floor_wall_s"]
    results["ratio_to_disk_floor"] = wall / floor["floor_disk_s"]
    print(f"  floor (same run) : same cube computed and written uncompressed (numpy.tofile + fsync, "
          f"{floor['floor_bytes'] / 1e9:.1f} GB): {floor['floor_wall_s']:.1f} s, of which tofile + fsync "
          f"{floor['floor_disk_s']:.1f} s")
    print(f"  ratio            : build / floor = {results['ratio_to_floor']:.2f}, build / (tofile + fsync) = "
          f"{results['ratio_to_disk_floor']:.2f} (target <= 0.75 of the floor)")
    print(f"  load average end : {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return results


if __name__ == "__main__":
    main()
