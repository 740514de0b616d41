"""Recipe stores: a store holding everything a cube depends on and no posterior chunks, recomputed on read.

A materialised cube grows as halos × masses × realizations, yet it is a deterministic function of
a few MB of inputs: the catalogue variables, the hyperparameter table, the prior table the kernel
read (``prior_dndm`` on ``prior_z`` × ``mass``), the mass grid and the build options (``method``,
``n_lum``, ``mc_seed``, ``sigma_obs_default``).  A recipe store is the Zarr store of those inputs,
written exactly as a materialised store writes them, with the posterior (and every other kernel
output: variables along both ``halo`` and ``realization``) left out.  :func:`open_recipe` (called
by :func:`~massmap_xr.store.open_store`) rebuilds the cube by calling
:func:`~massmap_xr.cube.build_posterior` on the stored inputs, with the prior as a
:class:`~massmap_xr.model.prior.TablePrior` of the stored table, and hands out its outputs as lazy
dask arrays chunked like a materialised store, so every reader works unchanged and the values are
bit-identical to the materialised store built from the same inputs by the same package version.

Root attributes (besides those of a materialised store's template):

- ``massmap_store_kind = "recipe"``;
- ``massmap_recipe``: JSON with ``massmap_version`` and ``kernel_version`` (of the numerics that
  computed the cube: a recipe is refused by another version, :class:`RecipeVersionError`),
  ``outputs`` (the kernel output variables recomputed on read, with their dims and dtype) and
  ``sha256`` (a SHA-256 per stored variable, grouped as catalogue, hyperparameters and prior);
- ``massmap_layout`` (the chunking a materialised store of the cube would have: recomputed
  blocks are one halo slab each), ``massmap_build_status`` (``"complete"`` once written),
  ``massmap_n_halo``, ``massmap_n_realization``.
"""

from __future__ import annotations

import hashlib
import json
import warnings

import numpy as np
import xarray as xr

from massmap_xr._version import KERNEL_VERSION, __version__
from massmap_xr.errors import MassmapWarning, RecipeVersionError, StoreError
from massmap_xr.store.checks import arrays_of, catalog_hash_of, cube_hashes, dims_of, hyper_hash_of, stored_weight
from massmap_xr.store.layout import (
    BOOKKEEPING,
    LAYOUT,
    N_HALO,
    N_REAL,
    STATUS,
    encoding_for,
    layout_for,
    read_layout,
)
from massmap_xr.store.location import (
    StoreLocation,
    create_root,
    open_group,
    refuse_foreign,
    remove_tree,
    replacement_sibling,
    store_exists,
    swap_in,
    zarr_store,
)

__all__ = ["KIND", "RECIPE", "RECIPE_KIND_TEXT", "MATERIALISED_KIND_TEXT", "is_recipe", "kernel_outputs",
           "open_recipe", "rebuild_cube", "recipe_info", "refuse_recipe", "verify_recipe", "write_recipe"]

#: root attribute naming the kind of a store ("recipe"; absent in a materialised store)
KIND = "massmap_store_kind"
#: root attribute holding the recipe record (JSON)
RECIPE = "massmap_recipe"
RECIPE_KIND_TEXT = "recipe store (computed on read)"
MATERIALISED_KIND_TEXT = "materialised store"
#: halo slabs recomputed and compared with the cube when a recipe is written from a cube whose
#: posterior is not the very computation the recipe would run (e.g. a cube read from a store)
_SPOT_SLABS = 3
#: values per stored chunk of an input variable along halo (rounded to whole slabs)
_HALO_VALUES = 2**20


def is_recipe(attrs: dict) -> bool:
    """Whether a store's root attributes are those of a recipe store."""
    return attrs.get(KIND) == "recipe"


def refuse_recipe(attrs: dict, path, what: str) -> None:
    """StoreError if the store is a recipe store: it has no posterior chunks to write, seal or extend."""
    if is_recipe(attrs):
        raise StoreError(
            f"{what}: {str(path)!r} is a {RECIPE_KIND_TEXT}: it holds no posterior chunks to write, finalise, resume "
            "or append to. Materialise it first (massmap materialize RECIPE -o STORE), or write a new recipe from "
            "the extended catalogue / hyperparameters (to_store(cube, path, mode='w', materialize=False))")


