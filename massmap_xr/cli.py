"""The ``massmap`` command.

Sub-commands::

    massmap demo                      mock field -> cube -> stores/demo.zarr + figures
    massmap build CATALOG -o STORE    build a cube store from a catalogue
                                      (--init-only / --halo-range A:B + finalize: many writers)
    massmap finalize STORE            check and seal a store written by several writers
    massmap append-halos STORE CATALOG           add halos with the store's model
    massmap append-realizations STORE --hyper F  add hyperparameter draws for the stored halos
    massmap materialize RECIPE -o STORE          compute a recipe store into a materialised store
    massmap materialize --recipe STORE -o RECIPE the recipe (inputs only) of a store
    massmap info STORE                describe a store
    massmap verify STORE              re-check a store's checksums and invariants
    massmap summary STORE -o F        per-halo summaries to CSV or NetCDF
    massmap sample STORE -n N -o F    mass samples to Zarr/NetCDF
    massmap map STORE (--flat ARCMIN | --healpix NSIDE) -n N -o OUT
    massmap kappa STORE (--flat ARCMIN | --healpix NSIDE) --z-source Z -n N -o OUT
    massmap infer CATALOG -o hyper.nc infer the hyper-posterior from a catalogue

Errors in the input are reported as one line ``massmap: error: ...`` with exit status 2.  Every
command shows progress bars on standard error (``--quiet`` turns them and the informational
messages off, ``-v/--verbose`` adds debug messages of the ``massmap_xr`` logger).  Heavy modules
(dask, zarr, numba, hmf) are imported by the commands, so ``massmap --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from massmap_xr.cli_options import describe_info, parse_storage_options, storage_options_arg
from massmap_xr.errors import MassmapError, StoreError
from massmap_xr.log import configure as configure_logging
from massmap_xr.log import logger

__all__ = ["main"]


def _load_catalog(spec: str, args) -> "xr.Dataset":  # noqa: F821
    from massmap_xr.catalog import read_catalog, seed_field

    if spec == "seed":
        # the seed field carries the scatter it was made with (0.05) unless --sigma-obs replaces it
        return seed_field(seed=args.seed, **({"sigma_obs": None} if getattr(args, "sigma_obs", None) else {}))
    columns = getattr(args, "columns", None)
    if columns and columns != "original" and "=" not in columns:
        columns = columns.split(",")
    return read_catalog(spec, columns=columns, wrap_ra=getattr(args, "wrap_ra", False))


def _prior(args):
    from massmap_xr.model.prior import read_prior_table

    if getattr(args, "prior_table", None):
        if not os.path.exists(args.prior_table):
            raise MassmapError(f"--prior-table {args.prior_table!r}: no such file; give a text table 'z M dn/dM', "
                               "or leave --prior-table out for the Tinker (2010) prior")
        return read_prior_table(args.prior_table, mass_factor=args.prior_mass_factor)
    return None


def _hyper(args, catalog):
    from massmap_xr.model.hyper import read_hyper, reddick2013

    if getattr(args, "infer", False):
        from massmap_xr.inference import infer_hyperparameters

        logger.info("inferring hyperparameters from %d halos ...", catalog.sizes["halo"])
        return infer_hyperparameters(catalog, prior=_prior(args), n=args.n_realizations, seed=args.seed,
                                     sigma_obs=args.sigma_obs, progress=_progress(args))
    if getattr(args, "hyper", None):
        return read_hyper(args.hyper, kind=getattr(args, "hyper_kind", None))
    return reddick2013(args.n_realizations, seed=args.seed, kind=getattr(args, "hyper_kind", None) or "prior")


def _halo_range(text: str) -> tuple[int, int]:
    try:
        a, b = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:STOP (halo indices), got {text!r}") from None
    return a, b


def _progress(args) -> bool:
    """Progress bars: on unless ``--quiet``."""
    return not getattr(args, "quiet", False)


def _writer_cube(cat, args):
    """The cube of one writer of a several-writer build (``--halo-range``): the catalogue with the
    model recorded in the initialised store (hyperparameter draws and weights, prior, mass grid,
    method, default sigma_obs), so the writers need not repeat ``--n-realizations`` etc."""
    from massmap_xr.store import build_like_store

    if getattr(args, "hyper", None) or getattr(args, "infer", False) or getattr(args, "prior_table", None):
        raise MassmapError("--halo-range: the writers of a several-writer build take the hyperparameters and the "
                           "prior from the initialised store; leave --hyper, --infer and --prior-table out (give them "
                           "to `massmap build ... --init-only`)")
    if not os.path.exists(args.output) and "://" not in str(args.output):
        raise StoreError(f"-o {args.output!r}: the store does not exist; create it first with `massmap build CATALOG -o "
                         f"{args.output} --init-only`, then write its slabs with --halo-range")
    logger.info("--halo-range: using the model recorded in %s (its hyperparameters, prior and method)", args.output)
    return build_like_store(cat, args.output, allow_incomplete=True)


def cmd_build(args) -> int:
    from massmap_xr.cube import build_posterior
    from massmap_xr.store import init_store, to_store, write_slabs

    cat = _load_catalog(args.catalog, args)
    if args.halo_range is not None:
        cube = _writer_cube(cat, args)
    else:
        hyper = _hyper(args, cat)
        cube = build_posterior(cat, hyper, prior=_prior(args), sigma_obs=args.sigma_obs, method=args.method,
                               n_lum=args.n_lum, chunks=args.chunks)
    n = cube.sizes
    t0 = time.perf_counter()
    mode = "w" if args.overwrite else "w-"
    if args.recipe:
        if args.init_only or args.halo_range is not None or args.resume:
            raise MassmapError("--recipe writes the store in one step: it cannot be combined with --init-only, "
                               "--halo-range or --resume")
        to_store(cube, args.output, mode=mode, materialize=False, storage_options=args.storage_options)
        print(f"wrote recipe store {args.output}: {n['halo']} halos x {n['mass']} masses x {n['realization']} "
              f"realizations, computed on read, in {time.perf_counter() - t0:.1f} s")
        return 0
    if args.init_only:
        layout = init_store(cube, args.output, mode=mode, storage_options=args.storage_options)
        print(f"initialised {args.output}: {layout.n_halo_chunks} slabs of {layout.halo_chunk} halos; write them "
              f"with --halo-range, then run `massmap finalize {args.output}`")
        return 0
    if args.halo_range is not None:
        done = write_slabs(cube, args.output, halo_range=args.halo_range, progress=_progress(args),
                           storage_options=args.storage_options)
        print(f"wrote {len(done)} slab(s) of {args.output} (halos {args.halo_range[0]}:{args.halo_range[1]}) "
              f"in {time.perf_counter() - t0:.1f} s")
        return 0
    to_store(cube, args.output, mode=mode, resume=args.resume, progress=_progress(args),
             storage_options=args.storage_options)
    print(f"wrote {args.output}: {n['halo']} halos x {n['mass']} masses x {n['realization']} realizations "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_finalize(args) -> int:
    from massmap_xr.store import finalize_store

    finalize_store(args.store, storage_options=args.storage_options)
    print(f"{args.store} is complete")
    return 0


def cmd_append_halos(args) -> int:
    from massmap_xr.store import append_halos, build_like_store, open_store

    cat = _load_catalog(args.catalog, args)
    if args.renumber:
        top = int(open_store(args.store, storage_options=args.storage_options)["halo"].max())
        cat = cat.assign_coords(halo=top + 1 + (cat["halo"] - cat["halo"].min()))
    try:
        so = args.storage_options
        append_halos(build_like_store(cat, args.store, storage_options=so), args.store, progress=_progress(args),
                     storage_options=so)
    except MassmapError as exc:
        if "already in the store" in str(exc) and not args.renumber:
            raise type(exc)(f"{exc}; or pass --renumber") from None
        raise
    print(f"appended {cat.sizes['halo']} halos to {args.store}")
    return 0


def cmd_append_realizations(args) -> int:
    from massmap_xr.model.hyper import read_hyper, reddick2013
    from massmap_xr.store import append_realizations, build_like_store, open_store

    ds = open_store(args.store, storage_options=args.storage_options)
    kind = args.hyper_kind or ds.attrs.get("hyper_kind", "posterior")  # by default the store's kind
    hyper = (read_hyper(args.hyper, kind=kind) if args.hyper
             else reddick2013(args.n_realizations, seed=args.seed, kind=kind))
    top = int(ds["realization"].max())
    hyper = hyper.assign_coords(realization=top + 1 + np.arange(hyper.sizes["realization"]))
    cat = ds[[k for k in ds.data_vars if ds[k].dims == ("halo",)]]
    so = args.storage_options
    append_realizations(build_like_store(cat, args.store, hyper=hyper, storage_options=so), args.store,
                        progress=_progress(args), storage_options=so)
    print(f"appended {hyper.sizes['realization']} realizations to {args.store}")
    return 0


def cmd_materialize(args) -> int:
    from massmap_xr.store import open_store, store_info, to_store

    if "://" not in args.source and not os.path.exists(args.source):
        raise StoreError(f"{args.source!r} does not exist; give the path of a massmap store")
    t0 = time.perf_counter()
    so = args.storage_options
    ds = open_store(args.source, storage_options=so)
    to_store(ds, args.output, mode="w" if args.overwrite else "w-", materialize=not args.recipe,
             progress=_progress(args), storage_options=so)
    print(f"wrote {args.output} ({store_info(args.output, storage_options=so)['kind']}) from {args.source} in "
          f"{time.perf_counter() - t0:.1f} s")
    return 0


def cmd_info(args) -> int:
    from massmap_xr.store import store_info

    if args.history:
        from massmap_xr.store.versioned import history

        for c in history(args.store, args.storage_options):
            print(f"{c['snapshot_id']}  {c['written_at']}  {c['message']}")
        return 0
    for k, v in describe_info(store_info(args.store, storage_options=args.storage_options)):
        print(f"{k:>22}: {v}")
    return 0


def cmd_verify(args) -> int:
    from massmap_xr.store import verify_store

    if "://" not in args.store and not os.path.exists(args.store):
        raise StoreError(f"{args.store!r} does not exist; give the path of a massmap store")
    report = verify_store(args.store, storage_options=args.storage_options, progress=_progress(args))
    print(report)
    return 0 if report.ok else 1


def cmd_summary(args) -> int:
    from massmap_xr.analysis import write_summary
    from massmap_xr.store import open_store

    ds = open_store(args.store, storage_options=args.storage_options)
    write_summary(ds, args.output, overwrite=args.overwrite, progress=_progress(args))
    print(f"wrote {args.output}")
    return 0


def cmd_sample(args) -> int:
    from massmap_xr.analysis import sample, write_samples
    from massmap_xr.store import open_store

    ds = open_store(args.store, storage_options=args.storage_options)
    s = sample(ds, args.n, method=args.method, correlated=not args.independent, seed=args.seed)
    write_samples(s, args.output, overwrite=args.overwrite, progress=_progress(args))
    print(f"wrote {args.output}: {args.n} samples of {ds.sizes['halo']} halos")
    return 0


def _with_halo_variables_loaded(ds):
    """``ds`` with its small variables (catalogue, hyperparameters, positions) read in one go, so
    that the maps' single computation is the only one that reads the posterior."""
    from massmap_xr.log import compute_once

    small = [k for k in ds.variables if k != "posterior" and ds[k].chunks is not None]
    loaded = compute_once(ds[small]) if small else None
    return ds.assign({k: loaded[k] for k in small if k in ds.data_vars}).assign_coords(
        {k: loaded[k] for k in small if k in ds.coords}) if small else ds


