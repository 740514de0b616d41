"""Convergence and shear maps of sampled halo masses: time, and against a plain numpy sum.

Maps ``n_halos x n_samples`` masses (a mock field like the original study's: 115,919 halos
in 40' x 40', masses from the mock's Tinker-prior draws with 0.25 dex of scatter per sample)
onto 0.5' pixels over the 40' window, source plane z_s = 3, and prints

- ``kappa_flat`` for the full field (numpy input, everything included), and on dask input
  (4 sample chunks, threaded scheduler);
- ``shear_flat`` (near field and point-mass far field) for the full field;
- on a subset small enough for it, a straightforward numpy sum over halos and pixels of
  ``nfw_kappa`` at the pixel centres (no pixel integration), and the ratio of the times.

Run ``python benchmarks/bench_lensing.py`` (``--small`` for a quick check).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from machine import load_line, machine_line, versions_line


def best_of(fn, repeat):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--halos", type=int, default=115_919)
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--pixel", type=float, default=0.5)
    p.add_argument("--subset", type=int, default=2000, help="halos for the numpy comparison")
    p.add_argument("--subset-samples", type=int, default=5)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--no-shear", action="store_true")
    p.add_argument("--small", action="store_true", help="10,000 halos x 10 samples")
    args = p.parse_args(argv)
    if args.small:
        args.halos, args.samples = 10_000, 10

    import xarray as xr

    import massmap_xr as mm
    from massmap_xr import lensing as L

    print(machine_line())
    print(versions_line("numpy", "numba", "xarray", "dask"))
    print(load_line())

    cat = mm.mock_catalog(args.halos, seed=1)
    rng = np.random.default_rng(0)
    lm = np.log10(cat["mass_true"].values)[:, None] + rng.normal(0.0, 0.25, (args.halos, args.samples))
    masses = xr.DataArray(10**lm, dims=("halo", "sample"),
                          coords={"ra": cat["ra"], "dec": cat["dec"], "z": cat["z"]}, attrs={"units": "solMass"})
    center = (cat.attrs["field_center_ra"], cat.attrs["field_center_dec"])
    kw = dict(z_source=3.0, center=center, size=40.0, pixel_scale=args.pixel)
    L.kappa_flat(masses.isel(halo=slice(0, 100), sample=slice(0, 2)), **kw)  # compile / load the kernels
    work = args.halos * args.samples
    print(f"\n{args.halos:,} halos x {args.samples} samples = {work:,} halo-samples; {40 / args.pixel:.0f}^2 pixels "
          f"of {args.pixel:g}'; best of {args.repeat}")

    t_k, kmap = best_of(lambda: L.kappa_flat(masses, **kw), args.repeat)
    print(f"  kappa_flat (numpy input)          {t_k:8.2f} s   ({work / t_k / 1e6:6.2f} M halo-samples/s)")
    chunked = masses.chunk({"sample": max(1, args.samples // 4)})
    t_kd, kd = best_of(lambda: L.kappa_flat(chunked, **kw).compute(), args.repeat)
    assert np.allclose(kd.values, kmap.values, rtol=1e-12, atol=1e-15)
    print(f"  kappa_flat (dask, 4 chunks)       {t_kd:8.2f} s")
    if not args.no_shear:
        t_g, _ = best_of(lambda: L.shear_flat(masses, **kw), 1)
        print(f"  shear_flat (near + far field)     {t_g:8.2f} s   ({work / t_g / 1e6:6.2f} M halo-samples/s)")

    # --- numpy baseline on a subset ------------------------------------------------------
    n, s = args.subset, args.subset_samples
    sub = masses.isel(halo=slice(0, n), sample=slice(0, s))
    t_sub, ksub = best_of(lambda: L.kappa_flat(sub, **kw), args.repeat)
    ra_p, dec_p = ksub["ra"].values.ravel(), ksub["dec"].values.ravel()
    ra_h, dec_h, z_h = (sub[c].values for c in ("ra", "dec", "z"))
    cosd = np.cos(np.radians(dec_h))

    def naive():
        out = np.zeros((s, ra_p.size))
        for j in range(s):
            for h in range(n):
                theta = np.hypot((ra_p - ra_h[h]) * cosd[h], dec_p - dec_h[h]) * 60.0
                out[j] += L.nfw_kappa(sub.values[h, j], z_h[h], np.maximum(theta, 1e-4), z_source=3.0)
        return out

    t_naive, ref = best_of(naive, 1)
    far = ref > 0
    print(f"\nsubset {n:,} halos x {s} samples:")
    print(f"  kappa_flat                        {t_sub:8.3f} s")
    print(f"  numpy sum of nfw_kappa over halos x pixels (pixel centres) {t_naive:8.2f} s")
    print(f"  ratio numpy / kappa_flat          {t_naive / t_sub:8.1f}x")
    print(f"  median |kappa_flat / numpy - 1| where numpy > 0: {np.median(np.abs(ksub.values.reshape(s, -1)[far] / ref[far] - 1)):.2e} "
          "(pixel averages vs centre values; large where halos are smaller than a pixel)")
    print(f"load average at end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
