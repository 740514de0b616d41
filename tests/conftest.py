"""Shared fixtures: small cubes built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
os.environ.setdefault("MASSMAP_TUTORIAL_SMALL", "1")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"reference data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def small_catalog():
    from massmap_xr.catalog import mock_catalog

    return mock_catalog(60, seed=11)


@pytest.fixture(scope="session")
def small_hyper():
    from massmap_xr.hyper import reddick2013

    return reddick2013(6, seed=5)


@pytest.fixture(scope="session")
def small_cube(small_catalog, small_hyper):
    from massmap_xr.cube import build_posterior

    return build_posterior(small_catalog, small_hyper, chunks=16)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