def cmd_map(args) -> int:
    from massmap_xr.analysis import sample
    from massmap_xr.sky import map_statistics, project_flat, project_healpix, write_map
    from massmap_xr.store import open_store

    ds = _with_halo_variables_loaded(open_store(args.store, storage_options=args.storage_options))
    s = sample(ds, args.n, method=args.method, correlated=not args.independent, seed=args.seed)
    if args.flat is not None:
        center = args.center
        if center is None and "field_center_ra" in ds.attrs:
            center = (float(ds.attrs["field_center_ra"]), float(ds.attrs["field_center_dec"]))
        size = args.size if args.size is not None else ds.attrs.get("field_size_arcmin")

        def project(m):
            return project_flat(m, center=center, size=size, pixel_scale=args.flat, quantity=args.quantity)
    else:
        def project(m):
            return project_healpix(m, args.healpix, nest=not args.ring, quantity=args.quantity)
    maps = project(s)
    if args.samples:
        out = maps
    else:
        truth = project(ds["mass_true"]) if "mass_true" in ds else None
        out = map_statistics(maps, truth=truth)
    out.attrs.update({k: ds.attrs[k] for k in ("positions", "source") if k in ds.attrs})  # e.g. mock positions
    write_map(out, args.output, overwrite=args.overwrite, progress=_progress(args))
    print(f"wrote {args.output}")
    return 0


