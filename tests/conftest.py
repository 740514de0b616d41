"""Shared fixtures: small cubes built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

#: the original study's reference tables: $MASSMAP_SHARED_DATA, else ``shared/data`` beside the
#: checkout, else the workspace copy
_CANDIDATES = [Path(p) for p in (os.environ.get("MASSMAP_SHARED_DATA"),) if p] + [
    Path(__file__).resolve().parents[1].parent / "shared" / "data",
    Path("/work/shared/data"),
]
SHARED_DATA = next((p for p in _CANDIDATES if (p / "seed_tinker10_prior.txt").exists()), _CANDIDATES[0])
os.environ.setdefault("MASSMAP_TUTORIAL_SMALL", "1")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"reference data not found (looked in {', '.join(map(str, _CANDIDATES))}; set MASSMAP_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def small_catalog():
    from massmap_xr.catalog import mock_catalog

    return mock_catalog(60, seed=11, mass=np.logspace(10, 15.5, 400))  # halos above 1e10 M_sun


@pytest.fixture(scope="session")
def small_hyper():
    from massmap_xr.model.hyper import reddick2013

    return reddick2013(6, seed=5, kind="posterior")  # plain weighted marginals (no evidence needed)


@pytest.fixture(scope="session")
def small_cube(small_catalog, small_hyper):
    from massmap_xr.cube import build_posterior

    return build_posterior(small_catalog, small_hyper, chunks=16)


@pytest.fixture(scope="session")
def table_cube():
    """The default table-prior cube of :func:`builders.table_prior_cube` (60 halos x 120 masses x 6 realizations)."""
    from builders import table_prior_cube

    return table_prior_cube()[0]


@pytest.fixture(scope="session")
def table_store(tmp_path_factory, table_cube):
    """``table_cube`` written once per session with small inner chunks (8 halos x 2 realizations).

    Read it, never write to it: tests that damage or extend a store copy it first.
    """
    from massmap_xr.store import to_store

    path = tmp_path_factory.mktemp("table_store") / "cube.zarr"
    to_store(table_cube, path, progress=False, inner_halo_chunk=8, realization_chunk=2)
    return path


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def s3():
    """A real S3 endpoint (moto's server on a free localhost port, bucket ``massmap-test``) for the
    object-storage tests: ``s3.url(name)``, ``s3.storage_options``; skipped without moto or s3fs."""
    pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    pytest.importorskip("boto3")
    from s3_server import S3Server

    server = S3Server().start()
    yield server
    server.stop()
