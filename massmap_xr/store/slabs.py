"""Computing and writing posterior slabs: one job per (halo slab, realization range), run a batch of
``2 × workers`` at a time, each block refused unless normalised, checksums recorded after each batch."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import dask
import numpy as np
import zarr

from massmap_xr.errors import (
    StoreError,
    format_offenders,
)
from massmap_xr.store.checks import check_build_id, pending_record, trapezoid_of
from massmap_xr.store.layout import CRC_NAME, NORM_ATOL, NORM_NAME, PENDING, StoreLayout, cell_stats, norm_error
from massmap_xr.store.location import open_group, zarr_store


def write_block(block, path, storage_options, layout_dict: dict, h0: int, r0: int, w, old=None):
    """Write ``block`` at ``posterior[h0:, :, r0:]`` and return its cells' checksums (runs on workers).

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
        err = norm_error(block, w)
        negative = np.any(block < 0, axis=1)  # a density is never negative, even in a normalised row
        bad = ~(err <= NORM_ATOL) | negative  # NaN and inf included
        if bad.any():
            hh, rr = np.nonzero(bad)
            finite = err[np.isfinite(err)]
            return {"halos": sorted({int(h0 + h) for h in hh}), "realizations": sorted({int(r0 + r) for r in rr}),
                    "n_bad": int(bad.sum()), "n_rows": int(bad.size), "n_negative": int(negative.sum()),
                    "worst": float("inf") if finite.size < err.size else float(np.max(finite))}
    arr[h0:h0 + block.shape[0], :, r0:r0 + block.shape[2]] = block
    return cell_stats(block, r0, layout.realization_chunk, w, err)


def n_workers() -> int:
    try:
        from distributed import get_client

        client = get_client()
        return max(1, sum(client.nthreads().values()))
    except (ImportError, ValueError):
        return max(1, os.cpu_count() or 1)


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


def run_jobs(jobs: list[SlabJob], path, storage_options, layout: StoreLayout, *, progress: bool, total: int,
              initial: int, desc: str, build_id: str | None) -> None:
    """Compute and write jobs ``2 × workers`` at a time; record checksums after each batch.

    Raises :class:`StoreError` (after recording the batch's good slabs, so the store stays
    incomplete and is never marked complete) when a slab holds (halo, realization) rows that are
    not normalised within ``NORM_ATOL`` or hold NaN/inf; those slabs are not written.
    """
    if not jobs:
        return
    group = open_group(path, storage_options, mode="r+")
    crc_arr = group[CRC_NAME]
    norm_arr = group.get(NORM_NAME, None)
    w = trapezoid_of(group)
    batch = max(2, 2 * n_workers())
    write = dask.delayed(write_block, pure=False)
    with progress_bar(total, desc, progress, initial) as bar:
        for b0 in range(0, len(jobs), batch):
            if build_id is not None:
                check_build_id(path, storage_options, build_id)
            part = jobs[b0:b0 + batch]
            tasks = [write(j.block, str(path), storage_options, layout.to_dict(), j.h0, j.r0, w, j.old) for j in part]
            refused = []
            for j, result in zip(part, dask.compute(*tasks), strict=True):
                if isinstance(result, dict):
                    refused.append(result)
                    continue
                crcs, errs = result
                c0 = j.r0 // layout.realization_chunk
                if norm_arr is not None:
                    norm_arr[j.row, c0:c0 + len(errs)] = np.asarray(errs, dtype=np.float64)
                crc_arr[j.row, c0:c0 + len(crcs)] = np.asarray(crcs, dtype=np.int64)
                bar.update(j.n_halo)
            if refused:
                _refuse_unnormalised(refused, group, path)


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
