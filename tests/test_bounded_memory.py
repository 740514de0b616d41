"""mock_catalog draws its masses in blocks of halos: the result does not depend on the block size."""

import numpy as np

import massmap_xr.catalog.mocks as mocks
from massmap_xr import mock_catalog


def test_mock_catalog_blocks_do_not_change_seeded_draws(monkeypatch):
    monkeypatch.setattr(mocks, "MOCK_BLOCK", 10**9)
    whole = mock_catalog(700, seed=9)
    monkeypatch.setattr(mocks, "MOCK_BLOCK", 64)  # 11 blocks, the last partial
    blocked = mock_catalog(700, seed=9)
    for k in whole.variables:
        assert np.array_equal(whole[k].values, blocked[k].values), k
    # masses follow the prior: log-mass spread is physical, not a constant
    assert np.std(np.log10(blocked["mass_true"].values)) > 0.1

