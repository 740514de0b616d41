"""Benchmark and validation of the hyperparameter inference (massmap_xr.inference).

Run from the repository root::

    python benchmarks/bench_inference.py            # everything (a few minutes on 2 cores)
    python benchmarks/bench_inference.py --quick    # smaller calibration study

Sections
--------
1. Cost of one catalogue log-likelihood on the full 115,919-halo seed field with a 400-point
   mass grid: one point at a time (what an optimiser does) and per point of a 32-point batch
   (what an ensemble sampler does), on 1 and 2 threads, and the speed-up over the original
   analysis (about 7 s per evaluation).
2. Accuracy on the full field: the ±8σ window against the whole grid, and the compiled sum
   against a plain numpy evaluation of the same quadrature for a random subset of halos.
3. Grouping halos in (z, ln L_obs) cells: terms kept, time, and the grouping error (its spread
   across hyperparameter draws is what would bias an inference).
4. Fitting the seed field itself.  Its masses were drawn by the original sampler from the
   tabulated prior with probability proportional to dn/dM at the points of a log-spaced grid,
   using the table's redshift row at or above each halo's redshift; the effective prior is
   therefore dn/dM / M (per unit M), constant in z within each table bin, on the table's own
   mass grid (whose mass column is in the original analysis's units, the units α3 = 2.35e14
   refers to).  The matching prior is built here as a step-in-z TablePrior; a fit with the
   Tinker density instead is shown for contrast.
5. Simulation-based calibration: many mock catalogues with hyperparameters drawn from a broad
   hyperprior; coverage of the central 68 % and 95 % intervals and uniformity of the ranks.
6. A user table prior (the shipped 410-mass seed table) against the default Tinker prior on the
   full field: time per evaluation through ``log_likelihood`` (the functional form, which keys
   its cache by the table's content) and through a prepared ``CatalogLikelihood`` on the
   default grid and on the table's own mass grid; ratios to the default measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numba
import numpy as np
import xarray as xr
from scipy import stats

from massmap_xr.catalog import mock_catalog, seed_field
from massmap_xr.inference import CatalogLikelihood, HyperPrior, infer_hyperparameters
from massmap_xr.kernels.numerics import trapezoid_weights
from massmap_xr.model.prior import TablePrior
from massmap_xr.model.relation import lobs_log_likelihood

ORIGINAL_SECONDS = 7.0
REDDICK = (10.709, 0.359, 2.35e14, 1.10, 0.155)
FREE = ("alpha1", "alpha2", "alpha4", "S")
BROAD = {"alpha1": (10.709, 0.1), "alpha2": (0.359, 0.03), "alpha4": (1.10, 0.2), "S": (0.155, 0.03)}
#: the study's data (override with MASSMAP_SHARED_DATA=/path/to/shared/data)
SHARED = Path(os.environ.get("MASSMAP_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def timed(fn, reps):
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts), float(np.median(ts))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel region has run yet
        layer = numba.config.THREADING_LAYER
    return f"{cpu}, {os.cpu_count()} cores, numba {numba.__version__} ({layer} threading layer), load average {load:.1f}"


def section_cost(cat, reps):
    print("\n== 1. cost of one evaluation, full seed field, 400-point mass grid ==")
    t0 = time.perf_counter()
    like = CatalogLikelihood(cat)
    print(f"setup (prior rows for {like.n_halo} halos x {like.mass.size} masses): {time.perf_counter() - t0:.2f} s")
    like(*REDDICK)
    like.value_and_grad(*REDDICK)
    a4 = np.linspace(1.0, 1.2, 32)
    like(10.709, 0.359, 2.35e14, a4, 0.155)
    rows = []
    for nt in (1, 2):
        if nt > numba.config.NUMBA_NUM_THREADS:
            continue
        numba.set_num_threads(nt)
        one = timed(lambda: like(*REDDICK), reps)
        grad = timed(lambda: like.value_and_grad(*REDDICK), max(3, reps // 2))
        batch = timed(lambda: like(10.709, 0.359, 2.35e14, a4, 0.155), max(2, reps // 4))
        rows.append((nt, one, grad, (batch[0] / 32, batch[1] / 32)))
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    print(f"machine: {machine()} (other work on the machine slows the 2-thread timings most)")
    print(f"{'threads':>7} {'one point (min/median)':>24} {'value+gradient':>18} {'per point of 32':>18} {'speed-up vs 7 s':>16}")
    for nt, one, grad, batch in rows:
        print(f"{nt:>7} {one[0]:>11.4f} / {one[1]:.4f} s {grad[0]:>11.4f} s     {batch[0]:>11.4f} s     "
              f"{ORIGINAL_SECONDS / one[0]:>7.0f}x ({ORIGINAL_SECONDS / batch[0]:.0f}x batched)")
    return like


def section_accuracy(cat, like, rng):
    print("\n== 2. accuracy on the full field ==")
    full = CatalogLikelihood(cat, window=1e3)
    for p in (REDDICK, (10.68, 0.37, 2.35e14, 1.0, 0.17)):
        a, b = float(like(*p)), float(full(*p))
        print(f"window +-8 sigma vs whole grid at {p}: {a:.10f} vs {b:.10f} (diff {a - b:.2e})")
    idx = np.sort(rng.choice(cat.sizes["halo"], 2000, replace=False))
    sub = cat.isel(halo=idx)
    x = np.log(like.mass)
    w = trapezoid_weights(x)
    lp = like.prior.log_density(sub.z.values, like.mass) + x
    lp -= np.log(np.sum(w * np.exp(lp - lp.max(1, keepdims=True)), axis=1, keepdims=True)) + lp.max(1, keepdims=True)
    ll = lobs_log_likelihood(sub.lum_obs.values[:, None], like.mass[None, :], sub.z.values[:, None], *REDDICK, 0.05)
    e = lp + ll
    emax = e.max(1, keepdims=True)
    ref = (emax + np.log(np.sum(w * np.exp(e - emax), axis=1, keepdims=True)))[:, 0]
    got = CatalogLikelihood(sub).per_halo(*REDDICK)
    print(f"compiled vs numpy, 2000 random halos: max |diff| per halo {np.max(np.abs(got - ref)):.2e}, "
          f"sum diff {got.sum() - ref.sum():.2e}")
    print(f"halo evaluations through the log-space fallback so far: {like.n_fallback}")


def section_grouping(cat, rng):
    print("\n== 3. grouping halos in (z, ln L_obs) cells ==")
    hp = HyperPrior("reddick2013", FREE)
    draws = hp.sample(8, rng)
    args = (draws[:, 0], draws[:, 1], 2.35e14, draws[:, 2], draws[:, 3])
    print(f"{'group_tol':>10} {'terms':>8} {'time/pt':>9} {'error mean':>11} {'error spread (8 Reddick draws)':>31}")
    for tol in (0.01, 0.02, 0.03, 0.05):
        g = CatalogLikelihood(cat, group_tol=tol)
        g(*REDDICK)
        t = timed(lambda g=g: g(*REDDICK), 5)[0]
        err = g.grouping_error(*args)
        print(f"{tol:>10g} {g.n_terms:>8d} {t:>8.4f}s {err.mean():>11.2e} {np.ptp(err):>31.2e}")


def shared_table():
    """The original study's prior table in the shared data folder, or None (and say so)."""
    path = SHARED / "seed_tinker10_prior.txt"
    if not path.exists():
        print(f"skipped: {path} not found")
        return None
    return path


