"""Throughput of the posterior kernel against numpy.exp and the original Monte Carlo estimator.

One run prints:

- the machine (platform, CPU model, cores, load, numpy/numba versions, numba threading layer,
  numpy's SIMD extensions);
- posterior cells per second of :func:`massmap_xr.kernels.posterior.posterior_block` on seed-field halos
  (400 masses × 100 Reddick 2013 realizations by default), after a warm-up call (JIT), best of
  ``--repeat``, with numba's default number of threads and with one thread;
- ``numpy.exp`` float32 elements per second on the same number of elements (preallocated
  output, best of ``--repeat``) and the kernel/exp ratio: a cell of the cube costs about as much as one
  single-precision exponential when the ratio is 1 (target ≥ 0.25, ambition ≥ 0.5);
- the original study's per-halo estimator re-expressed in plain numpy at its own settings
  (10 draws of S × 100 luminosity draws per mass point × the mass grid, for each halo): once as
  the original notebook wrote it (a Python loop over the luminosity draws) and once vectorised
  over the draws, timed on a few halos and extrapolated per halo, and the kernel's speed-up
  per halo (the kernel computing 100 realizations, the estimator 10) and per cell.

``OPENBLAS_CORETYPE`` does not matter here: ``numpy.exp`` runs numpy's own SIMD loops (chosen
at import from the CPU features listed under "SIMD"), not BLAS, and the kernel is compiled by
numba for the host CPU.

Run ``python benchmarks/bench_kernel.py`` (``--small`` for a quick check, ``--json PATH`` to
save the numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
from machine import cpu_model


def best_of(fn, repeat):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def machine() -> dict:
    import numba

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "numba_threads": numba.config.NUMBA_NUM_THREADS,
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "(unset)"),
    }
    try:
        simd = np.show_config(mode="dicts")["SIMD Extensions"]
        info["numpy_simd"] = ", ".join(simd.get("found", [])) or "baseline only"
    except (TypeError, KeyError, AttributeError):  # older numpy: no dict mode
        info["numpy_simd"] = "unknown"
    return info


def time_exp(n: int, repeat: int = 5) -> float:
    """Best of ``repeat`` ``numpy.exp`` over ``n`` float32 values into a preallocated output (seconds)."""
    x = np.random.default_rng(1).standard_normal(n, dtype=np.float32) * 3.0 - 5.0  # exponents of a posterior
    y = np.empty_like(x)
    np.exp(x, out=y)  # first touch of the output
    return best_of(lambda: np.exp(x, out=y), repeat)


# --------------------------------------------------------------------------- original estimator
def _lognormal_density(mu, sigma, x):
    """Log-normal density of ``x`` with median ``mu`` and log-width ``sigma`` (per unit x)."""
    return np.exp(-0.5 * (np.log(x) - np.log(mu)) ** 2 / sigma**2) / (x * sigma * np.sqrt(2 * np.pi))


def original_halo_posterior(lum_obs, z, mass, prior_row, alpha, S_seed, rng, *, n_s=10, n_l=100, sigma_obs=0.05,
                            loop_draws=True):
    """The original per-halo Monte Carlo estimator (S drawn around its seed, α fixed).

    For each of ``n_s`` draws of S ~ N(S_seed, S_seed/10), for each mass point, draw ``n_l``
    luminosities L ~ LogNormal(μ_L(M, z), S) and average the observation density
    P(L_obs | L, σ_obs) over them; multiply the mean over S draws by the prior and normalise by
    the trapezoid rule over M.  ``loop_draws`` keeps the notebook's Python loop over the L
    draws; otherwise the average is one numpy expression per mass point.
    """
    a1, a2, a3, a4 = alpha
    tot = np.zeros(mass.size)
    for S in rng.normal(S_seed, S_seed / 10, size=n_s):
        like = np.empty(mass.size)
        for m, mk in enumerate(mass):
            mu_lum = np.exp(a1) * (mk / a3) ** a2 * (1 + z) ** a4
            draws = rng.lognormal(np.log(mu_lum), S, size=n_l)
            if loop_draws:
                acc = 0.0
                for x in draws:
                    acc += _lognormal_density(x, sigma_obs, lum_obs)
                like[m] = acc / n_l
            else:
                like[m] = _lognormal_density(draws, sigma_obs, lum_obs).mean()
        tot += like
    prop = prior_row * tot / n_s
    return prop / np.trapezoid(prop, x=mass)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-halos", type=int, default=2000, help="seed-field halos in the kernel timing")
    p.add_argument("--n-mass", type=int, default=400)
    p.add_argument("--n-realizations", type=int, default=100)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--original-halos", type=int, default=2, help="halos timed with the notebook's loop")
    p.add_argument("--vectorised-halos", type=int, default=5, help="halos timed with the vectorised estimator")
    p.add_argument("--small", action="store_true", help="200 halos, 1 halo for the original estimator")
    p.add_argument("--json", help="also write the numbers to this JSON file")
    args = p.parse_args(argv)
    if args.small:
        args.n_halos, args.original_halos, args.vectorised_halos = 200, 1, 2

    import numba

    from massmap_xr.catalog import seed_field
    from massmap_xr.kernels.posterior import posterior_block
    from massmap_xr.model.hyper import reddick2013
    from massmap_xr.model.prior import TinkerPrior, default_mass_grid


    cat = seed_field()
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(cat.sizes["halo"], min(args.n_halos, cat.sizes["halo"]), replace=False))
    log_lobs = np.log(cat["lum_obs"].values[idx])
    z = cat["z"].values[idx]
    mass = default_mass_grid(args.n_mass)
    z_nodes, log_table = TinkerPrior().log_table(mass)
    hyper = reddick2013(args.n_realizations, seed=1)
    hyp = {k: hyper[k].values for k in ("alpha1", "alpha2", "alpha3", "alpha4", "S")}
    out = np.empty((idx.size, mass.size, args.n_realizations), dtype=np.float32)
    n_cells = out.size

    def run():
        posterior_block(log_lobs, z, 0.05, z_nodes=z_nodes, log_table=log_table, mass=mass, out=out, **hyp)

    t0 = time.perf_counter()
    run()  # JIT compile (or load from cache) + first touch of the output
    warm = time.perf_counter() - t0
    info = machine()
    info["numba_threading_layer"] = numba.threading_layer()
    print("machine")
    for k, v in info.items():
        print(f"  {k:22s} {v}")
    print("  note: OPENBLAS_CORETYPE does not affect numpy.exp (numpy's own SIMD loops, not BLAS)")
    default_threads = numba.get_num_threads()
    t_default = best_of(run, args.repeat)
    numba.set_num_threads(1)
    try:
        t_one = best_of(run, args.repeat)
    finally:
        numba.set_num_threads(default_threads)
    assert np.all(np.isfinite(out))
    cells_default = n_cells / t_default
    cells_one = n_cells / t_one

    t_exp = time_exp(n_cells, args.repeat)
    exp_rate = n_cells / t_exp

    print(f"\nkernel: {idx.size} seed-field halos x {mass.size} masses x {args.n_realizations} realizations "
          f"= {n_cells:.3g} cells (first call {warm:.2f} s incl. JIT/cache load)")
    print(f"  posterior_block, {default_threads} threads : {cells_default:.3g} cells/s ({t_default:.3f} s)")
    print(f"  posterior_block, 1 thread  : {cells_one:.3g} cells/s ({t_one:.3f} s)")
    print(f"  numpy.exp float32 (1 thread): {exp_rate:.3g} elements/s ({t_exp:.3f} s)")
    print(f"  ratio kernel/exp, 1 thread vs 1 thread : {cells_one / exp_rate:.2f}   (target >= 0.25, ambition >= 0.5)")
    print(f"  ratio kernel/exp, {default_threads} threads vs 1 thread: {cells_default / exp_rate:.2f}")

    # original estimator, per halo
    prior = TinkerPrior()
    alpha = tuple(float(hyper[k].values[0]) for k in ("alpha1", "alpha2", "alpha3", "alpha4"))
    s_seed = float(hyper["S"].values[0])
    orig_rng = np.random.default_rng(2)

    def time_original(n, loop_draws):
        t0 = time.perf_counter()
        for k in idx[:n]:
            zk = float(cat["z"].values[k])
            row = np.exp(prior.log_density([zk], mass)[0])
            original_halo_posterior(float(cat["lum_obs"].values[k]), zk, mass, row, alpha, s_seed, orig_rng,
                                    loop_draws=loop_draws)
        return (time.perf_counter() - t0) / n

    t_loop = time_original(args.original_halos, True)
    t_vec = time_original(args.vectorised_halos, False)
    kernel_halo = mass.size * args.n_realizations / cells_default
    kernel_halo_one = mass.size * args.n_realizations / cells_one
    n_orig_cells = mass.size * 10
    print(f"\noriginal estimator (10 S draws x 100 L draws x {mass.size} masses per halo, plain numpy):")
    print(f"  notebook form (loop over L draws): {t_loop:.3g} s/halo ({args.original_halos} halos timed; "
          "the original study reported ~2 s/halo)")
    print(f"  vectorised over L draws          : {t_vec:.3g} s/halo ({args.vectorised_halos} halos timed)")
    print(f"  kernel                           : {kernel_halo:.3g} s/halo ({default_threads} threads), "
          f"{kernel_halo_one:.3g} s/halo (1 thread), {args.n_realizations} realizations")
    rows = []
    for name, t in (("notebook form", t_loop), ("vectorised", t_vec), ("reported 2 s/halo", 2.0)):
        per_halo = t / kernel_halo
        per_cell = (t / n_orig_cells) / (1.0 / cells_default)
        rows.append({"baseline": name, "seconds_per_halo": t, "speedup_per_halo": per_halo,
                     "speedup_per_cell": per_cell, "speedup_per_halo_1thread": t / kernel_halo_one})
        print(f"  speed-up vs {name:18s}: {per_halo:10.3g} x per halo ({t / kernel_halo_one:.3g} x with 1 thread), "
              f"{per_cell:10.3g} x per cell   (target >= 1e4 per halo)")

    results = {
        "machine": info,
        "n_halos": int(idx.size), "n_mass": int(mass.size), "n_realizations": int(args.n_realizations),
        "kernel_cells_per_s": cells_default, "kernel_threads": default_threads,
        "kernel_cells_per_s_1thread": cells_one, "numpy_exp_float32_per_s": exp_rate,
        "ratio_1thread": cells_one / exp_rate, "ratio_default_threads": cells_default / exp_rate,
        "original": rows, "load_average_1min_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    print(f"\nload average (1 min) at the end: {results['load_average_1min_end']}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return results


if __name__ == "__main__":
    main()
