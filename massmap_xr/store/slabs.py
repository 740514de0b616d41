"""Computing and writing posterior slabs: one job per (halo slab, realization range), run a batch of
``2 × workers`` at a time, each block refused unless normalised, checksums recorded after each batch.

The cube's other per-(halo, realization) variables (e.g. ``log_evidence``, ``edge_fraction``,
:func:`slab_variables`) are computed by the kernel with the posterior, so they are written with
the slabs too, in the same dask computation as the posterior block (shared tasks run once),
before the slab's checksums are recorded: a slab marked written has all of its variables.
Stores written before such a variable existed simply lack it (:func:`stored_slab_variables`).
"""

from __future__ import annotations

import gc
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field

import dask
import numpy as np
import zarr

from massmap_xr.errors import (
    StoreError,
    format_offenders,
)
from massmap_xr.store.cellcrc import block_crc32s, norm_and_negative
from massmap_xr.store.checks import check_build_id, pending_record, trapezoid_of
from massmap_xr.store.directio import queue_of, write_queue
from massmap_xr.store.layout import (
    CRC_NAME,
    NORM_ATOL,
    NORM_NAME,
    PENDING,
    StoreLayout,
    cell_stats,
    crc32_of,
    slab_chunks,
)
from massmap_xr.store.location import open_group, zarr_store
from massmap_xr.store.shardenc import covers_shard, put_chunk, shard_spec, write_shard

#: the dimensions of the variables written with the slabs
SLAB_DIMS = ("halo", "realization")


def slab_variables(ds) -> list[str]:
    """Data variables of ``ds`` along exactly (halo, realization), in any order (written with the slabs)."""
    return [str(k) for k, v in ds.data_vars.items() if sorted(v.dims) == sorted(SLAB_DIMS)]


def stored_slab_variables(ds, group) -> list[str]:
    """:func:`slab_variables` of ``ds`` that the store ``group`` holds (an older store may lack some)."""
    names = {name for name, _ in group.arrays()}
    return [k for k in slab_variables(ds) if k in names]


def slab_variable_blocks(ds, names, start: int, hc: int) -> dict:
    """name -> delayed (halo, realization) blocks of ``ds[name]`` aligned to the store's slabs, like
    :func:`~massmap_xr.store.layout.posterior_blocks` (``ds`` starts at store halo ``start``)."""
    import dask.array as da

    out = {}
    for k in names:
        a = ds[k].transpose(*SLAB_DIMS).data
        if not isinstance(a, da.Array):
            a = da.from_array(np.asarray(a), chunks=-1)
        want = (slab_chunks(start, a.shape[0], hc), (a.shape[1],))
        out[k] = (a.rechunk(want) if a.chunks != want else a).to_delayed().ravel()
    return out


def empty_slab_variables(ds, names, layout: StoreLayout) -> dict:
    """Unwritten (halo, realization) arrays of the template: written with the slabs, not here."""
    import dask.array as da

    out = {}
    for k in names:
        v = ds[k]
        shape = (ds.sizes["halo"], ds.sizes["realization"])
        out[k] = (SLAB_DIMS, da.empty(shape, chunks=(layout.halo_chunk, layout.n_realization), dtype=v.dtype),
                  dict(v.attrs))
    return out


def slab_extras(blocks: dict, k: int, h0: int, r0: int) -> dict | None:
    """The ``extras`` of the :class:`SlabJob` writing slab block ``k`` of ``blocks`` at ``[h0:, r0:]``."""
    if not blocks:
        return None
    return {"blocks": {name: b[k] for name, b in blocks.items()}, "h0": int(h0), "r0": int(r0)}


