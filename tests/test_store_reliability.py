"""Reliability of store writes: bad inputs are refused early with massmap errors, nothing is lost.

Each test names the defect it covers (numbers of the store-reliability review).
"""

from __future__ import annotations

import json
import os

import dask
import numpy as np
import pytest
import xarray as xr
import zarr
from builders import file_digests
from builders import table_prior_cube as make_cube

import massmap_xr.store as st
from massmap_xr.cube import build_posterior
from massmap_xr.errors import IncompleteStoreError, MassmapError, PriorError, StoreError
from massmap_xr.model.prior import TablePrior, TinkerPrior
from massmap_xr.store import layout as store_layout

#: a normalised non-uniform weight set whose renormalisation (w / max / sum) changes its last bits
ODD_WEIGHTS = np.array([0.13658683849231343, 0.056445354695687004, 0.06329324825661109, 0.23604291507257738,
                        0.5076316434828112])


@pytest.fixture(scope="module")
def small():
    """(cube, catalogue, hyper) of 20 halos x 120 masses x 3 realizations in slabs of 8 halos."""
    return make_cube(20, 3, chunks=8)


@pytest.fixture(scope="module")
def built(small, tmp_path_factory):
    path = tmp_path_factory.mktemp("rel") / "cube.zarr"
    st.to_store(small[0], path, progress=False)
    return path


@pytest.fixture
def store(built, tmp_path):
    """A private copy of the built store."""
    import shutil

    path = tmp_path / "cube.zarr"
    shutil.copytree(built, path)
    return path


def _power_law_prior(slope=-1.9):
    m = np.logspace(9.5, 16.0, 80)
    zt = np.linspace(0.0, 4.0, 5)
    table = m[None, :] ** slope * np.exp(-m[None, :] / (2e14 / (1.0 + zt[:, None])))
    return TablePrior(xr.DataArray(table, dims=("z", "mass"), coords={"z": zt, "mass": m}))


def _trapezoid_errors(post: np.ndarray, log10_mass: np.ndarray) -> np.ndarray:
    """|integral over log10 M - 1| per (halo, realization), by numpy's trapezoid rule (independent of the store)."""
    return np.abs(np.trapezoid(post.astype(np.float64), log10_mass, axis=1) - 1.0)


# --------------------------------------------------------------------------- 1: dask graph names
def test_graph_name_covers_every_input_of_the_blocks(small):
    """Builds differing only in sigma_obs, chunks or prior table values get different dask keys, so
    computing them together gives each its own values (defect 1)."""
    _, cat, hyp = small
    cat = cat.drop_vars("sigma_obs", errors="ignore")  # the sigma_obs argument applies to every halo
    mass = np.logspace(10.0, 15.5, 120)
    base = dict(prior=_power_law_prior(), mass=mass, chunks=8)
    a = build_posterior(cat, hyp, sigma_obs=0.05, **base)
    variants = {
        "sigma_obs": build_posterior(cat, hyp, sigma_obs=0.3, **base),
        "chunks": build_posterior(cat, hyp, sigma_obs=0.05, **{**base, "chunks": 5}),
        "table": build_posterior(cat, hyp, sigma_obs=0.05, **{**base, "prior": _power_law_prior(-2.3)}),
    }
    assert build_posterior(cat, hyp, sigma_obs=0.05, **base).posterior.data.name == a.posterior.data.name
    for what, b in variants.items():
        assert b.posterior.data.name != a.posterior.data.name, what
        alone_a, alone_b = np.asarray(a.posterior.data.compute()), np.asarray(b.posterior.data.compute())
        together_a, together_b = dask.compute(a.posterior.data, b.posterior.data)
        np.testing.assert_array_equal(together_a, alone_a, err_msg=what)
        np.testing.assert_array_equal(together_b, alone_b, err_msg=what)
    assert not np.array_equal(*dask.compute(a.posterior.data, variants["sigma_obs"].posterior.data))


