"""Store stage: posterior cubes written to, extended in, read from and verified in Zarr stores.

A cube from :mod:`massmap_xr.cube` is written slab by slab into a Zarr (format 3) store with a
checksum per cell, may later be extended by new halos or realizations, and is read back lazily
for the analysis; ``stores/README.md`` specifies the format.

- ``layout``: bookkeeping names, StoreLayout (slab/shard chunking), codec, encoding, cell checksums;
- ``location``: the filesystem / zarr store / group of a path or URL, atomic creation of a store;
- ``checks``: does a cube belong to a store (model, prior, hyperparameters, hashes), schema, build id;
- ``slabs``: computing and writing slab jobs, a batch at a time, refusing unnormalised blocks;
- ``write``: init_store, write_slabs, to_store (and resume); ``finalize``: finalize_store;
- ``append``: append_halos, append_realizations;
- ``read``: open_store, store_info;
- ``verify``: VerifyReport, verify_store;
- ``rebuild``: build_like_store (a cube built with a store's recorded model);
- ``recipe``: recipe stores (inputs only, the posterior recomputed on read: to_store(materialize=False)).
- ``versioned``: stores in Icechunk repositories (``icechunk://`` paths): one commit per write,
  reads by version, history.
"""

# the bookkeeping attribute names (the store format, stores/README.md) are importable here too
from massmap_xr.store import versioned  # noqa: F401
from massmap_xr.store.append import append_halos, append_realizations
from massmap_xr.store.finalize import finalize_store
from massmap_xr.store.layout import (  # noqa: F401
    BUILD_ID,
    CRC_NAME,
    LAYOUT,
    N_HALO,
    N_REAL,
    NORM_ATOL,
    NORM_NAME,
    PENDING,
    STATUS,
    TABLE_CRC,
    TEMPLATE,
    VAR_CRC,
    StoreLayout,
)
from massmap_xr.store.read import open_store, store_info
from massmap_xr.store.rebuild import build_like_store
from massmap_xr.store.verify import VerifyReport, verify_store
from massmap_xr.store.write import init_store, to_store, write_slabs

__all__ = [
    "CRC_NAME",
    "NORM_NAME",
    "StoreLayout",
    "VerifyReport",
    "append_halos",
    "append_realizations",
    "build_like_store",
    "finalize_store",
    "init_store",
    "open_store",
    "store_info",
    "to_store",
    "verify_store",
    "write_slabs",
]