def kernel_outputs(ds: xr.Dataset) -> list[str]:
    """The cube's kernel outputs: ``posterior`` and every data variable along both halo and realization."""
    return ["posterior", *sorted(k for k in ds.data_vars if k != "posterior"
                                 and {"halo", "realization"} <= set(ds[k].dims))]


def _sha256(a) -> str:
    a = np.ascontiguousarray(np.asarray(a))
    h = hashlib.sha256(str(a.dtype).encode() + str(a.shape).encode())
    h.update(memoryview(a).cast("B") if a.dtype.kind not in "OUS" else a.tobytes())
    return h.hexdigest()


def _group_of(name: str, dims: tuple) -> str:
    if name in ("prior_dndm", "prior_z", "mass", "log10_mass"):
        return "prior"
    if "halo" in dims:
        return "catalogue"
    if "realization" in dims:
        return "hyperparameters"
    return "other"


def _record(attrs: dict) -> dict:
    raw = attrs.get(RECIPE)
    try:
        return json.loads(raw) if isinstance(raw, str) else dict(raw or {})
    except (TypeError, ValueError):
        return {}


def _check_versions(rec: dict, path, what: str) -> None:
    """RecipeVersionError unless the recipe's package and kernel versions are the installed ones."""
    got = {"massmap_xr": rec.get("massmap_version"), "kernel": rec.get("kernel_version")}
    want = {"massmap_xr": __version__, "kernel": KERNEL_VERSION}
    bad = [k for k in got if str(got[k]) != str(want[k])]
    if bad:
        raise RecipeVersionError(
            f"{what}: recipe store {str(path)!r} was written by massmap_xr {got['massmap_xr']} (kernel version "
            f"{got['kernel']}), but massmap_xr {want['massmap_xr']} (kernel version {want['kernel']}) is installed; "
            "its posterior would be recomputed with other numerics. Open it with the version that wrote it and "
            "materialise it there (massmap materialize RECIPE -o STORE), or write a new recipe from the catalogue "
            "with this version (massmap build ... --recipe)"
        )


def rebuild_cube(inputs: xr.Dataset, attrs: dict, halo_chunk: int) -> xr.Dataset:
    """The cube ``build_posterior`` gives for a recipe's stored inputs (lazy; nothing is computed).

    ``inputs`` holds the catalogue variables (along ``halo``, with ``ra``/``dec``), the
    hyperparameters (along ``realization``), ``prior_dndm`` on ``prior_z`` × ``mass``; ``attrs`` the
    build options.  The prior is the :class:`TablePrior` of the stored table, which gives the
    kernel the very table the original build used (see :func:`~massmap_xr.cube.build_posterior`).
    Every catalogue variable is passed on, so inputs build_posterior learns to read flow through.
    """
    from massmap_xr.cube import build_posterior
    from massmap_xr.model.prior import TablePrior
    from massmap_xr.model.relation import HYPER_NAMES

    # per-halo variables, and per-halo tables such as a photometric p(z) (halo, pz_z)
    cat_names = [k for k in inputs.data_vars if inputs[k].dims[:1] == ("halo",)
                 and not set(inputs[k].dims) & {"realization", "mass"}]
    cat = xr.Dataset({k: (inputs[k].dims, np.asarray(inputs[k].values), dict(inputs[k].attrs)) for k in cat_names},
                     coords={"halo": np.asarray(inputs["halo"].values),
                             **{c: (c, np.asarray(inputs[c].values)) for c in ("pz_z",) if c in inputs.coords},
                             **{c: ("halo", np.asarray(inputs[c].values), dict(inputs[c].attrs))
                                for c in ("ra", "dec") if c in inputs.variables}})
    hyper = xr.Dataset({k: ("realization", np.asarray(inputs[k].values, dtype=float))
                        for k in (*HYPER_NAMES, "weight")},
                       coords={"realization": np.asarray(inputs["realization"].values)},
                       attrs={"hyper_kind": attrs.get("hyper_kind", "posterior")})
    table = xr.DataArray(np.asarray(inputs["prior_dndm"].transpose("prior_z", "mass").values, dtype=float),
                         dims=("z", "mass"), coords={"z": np.asarray(inputs["prior_z"].values, dtype=float),
                                                     "mass": np.asarray(inputs["mass"].values, dtype=float)})
    try:
        with warnings.catch_warnings():
            # the inputs passed every check when the cube was built; its warnings were given then
            warnings.simplefilter("ignore", MassmapWarning)
            return build_posterior(
                cat, hyper, prior=TablePrior(table), mass=np.asarray(inputs["mass"].values, dtype=float),
                # every halo carries its sigma_obs in the recipe: the scatter is never assumed here either
                sigma_obs=None if "sigma_obs" in cat else float(attrs["sigma_obs_default"]),
                method=str(attrs.get("method", "analytic")),
                n_z_nodes=int(attrs.get("redshift_n_nodes", 20)), z_sigma_window=float(attrs.get("redshift_n_sigma", 8.0)),
                n_lum=max(int(attrs.get("n_lum", 0)), 1), seed=int(attrs.get("mc_seed", 0)),
                chunks=int(halo_chunk), check_edges=False)
    except (KeyError, TypeError) as exc:
        raise StoreError(f"recipe: the stored inputs cannot be rebuilt into a cube ({type(exc).__name__}: {exc}); "
                         "the store is damaged or was not written by massmap_xr") from None