def cmd_kappa(args) -> int:
    from massmap_xr.lensing import kappa_map
    from massmap_xr.sky import map_statistics, write_map
    from massmap_xr.store import open_store

    kw = {"flat": args.flat} if args.flat is not None else {"nside": args.healpix, "nest": not args.ring}
    maps = kappa_map(open_store(args.store, storage_options=args.storage_options), args.n, z_source=args.z_source, seed=args.seed, **kw)
    write_map(maps if args.samples else map_statistics(maps), args.output, overwrite=args.overwrite,
              progress=_progress(args))
    print(f"wrote {args.output}")
    return 0


def cmd_infer(args) -> int:
    from massmap_xr.inference import infer_to_file
    from massmap_xr.inference.infer import estimate_table

    cat = _load_catalog(args.catalog, args)
    kwargs = {"free": args.free.split(",")} if args.free else {}
    _, post = infer_to_file(cat, args.output, prior=_prior(args), n=args.n_realizations, seed=args.seed,
                            method=args.method, hyperprior=args.hyperprior, sigma_obs=args.sigma_obs, progress=_progress(args),
                            overwrite=args.overwrite, lum_min=args.lum_min, group_tol=args.group_tol,
                            return_result=True, **kwargs)
    print(estimate_table(post))
    print(f"wrote {args.output}")
    return 0


