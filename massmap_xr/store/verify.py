"""Verifying a store against the checksums and invariants recorded when it was written."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from massmap_xr.cube import STORE_COORDS, STORE_VARIABLES
from massmap_xr.log import progress_iter
from massmap_xr.store.checks import (
    arrays_of,
    catalog_hash_of,
    check_schema,
    dims_of,
    hyper_hash_of,
    pending_record,
    stored_catalog,
    trapezoid_of,
)
from massmap_xr.store.layout import (
    CRC_NAME,
    N_HALO,
    N_REAL,
    NORM_ATOL,
    NORM_NAME,
    PENDING,
    STATUS,
    TABLE_CRC,
    TABLES,
    VAR_CRC,
    StoreLayout,
    crc32_of,
    norm_error,
    read_layout,
)
from massmap_xr.store.location import StoreLocation, open_group


@dataclass
class VerifyReport:
    """Result of :func:`verify_store`: ``ok`` and one line per problem."""

    path: str
    n_chunks: int
    problems: list
    #: what ``n_chunks`` counts: posterior chunks, or the variables of a recipe store
    unit: str = "chunks"

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        head = f"{self.path}: {self.n_chunks} {self.unit} checked, "
        if self.ok:
            return head + "all intact"
        return head + f"{len(self.problems)} problem(s):\n  - " + "\n  - ".join(self.problems)


def _verify_metadata(group, attrs, layout: StoreLayout) -> list[str]:
    """Invariants recorded at build time: counts, checksum table, small variables, hashes."""
    problems = []
    arrays = arrays_of(group)
    for k in (*STORE_VARIABLES, *STORE_COORDS):
        if k not in arrays:
            problems.append(f"variable {k!r} is missing")
    sizes = {"halo": layout.n_halo, "mass": layout.n_mass, "realization": layout.n_realization}
    for name, arr in arrays.items():
        if name in TABLES:
            continue
        for ax, d in enumerate(dims_of(arr)):
            if d in sizes and arr.shape[ax] != sizes[d]:
                problems.append(f"variable {name!r} has {arr.shape[ax]} entries along {d!r}, the layout says {sizes[d]}")
    if attrs.get(STATUS) != "complete":
        return problems
    for key, want in ((N_HALO, layout.n_halo), (N_REAL, layout.n_realization)):
        if attrs.get(key) != want:
            problems.append(f"{key} is {attrs.get(key)!r} but the layout has {want}")
    crc = group[CRC_NAME][...]
    if TABLE_CRC in attrs and int(crc32_of(crc)) != attrs[TABLE_CRC]:
        problems.append("the checksum table itself was altered (its CRC-32 differs from the one recorded at build time)")
    if VAR_CRC in attrs:
        recorded = json.loads(attrs[VAR_CRC]) if isinstance(attrs[VAR_CRC], str) else attrs[VAR_CRC]
        for name, want in sorted(recorded.items()):
            if name not in arrays:
                problems.append(f"variable {name!r} is missing")
                continue
            try:
                got = int(crc32_of(arrays[name][...]))
            except Exception as exc:  # noqa: BLE001 - a damaged chunk can raise anything
                problems.append(f"variable {name!r} is unreadable ({type(exc).__name__}: {exc})")
                continue
            if got != int(want):
                problems.append(f"variable {name!r} changed since the build (checksum mismatch)")
    from massmap_xr.model.relation import HYPER_NAMES

    try:
        cat = stored_catalog(group)
        if attrs.get("catalog_hash") not in catalog_hash_of(cat):
            problems.append("catalog_hash does not match the stored halo, z, lum_obs and sigma_obs")
        if np.unique(cat["halo"]).size != cat["halo"].size:
            problems.append("halo ids are not unique")
        hyp = {k: np.asarray(group[k][...], dtype=float) for k in (*HYPER_NAMES, "weight")}
        if attrs.get("hyper_hash") != hyper_hash_of(hyp):
            problems.append("hyper_hash does not match the stored hyperparameter table (alpha1..alpha4, S, weight)")
        wsum = float(np.sum(hyp["weight"]))
        if not abs(wsum - 1.0) <= 1e-9:
            problems.append(f"realization weights sum to {wsum!r}, not 1")
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        problems.append(f"catalogue or hyperparameter variables unreadable ({type(exc).__name__}: {exc})")
    return problems


def verify_store(path, *, storage_options: dict | None = None, check_normalisation: bool = True,
                 progress: bool = False) -> VerifyReport:
    """Re-check every posterior chunk of a store against the checksums recorded at write time.

    Each damaged cell (altered, truncated, deleted, unreadable) is reported by its halo and
    realization index ranges; a missing chunk is never taken for zeros.  Also re-checks the
    invariants recorded when the build finished: build status, halo and realization counts,
    the checksum table's own CRC, the checksums of every other variable, the catalogue and
    hyperparameter hashes, the weights' sum, and (optionally) the trapezoid normalisation of
    every (halo, realization) against both the tolerance and the value recorded at write time.

    A recipe store (no posterior chunks, :mod:`massmap_xr.store.recipe`) is checked against the
    SHA-256 it recorded for every stored variable (catalogue, hyperparameters, prior table), its
    catalogue and hyperparameter hashes and its package and kernel versions; each altered
    variable is named.

    ``progress=True`` shows a progress bar over the chunks (standard error).

    Returns
    -------
    VerifyReport
        ``report.ok`` is True when nothing is wrong; ``str(report)`` lists the problems.
    """
    loc = StoreLocation.of(path, storage_options)
    path = str(loc)
    problems: list[str] = []
    from massmap_xr.store.recipe import is_recipe, verify_recipe

    try:
        group = open_group(loc, loc.storage_options, mode="r")
        attrs = dict(group.attrs)
        check_schema(attrs, path)
        if is_recipe(attrs):  # no posterior chunks: the recorded content hashes of every input are checked
            return VerifyReport(path, *verify_recipe(group, attrs, path), unit="recipe variables (SHA-256)")
        layout = read_layout(attrs, path)
        post = group["posterior"]
        crc = group[CRC_NAME][...]
        norm = group[NORM_NAME][...] if NORM_NAME in group else None
        w = trapezoid_of(group)
    except Exception as exc:  # noqa: BLE001 - anything here means unreadable or foreign metadata
        return VerifyReport(path, 0, [f"metadata damaged or not a massmap store: {exc}"])
    if attrs.get(STATUS) != "complete":
        problems.append(f"build status is {attrs.get(STATUS)!r}, not 'complete'"
                        + (f" (an interrupted {pending_record(attrs).get('operation')})" if PENDING in attrs else ""))
    want = (layout.n_halo, layout.n_mass, layout.n_realization)
    if tuple(post.shape) != want or dims_of(post) != ("halo", "mass", "realization"):
        problems.append(f"posterior shape {tuple(post.shape)} / dims {dims_of(post)} differ from the recorded layout "
                        f"{want} (halo, mass, realization)")
        return VerifyReport(path, 0, problems)
    if crc.shape != (layout.n_halo_chunks, layout.n_realization_chunks):
        problems.append(f"checksum table shape {crc.shape} differs from the layout's "
                        f"{(layout.n_halo_chunks, layout.n_realization_chunks)}")
        return VerifyReport(path, 0, problems)
    if w.shape != (layout.n_mass,):
        problems.append(f"log10_mass has shape {w.shape}, expected ({layout.n_mass},)")
        return VerifyReport(path, 0, problems)
    problems += _verify_metadata(group, attrs, layout)
    n = 0
    cells = [(i, j) for i in range(layout.n_halo_chunks) for j in range(layout.n_realization_chunks)]
    for i, j in progress_iter(cells, enabled=progress, desc=f"verify {path}", unit="chunk"):
        hs = layout.halo_slice(i)
        rs = layout.realization_slice(j)
        n += 1
        where = layout.describe_cell(i, j)
        if crc[i, j] < 0:
            problems.append(f"{where}: never written")
            continue
        try:
            block = np.ascontiguousarray(post[hs, :, rs])
        except Exception as exc:  # noqa: BLE001 - a damaged chunk can raise anything from the codec
            problems.append(f"{where}: unreadable ({type(exc).__name__}: {exc})")
            continue
        if crc32_of(block) != int(crc[i, j]):
            kind = "missing (reads as fill value NaN)" if np.isnan(block).all() else "altered"
            problems.append(f"{where}: checksum mismatch, chunk {kind}")
            continue
        negative = int(np.count_nonzero(block < 0))
        if negative:
            problems.append(f"{where}: {negative} negative density value(s) (a posterior density is never "
                            "negative); rebuild the store")
        if check_normalisation:
            err = float(np.max(norm_error(block, w))) if block.size else 0.0
            if not err <= NORM_ATOL:
                problems.append(f"{where}: normalisation off (worst |integral - 1| = {err:.3g} > {NORM_ATOL:g})")
            elif norm is not None and np.isfinite(norm[i, j]) and not abs(err - norm[i, j]) <= 1e-9:
                problems.append(f"{where}: normalisation error {err:.3g} differs from the {norm[i, j]:.3g} "
                                "recorded at write time")
    return VerifyReport(path, n, problems)
