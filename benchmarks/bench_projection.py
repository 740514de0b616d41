"""Throughput of the sky projections against bare numpy baselines.

Maps ``n_halos x n_samples`` halo masses onto a 40' x 40' field at 0.1' pixels (the
original study's field: 115,919 halos) and onto HEALPix cells, and prints halo-samples per
second for

- ``project_flat`` on in-memory (numpy-backed) input, everything included: validation,
  pixel indices, accumulation, coordinates;
- a bare ``numpy.bincount`` over precomputed flattened (sample, pixel) indices (the floor any
  scatter-add can hope for; index building is not timed);
- ``numpy.histogram2d`` of the pixel coordinates, one call per sample;
- ``project_flat`` on dask input (threaded scheduler);
- ``project_healpix`` (occupied cells, nested) against ``numpy.bincount`` of
  ``healpy.ang2pix`` indices.

Run ``python benchmarks/bench_projection.py`` (``--small`` for a quick check).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from machine import machine_line, versions_line


def best_of(fn, repeat):
    best = float("inf")
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--halos", type=int, default=115_919)
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--pixel", type=float, default=0.1, help="pixel side in arcmin")
    p.add_argument("--nside", type=int, default=4096)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--small", action="store_true", help="10,000 halos x 20 samples")
    args = p.parse_args(argv)
    if args.small:
        args.halos, args.samples = 10_000, 20

    import healpy as hp
    import xarray as xr

    from massmap_xr.catalog import uniform_field_positions
    from massmap_xr.sky import FlatGrid, project_flat, project_healpix

    print(machine_line())
    print(versions_line("numpy", "scipy", "xarray", "dask", "healpy"))

    rng = np.random.default_rng(0)
    center, size = (150.0, 2.0), 40.0
    ra, dec = uniform_field_positions(args.halos, rng, center=center, size_arcmin=size)
    mass = 10 ** rng.uniform(11.0, 14.5, (args.halos, args.samples))
    masses = xr.DataArray(
        mass, dims=("halo", "sample"),
        coords={"ra": ("halo", ra), "dec": ("halo", dec)}, attrs={"units": "solMass"},
    )
    work = args.halos * args.samples
    print(f"\n{args.halos:,} halos x {args.samples} samples = {work:,} halo-samples; "
          f"flat grid {size:g}' x {size:g}' at {args.pixel:g}'; best of {args.repeat}")

    def rate(t):
        return f"{work / t / 1e6:8.1f} M halo-samples/s  ({t * 1e3:8.1f} ms)"

    # --- flat ---------------------------------------------------------------------------
    t_flat, fmap = best_of(lambda: project_flat(masses, center=center, size=size, pixel_scale=args.pixel), args.repeat)
    ny, nx = fmap.sizes["y"], fmap.sizes["x"]
    npix = ny * nx
    grid = FlatGrid.from_header(fmap.attrs)
    row, col, inside = grid.world_to_index(ra, dec)
    pix = np.where(inside, row * nx + col, 0)
    flat_index = (np.arange(args.samples)[None, :] * npix + pix[:, None]).ravel()
    weights = np.where(inside[:, None], mass, 0.0).ravel()
    t_bin, ref = best_of(lambda: np.bincount(flat_index, weights=weights, minlength=args.samples * npix), args.repeat)
    ref = ref.reshape(args.samples, ny, nx)
    assert np.allclose(fmap.values, ref, rtol=1e-10, atol=0), "project_flat disagrees with bincount"

    px = col.astype(float)
    py = row.astype(float)
    edges = (np.arange(ny + 1) - 0.5, np.arange(nx + 1) - 0.5)

    def hist2d():
        out = np.empty((args.samples, ny, nx))
        for s in range(args.samples):
            out[s] = np.histogram2d(py[inside], px[inside], bins=edges, weights=mass[inside, s])[0]
        return out

    t_h2d, h = best_of(hist2d, 1)
    assert np.allclose(h, ref, rtol=1e-10, atol=0)

    chunked = masses.chunk({"sample": max(1, args.samples // 4)})
    t_dask, _ = best_of(lambda: project_flat(chunked, center=center, size=size, pixel_scale=args.pixel).compute(), args.repeat)

    print(f"\nflat map {ny} x {nx} pixels ({fmap.attrs['n_outside']} halos outside)")
    print(f"  project_flat (numpy input)      {rate(t_flat)}")
    print(f"  numpy.bincount, indices given   {rate(t_bin)}")
    print(f"  numpy.histogram2d per sample    {rate(t_h2d)}")
    print(f"  project_flat (dask, 4 chunks)   {rate(t_dask)}")
    print(f"  ratio project_flat / bincount   {t_bin / t_flat:8.2f}  (target >= 0.5)")
    print(f"  ratio project_flat / histogram2d {t_h2d / t_flat:7.1f}x faster")

    # --- HEALPix ------------------------------------------------------------------------
    t_hp, hmap = best_of(lambda: project_healpix(masses, args.nside, nest=True), args.repeat)
    hpix = hp.ang2pix(args.nside, ra, dec, nest=True, lonlat=True)
    ids, inv = np.unique(hpix, return_inverse=True)
    hindex = (np.arange(args.samples)[None, :] * ids.size + inv.reshape(-1)[:, None]).ravel()
    t_hbin, href = best_of(lambda: np.bincount(hindex, weights=mass.ravel(), minlength=args.samples * ids.size), args.repeat)
    assert np.allclose(hmap.values, href.reshape(args.samples, ids.size), rtol=1e-10, atol=0)
    print(f"\nHEALPix nside {args.nside} ({hp.nside2resol(args.nside, arcmin=True):.2f}'), {ids.size:,} occupied cells")
    print(f"  project_healpix (numpy input)   {rate(t_hp)}")
    print(f"  numpy.bincount, indices given   {rate(t_hbin)}")
    print(f"  ratio project_healpix / bincount {t_hbin / t_hp:7.2f}")


if __name__ == "__main__":
    main()
