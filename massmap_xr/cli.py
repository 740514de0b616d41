"""The ``massmap`` command.

Sub-commands::

    massmap demo                      mock field -> cube -> stores/demo.zarr + figures
    massmap build CATALOG -o STORE    build a cube store from a catalogue
    massmap info STORE                describe a store
    massmap verify STORE              re-check a store's checksums and invariants
    massmap summary STORE -o F        per-halo summaries to CSV or NetCDF
    massmap sample STORE -n N -o F    mass samples to Zarr/NetCDF
    massmap map STORE (--flat ARCMIN | --healpix NSIDE) -n N -o OUT
    massmap infer CATALOG -o hyper.nc infer the hyper-posterior from a catalogue

Errors in the input are reported as one line ``massmap: error: ...`` with exit status 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from massmap_xr.errors import MassmapError

__all__ = ["main"]


def _load_catalog(spec: str, args) -> "xr.Dataset":  # noqa: F821
    from massmap_xr.catalog import read_catalog, seed_field

    if spec == "seed":
        return seed_field(seed=args.seed)
    columns = args.columns.split(",") if getattr(args, "columns", None) and args.columns != "original" else getattr(args, "columns", None)
    return read_catalog(spec, columns=columns, wrap_ra=getattr(args, "wrap_ra", False))


def _hyper(args, catalog):
    from massmap_xr.hyper import read_hyper, reddick2013

    if getattr(args, "infer", False):
        from massmap_xr.inference import infer_hyperparameters

        print(f"inferring hyperparameters from {catalog.sizes['halo']} halos ...", file=sys.stderr)
        return infer_hyperparameters(catalog, n=args.n_realizations, seed=args.seed, progress=True)
    if args.hyper:
        return read_hyper(args.hyper)
    return reddick2013(args.n_realizations, seed=args.seed)


def cmd_build(args) -> int:
    from massmap_xr.cube import build_posterior
    from massmap_xr.store import to_store

    cat = _load_catalog(args.catalog, args)
    hyper = _hyper(args, cat)
    cube = build_posterior(cat, hyper, sigma_obs=args.sigma_obs, method=args.method, chunks=args.chunks)
    t0 = time.perf_counter()
    to_store(cube, args.output, mode="w" if args.overwrite else "w-", resume=args.resume, progress=not args.quiet)
    n = cube.sizes
    print(f"wrote {args.output}: {n['halo']} halos x {n['mass']} masses x {n['realization']} realizations "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_info(args) -> int:
    from massmap_xr.store import store_info

    for k, v in store_info(args.store).items():
        print(f"{k:>20}: {v}")
    return 0


def cmd_verify(args) -> int:
    from massmap_xr.store import verify_store

    report = verify_store(args.store)
    print(report)
    return 0 if report.ok else 1


def cmd_summary(args) -> int:
    from massmap_xr.analysis import write_summary
    from massmap_xr.store import open_store

    ds = open_store(args.store)
    write_summary(ds, args.output)
    print(f"wrote {args.output}")
    return 0


def cmd_sample(args) -> int:
    from massmap_xr.analysis import sample, write_samples
    from massmap_xr.store import open_store

    ds = open_store(args.store)
    s = sample(ds, args.n, method=args.method, correlated=not args.independent, seed=args.seed)
    write_samples(s, args.output)
    print(f"wrote {args.output}: {args.n} samples of {ds.sizes['halo']} halos")
    return 0


def cmd_map(args) -> int:
    from massmap_xr.analysis import sample
    from massmap_xr.sky import project_flat, project_healpix, write_map
    from massmap_xr.store import open_store

    ds = open_store(args.store)
    s = sample(ds, args.n, seed=args.seed)
    if args.flat is not None:
        maps = project_flat(s, pixel_scale=args.flat)
    else:
        maps = project_healpix(s, args.healpix, nest=not args.ring)
    write_map(maps, args.output)
    print(f"wrote {args.output}")
    return 0


def cmd_infer(args) -> int:
    from massmap_xr.inference import infer_to_file

    cat = _load_catalog(args.catalog, args)
    infer_to_file(cat, args.output, n=args.n_realizations, seed=args.seed, progress=True)
    print(f"wrote {args.output}")
    return 0


def cmd_demo(args) -> int:
    from massmap_xr.demo import run_demo

    paths = run_demo(args.out_dir, n_halos=args.n_halos, n_realizations=args.n_realizations, seed=args.seed,
                     progress=not args.quiet)
    for p in paths:
        print(f"wrote {p}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="massmap", description="Probabilistic halo mass maps (massmap_xr).")
    from massmap_xr import __version__

    p.add_argument("--version", action="version", version=f"massmap_xr {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="build the demo cube, store and figures")
    d.add_argument("--out-dir", default="stores", type=Path)
    d.add_argument("--n-halos", type=int, default=300)
    d.add_argument("--n-realizations", type=int, default=20)
    d.add_argument("--seed", type=int, default=2017)
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=cmd_demo)

    def catalog_args(q):
        q.add_argument("catalog", help="catalogue file (.csv, .txt, .nc, .zarr) or 'seed' for the shipped seed field")
        q.add_argument("--columns", help="column names of a headerless text file, comma separated, or 'original'")
        q.add_argument("--wrap-ra", action="store_true", help="wrap ra into [0, 360) degrees (e.g. from (-180, 180])")
        q.add_argument("--n-realizations", type=int, default=100)
        q.add_argument("--seed", type=int, default=0)

    b = sub.add_parser("build", help="build a posterior cube store from a catalogue")
    catalog_args(b)
    b.add_argument("-o", "--output", required=True)
    b.add_argument("--hyper", help="hyperparameter table (.csv or .nc); default Reddick 2013 draws")
    b.add_argument("--infer", action="store_true", help="infer the hyper-posterior from the catalogue first")
    b.add_argument("--sigma-obs", type=float, default=0.05)
    b.add_argument("--method", choices=("analytic", "montecarlo"), default="analytic")
    b.add_argument("--chunks", type=int, default=None, help="halos per slab")
    b.add_argument("--resume", action="store_true", help="finish an interrupted build of the same cube")
    b.add_argument("--overwrite", action="store_true", help="replace an existing store")
    b.add_argument("--quiet", action="store_true")
    b.set_defaults(func=cmd_build)

    i = sub.add_parser("info", help="describe a store")
    i.add_argument("store")
    i.set_defaults(func=cmd_info)

    v = sub.add_parser("verify", help="re-check a store's checksums and invariants")
    v.add_argument("store")
    v.set_defaults(func=cmd_verify)

    s = sub.add_parser("summary", help="per-halo posterior summaries")
    s.add_argument("store")
    s.add_argument("-o", "--output", required=True, help="summary.csv or summary.nc")
    s.set_defaults(func=cmd_summary)

    sa = sub.add_parser("sample", help="draw halo mass samples")
    sa.add_argument("store")
    sa.add_argument("-n", type=int, required=True)
    sa.add_argument("-o", "--output", required=True, help="samples.zarr or samples.nc")
    sa.add_argument("--method", choices=("grid", "normal"), default="grid")
    sa.add_argument("--independent", action="store_true", help="independent draws from each halo's marginal")
    sa.add_argument("--seed", type=int, default=0)
    sa.set_defaults(func=cmd_sample)

    m = sub.add_parser("map", help="project mass samples onto a sky grid")
    m.add_argument("store")
    g = m.add_mutually_exclusive_group(required=True)
    g.add_argument("--flat", type=float, metavar="PIXEL_ARCMIN")
    g.add_argument("--healpix", type=int, metavar="NSIDE")
    m.add_argument("--ring", action="store_true", help="RING ordering for HEALPix (default NESTED)")
    m.add_argument("-n", type=int, default=100)
    m.add_argument("-o", "--output", required=True, help="OUT.zarr, .nc, .fits or .png")
    m.add_argument("--seed", type=int, default=0)
    m.set_defaults(func=cmd_map)

    f = sub.add_parser("infer", help="infer the hyper-posterior from a catalogue")
    catalog_args(f)
    f.add_argument("-o", "--output", required=True, help="hyper.nc")
    f.set_defaults(func=cmd_infer)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except MassmapError as exc:
        print(f"massmap: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