# --------------------------------------------------------------------------- 2: priors compared by value
def test_tinker_prior_parameters_are_recorded_and_rebuilt(tmp_path, small):
    """z_max, dz and dlog10m are part of the description, and build_like_store rebuilds the store's
    prior with them: its table equals the stored one and the append is accepted (defect 2)."""
    prior = TinkerPrior(z_max=1.0, dz=0.25, dlog10m=0.01)
    desc = prior.describe()
    assert (desc["z_max"], desc["dz"], desc["dlog10m"]) == (1.0, 0.25, 0.01)
    mass = np.logspace(10.5, 15.0, 60)
    from massmap_xr import mock_catalog

    cat = mock_catalog(12, seed=3, prior=prior, mass=mass, z=np.linspace(0.1, 0.9, 9))
    cube = build_posterior(cat, small[2], prior=prior, mass=mass, chunks=8)
    path = tmp_path / "t.zarr"
    st.to_store(cube, path, progress=False)
    ds = st.open_store(path)
    assert (ds.attrs["prior_z_max"], ds.attrs["prior_dz"], ds.attrs["prior_dlog10m"]) == (1.0, 0.25, 0.01)
    new = st.build_like_store(cat.assign_coords(halo=cat.halo + 100), path)
    np.testing.assert_array_equal(new["prior_z"].values, [0.0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(new["prior_dndm"].values, ds["prior_dndm"].values, rtol=1e-12)
    st.append_halos(new, path)
    assert st.verify_store(path).ok
    # a store written before these parameters were recorded: they are read from its prior_z nodes
    meta = json.loads((path / "zarr.json").read_text())
    for k in ("prior_z_max", "prior_dz", "prior_dlog10m"):
        del meta["attributes"][k]
    (path / "zarr.json").write_text(json.dumps(meta))
    again = st.build_like_store(cat.assign_coords(halo=cat.halo + 200), path)
    np.testing.assert_array_equal(again["prior_z"].values, [0.0, 0.25, 0.5, 0.75, 1.0])
    with pytest.raises(StoreError, match="prior table prior_dndm differs"):  # dlog10m defaulted: table differs
        st.append_halos(again, path)


def test_tinker_prior_with_other_parameters_is_refused(tmp_path, small):
    from massmap_xr import mock_catalog

    mass = np.logspace(10.5, 15.0, 60)
    cat = mock_catalog(12, seed=3, prior=TinkerPrior(z_max=1.0, dz=0.25), mass=mass, z=np.linspace(0.1, 0.9, 9))
    path = tmp_path / "t.zarr"
    st.to_store(build_posterior(cat, small[2], prior=TinkerPrior(z_max=1.0, dz=0.25), mass=mass), path,
                progress=False)
    other = build_posterior(cat.assign_coords(halo=cat.halo + 100), small[2], prior=TinkerPrior(z_max=2.0, dz=0.25),
                            mass=mass)
    with pytest.raises(StoreError, match=r"(?s)prior_z_max: store has 1.0, cube has 2.0.*prior_z differ"):
        st.append_halos(other, path)
    assert st.verify_store(path).ok


def test_table_priors_with_one_description_but_other_values_are_refused(store, small):
    """Two user tables have the same description: their values tell them apart (defect 2)."""
    _, cat, hyp = small
    other = build_posterior(cat.assign_coords(halo=cat.halo + 100), hyp, prior=_power_law_prior(-2.3),
                            mass=np.logspace(10.0, 15.5, 120), chunks=8)
    assert other.attrs["prior"] == "TablePrior"
    with pytest.raises(StoreError, match=r"prior table prior_dndm differs \(largest relative difference"):
        st.append_halos(other, store)
    resumed = other.assign_coords(halo=cat.halo)  # the same catalogue, another prior: not a resume either
    with pytest.raises(StoreError, match="prior table prior_dndm differs"):
        st.to_store(resumed, store, resume=True, progress=False)
    assert st.verify_store(store).ok


# --------------------------------------------------------------------------- 3: mode="w" keeps the store until the cube is valid
@pytest.mark.parametrize("bad", ["zero_weights", "no_sigma_obs", "bad_chunk"])
def test_mode_w_validates_the_cube_before_deleting_the_store(store, small, bad):
    cube = small[0]
    kw = {}
    if bad == "zero_weights":
        cube = cube.assign(weight=("realization", np.zeros(3)))
    elif bad == "no_sigma_obs":
        cube = cube.drop_vars("sigma_obs")
    else:
        kw = {"inner_halo_chunk": 3}  # not a divisor of the slab size 8
    before = file_digests(store)
    with pytest.raises(StoreError):
        st.to_store(cube, store, mode="w", progress=False, **kw)
    assert file_digests(store) == before
    assert st.verify_store(store).ok


def test_mode_w_onto_the_cubes_own_source_is_refused(store, small, tmp_path):
    before = file_digests(store)
    src = st.open_store(store)
    unchunked = st.open_store(store, chunks=None)  # lazily indexed backend arrays, not dask
    for cube in (src, src.isel(halo=slice(0, 10)), src.drop_encoding(), unchunked):
        with pytest.raises(StoreError, match="opened lazily from that very store"):
            st.to_store(cube, store, mode="w", progress=False)
        with pytest.raises(StoreError, match="opened lazily from that very store"):
            st.init_store(cube, store, mode="w")
    assert file_digests(store) == before
    # a loaded cube no longer reads the store: replacing it is fine
    st.to_store(src.isel(halo=slice(0, 10)).load(), store, mode="w", progress=False)
    np.testing.assert_array_equal(st.open_store(store)["posterior"].values, small[0]["posterior"].values[:10])
    # another path is fine too
    st.to_store(st.open_store(store), tmp_path / "copy.zarr", progress=False)
    assert st.verify_store(tmp_path / "copy.zarr").ok


# --------------------------------------------------------------------------- 4: empty appends
@pytest.mark.parametrize(("func", "dim"), [(st.append_halos, "halo"), (st.append_realizations, "realization")])
def test_empty_append_is_refused_and_leaves_the_store_complete(store, small, func, dim):
    empty = small[0].isel({dim: slice(0, 0)})
    with pytest.raises(StoreError, match=rf"0 {dim}s, nothing to append"):
        func(empty, store)
    info = st.store_info(store)
    assert info["status"] == "complete" and info["pending"] is None
    assert st.verify_store(store).ok


# --------------------------------------------------------------------------- 5: non-uniform weights
def test_build_like_store_appends_to_a_store_with_non_uniform_weights(tmp_path):
    from massmap_xr.model.hyper import as_hyper

    hyper = make_cube(4, 5)[2].assign(weight=("realization", ODD_WEIGHTS))
    stored_w = as_hyper(hyper)["weight"].values
    assert not np.array_equal(as_hyper(as_hyper(hyper))["weight"].values, stored_w)  # the premise
    cube, cat, _ = make_cube(20, catalog=None, hyper=hyper, chunks=8)
    path = tmp_path / "w.zarr"
    st.to_store(cube, path, progress=False)
    cat_b = make_cube(10, seed=12, halo_offset=500)[1]
    st.append_halos(st.build_like_store(cat_b, path), path)
    ds = st.open_store(path)
    np.testing.assert_array_equal(ds["weight"].values, stored_w)  # untouched
    union = make_cube(catalog=xr.concat([cat, cat_b], "halo"), hyper=hyper)[0]
    np.testing.assert_array_equal(ds["posterior"].values, union["posterior"].values)
    assert st.verify_store(path).ok
    # a cube built directly from the stored table (renormalised again by as_hyper) is accepted too
    stored = ds[["alpha1", "alpha2", "alpha3", "alpha4", "S", "weight"]].load()
    cat_c = make_cube(6, seed=13, halo_offset=900)[1]
    st.append_halos(make_cube(catalog=cat_c, hyper=stored, chunks=8)[0], path)
    assert st.open_store(path).sizes["halo"] == 36 and st.verify_store(path).ok


# --------------------------------------------------------------------------- 6: dims order
@pytest.mark.parametrize("order", [("realization", "halo", "mass"), ("mass", "realization", "halo")])
def test_transposed_posterior_round_trips_equal_to_the_canonical_one(tmp_path, small, order):
    cube = small[0]
    path = st.to_store(cube.transpose(*order, ...), tmp_path / "t.zarr", progress=False)
    ds = st.open_store(path)
    assert ds["posterior"].dims == ("halo", "mass", "realization")
    np.testing.assert_array_equal(ds["posterior"].values, cube["posterior"].values)
    assert st.verify_store(path).ok
    # appends take transposed cubes too
    more, _, _ = make_cube(catalog=small[1], n_real=2, hseed=8, real_offset=3, chunks=8)
    st.append_realizations(more.transpose(*order, ...), path)
    np.testing.assert_array_equal(st.open_store(path)["posterior"].values[:, :, 3:], more["posterior"].values)


# --------------------------------------------------------------------------- 7: normalisation enforced
def test_cube_on_a_mass_subset_is_refused_and_not_marked_complete(tmp_path, small):
    sub = small[0].isel(mass=slice(0, 50))
    err = _trapezoid_errors(sub["posterior"].values, sub["log10_mass"].values)
    first_bad = small[1]["halo"].values[np.flatnonzero((err > 1e-4).any(axis=1))[0]]
    path = tmp_path / "m.zarr"
    with pytest.raises(StoreError, match=rf"(?s)not normalised.*first ids: {first_bad}\b.*not marked complete"):
        st.to_store(sub, path, progress=False)
    assert st.store_info(path)["status"] == "incomplete"
    with pytest.raises(IncompleteStoreError):
        st.open_store(path)
    with pytest.raises(StoreError):
        st.finalize_store(path)


def test_cube_with_nan_is_refused_naming_the_halo_and_realization(tmp_path, small):
    cube = small[0].compute()
    post = cube["posterior"].values.copy()
    post[13, :, 2] = np.nan
    bad = cube.assign(posterior=(cube["posterior"].dims, post)).chunk({"halo": 8})
    path = tmp_path / "n.zarr"
    halo_id, label = int(cube.halo[13]), int(cube.realization[2])
    with pytest.raises(StoreError, match=rf"(?s)1 of \d+ \(halo, realization\) rows.*NaN.*first ids: {halo_id}\)"
                                         rf".*first labels: {label}\)"):
        st.to_store(bad, path, progress=False)
    assert st.store_info(path)["status"] == "incomplete"
    report = st.verify_store(path)
    assert not report.ok and any("halos [8, 16)" in p and "never written" in p for p in report.problems)


def test_refused_append_is_finished_with_a_rebuilt_cube(store, small):
    """An append whose cube is refused (NaN) leaves the store's old content intact and pending; a
    cube of the same halos rebuilt with build_like_store finishes it, and a cube with another model
    is refused even when it only finishes the interrupted append."""
    cube_a, cat_a, hyp = small
    cube_b, cat_b, _ = make_cube(12, 3, seed=21, chunks=8, halo_offset=5000, hyper=hyp)
    bad = cube_b.compute()
    bad["posterior"][3, :, 1] = np.nan
    with pytest.raises(StoreError, match=r"(?s)first ids: 5003.*call it again.*build_like_store"):
        st.append_halos(bad, store)
    with pytest.raises(IncompleteStoreError):
        st.open_store(store)
    other = make_cube(catalog=cat_b, hyper=hyp, chunks=8, n_mass=100)[0]  # same halos, another grid
    with pytest.raises(StoreError, match="mass grid differs"):
        st.append_halos(other, store)
    st.append_halos(st.build_like_store(cat_b, store), store)
    assert st.verify_store(store).ok
    ds = st.open_store(store)
    union = make_cube(catalog=xr.concat([cat_a, cat_b], "halo"), hyper=hyp, chunks=8)[0]
    np.testing.assert_array_equal(ds["posterior"].values, union["posterior"].values)


# --------------------------------------------------------------------------- 8: unique labels
@pytest.mark.parametrize("dim", ["halo", "realization"])
def test_duplicate_labels_are_refused_naming_them(tmp_path, small, dim):
    labels = small[0][dim].values.copy()
    labels[-1] = labels[1]
    cube = small[0].assign_coords({dim: labels})
    with pytest.raises(StoreError, match=rf"{dim} labels must be unique; 1 .*occur more than once \({labels[1]}\)"):
        st.to_store(cube, tmp_path / "d.zarr", progress=False)
    assert not (tmp_path / "d.zarr").exists()


# --------------------------------------------------------------------------- 9: slab size of irregular chunks
def test_slab_size_is_the_largest_chunk_not_a_partial_first_one(tmp_path, small):
    cube = small[0].chunk({"halo": (3, 8, 8, 1)})
    layout, _ = store_layout.layout_for(cube)
    assert layout.halo_chunk == 8
    path = st.to_store(cube, tmp_path / "c.zarr", progress=False)
    info = st.store_info(path)
    assert (info["shards"] or info["chunks"])["halo"] == 8
    np.testing.assert_array_equal(st.open_store(path)["posterior"].values, small[0]["posterior"].values)


# --------------------------------------------------------------------------- 10: early, specific errors
def _bad_call(case, store, cube, tmp_path):
    if case == "realization_chunk":
        st.to_store(cube, tmp_path / "a.zarr", realization_chunk="x", progress=False)
    elif case == "inner_halo_chunk":
        st.to_store(cube, tmp_path / "a.zarr", inner_halo_chunk="x", progress=False)
    elif case.startswith("halo_chunks"):
        st.init_store(cube, tmp_path / "c.zarr")
        st.write_slabs(cube, tmp_path / "c.zarr", halo_chunks={"halo_chunks": "x", "halo_chunks_float": [0.5]}[case])
    elif case.startswith("open_chunks"):
        st.open_store(store, chunks={"open_chunks": "bogus", "open_chunks_dict": {"halo": "x"},
                                     "open_chunks_dim": {"haloes": 4}}[case])
    elif case == "string_ids":
        st.append_halos(cube.assign_coords(halo=np.array([f"h{i}" for i in range(20)])), store)
    elif case == "no_sigma_obs":
        st.to_store(cube.drop_vars("sigma_obs"), tmp_path / "a.zarr", progress=False)
    elif case == "no_sigma_obs_append":
        st.append_halos(cube.drop_vars("sigma_obs").assign_coords(halo=cube.halo + 100), store)
    elif case == "text_labels_append":
        st.append_realizations(cube.assign_coords(realization=np.array(["a", "b", "c"])), store)


@pytest.mark.parametrize(("case", "words"), [
    ("realization_chunk", "realization_chunk must be a positive integer.*'x'"),
    ("inner_halo_chunk", "inner_halo_chunk must be a positive integer.*'x'"),
    ("halo_chunks", "halo_chunks must be a sequence of integer slab indices"),
    ("halo_chunks_float", "halo_chunks must be a sequence of integer slab indices"),
    ("open_chunks", "open_store: chunks must be 'store'"),
    ("open_chunks_dict", r"open_store: chunks dict .*bad size\(s\) for \['halo'\]"),
    ("open_chunks_dim", r"open_store: chunks dict .*unknown dimension\(s\) \['haloes'\]"),
    ("string_ids", r"halo ids must be integers, got dtype <U\d+ \(first ids: h0, h1"),
    ("no_sigma_obs", "no 'sigma_obs' variable"),
    ("no_sigma_obs_append", "no 'sigma_obs' variable"),
    ("text_labels_append", "realization labels are int64.*the cube's are <U1"),
])
def test_bad_arguments_raise_massmap_errors_early(store, small, tmp_path, case, words):
    """Each bad argument raises a StoreError naming it, before anything is written (defect 10)."""
    before = file_digests(store)
    with pytest.raises(StoreError, match=words):
        _bad_call(case, store, small[0], tmp_path)
    assert not (tmp_path / "a.zarr").exists()
    assert file_digests(store) == before


def test_open_store_still_takes_chunk_dicts(store):
    assert st.open_store(store, chunks={"halo": 16})["posterior"].chunks[0] == (16, 4)
    assert st.open_store(store, chunks=None)["posterior"].chunks is None


@pytest.mark.parametrize("seed", [-1, 1.5, "0"])
def test_invalid_monte_carlo_seed_is_refused_at_build_time(small, seed):
    _, cat, hyp = small
    with pytest.raises(MassmapError, match="seed must be a non-negative integer"):
        build_posterior(cat, hyp, prior=_power_law_prior(), mass=np.logspace(10, 15.5, 30), method="montecarlo",
                        n_lum=5, seed=seed)


# --------------------------------------------------------------------------- 11: bookkeeping stays internal
def test_open_store_attrs_hold_no_bookkeeping(store, small, tmp_path):
    ds = st.open_store(store)
    internal = {st.N_HALO, st.N_REAL, st.STATUS, st.TEMPLATE, st.LAYOUT, st.BUILD_ID, st.PENDING, st.TABLE_CRC,
                st.VAR_CRC}
    assert not internal & set(ds.attrs)
    assert {k for k in ds.attrs if k.startswith("massmap_")} == {"massmap_schema_version", "massmap_version"}
    # a reopened subset written elsewhere records its own counts
    path = st.to_store(ds.isel(halo=slice(0, 5)), tmp_path / "sub.zarr", progress=False)
    attrs = dict(zarr.open_group(str(path), mode="r").attrs)
    assert attrs[st.N_HALO] == 5 and attrs[st.N_REAL] == 3
    assert st.verify_store(path).ok


# --------------------------------------------------------------------------- prior mass grid
@pytest.mark.parametrize("mass", [[1e10, np.inf, 1e12], [1e10, np.nan, 1e12], [1e10, -1e11, 1e12], ["a", "b"]])
@pytest.mark.parametrize("prior", ["tinker", "table"])
def test_prior_tables_refuse_a_non_finite_or_non_positive_mass_grid(mass, prior):
    p = TinkerPrior() if prior == "tinker" else _power_law_prior()
    with pytest.raises(PriorError, match="mass grid must be"):
        p.log_table(np.array(mass) if not isinstance(mass[0], str) else mass)


def test_nothing_left_behind_by_refusals(tmp_path, small):
    """Refused writes of a new path create nothing (the cube is checked before the directory)."""
    cube = small[0]
    for kw in ({"realization_chunk": 0}, {"inner_halo_chunk": "x"}):
        with pytest.raises(StoreError):
            st.to_store(cube, tmp_path / "n.zarr", progress=False, **kw)
    with pytest.raises(StoreError):
        st.to_store(cube.assign(weight=("realization", np.zeros(3))), tmp_path / "n.zarr", progress=False)
    assert not os.path.exists(tmp_path / "n.zarr")


# --------------------------------------------------------------------------- racing builds
def test_a_new_store_is_never_cleared_after_its_atomic_creation(tmp_path, small, monkeypatch):
    """A local zarr store clears itself by deleting and re-creating its directory; between the two,
    a racing build's atomic mkdir would succeed and both builds would write one store.  The
    template of a new store is written into the directory just created, without clearing it."""
    import zarr.storage

    async def no_clear(self, *args):
        if not args or args[0].strip("/") == "":
            raise AssertionError(f"cleared {self.root} after creating it")

    monkeypatch.setattr(zarr.storage.LocalStore, "clear", no_clear)
    monkeypatch.setattr(zarr.storage.LocalStore, "delete_dir", no_clear)
    path = st.to_store(small[0], tmp_path / "fresh.zarr", progress=False)
    assert st.verify_store(path).ok
    # replacing an existing store (mode="w") deletes it once, before the atomic mkdir, never after
    st.to_store(small[0], path, mode="w", progress=False)
    assert st.verify_store(path).ok
