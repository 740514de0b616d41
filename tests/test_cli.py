"""The ``massmap`` command, end to end on small inputs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from massmap_xr.catalog import mock_catalog
from massmap_xr.cli import main
from massmap_xr.errors import IncompleteStoreError
from massmap_xr.store import open_store


@pytest.fixture(scope="module")
def catalog_csv(tmp_path_factory):
    cat = mock_catalog(40, seed=8)
    path = tmp_path_factory.mktemp("cli") / "field.csv"
    pd.DataFrame({"z": cat.z, "lum_obs": cat.lum_obs, "ra": cat.ra, "dec": cat.dec, "mass_true": cat.mass_true,
                  "sigma_obs": cat.sigma_obs}).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def built_store(catalog_csv):
    out = catalog_csv.parent / "field.zarr"
    # posterior-kind draws: these tests exercise the command line, not the evidence weighting of prior draws
    assert main(["build", str(catalog_csv), "-o", str(out), "--n-realizations", "4", "--hyper-kind", "posterior",
                 "--quiet"]) == 0
    return out


def test_build_info_verify(built_store, capsys):
    ds = open_store(built_store)
    assert ds.sizes["halo"] == 40 and ds.sizes["realization"] == 4
    assert main(["info", str(built_store)]) == 0
    out = capsys.readouterr().out
    assert "complete" in out and "realizations: 4" in out
    assert "slab size: " in out and "kind: materialised store" in out
    assert "None" not in out
    assert main(["verify", str(built_store)]) == 0
    assert "all intact" in capsys.readouterr().out


def test_build_refuses_existing_then_overwrites(built_store, catalog_csv, capsys):
    assert main(["build", str(catalog_csv), "-o", str(built_store), "--n-realizations", "4", "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_summary_and_sample(built_store, tmp_path):
    assert main(["summary", str(built_store), "-o", str(tmp_path / "s.csv")]) == 0
    before = (tmp_path / "s.csv").read_bytes()
    assert main(["summary", str(built_store), "-o", str(tmp_path / "s.csv")]) == 2  # refuses to replace
    assert (tmp_path / "s.csv").read_bytes() == before
    assert main(["summary", str(built_store), "-o", str(tmp_path / "s.csv"), "--overwrite"]) == 0
    df = pd.read_csv(tmp_path / "s.csv", comment="#")
    assert len(df) == 40 and {"log10_mass_mean", "log10_mass_median", "log10_mass_std"} <= set(df.columns)
    ds = open_store(built_store).compute()
    assert np.all((df["log10_mass_mean"] > ds.log10_mass.min().item()) & (df["log10_mass_mean"] < ds.log10_mass.max().item()))
    assert main(["sample", str(built_store), "-n", "7", "-o", str(tmp_path / "s.zarr")]) == 0
    import xarray as xr

    s = xr.open_zarr(tmp_path / "s.zarr", consolidated=False)
    var = next(iter(s.data_vars))
    assert s[var].sizes == {"halo": 40, "sample": 7}


def test_bad_catalogue_is_a_clean_error(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"z": [0.1, 0.2], "lum_obs": [-1.0, 3000.0], "ra": [150.0, 150.1], "dec": [2.0, 2.1]}).to_csv(bad, index=False)
    assert main(["build", str(bad), "-o", str(tmp_path / "x.zarr"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("massmap: error:") and "lum_obs" in err
    assert not (tmp_path / "x.zarr").exists()


@pytest.mark.slow
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


def _csv(cat, path):
    pd.DataFrame({"z": cat.z, "lum_obs": cat.lum_obs, "ra": cat.ra, "dec": cat.dec,
                  "mass_true": cat.mass_true, "sigma_obs": cat.sigma_obs}).to_csv(path, index=False)
    return path


def test_many_writers_then_appends_equal_one_build(tmp_path, capsys):
    """init-only + two halo-range writers + finalize, then append-halos/-realizations: the store
    holds exactly the cube built in one go from the union catalogue and hyperparameters."""
    import xarray as xr

    from massmap_xr.cube import build_posterior
    from massmap_xr.model.hyper import reddick2013
    from massmap_xr.store import verify_store

    a, b = mock_catalog(40, seed=3), mock_catalog(15, seed=4)
    fa, fb = _csv(a, tmp_path / "a.csv"), _csv(b, tmp_path / "b.csv")
    st = str(tmp_path / "s.zarr")
    common = ["--n-realizations", "4", "--seed", "5", "--chunks", "16"]
    assert main(["build", str(fa), "-o", st, *common, "--init-only"]) == 0
    assert main(["build", str(fa), "-o", st, *common, "--halo-range", "16:40", "--quiet"]) == 0
    with pytest.raises(IncompleteStoreError):
        open_store(st)  # not finalized yet: an unfinished store never opens as complete
    assert main(["build", str(fa), "-o", st, *common, "--halo-range", "0:16", "--quiet"]) == 0
    assert main(["finalize", st]) == 0
    assert main(["append-halos", st, str(fb), "--quiet"]) == 2
    assert "--renumber" in capsys.readouterr().err
    assert main(["append-halos", st, str(fb), "--renumber", "--quiet"]) == 0
    assert main(["append-realizations", st, "--n-realizations", "3", "--seed", "9", "--quiet"]) == 0
    assert verify_store(st).ok

    union = xr.concat([a, b.assign_coords(halo=b.halo + 40)], "halo")
    hyper = xr.concat([reddick2013(4, seed=5), reddick2013(3, seed=9).assign_coords(realization=[4, 5, 6])],
                      "realization")
    ref = build_posterior(union, hyper).compute()
    ds = open_store(st).compute()
    assert ds.sizes == {**ds.sizes, "halo": 55, "realization": 7}
    np.testing.assert_allclose(ds.posterior.values, ref.posterior.values, rtol=2e-6, atol=1e-12)
    np.testing.assert_allclose(ds.weight.values, np.full(7, 1 / 7))


def test_map_statistics_with_truth_in_field_window(built_store, tmp_path):
    """`massmap map` writes mean/std/truth maps on the store's 40' field window by default."""
    from massmap_xr.sky import read_fits

    out = tmp_path / "m.nc"
    assert main(["map", str(built_store), "--flat", "4", "-n", "30", "-o", str(out)]) == 0
    import xarray as xr

    m = xr.load_dataset(out)
    assert {"mean", "std", "truth", "residual"} <= set(m.data_vars)
    assert m["mean"].sizes == {"y": 10, "x": 10}
    ds = open_store(built_store)
    # every mock halo lies in the 40' window: the truth map holds the whole true mass
    np.testing.assert_allclose(float(m["truth"].sum()), float(ds.mass_true.sum()), rtol=1e-9)
    assert main(["map", str(built_store), "--flat", "4", "-n", "5", "-o", str(out)]) == 2  # exists
    assert main(["map", str(built_store), "--healpix", "1024", "-n", "5", "--samples", "-o",
                 str(tmp_path / "h.fits")]) == 0
    h = read_fits(tmp_path / "h.fits")
    assert h.attrs.get("grid_name") == "healpix" or "cell_ids" in h.coords


def test_infer_then_build_from_the_inferred_draws(tmp_path):
    """`massmap infer` writes draws that read back as hyperparameters; `build --infer` stores a cube
    whose realizations are those of the inference (same seed, same draws)."""
    from massmap_xr.model.hyper import read_hyper

    cat = mock_catalog(300, seed=21)
    f = _csv(cat, tmp_path / "f.csv")
    assert main(["infer", str(f), "-o", str(tmp_path / "h.nc"), "--n-realizations", "24", "--seed", "2"]) == 0
    assert main(["infer", str(f), "-o", str(tmp_path / "h.nc"), "--n-realizations", "4"]) == 2  # exists
    h = read_hyper(tmp_path / "h.nc")
    assert h.sizes["realization"] == 24 and np.isclose(float(h.weight.sum()), 1.0)
    assert h.attrs.get("method") == "laplace"
    # α3 is held fixed by default; the free parameters vary across the draws
    assert float(h.alpha3.std()) == 0.0 and float(h.alpha2.std()) > 0
    st = tmp_path / "inf.zarr"
    assert main(["build", str(f), "-o", str(st), "--infer", "--n-realizations", "24", "--seed", "2", "--quiet"]) == 0
    ds = open_store(st)
    np.testing.assert_allclose(ds.alpha2.values, h.alpha2.values)
    np.testing.assert_allclose(ds.weight.values, h.weight.values / h.weight.values.sum())


def test_file_system_errors_are_one_line(built_store, tmp_path, capsys):
    below_a_file = tmp_path / "plain.txt"
    below_a_file.write_text("not a directory")
    status = main(["summary", str(built_store), "-o", str(below_a_file / "summary.csv")])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("massmap: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert str(below_a_file) in err


@pytest.mark.slow
def test_python_dash_m_and_broken_pipe(built_store):
    env_cmd = [sys.executable, "-m", "massmap_xr"]
    help_run = subprocess.run([*env_cmd, "--help"], capture_output=True, text=True, timeout=120)
    assert help_run.returncode == 0 and "usage: massmap" in help_run.stdout
    # the reader closes the pipe at once: no traceback, no complaint
    proc = subprocess.Popen([*env_cmd, "info", str(built_store)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert b"Traceback" not in err and b"BrokenPipe" not in err


# --------------------------------------------------------------------------- one-line failures, no side effects
def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("massmap: error: "), err
    return err


def test_finalize_and_halo_range_on_a_missing_store_leave_nothing(catalog_csv, tmp_path, capsys):
    missing = tmp_path / "missing.zarr"
    assert main(["finalize", str(missing)]) == 2
    assert "does not exist" in _one_line_error(capsys)
    assert main(["build", str(catalog_csv), "-o", str(missing), "--halo-range", "0:8", "--n-realizations", "2",
                 "--quiet"]) == 2
    assert "does not exist" in _one_line_error(capsys)
    assert not missing.exists()
    assert main(["build", str(catalog_csv), "-o", str(missing), "--n-realizations", "2", "--quiet"]) == 0


def test_verify_missing_exits_2(tmp_path, capsys):
    assert main(["verify", str(tmp_path / "missing.zarr")]) == 2
    assert "does not exist" in _one_line_error(capsys)
    assert not (tmp_path / "missing.zarr").exists()


def test_output_place_errors_are_one_line(built_store, catalog_csv, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    cases = [
        (["summary", str(built_store), "-o", str(tmp_path / "afile" / "s.csv")], "is a file, not a directory"),
        (["summary", str(built_store), "-o", str(tmp_path / "no" / "dir" / "s.csv")], "does not exist; create it"),
        (["build", str(catalog_csv), "-o", str(tmp_path / "afile" / "s.zarr"), "--quiet"], "is a file, not a directory"),
        (["build", str(catalog_csv), "-o", str(tmp_path / "p.zarr"), "--prior-table", str(tmp_path / "MISSING"),
          "--quiet"], "--prior-table"),
    ]
    for argv, text in cases:
        assert main(argv) == 2
        assert text in _one_line_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_unwritable_output_directory_is_one_line(built_store, tmp_path, capsys, monkeypatch):
    import os

    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(tmp_path) else real(p, mode))
    assert main(["summary", str(built_store), "-o", str(tmp_path / "s.csv")]) == 2
    assert "is not writable" in _one_line_error(capsys)


def test_overwrite_onto_a_non_store_directory_keeps_every_file(catalog_csv, tmp_path, capsys):
    d = tmp_path / "photos"
    d.mkdir()
    for n in ("a.jpg", "b.jpg", "c.jpg"):
        (d / n).write_bytes(n.encode())
    assert main(["build", str(catalog_csv), "-o", str(d), "--overwrite", "--n-realizations", "2", "--quiet"]) == 2
    assert "is a directory with 3 entries that is not a massmap store" in _one_line_error(capsys)
    assert sorted(p.name for p in d.iterdir()) == ["a.jpg", "b.jpg", "c.jpg"]
    assert (d / "a.jpg").read_bytes() == b"a.jpg"


def test_hints_name_the_flags(built_store, catalog_csv, capsys):
    assert main(["build", str(catalog_csv), "-o", str(built_store), "--n-realizations", "4", "--quiet"]) == 2
    err = _one_line_error(capsys)
    assert "--overwrite" in err and "--resume" in err and "mode='w'" not in err and "resume=True" not in err


def test_garbled_shard_and_bad_hyper_table_are_one_line(built_store, tmp_path, capsys):
    import shutil

    copy = tmp_path / "g.zarr"
    shutil.copytree(built_store, copy)
    shard = next(p for p in sorted((copy / "posterior" / "c").rglob("*")) if p.is_file())
    data = shard.read_bytes()
    shard.write_bytes(data[:50] + b"x" * 50 + data[100:len(data) // 2])
    assert main(["summary", str(copy), "-o", str(tmp_path / "s.csv")]) == 2
    err = _one_line_error(capsys)
    assert str(copy) in err and "massmap verify" in err
    hyper = tmp_path / "h.csv"
    hyper.write_text("alpha1,alpha2,alpha3,alpha4,S\n1,1,1e14,1,0.2\n1,oops,1e14,1,0.2\n")
    assert main(["append-realizations", str(built_store), "--hyper", str(hyper), "--quiet"]) == 2
    assert "column 'alpha2' must hold numbers" in _one_line_error(capsys)



def test_summary_of_a_damaged_store_is_one_line(built_store, tmp_path, capsys):
    import shutil

    store = tmp_path / "damaged.zarr"
    shutil.copytree(built_store, store)
    shard = sorted((store / "posterior" / "c").rglob("*"))
    shard = next(p for p in shard if p.is_file())
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x10  # one flipped bit inside the compressed posterior
    shard.write_bytes(bytes(data))
    status = main(["summary", str(store), "-o", str(tmp_path / "s.csv")])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("massmap: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert "posterior" in err and "massmap verify" in err
    assert not (tmp_path / "s.csv").exists()
