"""The ``.massmap`` accessor is a faithful facade: same results, same documentation."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import xarray as xr

import massmap_xr  # noqa: F401  (registers the accessor)
from massmap_xr import analysis, store
from massmap_xr.accessor import MassmapAccessor, _Delegate

METHODS = [k for k, v in vars(MassmapAccessor).items() if isinstance(v, _Delegate)]


@pytest.mark.parametrize("name", METHODS)
def test_every_method_carries_its_function_docstring(small_cube, name):
    method = getattr(small_cube.massmap, name)
    target = getattr(MassmapAccessor, name)._target()
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
