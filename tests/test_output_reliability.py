"""Reliability of the outputs: pole-centred WCS, realization weights, error types for bad
arguments, chunk-independent draws, attrs of summaries, HEALPix ``nest``.

Every oracle is independent of the code under test: astropy.wcs, healpy or plain numpy.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import xarray as xr
from astropy.io import fits
from astropy.wcs import WCS

from massmap_xr.analysis import sampling
from massmap_xr.errors import AnalysisError, MassmapError, ProjectionError
from massmap_xr.sky import (
    WCS_KEYS,
    FlatGrid,
    field_center,
    flat_header,
    map_statistics,
    project_flat,
    project_healpix,
    read_fits,
    to_fits,
)


# --------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cube(small_cube):
    """The session cube in memory, with unequal weights and realization labels that are not positions."""
    ds = small_cube.compute()
    n_r = ds.sizes["realization"]
    weight = np.random.default_rng(3).dirichlet(np.ones(n_r))
    return ds.assign_coords(realization=100 + 10 * np.arange(n_r)).assign(weight=("realization", weight))


def _masses(ra, dec, n_sample=None, seed=0):
    rng = np.random.default_rng(seed)
    n = len(ra)
    coords = {"halo": np.arange(n), "ra": ("halo", np.asarray(ra)), "dec": ("halo", np.asarray(dec))}
    if n_sample is None:
        return xr.DataArray(10 ** rng.uniform(11, 14, n), dims="halo", coords=coords, attrs={"units": "solMass"})
    return xr.DataArray(10 ** rng.uniform(11, 14, (n, n_sample)), dims=("halo", "sample"), coords=coords,
                        attrs={"units": "solMass"})


def _two_halos():
    return _masses([150.0, 150.1], [2.0, 2.1], n_sample=2)


# --------------------------------------------------------------------------------------
# 17. pole-centred flat maps: the header's WCS must be the package's projection
# --------------------------------------------------------------------------------------
def _field(center, n=400, radius=0.3, seed=1):
    """Positions within ``radius`` deg of ``center``, or of the pole for a centre near one."""
    rng = np.random.default_rng(seed)
    r = radius * np.sqrt(rng.uniform(0, 1, n))
    t = rng.uniform(0, 2 * np.pi, n)
    ra0, dec0 = center
    if abs(dec0) > 89.0:  # all round the pole
        return rng.uniform(0, 360, n), np.sign(dec0) * (90.0 - r)
    return (ra0 + r * np.cos(t) / math.cos(math.radians(dec0))) % 360.0, dec0 + r * np.sin(t)


def _astropy_map(header, ra, dec, values, shape):
    """Sum ``values`` into the pixels astropy.wcs gives the positions (and the off-edge mask)."""
    w = WCS(header)
    px, py = w.world_to_pixel_values(ra, dec)
    px, py = np.asarray(px), np.asarray(py)
    edge = np.minimum(np.abs((px + 0.5) % 1.0 - 0.0), np.abs(1.0 - (px + 0.5) % 1.0)) < 1e-7
    edge |= np.minimum(np.abs((py + 0.5) % 1.0), np.abs(1.0 - (py + 0.5) % 1.0)) < 1e-7
    col, row = np.floor(px + 0.5).astype(int), np.floor(py + 0.5).astype(int)
    inside = (row >= 0) & (row < shape[0]) & (col >= 0) & (col < shape[1])
    out = np.zeros(shape)
    np.add.at(out, (row[inside], col[inside]), values[inside])
    return out, inside, edge


@pytest.mark.parametrize("center", [(30.0, 90.0), (200.0, -90.0), (150.0, 2.0), (10.0, 89.9)])
def test_flat_pixels_agree_with_astropy_wcs_of_the_header(center, tmp_path):
    ra, dec = _field(center)
    m = _masses(ra, dec)
    fmap = project_flat(m, center=center, size=(30.0, 24.0), pixel_scale=0.7)
    ny, nx = fmap.sizes["y"], fmap.sizes["x"]
    header = flat_header(fmap)
    expected, inside, edge = _astropy_map(header, ra, dec, m.values, (ny, nx))
    assert not edge.any() and 0 < inside.sum() < ra.size
    assert fmap.attrs["n_outside"] == int((~inside).sum())
    np.testing.assert_allclose(fmap.values, expected, rtol=1e-12, atol=0)
    assert header["LONPOLE"] == 180.0 and "LONPOLE" in WCS_KEYS and "LATPOLE" in WCS_KEYS
    # the map's own attrs and the header of the exported FITS file describe the same grid
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_allclose(_astropy_map({k: fmap.attrs[k] for k in WCS_KEYS}, ra, dec, m.values, (ny, nx))[0],
                                   expected, rtol=1e-12, atol=0)
        path = to_fits(fmap, tmp_path / "m.fits")
        fits_header = fits.getheader(path)
        np.testing.assert_allclose(_astropy_map(fits_header, ra, dec, m.values, (ny, nx))[0], expected, rtol=1e-12, atol=0)
    # pixel-centre ra/dec coordinates agree with astropy as well
    jj, ii = np.meshgrid(np.arange(nx), np.arange(ny))
    pra, pdec = WCS(header).pixel_to_world_values(jj, ii)
    dra = (fmap["ra"].values - pra + 180.0) % 360.0 - 180.0
    np.testing.assert_allclose(dra * np.cos(np.radians(pdec)), 0.0, atol=1e-9)
    np.testing.assert_allclose(fmap["dec"].values, pdec, rtol=0, atol=1e-9)
    back = read_fits(path)
    np.testing.assert_array_equal(back.values, fmap.values)
    # (FITS cards keep ~16 significant digits)
    assert FlatGrid.from_header(fits_header).to_dict() == pytest.approx(FlatGrid.from_coords(fmap).to_dict(), rel=1e-14)


def test_flat_header_rejects_a_rotated_pole():
    h = FlatGrid.centered((0.0, 90.0), pixel_scale=1.0, shape=(4, 4)).header()
    with pytest.raises(ProjectionError, match="LONPOLE must be 180"):
        FlatGrid.from_header({**h, "LONPOLE": 0.0})
    with pytest.raises(ProjectionError, match="rotation"):
        FlatGrid.from_header({**h, "PC1_2": 0.5})
    # without LONPOLE the FITS default at CRVAL2 = 90 is 0 (rotated): refused, not misread
    legacy = {k: v for k, v in h.items() if k not in ("LONPOLE", "LATPOLE")}
    with pytest.raises(ProjectionError, match="LONPOLE is absent.*north pole"):
        FlatGrid.from_header(legacy)
    # elsewhere (south pole included) the default is 180, the grid project_flat makes
    for centre in ((0.0, -90.0), (150.0, 2.0)):
        hc = FlatGrid.centered(centre, pixel_scale=1.0, shape=(4, 4)).header()
        bare = {k: v for k, v in hc.items() if k not in ("LONPOLE", "LATPOLE")}
        assert FlatGrid.from_header(bare) == FlatGrid.from_header(hc)
        wcs_bare, wcs_full = WCS(bare), WCS(hc)
        np.testing.assert_allclose(wcs_bare.wcs.lonpole, wcs_full.wcs.lonpole)


# --------------------------------------------------------------------------------------
# 18. realization weights
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("weights", "words"),
    [
        ([np.nan, 1, 1, 1, 1, 1], r"NaN or infinite for 1 of 6 realizations \(first labels: 100"),
        ([1, 1, -0.5, 1, np.inf, 1], r"negative for 1 of 6 realizations \(first labels: 120; values: -0.5"),
        ([0.0] * 6, "all 6 realization weights are zero"),
    ],
)
@pytest.mark.parametrize("backend", ["numpy", "dask"])
def test_bad_realization_weights_raise_analysis_error(cube, weights, words, backend):
    ds = cube.assign(weight=("realization", np.array(weights, dtype=float)))
    if backend == "dask":
        ds = ds.chunk({"halo": 20, "realization": 2})
    calls = {
        "marginalize": lambda: ds.massmap.marginalize().compute(),
        "summary": lambda: ds.massmap.summary()["median"].compute(),
        "sample": lambda: ds.massmap.sample(5, seed=1).compute(),
        "sample_independent": lambda: ds.massmap.sample(5, seed=1, correlated=False).compute(),
        "calibration": lambda: ds.massmap.calibration(),
    }
    for name, call in calls.items():
        with pytest.raises(AnalysisError, match=words) as info:
            call()
        assert "weight" in str(info.value), name


def test_pick_realizations_checks_its_weights():
    key = sampling.philox_key(1)
    with pytest.raises(AnalysisError, match=r"negative for 1 of 3 realizations \(first labels: 7"):
        sampling.pick_realizations(np.array([0.5, -0.1, 0.6]), n=4, key=key, labels=np.array([5, 7, 9]))
    with pytest.raises(AnalysisError, match="all 2 realization weights are zero"):
        sampling.pick_realizations(np.zeros(2), n=4, key=key)
    with pytest.raises(AnalysisError, match="NaN or infinite"):
        sampling.pick_realizations(np.array([np.nan, 1.0]), n=4, key=key)


def test_zero_weight_realizations_are_allowed(cube):
    w = np.array([0.0, 1.0, 0.0, 3.0, 0.0, 0.0])
    ds = cube.assign(weight=("realization", w))
    p = ds["posterior"].transpose("halo", "mass", "realization").values.astype(np.float64)
    np.testing.assert_allclose(ds.massmap.marginalize().values, p @ (w / w.sum()), rtol=1e-12, atol=0)
    s = ds.massmap.sample(50, seed=2)
    assert set(np.unique(s["realization"].values)) <= {110, 130}


# --------------------------------------------------------------------------------------
# 19. bad arguments raise massmap exceptions, not raw numpy/astropy errors
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("call", "cls", "words"),
    [
        (lambda ds: ds.massmap.summary("abc"), AnalysisError, "levels must be .*got the string 'abc'"),
        (lambda ds: ds.massmap.summary([0.5, "x"]), AnalysisError, "levels must be"),
        (lambda ds: ds.massmap.calibration(levels="abc"), AnalysisError, "levels must be"),
        (lambda ds: ds.massmap.quantile("x"), AnalysisError, "q must be a probability"),
        (lambda ds: ds.massmap.quantile({"a": 1}), AnalysisError, "q must be a probability"),
        (lambda ds: ds.massmap.calibration(alpha="x"), AnalysisError, r"alpha \(KS test significance\) must be a number"),
        (lambda ds: ds.massmap.calibration(alpha=None), AnalysisError, "alpha .* must be a number"),
        (lambda ds: ds.massmap.calibration(alpha=1.5), AnalysisError, "alpha .* must lie strictly between 0 and 1, got 1.5"),
        (lambda ds: ds.massmap.calibration(n_sigma="x"), AnalysisError, "n_sigma .* finite positive number"),
        (lambda ds: ds.massmap.calibration(n_sigma=float("inf")), AnalysisError, "n_sigma"),
    ],
)
def test_bad_analysis_arguments(cube, call, cls, words):
    with pytest.raises(cls, match=words):
        call(cube)


@pytest.fixture
def not_fits(tmp_path):
    path = tmp_path / "notes.fits"
    path.write_text("this is not a FITS file\n")
    return path


def _healpix_without_attrs():
    hmap = project_healpix(_two_halos(), 64)
    return hmap.assign_coords(cell_ids=("cells", hmap["cell_ids"].values))


_GOOD_HEADER = FlatGrid.centered((150.0, 2.0), pixel_scale=0.5, shape=(4, 6)).header()


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda p: project_flat(_two_halos(), size=[1, 2, 3]), r"size must be a positive side in arcmin .*\[1, 2, 3\]"),
        (lambda p: project_flat(_two_halos(), size="abc"), "size must be a positive side"),
        (lambda p: project_flat(_two_halos(), size=None, shape=None, east_left="no"), "east_left must be True"),
        (lambda p: map_statistics(project_flat(_two_halos()), quantiles="x"), "quantiles must be a sequence of levels"),
        (lambda p: map_statistics(project_flat(_two_halos()), quantiles=[0.5, "median"]), "quantiles must be"),
        (lambda p: to_fits(_healpix_without_attrs(), p / "h.fits"), r"cell_ids.*lacks the HEALPix attr.*level"),
        (lambda p: to_fits(_healpix_without_attrs().assign_coords(
            cell_ids=("cells", _healpix_without_attrs()["cell_ids"].values,
                      {"grid_name": "healpix", "level": 6, "indexing_scheme": "zorder"})), p / "h.fits"),
         "indexing_scheme' must be 'nested' or 'ring'"),
        (lambda p: to_fits(np.ones((3, 3)), p / "a.fits"), "map must be an xarray DataArray or Dataset.*ndarray"),
        (lambda p: read_fits(p / "notes.fits"), "not a readable FITS file"),
        (lambda p: FlatGrid.from_header({**_GOOD_HEADER, "CRVAL1": "abc"}), "CRVAL1 must be a number, got 'abc'"),
        (lambda p: FlatGrid.from_header({**_GOOD_HEADER, "CDELT2": None}), "CDELT2 must be a number, got None"),
        (lambda p: FlatGrid.from_header({**_GOOD_HEADER, "CRPIX1": float("nan")}), "CRPIX1 must be finite"),
        (lambda p: FlatGrid.from_header({**_GOOD_HEADER, "NAXIS1": 2.5}), "NAXIS1 .* must be a positive integer"),
        (lambda p: FlatGrid.from_header({**_GOOD_HEADER, "CUNIT1": "arcmin"}), "CUNIT1 must be 'deg'"),
        (lambda p: FlatGrid.from_header({k: v for k, v in _GOOD_HEADER.items() if k != "CRPIX2"}),
         r"missing WCS card\(s\) \['CRPIX2'\]"),
        (lambda p: FlatGrid.from_header(None), "expected a mapping of FITS cards"),
        (lambda p: field_center([1, 2], []), "field_center: no positions"),
        (lambda p: field_center([1, 2], [1, 2, 3]), "ra has 2 values but dec has 3"),
        (lambda p: field_center([np.nan, 2.0], [1.0, 2.0]), "must be finite"),
        (lambda p: field_center("ab", [1.0]), "ra must be numbers"),
        (lambda p: field_center([1.0], [91.0]), r"dec must be in \[-90, 90\]"),
    ],
)
def test_bad_sky_arguments(tmp_path, not_fits, call, words):
    with pytest.raises(ProjectionError, match=words) as info:
        call(tmp_path)
    assert isinstance(info.value, (MassmapError, ValueError))


def test_read_fits_rejects_a_healpix_table_without_nside(tmp_path):
    path = to_fits(project_healpix(_two_halos()[:, 0], 64), tmp_path / "h.fits")
    with fits.open(path, mode="update") as hdul:
        del hdul[1].header["NSIDE"]
    with pytest.raises(ProjectionError, match="no valid NSIDE"):
        read_fits(path)


# --------------------------------------------------------------------------------------
# 20. independent draws do not depend on the realization chunking
# --------------------------------------------------------------------------------------
def test_independent_draws_are_bitwise_independent_of_chunking(cube):
    chunkings = [None, {"realization": -1}, {"realization": 1}, {"realization": 4, "halo": 7, "mass": 150}]
    cubes = [cube if c is None else cube.chunk(c) for c in chunkings]
    draws = [ds.massmap.sample(40, seed=9, correlated=False).values for ds in cubes]
    margs = [ds.massmap.marginalize().values for ds in cubes]
    for d, mg in zip(draws[1:], margs[1:], strict=True):
        np.testing.assert_array_equal(d, draws[0])
        np.testing.assert_array_equal(mg, margs[0])
    # and the marginal is the weighted mean (plain numpy)
    p = cube["posterior"].transpose("halo", "mass", "realization").values.astype(np.float64)
    w = cube["weight"].values / cube["weight"].values.sum()
    np.testing.assert_allclose(margs[0], p @ w, rtol=1e-13, atol=0)


def test_marginal_stays_lazy_and_keeps_halo_chunks(cube):
    lazy = cube.chunk({"halo": 25, "realization": 2})
    marg = lazy.massmap.marginalize()
    assert marg.chunks is not None and marg.chunks[0] == (25, 25, 10)
    assert set(marg.coords) >= {"halo", "mass", "ra", "dec"} and "realization" not in marg.coords


# --------------------------------------------------------------------------------------
# 21. summary / fit_normal variables carry their own attrs only
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("per_realization", [False, True])
@pytest.mark.parametrize("backend", ["numpy", "dask"])
def test_summary_and_fit_attrs_are_their_own(cube, per_realization, backend):
    ds = cube if backend == "numpy" else cube.chunk({"halo": 20})
    ds["posterior"].attrs["normalisation"] = "trapezoid integral over log10_mass equals 1"
    expected_units = {
        "mean": "dex(solMass)", "median": "dex(solMass)", "mode": "dex(solMass)", "std": "dex",
        "lower": "dex(solMass)", "upper": "dex(solMass)", "mu": "dex(solMass)", "sigma": "dex", "ks": "1", "kl": "1",
    }
    outputs = [ds.massmap.summary(per_realization=per_realization), ds.massmap.fit_normal(per_realization=per_realization)]
    for out in outputs:
        for name, var in out.data_vars.items():
            assert set(var.attrs) == {"long_name", "units"}, (name, var.attrs)
            assert var.attrs["units"] == expected_units[name], name
            assert "log10 halo mass" in var.attrs["long_name"] or name in ("ks", "kl"), name


# --------------------------------------------------------------------------------------
# 22. project_healpix nest must be a bool
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("nest", ["yes", 2, 1, None, "False"])
def test_healpix_nest_must_be_bool(nest):
    with pytest.raises(ProjectionError, match="nest must be True .* or False"):
        project_healpix(_two_halos(), 64, nest=nest)


@pytest.mark.parametrize("nest", [True, False, np.bool_(True)])
def test_healpix_nest_bool_matches_healpy(nest):
    import healpy as hp

    m = _masses([10.0, 10.0, 200.0, 300.0], [5.0, 5.0, -30.0, 60.0])
    hmap = project_healpix(m, 32, nest=nest)
    pix = hp.ang2pix(32, m.ra.values, m.dec.values, nest=bool(nest), lonlat=True)
    expected = np.bincount(pix, weights=m.values, minlength=12 * 32 * 32)
    np.testing.assert_allclose(hmap.values, expected[hmap["cell_ids"].values], rtol=1e-15)
    assert np.array_equal(hmap["cell_ids"].values, np.unique(pix))
    assert hmap["cell_ids"].attrs["indexing_scheme"] == ("nested" if nest else "ring")
