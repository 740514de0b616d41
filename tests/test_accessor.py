"""The ``.massmap`` accessor is a faithful facade: same results, same documentation."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import massmap_xr  # noqa: F401  (registers the accessor)
from massmap_xr import analysis, sky, store
from massmap_xr.accessor import MassmapAccessor, MassmapArrayAccessor

METHODS = list(MassmapAccessor.delegates())


@pytest.mark.parametrize("name", METHODS)
def test_every_method_carries_its_function_docstring(small_cube, name):
    method = getattr(small_cube.massmap, name)
    target = MassmapAccessor.delegates()[name].target()
    assert method.__doc__ == target.__doc__ and method.__doc__
    assert inspect.signature(method) == inspect.signature(target)


def test_methods_give_the_function_results(small_cube):
    xr.testing.assert_identical(small_cube.massmap.summary(levels=(0.68,)), analysis.summary(small_cube, levels=(0.68,)))
    a = small_cube.massmap.sample(5, seed=3)
    b = analysis.sample(small_cube, 5, seed=3)
    np.testing.assert_array_equal(a.values, b.values)


def test_store_methods_write_slabs_and_append(small_cube, tmp_path):
    path = tmp_path / "c.zarr"
    half = small_cube.sizes["halo"] // 2
    first, rest = small_cube.isel(halo=slice(0, half)), small_cube.isel(halo=slice(half, None))
    first.massmap.to_store(path, progress=False)
    rest.massmap.append_halos_to(path)
    got = store.open_store(path).posterior.values
    np.testing.assert_array_equal(got, small_cube.posterior.values.astype(got.dtype))
    assert store.verify_store(path).ok


STUB = Path(massmap_xr.__file__).with_name("accessor.pyi")


def _stub_methods() -> dict[tuple[str, str], ast.FunctionDef]:
    tree = ast.parse(STUB.read_text())
    return {(c.name, f.name): f for c in tree.body if isinstance(c, ast.ClassDef)
            for f in c.body if isinstance(f, ast.FunctionDef) and f.name != "__init__"}


def _stub_parameters(f: ast.FunctionDef) -> list[tuple[str, str, str | None]]:
    """(name, kind, default) of a stub method's parameters after ``self``."""
    a = f.args
    pos = a.posonlyargs + a.args
    defaults = [None] * (len(pos) - len(a.defaults)) + [ast.unparse(d) for d in a.defaults]
    out = [(p.arg, "POSITIONAL_OR_KEYWORD", d) for p, d in zip(pos, defaults, strict=True)][1:]
    if a.vararg:
        out.append((a.vararg.arg, "VAR_POSITIONAL", None))
    out += [(p.arg, "KEYWORD_ONLY", None if d is None else ast.unparse(d)) for p, d in zip(a.kwonlyargs, a.kw_defaults, strict=True)]
    if a.kwarg:
        out.append((a.kwarg.arg, "VAR_KEYWORD", None))
    return out


def _function_parameters(func) -> list[tuple[str, str, str | None]]:
    params = list(inspect.signature(func).parameters.values())[1:]  # the object is passed for you
    return [(p.name, p.kind.name, None if p.default is inspect.Parameter.empty else repr(p.default)) for p in params]


@pytest.mark.parametrize("cls", [MassmapAccessor, MassmapArrayAccessor])
def test_stub_spells_out_every_method_signature(cls):
    stub = _stub_methods()
    for name, delegate in cls.delegates().items():
        assert (cls.__name__, name) in stub, f"accessor.pyi lacks {cls.__name__}.{name}"
        got = _stub_parameters(stub[(cls.__name__, name)])
        want = _function_parameters(delegate.target())
        norm = lambda ps: [(n, k, None if d is None else repr(ast.literal_eval(d))) for n, k, d in ps]  # noqa: E731
        assert norm(got) == norm(want), f"{cls.__name__}.{name}"
    assert {n for c, n in stub if c == cls.__name__} == set(cls.delegates())


def test_dataarray_methods_give_the_function_results(small_cube):
    samples = small_cube.massmap.sample(6, seed=2)
    flat = samples.massmap.project_flat(pixel_scale=4.0)
    xr.testing.assert_identical(flat, sky.project_flat(samples, pixel_scale=4.0))
    hpx = samples.massmap.project_healpix(64, nest=False)
    xr.testing.assert_identical(hpx, sky.project_healpix(samples, 64, nest=False))
    xr.testing.assert_identical(flat.massmap.statistics(), sky.map_statistics(flat))
    assert inspect.signature(flat.massmap.write) == inspect.signature(sky.write_map)