def cmd_demo(args) -> int:
    from massmap_xr.demo import run_demo

    out_dir = args.out_dir if args.out_dir is not None else Path("massmap-demo")
    paths = run_demo(out_dir, n_halos=args.n_halos, n_realizations=args.n_realizations, seed=args.seed,
                     progress=_progress(args))
    for p in paths:
        print(f"wrote {p}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="massmap", description="Probabilistic halo mass maps (massmap_xr).")
    from massmap_xr._version import __version__

    p.add_argument("--version", action="version", version=f"massmap_xr {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="build the demo cube, store and figures")
    d.add_argument("--out-dir", default=None, type=Path,
                   help="folder for demo.zarr and the figures (default: massmap-demo in the current directory, "
                        "which git ignores, so the repository stays clean)")
    d.add_argument("--n-halos", type=int, default=300, help="halos of the mock field")
    d.add_argument("--n-realizations", type=int, default=20, help="Reddick 2013 hyperparameter draws")
    d.add_argument("--seed", type=int, default=2017, help="seed of the mock field, the draws and the map samples")
    d.set_defaults(func=cmd_demo)

    def catalog_args(q):
        q.add_argument("catalog", help="catalogue file (.fits, .parquet, .hdf5, .nc, .zarr, .csv, .txt, .ecsv, .vot) or 'seed' for "
                       "the shipped seed field")
        q.add_argument("--columns", help="map the package's names to the table's, e.g. z=ZPHOT,lum_obs=LUM_R "
                       "(FITS/Parquet/CSV/...); or the column names of a headerless text file, comma separated, "
                       "or 'original'")
        q.add_argument("--wrap-ra", action="store_true", help="wrap ra into [0, 360) degrees (e.g. from (-180, 180])")
        q.add_argument("--n-realizations", type=int, default=100,
                       help="hyperparameter draws (Reddick 2013 draws, or draws of the inferred posterior)")
        q.add_argument("--seed", type=int, default=0,
                       help="seed of the hyperparameter draws (and of the seed field's mock positions)")
        q.add_argument("--sigma-obs", type=float, default=None,
                       help="observational scatter of ln L_obs (natural log, e.g. 0.05) for a catalogue without a "
                       "sigma_obs column; never assumed (default: the catalogue's own column)")
        q.add_argument("--prior-table", help="prior table 'z M dn/dM' (text) instead of the Tinker (2010) prior")
        q.add_argument("--prior-mass-factor", type=float, default=1.0,
                       help="multiply the prior table's mass column by this to get M_sun")

    b = sub.add_parser("build", help="build a posterior cube store from a catalogue")
    catalog_args(b)
    b.add_argument("-o", "--output", required=True, help="the store to write (a .zarr directory or fsspec URL)")
    b.add_argument("--hyper", help="hyperparameter table (.csv or .nc); default Reddick 2013 draws")
    b.add_argument("--infer", action="store_true", help="infer the hyper-posterior from the catalogue first")
    b.add_argument("--hyper-kind", choices=("prior", "posterior"), default=None,
                   help="kind of the draws: 'prior' (weighted per halo by its evidence in the analysis) or 'posterior' (draws of this catalogue's hyper-posterior); default: prior for Reddick 2013 draws, the file's own kind or posterior for --hyper")
    b.add_argument("--method", choices=("analytic", "montecarlo"), default="analytic",
                   help="exact Gaussian convolution over the true luminosity, or Monte Carlo luminosity draws")
    b.add_argument("--n-lum", type=int, default=100, help="luminosity draws per mass point (montecarlo)")
    b.add_argument("--chunks", type=int, default=None, help="halos per slab (default: chosen from the cube size)")
    b.add_argument("--resume", action="store_true", help="finish an interrupted build of the same cube")
    b.add_argument("--overwrite", action="store_true", help="replace an existing store")
    b.add_argument("--recipe", action="store_true",
                   help="write a recipe store: the inputs only, the posterior is recomputed on read")
    w = b.add_mutually_exclusive_group()
    w.add_argument("--init-only", action="store_true",
                   help="only create the store (metadata, no posterior values) for several writers")
    w.add_argument("--halo-range", type=_halo_range, metavar="START:STOP",
                   help="write only the slabs of halos [START, STOP) into an initialised store, with the model "
                        "(hyperparameters, prior, method) recorded in it by --init-only")
    storage_options_arg(b)
    b.set_defaults(func=cmd_build)

    fz = sub.add_parser("finalize", help="check and seal a store written by several writers")
    fz.add_argument("store", help="the store")
    storage_options_arg(fz)
    fz.set_defaults(func=cmd_finalize)

    ah = sub.add_parser("append-halos", help="append the halos of a catalogue to a store, with its model")
    ah.add_argument("store", help="the store to extend")
    ah.add_argument("catalog", help="catalogue file (.fits, .parquet, .hdf5, .nc, .zarr, .csv, .txt, ...)")
    ah.add_argument("--columns", help="map the package's names to the table's (z=ZPHOT,lum_obs=LUM_R), or the "
                    "column names of a headerless text file, comma separated")
    ah.add_argument("--wrap-ra", action="store_true", help="wrap ra into [0, 360) degrees")
    ah.add_argument("--renumber", action="store_true", help="give the new halos ids after the store's largest")
    ah.add_argument("--seed", type=int, default=0, help="seed of the seed field's mock positions (CATALOG 'seed')")
    storage_options_arg(ah)
    ah.set_defaults(func=cmd_append_halos)

    ar = sub.add_parser("append-realizations", help="append hyperparameter realizations to a store")
    ar.add_argument("store", help="the store to extend")
    ar.add_argument("--hyper", help="hyperparameter table (.csv or .nc); default: new Reddick 2013 draws")
    ar.add_argument("--n-realizations", type=int, default=100, help="new Reddick 2013 draws (without --hyper)")
    ar.add_argument("--seed", type=int, default=1, help="seed of the new Reddick 2013 draws")
    ar.add_argument("--hyper-kind", choices=("prior", "posterior"), default=None,
                    help="kind of the draws: 'prior' (weighted per halo by its evidence in the analysis) or 'posterior' (draws of this catalogue's hyper-posterior); default: the store's kind")
    storage_options_arg(ar)
    ar.set_defaults(func=cmd_append_realizations)

    mz = sub.add_parser("materialize", help="compute a recipe store into a materialised store (or, with --recipe, "
                        "write the recipe of a store)")
    mz.add_argument("source", help="a recipe store (or, with --recipe, any massmap store)")
    mz.add_argument("-o", "--output", required=True, help="the store to write")
    mz.add_argument("--recipe", action="store_true", help="write a recipe store (inputs only) instead")
    mz.add_argument("--overwrite", action="store_true", help="replace an existing store")
    storage_options_arg(mz)
    mz.set_defaults(func=cmd_materialize)

    i = sub.add_parser("info", help="describe a store")
    i.add_argument("store", help="the store")
    i.add_argument("--history", action="store_true",
                   help="list the commits of a versioned store (icechunk://...), newest first")
    storage_options_arg(i)
    i.set_defaults(func=cmd_info)

    v = sub.add_parser("verify", help="re-check a store's checksums and invariants")
    v.add_argument("store", help="the store")
    storage_options_arg(v)
    v.set_defaults(func=cmd_verify)

    s = sub.add_parser("summary", help="per-halo posterior summaries")
    s.add_argument("store", help="the store")
    s.add_argument("-o", "--output", required=True, help="summary.csv or summary.nc")
    s.add_argument("--overwrite", action="store_true", help="replace an existing output")
    storage_options_arg(s)
    s.set_defaults(func=cmd_summary)

    sa = sub.add_parser("sample", help="draw halo mass samples")
    sa.add_argument("store", help="the store")
    sa.add_argument("-n", type=int, required=True, help="samples per halo")
    sa.add_argument("-o", "--output", required=True, help="samples.zarr or samples.nc")
    sa.add_argument("--method", choices=("grid", "normal"), default="grid",
                    help="inverse-CDF draws from the gridded posterior, or from its moment-matched normal")
    sa.add_argument("--independent", action="store_true", help="independent draws from each halo's marginal")
    sa.add_argument("--seed", type=int, default=0, help="seed of the draws")
    sa.add_argument("--overwrite", action="store_true", help="replace an existing output")
    storage_options_arg(sa)
    sa.set_defaults(func=cmd_sample)

    m = sub.add_parser("map", help="project mass samples onto a sky grid")
    m.add_argument("store", help="the store")
    g = m.add_mutually_exclusive_group(required=True)
    g.add_argument("--flat", type=float, metavar="PIXEL_ARCMIN", help="flat (gnomonic) grid with this pixel size")
    g.add_argument("--healpix", type=int, metavar="NSIDE", help="HEALPix grid of this nside")
    m.add_argument("--ring", action="store_true", help="RING ordering for HEALPix (default NESTED)")
    m.add_argument("-n", type=int, default=100, help="number of mass samples (maps)")
    m.add_argument("-o", "--output", required=True, help="OUT.zarr, .nc, .fits or .png")
    m.add_argument("--center", type=lambda t: tuple(float(v) for v in t.split(",")), metavar="RA,DEC",
                   help="flat grid centre in degrees (default: the store's field centre)")
    m.add_argument("--size", type=float, metavar="ARCMIN", help="flat grid side (default: the store's field size)")
    m.add_argument("--quantity", choices=("mass", "surface_density"), default="mass",
                   help="mass per pixel (solMass) or per unit area (solMass arcmin-2)")
    m.add_argument("--method", choices=("grid", "normal"), default="grid",
                   help="inverse-CDF draws from the gridded posterior, or from its moment-matched normal")
    m.add_argument("--independent", action="store_true", help="independent draws from each halo's marginal")
    m.add_argument("--samples", action="store_true",
                   help="write the stack of sampled maps instead of their statistics (mean, std, quantiles, truth)")
    m.add_argument("--overwrite", action="store_true", help="replace an existing output")
    m.add_argument("--seed", type=int, default=0, help="seed of the mass samples")
    storage_options_arg(m)
    m.set_defaults(func=cmd_map)

    k = sub.add_parser("kappa", help="lensing convergence maps of mass samples (NFW halos, M200m)")
    k.add_argument("store", help="the store")
    gk = k.add_mutually_exclusive_group(required=True)
    gk.add_argument("--flat", type=float, metavar="PIXEL_ARCMIN", help="flat (gnomonic) grid with this pixel size")
    gk.add_argument("--healpix", type=int, metavar="NSIDE", help="HEALPix grid of this nside")
    k.add_argument("--ring", action="store_true", help="RING ordering for HEALPix (default NESTED)")
    k.add_argument("--z-source", type=float, required=True, help="source-plane redshift")
    k.add_argument("-n", type=int, default=100, help="number of mass samples (maps)")
    k.add_argument("-o", "--output", required=True, help="OUT.zarr, .nc, .fits or .png")
    k.add_argument("--samples", action="store_true", help="write the stack of maps instead of their statistics")
    k.add_argument("--overwrite", action="store_true", help="replace an existing output")
    k.add_argument("--seed", type=int, default=0, help="seed of the mass samples")
    storage_options_arg(k)
    k.set_defaults(func=cmd_kappa)

    f = sub.add_parser("infer", help="infer the hyper-posterior from a catalogue")
    catalog_args(f)
    f.add_argument("-o", "--output", required=True, help="hyper.nc or hyper.csv")
    f.add_argument("--method", choices=("laplace", "emcee"), default="laplace",
                   help="Laplace approximation refined by importance sampling, or emcee MCMC")
    f.add_argument("--hyperprior", choices=("reddick2013", "flat"), default="reddick2013",
                   help="prior on the hyperparameters")
    f.add_argument("--overwrite", action="store_true", help="replace an existing output")
    f.add_argument("--free", help="hyperparameters to infer, comma separated (default alpha1,alpha2,alpha4,S)")
    f.add_argument("--group-tol", type=float, default=None,
                   help="group halos in (z, ln L_obs) cells of this size for a faster, approximate likelihood "
                        "(0.01: ~2.5x faster, log-likelihood error spread ~1e-4 across draws on the seed field; "
                        "default exact)")
    f.add_argument("--lum-min", type=float, default=None,
                   help="flux limit of the catalogue (units of lum_obs): normalise by each halo's selection probability")
    f.set_defaults(func=cmd_infer)
    _common_options(sub)
    return p


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with each option's default, except for flags and options without one (no
    ``(default: None)`` / ``(default: False)`` noise)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or isinstance(action, argparse._CountAction):
            return action.help
        return super()._get_help_string(action)


def _common_options(sub) -> None:
    """On every command: defaults shown in ``--help``, ``-v/--verbose`` and ``--quiet``."""
    for q in sub.choices.values():
        q.formatter_class = DefaultsHelpFormatter
        known = {o for a in q._actions for o in a.option_strings}
        if "--quiet" not in known:
            q.add_argument("--quiet", action="store_true", help="no progress bars")
        if "--verbose" not in known:
            q.add_argument("-v", "--verbose", action="count", default=0, help="report the steps (-v), and debug messages too (-vv)")


def _os_error_line(exc: OSError) -> str:
    """One line for a file-system error: the file, what went wrong."""
    where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
    what = exc.strerror or str(exc) or type(exc).__name__
    return f"{where}{what}"


#: Python keywords in hints of the library's messages, and the flags that do the same on the command line
CLI_HINTS = (
    ("Pass mode='w' to replace it, or resume=True to finish an interrupted build",
     "Pass --overwrite to replace it, or --resume to finish an interrupted build"),
    ("to_store(..., resume=True)", "massmap build ... --resume"),
    ("with mode='w'", "with --overwrite"),
    ("(mode='w')", "(--overwrite)"),
    ("pass overwrite=True (CLI: --overwrite)", "pass --overwrite"),
)


def cli_message(text: str) -> str:
    """A library message with its Python hints rewritten as the command's flags (:data:`CLI_HINTS`)."""
    for python, flag in CLI_HINTS:
        text = text.replace(python, flag)
    return " ".join(text.split())  # one line


def _check_output_place(args) -> None:
    """Refuse an output path below a regular file, a missing directory (files) or an unwritable one,
    before any work is done."""
    out = getattr(args, "output", None)
    if out is None or "://" in str(out):
        return
    parent = os.path.dirname(os.path.abspath(str(out)))
    above = parent
    while not os.path.lexists(above) and os.path.dirname(above) != above:
        above = os.path.dirname(above)
    if not os.path.isdir(above):
        raise MassmapError(f"-o {str(out)!r}: {above!r} is a file, not a directory; choose an output path in a directory")
    if above != parent and args.command not in ("build", "materialize"):  # a store's missing directories are created
        raise MassmapError(f"-o {str(out)!r}: directory {parent!r} does not exist; create it (mkdir -p {parent}) "
                           "or choose another output path")
    if not os.access(above, os.W_OK | os.X_OK):
        raise MassmapError(f"-o {str(out)!r}: directory {above!r} is not writable; choose an output path you can "
                           "write to")


def _decode_failure(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while zarr or a codec decoded stored data (a garbled or truncated chunk)."""
    tb = exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename.replace(os.sep, "/")
        if "/numcodecs/" in name or "/zarr/codecs/" in name or "numcodecs" in name.rsplit("/", 1)[-1]:
            return True
        tb = tb.tb_next
    return False


def main(argv=None) -> int:
    """Run the ``massmap`` command; returns the exit status.

    Input, data and file-system errors print one line ``massmap: error: ...`` and return 2 (the
    library's hints rewritten as the command's flags, :data:`CLI_HINTS`), and so does a garbled or
    truncated chunk that zarr or its codecs cannot decode; an output path that cannot be written is
    refused before any work; a closed output pipe (``massmap info STORE | head``) ends quietly.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(-1 if getattr(args, "quiet", False) else getattr(args, "verbose", 0) - 1)
    try:
        _check_output_place(args)
        if hasattr(args, "storage_options"):
            args.storage_options = parse_storage_options(args.storage_options)
        status = args.func(args)
        sys.stdout.flush()
        return status
    except MassmapError as exc:
        print(f"massmap: error: {cli_message(str(exc))}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away: stop writing, and keep Python from complaining at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as exc:
        print(f"massmap: error: {cli_message(_os_error_line(exc))}", file=sys.stderr)
        return 2
    except Exception as exc:
        if not _decode_failure(exc):
            raise
        store = getattr(args, "store", None) or "the store"
        print(f"massmap: error: {store}: a stored chunk cannot be decoded ({type(exc).__name__}: "
              f"{cli_message(str(exc))}); the store is damaged. Run `massmap verify {store}` to list the damaged "
              "chunks, then rebuild it (massmap build ... --overwrite)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("massmap: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