def write_slab_variables(blocks: dict, path, storage_options, h0: int, r0: int, queue=None) -> dict:
    """Write each (halo, realization) block at ``[h0:, r0:]`` of its store array (runs on workers;
    ``queue`` as in :func:`write_block`); return ``{name: (CRC-32, bytes)}`` of the blocks as
    stored (for :func:`~massmap_xr.store.layout.crc32_concat`; None for a block that is not whole
    rows of its array)."""
    store = zarr_store(path, storage_options)
    out = {}
    for name, block in blocks.items():
        arr = zarr.open_array(store, path=name, mode="r+")
        b = np.ascontiguousarray(np.asarray(block).astype(arr.dtype, copy=False))
        put_chunk(arr, b, (h0, r0), queue_of(queue))
        whole_rows = r0 == 0 and tuple(b.shape[1:]) == tuple(arr.shape[1:])
        out[name] = (crc32_of(b), b.nbytes) if whole_rows else None
    return out


def write_block(block, path, storage_options, layout_dict: dict, h0: int, r0: int, w, old=None, queue=None):
    """Write ``block`` at ``posterior[h0:, :, r0:]`` and return its cells' checksums (runs on workers).

    ``queue`` is the token of a :func:`~massmap_xr.store.directio.write_queue`: in the process
    that holds it the shard file is handed to its background writer (the caller waits for the
    queue before recording the checksums); elsewhere it is written here.

    ``old`` (append only) describes stored data to keep in front of ``block``: a dict with the
    region ``h``/``r`` to read, the ``axis`` to concatenate along, and the checksums ``crc`` it had
    when the append started (verified before anything is rewritten).

    A block with a (halo, realization) row that is not normalised (|trapezoid integral - 1| >
    ``NORM_ATOL``), holds NaN/inf or a negative density is not written: a dict ``{"halos",
    "realizations", "n_bad", "n_negative", "worst"}`` (store indices of the offending rows) is
    returned instead of the checksums.
    """
    layout = StoreLayout.from_dict(layout_dict)
    block = np.asarray(block, dtype=np.float32)
    arr = zarr.open_array(zarr_store(path, storage_options), path="posterior", mode="r+", zarr_format=3)
    if old is not None:
        (a, b), (c, d) = old["h"], old["r"]
        prev = np.asarray(arr[a:b, :, c:d])
        crcs, _ = cell_stats(prev, c, layout.realization_chunk, None)
        if [int(x) for x in crcs] != [int(x) for x in old["crc"]]:
            bad = [k for k, (x, y) in enumerate(zip(crcs, old["crc"], strict=True)) if int(x) != int(y)]
            raise StoreError(
                f"{str(path)!r}: stored posterior halos [{a}, {b}), realizations [{c}, {d}) no longer match their "
                f"checksums (realization cells {bad}); the store was damaged during the append. Restore it from a "
                "backup or rebuild it"
            )
        block = np.concatenate([prev, block], axis=old["axis"])
    block = np.ascontiguousarray(block)
    err = None
    if w is not None and block.size:
        # a density is never negative, even in a normalised row
        err, negative = norm_and_negative(block, w)
        bad = ~(err <= NORM_ATOL) | negative  # NaN and inf included
        if bad.any():
            hh, rr = np.nonzero(bad)
            finite = err[np.isfinite(err)]
            return {"halos": sorted({int(h0 + h) for h in hh}), "realizations": sorted({int(r0 + r) for r in rr}),
                    "n_bad": int(bad.sum()), "n_rows": int(bad.size), "n_negative": int(negative.sum()),
                    "worst": float("inf") if finite.size < err.size else float(np.max(finite))}
    put_block(arr, block, (h0, 0, r0), queue_of(queue))
    return cell_stats(block, r0, layout.realization_chunk, w, err, block_crc32s(block, layout.realization_chunk))


def put_block(arr, block: np.ndarray, start: tuple[int, int, int], queue=None) -> None:
    """``arr[start:start + block.shape] = block``; a block that is exactly one shard (a whole
    slab, the build's case) is encoded and stored as one object by :mod:`.shardenc`, bypassing
    zarr's per-inner-chunk write machinery (on local disk by ``queue``, a
    :class:`~massmap_xr.store.directio.WriteQueue`, when given); anything else goes through zarr."""
    spec = shard_spec(arr)
    if spec is not None and covers_shard(spec, start, block.shape):
        write_shard(arr, spec, start, block, queue)
        return
    arr[tuple(slice(s, s + n) for s, n in zip(start, block.shape, strict=True))] = block