def seed_prior(path: Path) -> tuple[TablePrior, np.ndarray]:
    """The seed field's effective prior: table dn/dM / M, from the table row at or above z."""
    d = np.loadtxt(path)
    z_tab = np.unique(d[:, 0])
    n_m = d.shape[0] // z_tab.size
    d = d[np.lexsort((d[:, 1], d[:, 0]))]
    mass = d[:n_m, 1]
    p = d[:, 2].reshape(z_tab.size, n_m) / mass[None, :]
    eps = 1e-9
    z_nodes, rows = [0.0], [p[1]]
    for i in range(1, z_tab.size):
        if i > 1:
            z_nodes.append(z_tab[i - 1] + eps)
            rows.append(p[i])
        z_nodes.append(z_tab[i])
        rows.append(p[i])
    table = xr.DataArray(np.array(rows), dims=("z", "mass"), coords={"z": np.array(z_nodes), "mass": mass},
                         attrs={"source": "seed_tinker10_prior.txt, effective prior of the original sampler"})
    return TablePrior(table), mass


def section_seed_fit(cat, n):
    print("\n== 4. fitting the seed field ==")
    path = shared_table()
    if path is None:
        return
    prior, mass = seed_prior(path)
    for label, kwargs in (
        ("effective prior (table dn/dM / M), Reddick hyperprior", {"prior": prior, "mass": mass}),
        ("effective prior, broad hyperprior", {"prior": prior, "mass": mass, "hyperprior": BROAD}),
        ("Tinker density (wrong prior for this field), broad", {"hyperprior": BROAD}),
    ):
        post = infer_hyperparameters(cat, n=n, seed=1, **kwargs)
        w = post.weight.values
        parts = []
        for k in FREE:
            m = np.sum(w * post[k].values)
            sd = np.sqrt(np.sum(w * (post[k].values - m) ** 2))
            parts.append(f"{k} = {m:.4f} +- {sd:.4f}")
        print(f"{label}:\n   " + ", ".join(parts))
        print(f"   ESS {post.attrs['ess']:.0f}/{n}, {post.attrs['n_likelihood_evaluations']} evaluations, "
              f"{post.attrs['wall_time_s']:.1f} s")


def weighted_quantile(v, w, q):
    o = np.argsort(v)
    c = np.cumsum(w[o])
    c = (c - 0.5 * w[o]) / c[-1]
    return np.interp(q, c, v[o])


