"""Stage 1 of the data flow: the halo catalogue (z, lum_obs, ra/dec in degrees along ``halo``).

A catalogue is read from a file, assembled from arrays or drawn as a mock, and checked against
the schema before any posterior is built from it.

- ``schema``: what a catalogue is: required variables and their attributes, :func:`make_catalog`,
  :func:`validate_catalog`, the position-unit checks and hints, arcmin offsets to ra/dec.
- ``tables``: columns, units and metadata out of astropy Tables (FITS, Parquet, HDF5, ECSV,
  VOTable files), DataFrames, Datasets, structured arrays; the column mapping; unit conversion.
- ``readers``: :func:`read_catalog` for every table form and file (FITS, Parquet, HDF5, NetCDF,
  Zarr, CSV, whitespace text incl. the original study's column layout).
- ``mocks``: :func:`mock_catalog`, :func:`uniform_field_positions` and the shipped seed field
  (:func:`seed_field`, :func:`seed_redshifts`).
"""

from massmap_xr.catalog.mocks import mock_catalog, seed_field, seed_redshifts, uniform_field_positions
from massmap_xr.catalog.readers import read_catalog
from massmap_xr.catalog.schema import (
    DEFAULT_FIELD,
    REQUIRED,
    check_position_units,
    check_sigma_obs,
    make_catalog,
    offsets_to_radec,
    validate_catalog,
    wrap_ra_degrees,
)

__all__ = [
    "REQUIRED",
    "DEFAULT_FIELD",
    "make_catalog",
    "read_catalog",
    "check_position_units",
    "wrap_ra_degrees",
    "validate_catalog",
    "check_sigma_obs",
    "mock_catalog",
    "seed_field",
    "seed_redshifts",
    "uniform_field_positions",
    "offsets_to_radec",
]