#: slabs computed and written per worker between two checksum records (one dask computation)
SLABS_PER_WORKER = 2


def _distributed_client():
    """The ``dask.distributed`` client in use, or None.  A client exists only once ``distributed``
    has been imported, so it is not imported here (that costs ~0.7 s)."""
    if "distributed" not in sys.modules:
        return None
    try:
        from distributed import get_client

        return get_client()
    except (ImportError, ValueError):
        return None


def n_workers() -> int:
    """Threads of the dask.distributed client in use, else the machine's cores."""
    client = _distributed_client()
    if client is not None:
        return max(1, sum(client.nthreads().values()))
    return max(1, os.cpu_count() or 1)


def threaded_scheduler() -> bool:
    """Whether a delayed computation started here runs on dask's threaded scheduler (its default:
    no other scheduler configured, no ``dask.distributed`` client in use)."""
    chosen = dask.config.get("scheduler", None)
    if chosen is not None:
        return chosen in ("threads", "threading") or chosen is dask.threaded.get
    return _distributed_client() is None


def progress_bar(total, desc, enabled, initial=0):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="halo", unit_scale=True, disable=not enabled,
                smoothing=0.1)


@dataclass
class SlabJob:
    row: int          # checksum-table row (halo slab index)
    block: object     # delayed or numpy block of new data
    h0: int           # first store halo written
    r0: int           # first store realization written
    n_halo: int       # halos counted for progress
    old: dict | None = field(default=None)
    extras: dict | None = field(default=None)  # (halo, realization) variables: slab_extras(...)


def run_jobs(jobs: list[SlabJob], path, storage_options, layout: StoreLayout, *, progress: bool, total: int,
             initial: int, desc: str, build_id: str | None) -> dict:
    """Compute and write the jobs, recording each batch's checksums once its files are stored;
    return ``{row: {name: (CRC-32, bytes)}}`` of the slab variables written
    (:func:`write_slab_variables`) for the jobs that carry them.

    With dask's default (threaded) scheduler every thread runs a stream of its own: it takes the
    next batch of :data:`SLABS_PER_WORKER` slabs, computes and writes them one after the other
    (dask's synchronous scheduler) and takes the next, so no thread waits for another at a batch
    boundary; at most one batch per thread is in memory.  With any other scheduler (a
    ``dask.distributed`` client, processes) batches of ``SLABS_PER_WORKER × workers`` are computed
    one at a time by that scheduler.  Either way this thread waits for a batch's shard files to
    reach the disk (:func:`~massmap_xr.store.directio.write_queue`) and records its checksums,
    batch after batch in order, so a slab is marked written only once all of its bytes are stored.

    Raises :class:`StoreError` (after recording the good slabs of the batches finished so far, so
    the store stays incomplete and is never marked complete) when a slab holds (halo,
    realization) rows that are not normalised within ``NORM_ATOL`` or hold NaN/inf; those slabs
    are not written.  Nothing is being computed or written any more when this returns or raises.
    """
    if not jobs:
        return {}
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    group = open_group(path, storage_options, mode="r+")
    tables = (group[CRC_NAME], group.get(NORM_NAME, None))
    w = trapezoid_of(group)
    workers = n_workers()
    write = dask.delayed(write_block, pure=False)
    extra = dask.delayed(write_slab_variables, pure=False)
    local = threaded_scheduler()
    threads = (dask.config.get("num_workers", None) or workers) if local else 1
    size = SLABS_PER_WORKER if local else max(2, SLABS_PER_WORKER * workers)
    batches = [jobs[b0:b0 + size] for b0 in range(0, len(jobs), size)]

    def compute(part, queue):
        tasks = [write(j.block, str(path), storage_options, layout.to_dict(), j.h0, j.r0, w, j.old, queue)
                 for j in part]
        more = [extra(j.extras["blocks"], str(path), storage_options, j.extras["h0"], j.extras["r0"], queue)
                for j in part if j.extras]
        if local:
            # one stream per core: the compiled kernels of this thread run on one thread too, or
            # each stream would start a full thread team and the teams would fight for the cores
            import numba

            numba.set_num_threads(1)
        results = dask.compute(*tasks, *more, **({"scheduler": "sync"} if local else {}))
        return results[:len(tasks)], results[len(tasks):], queue_of(queue).submitted()

    with progress_bar(total, desc, progress, initial) as bar, write_queue(depth=threads + 1) as queue, \
            ThreadPoolExecutor(max_workers=threads, thread_name_prefix="massmap-slabs") as runner, \
            _old_objects_frozen():
        running: deque = deque()
        pending = iter(batches)
        written: dict = {}

        def feed():
            for part in pending:
                if build_id is not None:
                    check_build_id(path, storage_options, build_id)
                running.append((part, runner.submit(compute, part, queue)))
                if len(running) > threads:  # one waiting, for the first thread that comes free
                    return

        try:
            feed()
            while running:
                part, future = running.popleft()
                results, extras, n_submitted = future.result()
                feed()
                queue_of(queue).wait(n_submitted)  # the batch's shards are on disk before its checksums are recorded
                refused = _record(part, results, tables, layout, bar)
                if refused:
                    _refuse_unnormalised(refused, group, path)
                written.update(zip([j.row for j in part if j.extras], extras, strict=True))
        except BaseException:
            for _, f in running:  # batches not started are dropped; the runner waits for the others
                f.cancel()
            raise
    return written


