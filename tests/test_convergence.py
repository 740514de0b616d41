"""Honest inference output: convergence warnings of emcee runs and the CLI's table of estimates."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

from massmap_xr.catalog import mock_catalog
from massmap_xr.cli import main
from massmap_xr.errors import ConvergenceWarning, MassmapWarning
from massmap_xr.inference import infer_hyperparameters
from massmap_xr.inference.samplers import check_convergence

BROAD = {"alpha1": (10.709, 0.1), "alpha2": (0.359, 0.03), "alpha4": (1.10, 0.2), "S": (0.155, 0.03)}


def test_short_emcee_run_warns_with_the_steps_needed():
    cat = mock_catalog(300, seed=4)
    with pytest.warns(ConvergenceWarning, match=r"run about (\d+) steps after burn-in") as rec:
        post = infer_hyperparameters(cat, free=("alpha4", "S"), hyperprior=BROAD, n=16 * 8, method="emcee",
                                     seed=1, n_burn=5, thin=1)
    assert issubclass(ConvergenceWarning, MassmapWarning)
    need = int(re.search(r"run about (\d+) steps", str(rec[0].message)).group(1))
    a = post.attrs
    assert a["converged"] == 0
    assert need == a["n_steps_suggested"] > a["n_steps"] - a["n_burn"]
    tau = max(a["autocorr_time_alpha4"], a["autocorr_time_S"])
    assert need >= 50 * tau


def test_check_convergence_rules():
    ok = {"autocorr_time_a": 2.0, "rhat_a": 1.001}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_convergence(ok, ["a"], 200, 50, 1)  # 200 >= 50 * 2 and R-hat fine: silent
    assert ok["converged"] == 1
    bad = {"autocorr_time_a": 2.0, "rhat_a": 1.05}
    with pytest.warns(ConvergenceWarning, match=r"R-hat > 1.01 \(a 1.050\)"):
        assert not check_convergence(bad, ["a"], 200, 50, 10)
    assert bad["n_steps_suggested"] >= 200 * 5 and bad["n_steps_suggested"] % 10 == 0
    short = {"autocorr_time_a": 10.0, "rhat_a": 1.0}
    with pytest.warns(ConvergenceWarning, match=r"shorter than 50 autocorrelation times.*run about 500 steps"):
        check_convergence(short, ["a"], 100, 50, 1)


def _parse_table(text: str) -> dict:
    lines = text.splitlines()
    i = next(j for j, line in enumerate(lines) if line.split()[:1] == ["parameter"])
    head = lines[i].split()
    rows = {}
    for line in lines[i + 1:]:
        parts = line.split()
        if len(parts) != len(head) or parts[0] not in ("alpha1", "alpha2", "alpha3", "alpha4", "S"):
            break
        rows[parts[0]] = dict(zip(head[1:], map(float, parts[1:]), strict=True))
    return head, rows, lines[i:i + 1 + len(rows)]


def test_cli_infer_prints_a_table_of_estimates(tmp_path, capsys):
    cat = mock_catalog(1500, seed=6)
    f = tmp_path / "cat.nc"
    cat.to_netcdf(f)
    out = tmp_path / "h.nc"
    assert main(["infer", str(f), "-o", str(out), "--n-realizations", "200", "--seed", "1",
                 "--hyperprior", "flat"]) == 0
    text = capsys.readouterr().out
    head, rows, block = _parse_table(text)
    assert head == ["parameter", "mean", "std", "median", "q16", "q84", "MAP"]
    assert set(rows) == {"alpha1", "alpha2", "alpha4", "S"}
    for k, r in rows.items():
        assert r["q16"] < r["median"] < r["q84"] and r["std"] > 0
        assert abs(r["mean"] - r["MAP"]) < 1.0 * r["std"]
        assert r["q84"] - r["q16"] == pytest.approx(2 * r["std"], rel=0.3)
        assert abs(r["mean"] - cat.attrs[f"true_{k}"]) < 4 * r["std"]
    # aligned: every column ends at the same character position in every line
    ends = [[m.end() for m in re.finditer(r"\S+", line)][1:] for line in block]
    assert all(e == ends[0] for e in ends[1:])
    import xarray as xr

    with xr.open_dataset(out, engine="h5netcdf") as ds:
        w = ds.weight.values
        assert rows["S"]["mean"] == pytest.approx(float(np.sum(w * ds.S.values)), rel=1e-5)


def test_adaptive_emcee_runs_until_converged_and_agrees_with_laplace():
    cat = mock_catalog(300, seed=4)
    kw = dict(free=("alpha4", "S"), hyperprior=BROAD, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # the default run converges: no warning
        post = infer_hyperparameters(cat, n=96, method="emcee", **kw)
    a = post.attrs
    assert a["adaptive"] == 1 and a["converged"] == 1 and a["n_steps"] % 100 == 0
    kept = a["n_steps"] - a["n_burn"]
    tau = max(a["autocorr_time_alpha4"], a["autocorr_time_S"])
    assert kept >= 50 * tau and a["rhat_max"] <= 1.01 and a["thin"] >= tau / 2
    assert a["n_burn"] >= min(5 * tau, a["n_steps"] // 2) * 0.5
    assert post.sizes["realization"] == 96
    lap = infer_hyperparameters(cat, n=400, **kw)
    for k in ("alpha4", "S"):
        w = lap.weight.values
        m = np.sum(w * lap[k].values)
        sd = np.sqrt(np.sum(w * (lap[k].values - m) ** 2))
        assert abs(float(post[k].mean()) - m) < 0.5 * sd  # 96 draws: the error of their mean is ~0.1 sd
        assert 0.7 < float(post[k].std()) / sd < 1.3
    # a cap too short to converge: the warning says so, and the run stopped at the cap
    with pytest.warns(ConvergenceWarning, match="not converged"):
        capped = infer_hyperparameters(cat, n=96, method="emcee", max_steps=200, **kw)
    assert capped.attrs["n_steps"] == 200 and capped.attrs["converged"] == 0


def test_cli_emcee_defaults_converge(tmp_path, capsys):
    cat = mock_catalog(300, seed=4)
    f = tmp_path / "cat.nc"
    cat.to_netcdf(f)
    out = tmp_path / "h.nc"
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        assert main(["infer", str(f), "-o", str(out), "--method", "emcee", "--free", "alpha4,S", "--quiet",
                     "--n-realizations", "64", "--group-tol", "0.01"]) == 0
    text = capsys.readouterr().out
    assert "emcee: R-hat max" in text
    import xarray as xr

    with xr.open_dataset(out, engine="h5netcdf") as ds:
        assert ds.attrs["converged"] == 1 and ds.attrs["adaptive"] == 1 and ds.attrs["rhat_max"] <= 1.01
        assert ds.sizes["realization"] == 64
