"""The ``massmap`` command, end to end on small inputs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from massmap_xr.catalog import mock_catalog
from massmap_xr.cli import main
from massmap_xr.store import open_store


@pytest.fixture(scope="module")
def catalog_csv(tmp_path_factory):
    cat = mock_catalog(40, seed=8)
    path = tmp_path_factory.mktemp("cli") / "field.csv"
    pd.DataFrame({"z": cat.z, "lum_obs": cat.lum_obs, "ra": cat.ra, "dec": cat.dec, "mass_true": cat.mass_true}).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def built_store(catalog_csv):
    out = catalog_csv.parent / "field.zarr"
    assert main(["build", str(catalog_csv), "-o", str(out), "--n-realizations", "4", "--quiet"]) == 0
    return out


def test_build_info_verify(built_store, capsys):
    ds = open_store(built_store)
    assert ds.sizes["halo"] == 40 and ds.sizes["realization"] == 4
    assert main(["info", str(built_store)]) == 0
    out = capsys.readouterr().out
    assert "complete" in out and "'realization': 4" in out
    assert main(["verify", str(built_store)]) == 0
    assert "all intact" in capsys.readouterr().out


def test_build_refuses_existing_then_overwrites(built_store, catalog_csv, capsys):
    assert main(["build", str(catalog_csv), "-o", str(built_store), "--n-realizations", "4", "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_summary_and_sample(built_store, tmp_path):
    assert main(["summary", str(built_store), "-o", str(tmp_path / "s.csv")]) == 0
    df = pd.read_csv(tmp_path / "s.csv")
    assert len(df) == 40 and {"mean", "median", "std"} <= set(df.columns)
    ds = open_store(built_store).compute()
    assert np.all((df["mean"] > ds.log10_mass.min().item()) & (df["mean"] < ds.log10_mass.max().item()))
    assert main(["sample", str(built_store), "-n", "7", "-o", str(tmp_path / "s.zarr")]) == 0
    import xarray as xr

    s = xr.open_zarr(tmp_path / "s.zarr")
    var = next(iter(s.data_vars))
    assert s[var].sizes == {"halo": 40, "sample": 7}


def test_bad_catalogue_is_a_clean_error(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"z": [0.1, 0.2], "lum_obs": [-1.0, 3000.0], "ra": [150.0, 150.1], "dec": [2.0, 2.1]}).to_csv(bad, index=False)
    assert main(["build", str(bad), "-o", str(tmp_path / "x.zarr"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("massmap: error:") and "lum_obs" in err
    assert not (tmp_path / "x.zarr").exists()


def test_demo_entry_point(tmp_path):
    """The installed console script runs the demo and writes the store and figures."""
    r = subprocess.run(
        [sys.executable, "-m", "massmap_xr.cli", "demo", "--out-dir", str(tmp_path), "--n-halos", "40",
         "--n-realizations", "3", "--quiet"],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    ds = open_store(tmp_path / "demo.zarr")
    assert ds.sizes["halo"] == 40
    assert (tmp_path / "demo_posteriors.png").stat().st_size > 10_000
    assert (tmp_path / "demo_maps.png").stat().st_size > 10_000
