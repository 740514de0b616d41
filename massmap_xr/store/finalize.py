"""Sealing a store: :func:`finalize_store` checks that every slab is written and records the
invariants :func:`~massmap_xr.store.verify.verify_store` re-checks, then marks the store complete.

The CRC-32 of every variable but the posterior and the bookkeeping tables is one of those
invariants.  A fresh build finalised by the process that wrote its template takes the small
variables' CRCs from :func:`remember_variable_crcs` (recorded as the template was written) and
the per-(halo, realization) variables' from :func:`remember_slab_variable_crcs` (each slab's
CRC, combined in halo order) instead of reading every variable back, which on object storage is
one request per chunk.
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from massmap_xr.errors import IncompleteStoreError, StoreError, format_offenders
from massmap_xr.store.checks import arrays_of, check_build_id, check_schema, pending_record, template_complete
from massmap_xr.store.layout import (
    BUILD_ID,
    CRC_NAME,
    N_HALO,
    N_REAL,
    PENDING,
    STATUS,
    TABLE_CRC,
    TABLES,
    VAR_CRC,
    StoreLayout,
    crc32_concat,
    crc32_of,
    read_layout,
)
from massmap_xr.store.location import open_group, path_key
from massmap_xr.store.recipe import refuse_recipe
from massmap_xr.store.versioned import versioned_write

__all__ = ["finalize_store", "finalize", "remember_variable_crcs", "remember_slab_variable_crcs", "recall_variable_crcs",
           "variable_crcs", "missing_cells"]


#: CRC-32s of the small variables of templates this process wrote, by (store, build id): finalising
#: a fresh build records them without reading every variable back (one request per chunk on S3)
_TEMPLATE_CRCS: dict = {}


def remember_variable_crcs(path, storage_options, build_id: str, tmpl: xr.Dataset) -> None:
    """Record the CRC-32 of every variable the template writes in full (not the posterior, nor the
    per-(halo, realization) variables, which the slabs write later and finalising reads back)."""
    _TEMPLATE_CRCS[(path_key(path, storage_options), build_id)] = {
        name: int(crc32_of(np.asarray(v.values)))
        for name, v in tmpl.variables.items()
        if name != "posterior" and not {"halo", "realization"} <= set(v.dims)}


def remember_slab_variable_crcs(path, storage_options, build_id: str, slabs: list) -> None:
    """Add the CRC-32 of the per-(halo, realization) variables to the record of
    :func:`remember_variable_crcs`, from the ``{name: (CRC-32, bytes)}`` of every slab in halo
    order (:func:`~massmap_xr.store.slabs.write_slab_variables`); nothing is added unless this
    process wrote the template and every slab's whole rows."""
    record = _TEMPLATE_CRCS.get((path_key(path, storage_options), build_id))
    if record is None or not slabs or any(not isinstance(s, dict) for s in slabs):
        return
    for name in slabs[0]:
        pieces = [s.get(name) for s in slabs]
        if all(p is not None for p in pieces) and (crc := crc32_concat(pieces)) is not None:
            record[name] = crc


def recall_variable_crcs(path, storage_options, attrs: dict) -> dict | None:
    """The CRC-32s :func:`remember_variable_crcs` recorded for this store and build, if any (once)."""
    return _TEMPLATE_CRCS.pop((path_key(path, storage_options), attrs.get(BUILD_ID)), None)


def variable_crcs(group, known: dict | None = None) -> dict:
    """CRC-32 of every variable but the posterior and the bookkeeping tables; those in ``known``
    are taken from it instead of being read back."""
    out = dict(known or {})
    for name, arr in sorted(arrays_of(group).items()):
        if name == "posterior" or name in TABLES or name in out:
            continue
        out[name] = int(crc32_of(arr[...]))
    return out


def missing_cells(crc: np.ndarray, layout: StoreLayout) -> list[str]:
    rows = np.flatnonzero(np.any(crc < 0, axis=1))
    return [f"slab {i} (halos [{layout.halo_slice(i).start}, {layout.halo_slice(i).stop}))" for i in rows]


@versioned_write("finalize_store")
def finalize_store(path, *, storage_options: dict | None = None, build_id: str | None = None) -> str:
    """Mark a store complete once every posterior cell's checksum is recorded.

    Records the invariants that :func:`verify_store` re-checks (halo and realization counts,
    the checksum table's CRC-32, the CRC-32 of every other variable) and sets
    ``massmap_build_status = "complete"`` last.  Calling it on a complete store is harmless.

    Parameters
    ----------
    path : str or path-like
        Store path or fsspec URL.
    storage_options : dict, optional
        fsspec options for URLs.
    build_id : str, optional
        Refuse to finalise unless the store still carries this build id (detects a concurrent
        replacement of the store by another build).

    Raises
    ------
    IncompleteStoreError
        If some slabs have not been written; the message lists them.
    """
    return finalize(str(path), storage_options, build_id, from_append=False)


def finalize(path: str, storage_options, build_id, *, from_append: bool) -> str:
    group = open_group(path, storage_options, mode="r+")
    attrs = dict(group.attrs)
    check_schema(attrs, path)
    refuse_recipe(attrs, path, "finalize_store")
    if PENDING in attrs and not from_append:
        op = pending_record(attrs).get("operation")
        raise StoreError(f"cannot finalise {path!r}: an interrupted {op} is pending; finish it by calling {op}() "
                         "again with the same cube")
    if build_id is not None:
        check_build_id(path, storage_options, build_id)
    layout = read_layout(attrs, path)
    crc = group[CRC_NAME][...]
    missing = missing_cells(crc, layout)
    if missing or not template_complete(group, attrs):
        raise IncompleteStoreError(
            f"cannot finalise {path!r}: {len(missing)} of {layout.n_halo_chunks} slab(s) not written "
            f"({format_offenders(missing, 3)}); write them with write_slabs() or to_store(..., resume=True)"
        )
    if tuple(group["posterior"].shape) != (layout.n_halo, layout.n_mass, layout.n_realization):
        raise StoreError(f"cannot finalise {path!r}: posterior shape {group['posterior'].shape} differs from its "
                         f"layout {layout.to_dict()}; the store is damaged, rebuild it with mode='w'")
    # a fresh build finalised by the process that wrote its template: the small variables are as written
    known = None if from_append else recall_variable_crcs(path, storage_options, attrs)
    new = {k: v for k, v in attrs.items() if k != PENDING}
    new.update({
        TABLE_CRC: int(crc32_of(crc)),
        N_HALO: int(layout.n_halo),
        N_REAL: int(layout.n_realization),
        VAR_CRC: json.dumps(dict(sorted(variable_crcs(group, known).items()))),
        STATUS: "complete",
    })
    group.attrs.put(new)  # one write of the root metadata: complete and its invariants appear together
    return str(path)
