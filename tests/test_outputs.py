"""Outputs: computed once, progress and logging, a light ``--help``, help for every option, units
that astropy and pint read, CF cell measures, named dask tasks, a demo that leaves a clone clean."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
import xarray as xr
from dask.callbacks import Callback

from massmap_xr.analysis import sample, write_samples, write_summary
from massmap_xr.catalog import mock_catalog
from massmap_xr.cli import build_parser, main
from massmap_xr.cube import build_posterior
from massmap_xr.model.hyper import reddick2013
from massmap_xr.sky import map_statistics, project_flat, project_healpix, read_fits, write_map
from massmap_xr.store import open_store, to_store

ROOT = Path(__file__).resolve().parents[1]


class ComputeCounter(Callback):
    """Counts dask computations (one per ``dask.compute``/``.compute()``/``to_zarr`` pass), and
    those that read the posterior (``posterior``: the store's checked posterior reads)."""

    def __init__(self):
        super().__init__()
        self.n = 0
        self.posterior = 0

    def _start(self, dsk):
        self.n += 1
        names = {k[0] if isinstance(k, tuple) else str(k) for k in dsk}
        self.posterior += any("checked-posterior" in str(name) for name in names)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    cube = build_posterior(mock_catalog(90, seed=21), reddick2013(6, seed=22), chunks=30)
    path = tmp_path_factory.mktemp("outputs") / "field.zarr"
    to_store(cube, path)
    return path


def _stats(ds, n=8, healpix=False):
    s = sample(ds, n, seed=4)
    if healpix:
        return map_statistics(project_healpix(s, 256), truth=project_healpix(ds["mass_true"], 256))
    grid = {"center": (ds.attrs["field_center_ra"], ds.attrs["field_center_dec"]),
            "size": ds.attrs["field_size_arcmin"], "pixel_scale": 4.0}
    return map_statistics(project_flat(s, **grid), truth=project_flat(ds["mass_true"], **grid))


# --------------------------------------------------------------------------------------
# every writer computes its inputs exactly once
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".nc", ".zarr", ".fits", ".png"])
@pytest.mark.parametrize("healpix", [False, True])
def test_write_map_computes_once(store, tmp_path, suffix, healpix):
    ds = open_store(store)
    stats = _stats(ds, healpix=healpix)
    with ComputeCounter() as c:
        write_map(stats, tmp_path / f"m{suffix}")
    assert c.n == 1 and c.posterior == 1
    if suffix == ".fits":  # and what was written is right
        back = read_fits(tmp_path / "m.fits")
        np.testing.assert_allclose(np.asarray(back["mean"]), _stats(ds, healpix=healpix)["mean"].values, rtol=1e-12)


@pytest.mark.parametrize("suffix", [".nc", ".fits", ".png"])
def test_write_map_of_sample_stack_computes_once(store, tmp_path, suffix):
    ds = open_store(store)
    maps = project_flat(sample(ds, 5, seed=1), pixel_scale=4.0)
    with ComputeCounter() as c:
        write_map(maps, tmp_path / f"m{suffix}")
    assert c.n == 1


@pytest.mark.parametrize("suffix", [".csv", ".nc"])
def test_write_summary_computes_once(store, tmp_path, suffix):
    with ComputeCounter() as c:
        write_summary(open_store(store), tmp_path / f"s{suffix}")
    assert c.n == 1


@pytest.mark.parametrize("suffix", [".zarr", ".nc"])
def test_write_samples_computes_once(store, tmp_path, suffix):
    s = sample(open_store(store), 6, seed=2)
    with ComputeCounter() as c:
        write_samples(s, tmp_path / f"x{suffix}")
    assert c.n == 1
    back = xr.open_dataset(tmp_path / f"x{suffix}", engine="zarr" if suffix == ".zarr" else "h5netcdf")
    np.testing.assert_array_equal(back["mass"].values, s.values)
    back.close()


@pytest.mark.parametrize("suffix", [".png", ".fits", ".nc"])
def test_cli_map_computes_once(store, tmp_path, suffix):
    with ComputeCounter() as c:
        assert main(["map", str(store), "--flat", "4", "-n", "5", "-o", str(tmp_path / f"m{suffix}"), "--quiet"]) == 0
    assert c.posterior == 1  # the samples are drawn (and the store's posterior read) once
    assert c.n == 2  # and the catalogue variables read once before