def section_sbc(n_cat, n_halo, n_draw, seed=7):
    print(f"\n== 5. simulation-based calibration: {n_cat} mocks of {n_halo} halos, broad hyperprior, Laplace + IS ==")
    hp = HyperPrior(BROAD, FREE)
    rng = np.random.default_rng(seed)
    cover68, cover95, ranks, ess = [], [], [], []
    t0 = time.perf_counter()
    for i in range(n_cat):
        truth = dict(zip(FREE, hp.sample(1, rng)[0], strict=True))
        cat = mock_catalog(n_halo, seed=int(rng.integers(2**30)), truth=truth)
        post = infer_hyperparameters(cat, hyperprior=BROAD, n=n_draw, seed=i)
        w = post.weight.values
        ess.append(post.attrs["ess_fraction"])
        c68, c95, rk = [], [], []
        for k in FREE:
            v = post[k].values
            c68.append(weighted_quantile(v, w, 0.16) <= truth[k] <= weighted_quantile(v, w, 0.84))
            c95.append(weighted_quantile(v, w, 0.025) <= truth[k] <= weighted_quantile(v, w, 0.975))
            rk.append(np.sum(w[v < truth[k]]))  # posterior CDF at the truth: uniform if calibrated
        cover68.append(c68)
        cover95.append(c95)
        ranks.append(rk)
    cover68, cover95, ranks = np.array(cover68), np.array(cover95), np.array(ranks)
    sd68 = np.sqrt(0.68 * 0.32 / n_cat)
    sd95 = np.sqrt(0.95 * 0.05 / n_cat)
    print(f"time {time.perf_counter() - t0:.1f} s; importance-sampling ESS fraction min {np.min(ess):.2f}, "
          f"median {np.median(ess):.2f}")
    print(f"{'param':>7} {'68% coverage':>14} {'95% coverage':>14} {'KS p (PIT uniform)':>20}")
    for j, k in enumerate(FREE):
        p = stats.kstest(ranks[:, j], "uniform").pvalue
        print(f"{k:>7} {cover68[:, j].mean():>8.3f}+-{sd68:.3f} {cover95[:, j].mean():>8.3f}+-{sd95:.3f} {p:>20.3f}")
    print(f"{'pooled':>7} {cover68.mean():>8.3f}        {cover95.mean():>8.3f}")


def section_table_prior(cat, reps):
    from machine import machine_line

    from massmap_xr.inference import log_likelihood
    from massmap_xr.model.prior import read_prior_table

    print("\n== 6. user table prior vs the default prior, full seed field ==")
    path = shared_table()
    if path is None:
        return
    table = read_prior_table(path)
    t0 = time.perf_counter()
    log_likelihood(cat, *REDDICK)
    t_set_d = time.perf_counter() - t0
    t_def = timed(lambda: log_likelihood(cat, *REDDICK), reps)
    t0 = time.perf_counter()
    log_likelihood(cat, *REDDICK, prior=read_prior_table(path))
    t_set_t = time.perf_counter() - t0
    t_tab = timed(lambda: log_likelihood(cat, *REDDICK, prior=read_prior_table(path)), reps)
    print(f"{machine_line()}; load average {os.getloadavg()[0]:.1f}")
    print(f"log_likelihood, default prior: setup {t_set_d:.2f} s, {t_def[0]:.4f} / {t_def[1]:.4f} s (min / median)")
    print(f"log_likelihood, table prior (re-read each call): setup {t_set_t:.2f} s, {t_tab[0]:.4f} / {t_tab[1]:.4f} s"
          f" -> ratio to default {t_tab[0] / t_def[0]:.2f} (min) / {t_tab[1] / t_def[1]:.2f} (median)")
    d = CatalogLikelihood(cat)
    d(*REDDICK)
    base = timed(lambda: d(*REDDICK), reps)
    for label, mass in (("default 400-point grid", None), ("the table's own 410 masses", table.mass.values)):
        like = CatalogLikelihood(cat, table, mass)
        like(*REDDICK)
        t = timed(lambda like=like: like(*REDDICK), reps)
        print(f"CatalogLikelihood, table prior on {label}: {t[0]:.4f} / {t[1]:.4f} s -> ratio to default "
              f"{t[0] / base[0]:.2f} (min) / {t[1] / base[1]:.2f} (median)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller calibration study and fewer repetitions")
    ap.add_argument("--sbc", type=int, default=None, help="number of mock catalogues in section 5")
    ap.add_argument("--sbc-halos", type=int, default=1000)
    ap.add_argument("--skip", default="", help="comma-separated section numbers to skip")
    args = ap.parse_args()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    rng = np.random.default_rng(0)
    reps = 5 if args.quick else 10
    cat = seed_field()
    like = None
    if "1" not in skip:
        like = section_cost(cat, reps)
    if "2" not in skip:
        section_accuracy(cat, like or CatalogLikelihood(cat), rng)
    if "3" not in skip:
        section_grouping(cat, rng)
    if "4" not in skip:
        section_seed_fit(cat, 200 if args.quick else 400)
    if "6" not in skip:
        section_table_prior(cat, reps)
    if "5" not in skip:
        section_sbc(args.sbc or (40 if args.quick else 200), args.sbc_halos, 400)


if __name__ == "__main__":
    main()
