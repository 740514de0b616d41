"""The `massmap kappa` command and the ``ds.massmap.kappa_map`` accessor method."""

from __future__ import annotations

import xarray as xr

from massmap_xr.cli import main
from massmap_xr.store import open_store
from tests.test_cli import built_store, catalog_csv  # noqa: F401  (module fixtures)


def test_kappa_command_writes_statistics_and_stacks(built_store, tmp_path):  # noqa: F811
    out = tmp_path / "k.nc"
    assert main(["kappa", str(built_store), "--flat", "4", "--z-source", "3.5", "-n", "6", "-o", str(out)]) == 0
    st = xr.load_dataset(out)
    assert {"mean", "std", "snr"} <= set(st.data_vars)
    assert st["mean"].attrs["units"] == "1" and st["mean"].sizes == {"y": 10, "x": 10}
    assert float(st["mean"].max()) > 0
    assert main(["kappa", str(built_store), "--flat", "4", "--z-source", "3.5", "-n", "6", "-o", str(out)]) == 2
    assert main(["kappa", str(built_store), "--healpix", "512", "--z-source", "1.0", "-n", "3", "--samples",
                 "-o", str(tmp_path / "h.zarr")]) == 0
    assert main(["kappa", str(built_store), "--flat", "4", "--z-source", "-1", "-n", "3", "-o", str(tmp_path / "x.nc")]) == 2


def test_accessor_kappa_map(built_store):  # noqa: F811
    ds = open_store(built_store)
    k = ds.massmap.kappa_map(3, flat=4.0, z_source=3.5, seed=2)
    assert k.dims == ("sample", "y", "x") and k.attrs["mass_definition"] == "M200m"