@contextmanager
def _old_objects_frozen():
    """Keep Python's cyclic garbage collector off the objects that exist before the build (the
    libraries, the cube, the catalogue: a full collection of them costs ~0.2 s, and the build's
    task objects trigger dozens); left alone when the program has frozen objects itself."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _record(part: list[SlabJob], results, tables, layout: StoreLayout, bar) -> list[dict]:
    """Record the checksums (and normalisation errors) of a batch's written slabs; return the
    refusals (:func:`write_block`'s dicts)."""
    crc_arr, norm_arr = tables
    refused = []
    for j, result in zip(part, results, strict=True):
        if isinstance(result, dict):
            refused.append(result)
            continue
        crcs, errs = result
        c0 = j.r0 // layout.realization_chunk
        if norm_arr is not None:
            norm_arr[j.row, c0:c0 + len(errs)] = np.asarray(errs, dtype=np.float64)
        crc_arr[j.row, c0:c0 + len(crcs)] = np.asarray(crcs, dtype=np.int64)
        bar.update(j.n_halo)
    return refused


def _refuse_unnormalised(refused: list[dict], group, path) -> None:
    """Raise the StoreError of :func:`run_jobs` for blocks that failed the normalisation check."""
    halos = sorted({h for r in refused for h in r["halos"]})
    reals = sorted({k for r in refused for k in r["realizations"]})
    ids = np.asarray(group["halo"][...])
    labels = np.asarray(group["realization"][...])
    worst = max(r["worst"] for r in refused)
    attrs = dict(group.attrs)
    op = pending_record(attrs).get("operation") if PENDING in attrs else None
    n_bad, n_rows = sum(r["n_bad"] for r in refused), sum(r["n_rows"] for r in refused)
    n_neg = sum(r.get("n_negative", 0) for r in refused)
    raise StoreError(
        f"posterior of {str(path)!r}: {n_bad} of {n_rows} (halo, realization) rows in the slabs just computed are "
        f"not normalised (|trapezoid integral over log10_mass - 1| > {NORM_ATOL:g}, or NaN/inf values; worst "
        f"{worst:.3g}) or hold negative densities ({n_neg} row(s)); halos: {len(halos)} (first ids: {format_offenders(ids[halos])}), realizations: "
        f"{len(reals)} (first labels: {format_offenders(labels[reals])}). These slabs were not written and the "
        "store was not marked complete. Write a cube from build_posterior() over its whole mass grid (a "
        "cube.isel(mass=...) subset is not normalised) without NaN or inf values"
        + (f"; to finish the interrupted {op}, call it again with such a cube of the same "
           f"{'halos' if op == 'append_halos' else 'realizations'}, e.g. from build_like_store(catalog, path"
           f"{'' if op == 'append_halos' else ', hyper=new_draws'})" if op else "")
    )
