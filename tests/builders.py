"""Builders shared by the tests: small cubes, stores and scripts.

- :func:`table_prior_cube` builds a real (analytic-kernel) cube on a power-law table prior: fast, no hmf run.
- :func:`gaussian_cube` makes a synthetic cube of Gaussian posteriors in log10 M with the builder's layout.
- :func:`script` / :func:`run_py` run a builder in another process; :func:`file_digests` hashes a store's files.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import dask
import numpy as np
import xarray as xr

REPO = Path(__file__).resolve().parents[1]


def table_prior_cube(n_halo=60, n_real=6, *, seed=11, hseed=5, chunks=16, halo_offset=0, real_offset=0, n_mass=120,
              catalog=None, hyper=None):
    """Small analytic cube on a power-law table prior (fast: no hmf run); returns (cube, catalog, hyper).

    The default draws are Reddick (2013) draws labelled ``hyper_kind="posterior"`` (plain weighted
    marginals); pass ``hyper=reddick2013(n, kind="prior")`` for evidence-weighted ones."""
    import numpy as np
    import xarray as xr

    from massmap_xr import TablePrior, build_posterior, mock_catalog, reddick2013

    m = np.logspace(9.5, 16.0, 80)
    zt = np.linspace(0.0, 4.0, 5)
    table = m[None, :] ** -1.9 * np.exp(-m[None, :] / (2e14 / (1.0 + zt[:, None])))
    prior = TablePrior(xr.DataArray(table, dims=("z", "mass"), coords={"z": zt, "mass": m}))
    mass = np.logspace(10.0, 15.5, n_mass)
    if catalog is None:
        catalog = mock_catalog(n_halo, seed=seed, prior=prior, mass=mass)
        catalog = catalog.assign_coords(halo=catalog.halo + halo_offset)
    if hyper is None:  # labelled posterior draws: these cubes test mechanics, not the evidence weighting
        hyper = reddick2013(n_real, seed=hseed, kind="posterior")
        hyper = hyper.assign_coords(realization=hyper.realization + real_offset)
    # mock masses reach the grid's lower edge: these cubes test mechanics, the edge warning has tests of its own
    return build_posterior(catalog, hyper, prior=prior, mass=mass, chunks=chunks, check_edges=False), catalog, hyper


def script(tmp_path: Path, name: str, body: str) -> Path:
    """A runnable script defining make_cube (the table-prior cube builder) (guarded by ``if __name__ == "__main__"``)."""
    src = "import sys, time\nimport numpy as np\nimport xarray as xr\n" + inspect.getsource(table_prior_cube).replace("def table_prior_cube(", "def make_cube(")
    src += "\n\nif __name__ == '__main__':\n" + textwrap.indent(textwrap.dedent(body), "    ")
    p = tmp_path / name
    p.write_text(src)
    return p


def run_py(path: Path, *args, wait=True, timeout=120):
    """Run a script with the repository importable; compiled kernels are cached by this process
    first, so that concurrent children load the cache instead of racing to write it."""
    np.asarray(table_prior_cube(4, 2)[0]["posterior"])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(path), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def file_digests(root: Path, sub: str = "") -> dict:
    """sha256 of every file under ``root/sub`` (relative path -> digest)."""
    base = Path(root) / sub
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(base.rglob("*")) if p.is_file()}


X = np.linspace(10.0, 15.5, 400)  # log10 M grid of the synthetic cubes


def gaussian_cube(
    n_halo: int = 24,
    n_real: int = 4,
    *,
    seed: int = 0,
    shift_sd: float = 0.0,
    sigma=(0.08, 0.3),
    truth_offset: float = 0.0,
    mu_range=(11.0, 14.0),
) -> xr.Dataset:
    """A cube with the builder's layout and Gaussian posteriors in log10 M.

    Realization r of halo h is N(mu_h + delta_r, sigma_h) with delta_r ~ N(0, shift_sd) shared by
    all halos (a hyperparameter shift moves every halo together).  True masses are drawn from the
    marginal (so the cube is calibrated), then shifted by ``truth_offset`` dex.
    """
    rng = np.random.default_rng(seed)
    mu0 = rng.uniform(*mu_range, n_halo)
    sig = rng.uniform(*sigma, n_halo)
    delta = rng.normal(0.0, shift_sd, n_real) if shift_sd else np.zeros(n_real)
    mu = mu0[:, None] + delta[None, :]
    dens = np.exp(-0.5 * ((X[None, :, None] - mu[:, None, :]) / sig[:, None, None]) ** 2)
    dens /= np.trapezoid(dens, X, axis=1)[:, None, :]
    weight = rng.dirichlet(np.ones(n_real))
    pick = rng.choice(n_real, size=n_halo, p=weight)
    log_true = mu[np.arange(n_halo), pick] + sig * rng.standard_normal(n_halo) + truth_offset
    mass = 10.0**X
    prior_z = np.array([0.0, 1.0, 2.0])
    mstar = 10.0 ** (14.5 - 0.5 * prior_z)
    dndm = mass[None, :] ** -1.9 * np.exp(-mass[None, :] / mstar[:, None])
    halo = 1000 + 7 * np.arange(n_halo)  # ids are labels, not positions
    ds = xr.Dataset(
        {
            "posterior": (("halo", "mass", "realization"), dens.astype(np.float32), {"units": "dex-1"}),
            "z": ("halo", rng.uniform(0.05, 1.9, n_halo), {"units": "1"}),
            "lum_obs": ("halo", rng.uniform(1e3, 1e5, n_halo), {"units": "solLum"}),
            "mass_true": ("halo", 10.0**log_true, {"units": "solMass"}),
            "weight": ("realization", weight, {"units": "1"}),
            "prior_dndm": (("prior_z", "mass"), dndm),
            **{k: ("realization", rng.normal(1.0, 0.1, n_real)) for k in ("alpha1", "alpha2", "alpha3", "alpha4", "S")},
        },
        coords={
            "halo": halo,
            "mass": ("mass", mass, {"units": "solMass"}),
            "log10_mass": ("mass", X, {"units": "dex(solMass)"}),
            "realization": np.arange(n_real),
            "prior_z": prior_z,
            "ra": ("halo", rng.uniform(149.7, 150.3, n_halo), {"units": "deg"}),
            "dec": ("halo", rng.uniform(1.7, 2.3, n_halo), {"units": "deg"}),
        },
    )
    return ds, mu, sig


def chunked(ds: xr.Dataset, halo: int = 7, realization: int = -1) -> xr.Dataset:
    """Dask-backed copy (every variable, as from a lazily opened store)."""
    return ds.chunk({"halo": halo, "realization": realization})


class CountingScheduler:
    """Dask scheduler that counts computes and raises past ``max_computes``."""

    def __init__(self, max_computes: int = 0):
        self.total_computes = 0
        self.max_computes = max_computes

    def __call__(self, dsk, keys, **kwargs):
        self.total_computes += 1
        if self.total_computes > self.max_computes:
            raise RuntimeError(f"Too many dask computations: {self.total_computes} > {self.max_computes}")
        return dask.get(dsk, keys, **kwargs)


def raise_if_dask_computes(max_computes: int = 0):
    """Context in which more than ``max_computes`` dask computes raise (proves laziness)."""
    return dask.config.set(scheduler=CountingScheduler(max_computes))


def brute_log_evidence(cube: xr.Dataset, log_prior=None, n_fine: int = 4001) -> np.ndarray:
    """ln P(ln L_obs,k | θ_r) per (halo, realization), by brute-force trapezoid quadrature.

    E_kr = ∫ N(ln L_obs,k; ln μ_L(M, z_k, θ_r), S_r² + σ_obs,k²) p(log10 M | z_k) d log10 M over the
    cube's mass range, on ``n_fine`` points (scipy's trapezoid), with the prior normalised over
    that range.  ``log_prior(log10_m, z)`` is ln dn/dlog10 M up to a constant (any
    normalisation); by default the cube's ``prior_dndm`` table interpolated linearly in z (in ln)
    and in log10 M, times M.  Written independently of the package's kernels.
    """
    from scipy import integrate, stats

    lm = np.log10(np.asarray(cube["mass"].values, dtype=float))
    x = np.linspace(lm[0], lm[-1], n_fine)
    z = np.asarray(cube["z"].values, dtype=float)
    if log_prior is None:
        zt = np.asarray(cube["prior_z"].values, dtype=float)
        lt = np.log(np.asarray(cube["prior_dndm"].transpose("prior_z", "mass").values, dtype=float))

        def log_prior(xx, zz):
            col = np.array([np.interp(zz, zt, lt[:, j]) for j in range(lm.size)])
            return np.interp(xx, lm, col) + np.log(10.0) * xx
    a = {k: np.asarray(cube[k].values, dtype=float) for k in ("alpha1", "alpha2", "alpha3", "alpha4", "S")}
    sig = np.asarray(cube["sigma_obs"].values, dtype=float)
    lobs = np.log(np.asarray(cube["lum_obs"].values, dtype=float))
    out = np.empty((z.size, a["S"].size))
    for k in range(z.size):
        lp = log_prior(x, z[k])
        p = np.exp(lp - lp.max())
        p /= integrate.trapezoid(p, x)
        mu = a["alpha1"][:, None] + a["alpha2"][:, None] * (np.log(10.0) * x[None, :] - np.log(a["alpha3"])[:, None]) \
            + a["alpha4"][:, None] * np.log1p(z[k])
        like = stats.norm.pdf(lobs[k], loc=mu, scale=np.hypot(a["S"], sig[k])[:, None])
        out[k] = np.log(integrate.trapezoid(like * p[None, :], x, axis=1))
    return out


def with_log_evidence(cube: xr.Dataset, log_evidence=None) -> xr.Dataset:
    """``cube`` with ``log_evidence(halo, realization)`` (float64; brute force by default), chunked
    along halo like the posterior when the cube is dask-backed."""
    le = brute_log_evidence(cube) if log_evidence is None else np.asarray(log_evidence, dtype=np.float64)
    var = xr.DataArray(le, dims=("halo", "realization"),
                       attrs={"long_name": "ln evidence P(L_obs | hyperparameters) of each halo", "units": "1"})
    post = cube["posterior"]
    if post.chunks is not None:
        var = var.chunk({"halo": post.chunksizes["halo"], "realization": -1})
    return cube.assign(log_evidence=var)