def _spot_check(ds: xr.Dataset, rebuilt: xr.Dataset, names: list[str], halo_chunk: int, what: str,
                force: bool = False) -> None:
    """StoreError unless the cube's outputs equal the rebuilt ones, bit for bit, on a few halo slabs
    (skipped, unless ``force``, when the cube's outputs are the very dask computation of the rebuild)."""
    import dask

    n = ds.sizes["halo"]
    same_graph = not force and all(
        getattr(ds[k].data, "name", None) is not None
        and getattr(ds[k].data, "name", None) == getattr(rebuilt[k].data, "name", "")
        and ds[k].chunks == rebuilt[k].chunks for k in names)
    if same_graph or n == 0:
        return  # the cube's outputs are the very computation the recipe runs
    starts = sorted({0, (n // 2) // halo_chunk * halo_chunk, (n - 1) // halo_chunk * halo_chunk})[:_SPOT_SLABS]
    for s in starts:
        sl = {"halo": slice(s, min(s + halo_chunk, n))}
        for k in names:
            a, b = dask.compute(ds[k].isel(sl).transpose(*rebuilt[k].dims).data, rebuilt[k].isel(sl).data)
            if a.shape != b.shape or a.dtype != b.dtype or not np.array_equal(a, b, equal_nan=True):
                raise StoreError(
                    f"{what}: the cube's {k!r} for halos [{sl['halo'].start}, {sl['halo'].stop}) is not what "
                    f"build_posterior computes from its recorded inputs (catalogue, hyperparameters, prior table, "
                    f"mass grid, method) with massmap_xr {__version__}: a recipe would recompute other values. "
                    "Write it materialised (to_store(..., materialize=True), CLI without --recipe)"
                )


def _recipe_dataset(ds: xr.Dataset, outputs: list[str], layout, rec: dict) -> xr.Dataset:
    """The Dataset written: every input variable (loaded), the root attributes, no kernel outputs."""
    small = {k: v.load() for k, v in ds.variables.items() if k not in outputs and k not in ds.dims}
    out = ds.drop_vars(outputs).assign(small)
    out = out.assign(weight=out["weight"].copy(data=stored_weight(ds)))
    out.attrs = {**{k: v for k, v in ds.attrs.items() if k not in BOOKKEEPING and k not in (KIND, RECIPE)},
                 **cube_hashes(ds), STATUS: "incomplete", LAYOUT: json.dumps(layout.to_dict()), KIND: "recipe",
                 RECIPE: json.dumps(rec)}
    return out


def _write(ds: xr.Dataset, path, storage_options, mode: str, what: str) -> None:
    create_root(path, storage_options, mode, what)
    layout = read_layout(ds.attrs, path)
    enc = {k: v for k, v in encoding_for(ds, layout).items() if k in ds.variables}
    # the inputs along halo in chunks of whole slabs, about 2^20 values each (not one per slab: a catalogue of
    # 10^6 halos would otherwise be thousands of tiny files per variable); reads rechunk them into slabs
    step = layout.halo_chunk * max(1, _HALO_VALUES // layout.halo_chunk)
    for k, e in enc.items():
        if "halo" in ds[k].dims:
            e["chunks"] = tuple(max(1, min(step, n)) if d == "halo" else c
                                for d, n, c in zip(ds[k].dims, ds[k].shape, e["chunks"], strict=True))
    ds.to_zarr(zarr_store(path, storage_options), mode="w-", consolidated=False, zarr_format=3, encoding=enc)
    group = open_group(path, storage_options, mode="r+")
    rec = _record(dict(group.attrs))
    arrays = arrays_of(group)
    sha = {name: {"group": _group_of(name, dims_of(arr)), "sha256": _sha256(arr[...])}
           for name, arr in sorted(arrays.items())}
    rec["sha256"] = sha
    new = dict(group.attrs)
    new.update({RECIPE: json.dumps(rec), N_HALO: int(layout.n_halo), N_REAL: int(layout.n_realization),
                STATUS: "complete"})
    group.attrs.put(new)  # one write: complete and the hashes appear together


def write_recipe(ds: xr.Dataset, path, *, mode: str = "w-", realization_chunk=None, inner_halo_chunk=None,
                 storage_options: dict | None = None, what: str = "to_store") -> str:
    """Write the recipe store of a validated cube ``ds`` (:func:`~massmap_xr.store.to_store` with
    ``materialize=False``); returns the path.

    Refused (:class:`StoreError`, nothing written): a cube without its prior table; a cube computed
    by another package or kernel version than the installed one; a cube whose outputs are not what
    build_posterior computes from its recorded inputs (checked on a few halo slabs unless the
    cube's outputs are the very dask computation the recipe runs); an existing path without
    ``mode="w"`` (then, as for materialised stores, the replacement is written beside the old store
    and swapped in once complete, and only a store written by this package is ever replaced).
    """
    from massmap_xr.store.write import refuse_own_source

    path = StoreLocation.of(path, storage_options)
    missing = [k for k in ("prior_dndm", "prior_z", "mass") if k not in ds.variables]
    if missing:
        raise StoreError(f"{what}: the cube has no {missing} (the prior table the kernel read), so it cannot be "
                         "recomputed from a recipe; build it with build_posterior(), or write it materialised")
    kernel = ds.attrs.get("kernel_version")
    rec = {"massmap_version": ds.attrs.get("massmap_version"), "kernel_version": kernel}
    if rec["massmap_version"] != __version__ or (kernel is not None and str(kernel) != KERNEL_VERSION):
        raise RecipeVersionError(
            f"{what}: the cube was computed by massmap_xr {rec['massmap_version']} (kernel version {kernel}), but "
            f"massmap_xr {__version__} (kernel version {KERNEL_VERSION}) is installed and would recompute it; "
            "write it materialised instead (to_store(..., materialize=True))")
    outputs = kernel_outputs(ds)
    layout, ds = layout_for(ds, realization_chunk, inner_halo_chunk)
    rebuilt = rebuild_cube(ds.drop_vars(outputs), ds.attrs, layout.halo_chunk)
    absent = [k for k in outputs if k not in rebuilt.data_vars]
    if absent:
        raise StoreError(f"{what}: the cube's variable(s) {absent} are not computed by build_posterior, so a recipe "
                         "cannot recompute them; write the cube materialised (to_store(..., materialize=True))")
    # a cube without kernel_version (read from an older store of this version) is accepted on the evidence
    # of the spot check, which then always runs
    _spot_check(ds, rebuilt, outputs, layout.halo_chunk, what, force=kernel is None)
    rec.update({"kernel_version": KERNEL_VERSION,
                "outputs": {k: {"dims": list(rebuilt[k].dims), "dtype": str(rebuilt[k].dtype)} for k in outputs}})
    tmpl = _recipe_dataset(ds, outputs, layout, rec)
    if mode == "w" and store_exists(path, storage_options):
        refuse_foreign(path, storage_options, what)
        refuse_own_source(ds, path, storage_options)
        tmp = StoreLocation.of(replacement_sibling(path), storage_options)
        try:
            _write(tmpl, tmp, storage_options, "w-", what)
        except BaseException:
            remove_tree(tmp, storage_options)
            raise
        swap_in(tmp, path, storage_options)
    else:
        _write(tmpl, path, storage_options, mode, what)
    return str(path)


def _hash_problems(group, attrs: dict) -> list[str]:
    """Input variables whose SHA-256 differs from the recipe's record, and the catalogue / hyperparameter /
    prior hashes; one line per problem."""
    from massmap_xr.model.relation import HYPER_NAMES

    rec = _record(attrs)
    sha = rec.get("sha256") or {}
    problems = []
    if not sha:
        problems.append(f"the recipe record ({RECIPE}) has no content hashes; the store is damaged")
    arrays = arrays_of(group)
    for name in sorted(set(sha) | set(arrays)):
        if name not in sha:
            problems.append(f"variable {name!r} was added after the recipe was written")
            continue
        kind = sha[name].get("group", "other")
        if name not in arrays:
            problems.append(f"{kind} variable {name!r} is missing")
            continue
        try:
            got = _sha256(arrays[name][...])
        except Exception as exc:  # noqa: BLE001 - a damaged chunk can raise anything from the codec
            problems.append(f"{kind} variable {name!r} is unreadable ({type(exc).__name__}: {exc})")
            continue
        if got != sha[name].get("sha256"):
            problems.append(f"{kind} variable {name!r} changed since the recipe was written (SHA-256 mismatch): "
                            "the store was tampered with or damaged")
    try:
        cat = {k: np.asarray(group[k][...]) for k in ("halo", "z", "lum_obs", "sigma_obs")}
        if attrs.get("catalog_hash") not in catalog_hash_of(cat):
            problems.append("catalog_hash does not match the stored halo, z, lum_obs and sigma_obs")
        hyp = {k: np.asarray(group[k][...], dtype=float) for k in (*HYPER_NAMES, "weight")}
        if attrs.get("hyper_hash") != hyper_hash_of(hyp):
            problems.append("hyper_hash does not match the stored hyperparameter table (alpha1..alpha4, S, weight)")
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        problems.append(f"catalogue or hyperparameter variables unreadable ({type(exc).__name__}: {exc})")
    return problems


def open_recipe(path, group, attrs: dict, *, storage_options=None, chunks="store", verify: bool = True) -> xr.Dataset:
    """The Dataset of a recipe store, as :func:`~massmap_xr.store.open_store` returns it.

    The stored variables are read lazily as from a materialised store; the kernel outputs are the
    lazy dask arrays of :func:`rebuild_cube`, one block per halo slab of the recorded layout.
    ``verify`` checks every stored variable against the recipe's SHA-256 at opening.  ``chunks``:
    ``"store"`` (or ``None``) keeps the recorded slabs; anything else rechunks the Dataset.

    Raises
    ------
    RecipeVersionError
        If the recipe was written by another package or kernel version.
    StoreError
        If (with ``verify``) a stored input changed since the recipe was written.
    """
    rec = _record(attrs)
    _check_versions(rec, path, "open_store")
    layout = read_layout(attrs, path)
    if verify:
        problems = _hash_problems(group, attrs)
        if problems:
            raise StoreError(f"{str(path)!r}: recipe store inputs do not match their recorded hashes: "
                             + "; ".join(problems) + f"; run `massmap verify {path}`, then write the recipe again")
    store_chunks = {"halo": layout.halo_chunk, "mass": -1, "realization": layout.realization_shard}
    ds = xr.open_zarr(zarr_store(path, storage_options, read_only=True), consolidated=False, zarr_format=3,
                      chunks={})
    ds = ds.chunk({k: v for k, v in store_chunks.items() if k in ds.dims})  # the chunks of a materialised store
    outputs = list((rec.get("outputs") or {"posterior": {}}).keys())
    rebuilt = rebuild_cube(ds, attrs, layout.halo_chunk)
    for k in outputs:
        if k not in rebuilt.data_vars:
            raise StoreError(f"{str(path)!r}: recipe output {k!r} is not computed by this massmap_xr's "
                             "build_posterior; open the recipe with the version that wrote it")
        v = rebuilt[k].variable
        ds[k] = xr.Variable(v.dims, v.data, dict(v.attrs))
    ds = ds[[*outputs, *[k for k in ds.data_vars if k not in outputs]]]
    for k in (*BOOKKEEPING, KIND, RECIPE):
        ds.attrs.pop(k, None)
    if chunks not in ("store", None):
        ds = ds.chunk(chunks)
    ds.encoding["source"] = str(path)
    ds.encoding["massmap_store_kind"] = "recipe"
    return ds


def recipe_info(group, attrs: dict, path) -> dict:
    """:func:`~massmap_xr.store.store_info` of a recipe store."""
    rec = _record(attrs)
    layout = read_layout(attrs, path)
    shape = {"halo": layout.n_halo, "mass": layout.n_mass, "realization": layout.n_realization}
    return {
        "path": str(path),
        "kind": RECIPE_KIND_TEXT,
        "status": attrs.get(STATUS),
        "pending": None,
        "schema_version": attrs.get("massmap_schema_version"),
        "massmap_version": rec.get("massmap_version"),
        "kernel_version": rec.get("kernel_version"),
        "method": attrs.get("method"),
        "shape": shape,
        "chunks": {"halo": layout.halo_chunk, "mass": layout.n_mass, "realization": layout.n_realization},
        "outputs": ", ".join(rec.get("outputs") or {}),
        "uncompressed_bytes": int(np.prod(list(shape.values())) * 4),
        "prior": attrs.get("prior", ""),
        "catalog_hash": attrs.get("catalog_hash"),
        "hyper_hash": attrs.get("hyper_hash"),
    }


def verify_recipe(group, attrs: dict, path) -> tuple[int, list[str]]:
    """Problems of a recipe store: build status, versions, layout sizes and every recorded content hash.
    Returns ``(number of variables checked, problems)``."""
    problems = []
    if attrs.get(STATUS) != "complete":
        problems.append(f"build status is {attrs.get(STATUS)!r}, not 'complete' (the recipe's write was interrupted;"
                        " write it again with mode='w')")
    try:
        _check_versions(_record(attrs), path, "verify")
    except RecipeVersionError as exc:
        problems.append(str(exc))
    layout = read_layout(attrs, path)
    sizes = {"halo": layout.n_halo, "mass": layout.n_mass, "realization": layout.n_realization}
    arrays = arrays_of(group)
    for name, arr in arrays.items():
        for ax, d in enumerate(dims_of(arr)):
            if d in sizes and arr.shape[ax] != sizes[d]:
                problems.append(f"variable {name!r} has {arr.shape[ax]} entries along {d!r}, the layout says {sizes[d]}")
    for key, want in ((N_HALO, layout.n_halo), (N_REAL, layout.n_realization)):
        if attrs.get(STATUS) == "complete" and attrs.get(key) != want:
            problems.append(f"{key} is {attrs.get(key)!r} but the layout has {want}")
    problems += _hash_problems(group, attrs)
    w = np.asarray(group["weight"][...], dtype=float) if "weight" in arrays else np.zeros(0)
    if w.size and not abs(float(w.sum()) - 1.0) <= 1e-9:
        problems.append(f"realization weights sum to {float(w.sum())!r}, not 1")
    return len(arrays), problems