# --------------------------------------------------------------------------------------
# progress, logging, --help
# --------------------------------------------------------------------------------------
def test_progress_bars_and_verbose_messages(store, tmp_path, capsys):
    assert main(["summary", str(store), "-o", str(tmp_path / "a.csv"), "-v"]) == 0
    err = capsys.readouterr().err
    assert "massmap: summarising 90 halos" in err
    assert main(["summary", str(store), "-o", str(tmp_path / "b.csv"), "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    assert main(["verify", str(store)]) == 0
    assert "chunk" in capsys.readouterr().err  # the tqdm bar over chunks
    assert logging.getLogger("massmap_xr").level == logging.WARNING  # default: the steps are not reported


def test_verify_store_progress_in_python(store, capsys):
    from massmap_xr.store import verify_store

    assert verify_store(store, progress=True).ok
    assert "chunk" in capsys.readouterr().err
    assert verify_store(store).ok
    assert capsys.readouterr().err == ""


def test_summary_and_sample_progress_compute_once_with_a_bar(store, capsys, monkeypatch):
    from dask.diagnostics import ProgressBar

    import massmap_xr.log
    from massmap_xr.analysis import summary

    shown = []

    def bar(enabled=True, *, what=""):  # the package's bar, drawn however short the computation
        shown.append(what)
        return ProgressBar(out=sys.stderr, minimum=0.0)

    monkeypatch.setattr(massmap_xr.log, "progress_bar", bar)
    ds = open_store(store)
    lazy_s, lazy_m = summary(ds), sample(ds, 7, seed=4)
    assert lazy_s["mean"].chunks is not None and lazy_m.chunks is not None
    assert capsys.readouterr().err == ""
    with ComputeCounter() as counter:
        got_s = ds.massmap.summary(progress=True)
        got_m = ds.massmap.sample(7, seed=4, progress=True)
    assert counter.n == 2 and counter.posterior == 2  # one compute each
    assert got_s["mean"].chunks is None and got_m.chunks is None  # in memory
    assert shown == ["summarising 90 halos", "drawing 7 samples of 90 halos"]
    assert capsys.readouterr().err.count("100%") >= 2  # a finished bar for each
    xr.testing.assert_identical(got_s, lazy_s.compute())
    xr.testing.assert_identical(got_m, lazy_m.compute())


def _python(code: str, *flags: str) -> subprocess.CompletedProcess:
    """``python [flags] -c code`` with this checkout on the path; fails the test on a non-zero exit."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, *flags, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    return res


def test_import_registers_the_accessor_without_loading_xarray():
    code = ("import sys, warnings\nwarnings.simplefilter('error')\nimport massmap_xr\n"
            "print('LOADED', 'xarray' in sys.modules, 'pandas' in sys.modules)\n"
            "import xarray as xr\n"
            "print('ACCESSORS', type(xr.Dataset().massmap).__name__, type(xr.DataArray([1.0]).massmap).__name__)\n"
            "print('LOADER', type(xr.__spec__.loader).__name__)\n")
    res = _python(code)
    assert "LOADED False False" in res.stdout
    assert "ACCESSORS MassmapAccessor MassmapArrayAccessor" in res.stdout
    assert "LOADER SourceFileLoader" in res.stdout  # xarray keeps its own loader
    # xarray first, then massmap_xr: registered at once
    code2 = "import xarray as xr\nimport massmap_xr\nprint(type(xr.Dataset().massmap).__name__)\n"
    assert "MassmapAccessor" in _python(code2, "-W", "error").stdout


def test_help_does_not_import_the_heavy_stack():
    code = ("import sys\nfrom massmap_xr.cli import main\n"
            "for argv in (['--help'], ['map', '--help'], ['build', '--help']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "heavy = [m for m in ('xarray', 'pandas', 'dask', 'zarr', 'numba', 'hmf', 'healpy', 'matplotlib', 'scipy')"
            " if m in sys.modules]\n"
            "print('HEAVY', heavy, file=sys.stderr)\n")
    res = _python(code)
    assert "HEAVY []" in res.stderr
    assert "usage: massmap" in res.stdout


def _subparsers(parser):
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_option_has_help_and_shows_its_default():
    for name, sub in _subparsers(build_parser()).items():
        text = sub.format_help()
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"massmap {name}: {action.option_strings or action.dest} has no help"
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS) \
                    and not isinstance(action, argparse._CountAction):
                assert f"(default: {action.default})" in " ".join(text.split()), (name, action.dest)
        for flag in ("--quiet", "--verbose"):
            assert flag in text, (name, flag)
        assert "default: None" not in text and "default: False" not in text, name


# --------------------------------------------------------------------------------------
# info, several writers
# --------------------------------------------------------------------------------------
def test_writers_take_the_model_from_the_initialised_store(tmp_path, capsys):
    import pandas as pd

    cat = mock_catalog(40, seed=3)
    csv = tmp_path / "a.csv"
    pd.DataFrame({k: cat[k].values for k in ("z", "lum_obs", "ra", "dec", "sigma_obs")}).to_csv(csv, index=False)
    st = str(tmp_path / "s.zarr")
    assert main(["build", str(csv), "-o", st, "--n-realizations", "3", "--seed", "5", "--chunks", "16",
                 "--init-only"]) == 0
    assert main(["info", st]) == 0
    out = capsys.readouterr().out
    assert "slab size: 16 halos" in out and "incomplete" in out and "None" not in out
    # the writers give neither --n-realizations nor --seed: the store's 3 draws are used
    assert main(["build", str(csv), "-o", st, "--halo-range", "0:16", "--quiet"]) == 0
    assert main(["build", str(csv), "-o", st, "--halo-range", "16:40", "--quiet"]) == 0
    assert main(["build", str(csv), "-o", st, "--halo-range", "0:16", "--hyper", "h.csv"]) == 2
    assert "from the initialised store" in capsys.readouterr().err
    assert main(["finalize", st]) == 0
    ds = open_store(st).compute()
    ref = build_posterior(cat.drop_vars("mass_true"), reddick2013(3, seed=5)).compute()
    assert ds.sizes["realization"] == 3
    np.testing.assert_allclose(ds.posterior.values, ref.posterior.values, rtol=2e-6, atol=1e-12)


# --------------------------------------------------------------------------------------
# units
# --------------------------------------------------------------------------------------
def _unit_strings(obj, where, found):
    variables = obj.variables.items() if isinstance(obj, xr.Dataset) else \
        [(obj.name, obj.variable), *obj.coords.items()]
    for name, var in variables:
        if "units" in var.attrs:
            found.setdefault(str(var.attrs["units"]), []).append(f"{where}:{name}")
    for k, v in obj.attrs.items():
        if k.endswith("units") and isinstance(v, str):
            found.setdefault(v, []).append(f"{where}:attrs.{k}")


@pytest.fixture(scope="module")
def unit_strings(store, tmp_path_factory):
    from massmap_xr.lensing import kappa_map

    tmp = tmp_path_factory.mktemp("units")
    found: dict[str, list[str]] = {}
    cube = build_posterior(mock_catalog(30, seed=1), reddick2013(4, seed=2))
    ds = open_store(store)
    s = sample(ds, 4, seed=1)
    write_summary(ds, tmp / "s.nc")
    write_samples(s, tmp / "x.zarr")
    objects = {
        "cube": cube, "store": ds, "summary": ds.massmap.summary(), "fit": ds.massmap.fit_normal(),
        "marginal": ds.massmap.marginalize(), "summary.nc": xr.open_dataset(tmp / "s.nc", engine="h5netcdf"),
        "samples": s, "samples.zarr": xr.open_zarr(tmp / "x.zarr", consolidated=False),
        "flat": project_flat(s, pixel_scale=4.0), "density": project_flat(s, pixel_scale=4.0, quantity="surface_density"),
        "healpix": project_healpix(s, 64), "stats": _stats(ds), "stats_healpix": _stats(ds, healpix=True),
        "kappa": kappa_map(ds, 3, flat=4.0, z_source=2.0, seed=1),
    }
    for where, obj in objects.items():
        _unit_strings(obj, where, found)
    return found


def test_every_unit_string_parses_in_astropy(unit_strings):
    assert {"solMass", "dex(solMass)", "dex", "dex-1", "deg", "1"} <= set(unit_strings)
    for text, where in unit_strings.items():
        u.Unit(text, format="generic")  # raises on a unit astropy cannot read
        if "dex" not in text and text != "1":  # FITS / VOUnit have no logarithmic units; BUNIT is blank for "1"
            for fmt in ("fits", "vounit"):
                try:
                    u.Unit(text, format=fmt)
                except ValueError as exc:
                    raise AssertionError(f"{text!r} ({where[0]}) not {fmt}: {exc}") from None


def test_every_unit_string_parses_in_the_pint_registry(unit_strings):
    pytest.importorskip("pint")
    from massmap_xr.units import registry

    for text, where in unit_strings.items():
        unit = registry.parse_units(text)
        if "dex" not in text:  # the same dimension as astropy says, and the same size in SI
            ref = u.Unit(text).si
            q = registry.Quantity(1.0, unit).to_base_units()
            np.testing.assert_allclose(q.magnitude, ref.scale, rtol=1e-9, err_msg=f"{text} ({where[0]})")
    # the astronomical constants agree with astropy's (IAU 2015 nominal)
    assert registry.Quantity(1, "solMass").to("kg").magnitude == pytest.approx(u.M_sun.to(u.kg), rel=1e-12)
    assert registry.Quantity(1, "solLum").to("W").magnitude == pytest.approx(u.L_sun.to(u.W), rel=1e-12)
    assert registry.Quantity(2.0, "solMass arcmin-2").to("solMass deg**-2").magnitude == pytest.approx(7200.0)


def test_pint_xarray_quantifies_stores_and_maps(store):
    pytest.importorskip("pint_xarray")
    from massmap_xr.units import registry

    ds = open_store(store)
    q = ds[["mass_true", "lum_obs", "z", "posterior"]].pint.quantify(unit_registry=registry)
    assert str(q["mass_true"].pint.units) == "solMass"
    kg = q["mass_true"].pint.to("kg").pint.dequantify()
    np.testing.assert_allclose(kg.values, ds["mass_true"].values * u.M_sun.to(u.kg), rtol=1e-12)
    stats = _stats(ds).pint.quantify(unit_registry=registry)
    assert str(stats["mean"].pint.units) == "solMass"
    dens = project_flat(sample(ds, 2, seed=1), pixel_scale=4.0, quantity="surface_density")
    qd = dens.pint.quantify(unit_registry=registry)
    assert qd.pint.units == registry.parse_units("solMass / arcmin**2")


def test_flat_maps_point_to_their_pixel_area(store):
    ds = open_store(store)
    maps = project_flat(sample(ds, 2, seed=1), pixel_scale=4.0)
    assert maps.attrs["cell_measures"] == "area: pixel_area" and "pixel_area" in maps.coords
    stats = _stats(ds)
    for k in ("mean", "std", "quantiles", "truth"):
        assert stats[k].attrs["cell_measures"] == "area: pixel_area"
    assert "cell_measures" not in stats.attrs


def test_healpix_maps_point_to_their_cell_area(store):
    import healpy as hp

    ds = open_store(store)
    for quantity in ("mass", "surface_density"):
        maps = project_healpix(sample(ds, 2, seed=1), 64, quantity=quantity)
        assert maps.attrs["cell_measures"] == "area: pixel_area" and maps["pixel_area"].ndim == 0
        area = u.Quantity(float(maps["pixel_area"]), maps["pixel_area"].attrs["units"])
        assert area.to_value(u.sr) == pytest.approx(hp.nside2pixarea(64), rel=1e-12)  # healpy's cell solid angle
    # mass = surface density x cell area, cell by cell
    mass = project_healpix(sample(ds, 2, seed=1), 64)
    dens = project_healpix(sample(ds, 2, seed=1), 64, quantity="surface_density")
    np.testing.assert_allclose((dens * dens["pixel_area"]).values, mass.values, rtol=1e-12)
    stats = map_statistics(mass)
    assert stats["mean"].attrs["cell_measures"] == "area: pixel_area" and "pixel_area" in stats.coords


def test_dask_task_names_say_what_they_compute(store):
    ds = open_store(store)
    objects = [sample(ds, 4, seed=1), ds.massmap.summary(), _stats(ds), ds.massmap.fit_normal()]
    names = set()
    for obj in objects:
        for layer in obj.__dask_graph__().layers:
            names.add(layer.rsplit("-", 1)[0])
    assert not {"lambda", "pow", "by_rows", "by_rows_0", "_draw_block", "_accumulate_block"} & names, names
    assert {"massmap-draw-log10-mass", "massmap-sample-mass", "massmap-project-cells", "massmap_summary"} <= names


# --------------------------------------------------------------------------------------
# the demo leaves a clone clean
# --------------------------------------------------------------------------------------
def test_demo_leaves_the_repository_clean(tmp_path, monkeypatch):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "clone"
    repo.mkdir()
    shutil.copy(ROOT / ".gitignore", repo / ".gitignore")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=repo, check=True, env=env)
    monkeypatch.chdir(repo)
    assert main(["demo", "--n-halos", "40", "--n-realizations", "3", "--quiet"]) == 0
    assert (repo / "massmap-demo" / "demo.zarr").is_dir()
    status = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, check=True)
    assert status.stdout == ""
