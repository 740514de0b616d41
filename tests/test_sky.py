"""Sky projections: oracle tests against astropy.wcs and healpy, dask, export, errors."""

from __future__ import annotations

import math
import warnings

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from astropy.io import fits
from astropy.wcs import WCS
from builders import raise_if_dask_computes
from hypothesis import given
from strategies import QUICK, sky_fields

from massmap_xr.errors import ProjectionError
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
    write_map,
)

CENTER = (150.0, 2.0)


# --------------------------------------------------------------------------------------
# utilities
# --------------------------------------------------------------------------------------
def make_masses(n=3000, n_sample=8, seed=0, center=CENTER, half=0.34, order=("halo", "sample")):
    """Halo masses (M_sun) with ra/dec coordinates, uniform in a square about ``center``."""
    rng = np.random.default_rng(seed)
    ra = (center[0] + rng.uniform(-half, half, n) / math.cos(math.radians(center[1]))) % 360.0
    dec = center[1] + rng.uniform(-half, half, n)
    truth = 10 ** rng.uniform(11.0, 14.5, n)
    samples = truth[:, None] * rng.lognormal(0.0, 0.4, (n, n_sample))
    m = xr.DataArray(
        samples, dims=("halo", "sample"),
        coords={"halo": np.arange(100, 100 + n), "sample": np.arange(n_sample),
                "ra": ("halo", ra, {"units": "deg"}), "dec": ("halo", dec, {"units": "deg"})},
        attrs={"units": "solMass"}, name="mass",
    )
    t = xr.DataArray(truth, dims="halo", coords={k: m[k] for k in ("halo", "ra", "dec")}, attrs={"units": "solMass"})
    return m.transpose(*order), t


def wcs_of(obj) -> WCS:
    return WCS({k: obj.attrs[k] for k in WCS_KEYS})


def astropy_index(obj, ra, dec):
    """Row, column and inside-mask that astropy.wcs gives the positions on a map's grid."""
    w = wcs_of(obj)
    row, col = w.world_to_array_index_values(ra, dec)
    ny, nx = obj.sizes["y"], obj.sizes["x"]
    inside = (row >= 0) & (row < ny) & (col >= 0) & (col < nx)
    return row, col, inside


def near_pixel_edge(obj, ra, dec, tol=1e-7):
    px, py = wcs_of(obj).world_to_pixel_values(ra, dec)
    fx = np.abs((np.asarray(px) + 0.5) % 1.0)
    fy = np.abs((np.asarray(py) + 0.5) % 1.0)
    return (np.minimum(fx, 1 - fx) < tol) | (np.minimum(fy, 1 - fy) < tol)


@pytest.fixture(scope="module")
def field():
    return make_masses()


@pytest.fixture(params=["numpy", "dask"])
def backend(request):
    return request.param


def as_backend(m, backend, chunks=None):
    if backend == "dask":
        return m.chunk(chunks or {"halo": 700, "sample": 3})
    return m


# --------------------------------------------------------------------------------------
# flat projection: oracles
# --------------------------------------------------------------------------------------
def test_flat_every_halo_lands_in_astropy_pixel(field, backend):
    m, _ = field
    fmap = project_flat(as_backend(m, backend), center=CENTER, size=36.0, pixel_scale=0.4)
    ra, dec = m.ra.values, m.dec.values
    row, col, inside = astropy_index(fmap, ra, dec)
    assert 0 < inside.sum() < m.sizes["halo"]  # some halos fall outside the 36' grid
    assert fmap.attrs["n_outside"] == int((~inside).sum())
    expected = np.zeros((m.sizes["sample"], fmap.sizes["y"], fmap.sizes["x"]))
    for s in range(m.sizes["sample"]):
        np.add.at(expected[s], (row[inside], col[inside]), m.values[inside, s])
    np.testing.assert_allclose(fmap.transpose("sample", "y", "x").values, expected, rtol=1e-12, atol=0)


def test_flat_wcs_rebuilt_from_attrs_matches_coordinates(field):
    m, _ = field
    fmap = project_flat(m, center=CENTER, size=(30.0, 20.0), pixel_scale=0.5)
    assert (fmap.sizes["y"], fmap.sizes["x"]) == (40, 60)
    w = wcs_of(fmap)
    assert w.wcs.ctype[0] == "RA---TAN" and w.wcs.ctype[1] == "DEC--TAN"
    assert w.pixel_shape == (60, 40)
    jj, ii = np.meshgrid(np.arange(60), np.arange(40))
    ra, dec = w.pixel_to_world_values(jj, ii)
    np.testing.assert_allclose(fmap["ra"].values, ra, rtol=0, atol=1e-10)
    np.testing.assert_allclose(fmap["dec"].values, dec, rtol=0, atol=1e-10)
    # the tangent point sits between the two central pixels, east to the left
    assert fmap.attrs["CDELT1"] < 0 < fmap.attrs["CDELT2"]
    assert fmap.x.values[0] > fmap.x.values[-1]
    np.testing.assert_allclose(fmap.x.values[29:31], [0.25, -0.25])
    assert fmap.x.attrs["units"] == "arcmin" and fmap.x.attrs["axis"] == "X" and fmap.y.attrs["axis"] == "Y"
    assert "standard_name" not in fmap["ra"].attrs and fmap["ra"].attrs["units"] == "deg"
    # plain astropy accepts the whole attrs mapping too (non-FITS keys only warn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert WCS(dict(fmap.attrs)).wcs.compare(w.wcs)


@QUICK
@given(sky_fields(min_halos=40, max_halos=150))
def test_flat_pixels_match_astropy_anywhere_on_sky(radec):
    ra, dec = radec
    mass = xr.DataArray(np.ones(ra.size), dims="halo")
    fmap = project_flat(mass, ra=ra, dec=dec, pixel_scale=0.37)
    assert fmap.attrs["n_outside"] == 0  # the default grid holds the whole field
    assert float(fmap.sum()) == pytest.approx(ra.size)
    grid = FlatGrid.from_header(fmap.attrs)
    row, col, inside = grid.world_to_index(ra, dec)
    arow, acol, ainside = astropy_index(fmap, ra, dec)
    ok = ~near_pixel_edge(fmap, ra, dec)
    assert inside.all() and ainside[ok].all()
    np.testing.assert_array_equal(row[ok], arow[ok])
    np.testing.assert_array_equal(col[ok], acol[ok])


def test_mass_conserved_for_every_sample(field, backend):
    m, _ = field
    fmap = project_flat(as_backend(m, backend), center=CENTER, size=30.0, pixel_scale=0.25)
    _, _, inside = astropy_index(fmap, m.ra.values, m.dec.values)
    np.testing.assert_allclose(fmap.sum(("y", "x")).values, m.values[inside].sum(axis=0), rtol=1e-12)


def test_point_masses_equal_numpy_histogram2d(field):
    _, truth = field
    fmap = project_flat(truth, center=CENTER, size=32.0, pixel_scale=0.8)
    assert fmap.dims == ("y", "x")
    px, py = wcs_of(fmap).world_to_pixel_values(truth.ra.values, truth.dec.values)
    ny, nx = fmap.shape
    hist, _, _ = np.histogram2d(
        py, px, bins=(np.arange(ny + 1) - 0.5, np.arange(nx + 1) - 0.5), weights=truth.values
    )
    np.testing.assert_allclose(fmap.values, hist, rtol=1e-12)


def test_surface_density_times_pixel_area_is_mass(field):
    m, _ = field
    kw = {"center": CENTER, "size": 30.0, "pixel_scale": 0.5}
    mass = project_flat(m, **kw)
    sd = project_flat(m, quantity="surface_density", **kw)
    assert sd.attrs["units"] == "solMass arcmin-2" and sd["pixel_area"].attrs["units"] == "arcmin2"
    np.testing.assert_allclose(sd * sd["pixel_area"], mass, rtol=1e-12)
    # near the tangent point the exact pixel area is the flat-sky pixel_scale**2
    np.testing.assert_allclose(sd["pixel_area"], 0.25, rtol=1e-4)
    sd_sr = project_flat(m, quantity="surface_density", area_unit="sr", **kw)
    assert sd_sr.attrs["units"] == "solMass sr-1"
    np.testing.assert_allclose(sd_sr * sd_sr["pixel_area"], mass, rtol=1e-12)
    np.testing.assert_allclose(sd_sr["pixel_area"] * (180 * 60 / math.pi) ** 2, sd["pixel_area"], rtol=1e-12)


def test_pixel_area_is_exact_solid_angle():
    from scipy.integrate import dblquad

    # one 10 deg pixel offset from the tangent point: far from flat, integrate dx dy / r^3
    g = FlatGrid(crval1=0.0, crval2=0.0, cdelt1=10.0, cdelt2=10.0, crpix1=0.0, crpix2=1.0, nx=1, ny=1)
    # the intermediate coordinate (degrees) is the tangent-plane coordinate times 180/pi,
    # so the pixel spans [5, 15] x [-5, 5] deg of it
    x0, x1 = math.radians(5.0), math.radians(15.0)
    y0, y1 = math.radians(-5.0), math.radians(5.0)
    exact, _ = dblquad(lambda y, x: (1 + x * x + y * y) ** -1.5, x0, x1, y0, y1, epsabs=1e-14)
    assert g.pixel_area("sr")[0, 0] == pytest.approx(exact, rel=1e-10)
    assert abs(g.pixel_area("sr")[0, 0] - math.radians(10.0) ** 2) > 0.01 * exact  # not flat


def test_explicit_positions_override_coordinates(field):
    m, _ = field
    shifted = (m.ra.values + 0.05) % 360
    a = project_flat(m, ra=shifted, dec=m.dec.values, center=CENTER, size=30.0, pixel_scale=0.5)
    b = project_flat(m.assign_coords(ra=("halo", shifted)), center=CENTER, size=30.0, pixel_scale=0.5)
    c = project_flat(m, center=CENTER, size=30.0, pixel_scale=0.5)
    xr.testing.assert_identical(a, b)
    assert not np.allclose(a.values, c.values)


def test_sample_halo_order_and_inputs_unchanged(field):
    m, _ = field
    before = m.copy(deep=True)
    a = project_flat(m, center=CENTER, size=30.0, pixel_scale=0.5)
    b = project_flat(m.transpose("sample", "halo"), center=CENTER, size=30.0, pixel_scale=0.5)
    xr.testing.assert_identical(a, b)
    xr.testing.assert_identical(m, before)
    assert a.dims == ("sample", "y", "x") and a.dtype == np.float64


def test_default_grid_covers_field_and_wraps_ra():
    m, _ = make_masses(n=500, center=(0.05, -30.0), half=0.25)
    assert m.ra.values.min() < 1 and m.ra.values.max() > 359  # straddles ra = 0
    fmap = project_flat(m, pixel_scale=0.5)
    assert fmap.attrs["n_outside"] == 0
    assert abs((fmap.attrs["CRVAL1"] - 0.05 + 180.0) % 360.0 - 180.0) < 0.02
    assert fmap.attrs["CRVAL2"] == pytest.approx(-30.0, abs=0.02)
    assert fmap.sizes["x"] <= 62 and fmap.sizes["y"] <= 62  # a 30' field, not a 360 deg one
    np.testing.assert_allclose(fmap.sum(("y", "x")), m.sum("halo"), rtol=1e-12)
    assert field_center([359.5, 0.3, 0.1], [-1.0, 1.0, 0.0]) == (359.9, 0.0)
    assert field_center([10.0], [5.0]) == (10.0, 5.0)


def test_zero_mass_and_integer_masses_accepted():
    m = xr.DataArray([0, 5, 7], dims="halo", coords={"ra": ("halo", [1.0, 1.0, 1.01]), "dec": ("halo", [0.0, 0.0, 0.0])})
    fmap = project_flat(m, pixel_scale=0.1, size=2.0, center=(1.0, 0.0))
    assert float(fmap.sum()) == 12.0 and fmap.dtype == np.float64


# --------------------------------------------------------------------------------------
# HEALPix
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("nest", [True, False])
def test_healpix_cells_match_healpy(field, backend, nest):
    import healpy as hp

    m, _ = field
    hmap = project_healpix(as_backend(m, backend), 512, nest=nest)
    pix = hp.ang2pix(512, m.ra.values, m.dec.values, nest=nest, lonlat=True)
    ids = hmap["cell_ids"].values
    assert ids.dtype == np.int64 and np.all(np.diff(ids) > 0)
    np.testing.assert_array_equal(ids, np.unique(pix))
    assert dict(hmap["cell_ids"].attrs) == {"grid_name": "healpix", "level": 9,
                                            "indexing_scheme": "nested" if nest else "ring"}
    assert hmap.attrs["units"] == "solMass" and hmap.attrs["coordsys"] == "C"
    for s in range(m.sizes["sample"]):
        full = np.bincount(pix, weights=m.values[:, s], minlength=hp.nside2npix(512))
        np.testing.assert_allclose(hmap.isel(sample=s).values, full[ids], rtol=1e-12)


def test_healpix_nest_and_ring_agree_after_reorder(field):
    import healpy as hp

    m, _ = field
    nside = 64
    nested = project_healpix(m, nside, nest=True, cells="all")
    ring = project_healpix(m, nside, nest=False, cells="all")
    assert nested.sizes["cells"] == hp.nside2npix(nside)
    for s in range(m.sizes["sample"]):
        np.testing.assert_allclose(hp.reorder(ring.isel(sample=s).values, r2n=True), nested.isel(sample=s).values, rtol=1e-12)
    # occupied-cell maps agree with the full-sky ones on their cells
    occ = project_healpix(m, nside, nest=True)
    np.testing.assert_allclose(nested.isel(cells=occ["cell_ids"].values).values, occ.values, rtol=1e-12)


def test_healpix_surface_density(field):
    import healpy as hp

    m, _ = field
    mass = project_healpix(m, 256)
    sd = project_healpix(m, 256, quantity="surface_density", area_unit="sr")
    np.testing.assert_allclose(sd * hp.nside2pixarea(256), mass, rtol=1e-12)
    assert sd.attrs["units"] == "solMass sr-1" and sd.attrs["cell_area_units"] == "sr"


def test_healpix_xdggs_decode_roundtrip(field):
    xdggs = pytest.importorskip("xdggs")
    import healpy as hp

    m, _ = field
    hmap = project_healpix(m, 1024, nest=True)
    decoded = xdggs.decode(hmap.to_dataset())
    assert decoded.dggs.grid_info.level == 10
    lon = decoded.dggs.cell_centers()["longitude"].values
    lat = decoded.dggs.cell_centers()["latitude"].values
    elon, elat = hp.pix2ang(1024, hmap["cell_ids"].values, nest=True, lonlat=True)
    np.testing.assert_allclose(np.cos(np.radians(lon - elon)), 1.0, atol=1e-12)
    np.testing.assert_allclose(lat, elat, atol=1e-9)
    # statistics keep the grid decodable too
    xdggs.decode(map_statistics(hmap))


@pytest.mark.parametrize("nest", [True, False])
def test_healpix_fits_roundtrip_through_healpy(field, tmp_path, nest):
    import healpy as hp

    _, truth = field
    hmap = project_healpix(truth, 256, nest=nest)
    path = to_fits(hmap, tmp_path / "t.fits")
    full = hp.read_map(path, nest=nest)
    expected = np.full(hp.nside2npix(256), hp.UNSEEN)
    expected[hmap["cell_ids"].values] = hmap.values
    np.testing.assert_allclose(full, expected, rtol=1e-12)
    header = dict(fits.getheader(path, 1))
    assert header["ORDERING"] == ("NESTED" if nest else "RING") and header["OBJECT"] == "PARTIAL"
    back = read_fits(path)
    np.testing.assert_array_equal(back["cell_ids"].values, hmap["cell_ids"].values)
    assert dict(back["cell_ids"].attrs) == dict(hmap["cell_ids"].attrs)
    np.testing.assert_allclose(back.values, hmap.values, rtol=1e-12)
    # other ordering on read: healpy reorders using the recorded ORDERING
    other = hp.read_map(path, nest=not nest)
    np.testing.assert_allclose(hp.reorder(other, r2n=nest, n2r=not nest), full, rtol=1e-12)


def test_healpix_fits_full_sky_and_stack(field, tmp_path):
    import healpy as hp

    m, _ = field
    full = project_healpix(m.isel(sample=slice(0, 3)), 16, cells="all")
    path = to_fits(full, tmp_path / "full.fits")
    maps = hp.read_map(path, field=None, nest=True)
    np.testing.assert_allclose(maps, full.values, rtol=1e-12)
    assert fits.getheader(path, 1)["INDXSCHM"] == "IMPLICIT"
    back = read_fits(path)
    np.testing.assert_allclose(back.transpose("sample", "cells").values, full.values)
    np.testing.assert_array_equal(back["sample"].values, [0, 1, 2])


# --------------------------------------------------------------------------------------
# dask
# --------------------------------------------------------------------------------------
def test_dask_sample_chunks_identical_and_lazy(field):
    m, _ = field
    ref = project_flat(m, center=CENTER, size=30.0, pixel_scale=0.5)
    lazy_m = m.copy(data=da.from_array(m.values, chunks=(-1, 3)))  # positions stay in memory
    with raise_if_dask_computes():
        lazy = project_flat(lazy_m, center=CENTER, size=30.0, pixel_scale=0.5)
        lazy_h = project_healpix(lazy_m, 512)
        stats = map_statistics(lazy)
    assert lazy.chunks[0] == (3, 3, 2)
    assert isinstance(stats["mean"].data, da.Array)
    np.testing.assert_array_equal(lazy.values, ref.values)  # same summation order: bit-identical
    xr.testing.assert_identical(lazy.compute(), ref)
    np.testing.assert_array_equal(lazy_h.values, project_healpix(m, 512).values)
    xr.testing.assert_allclose(stats.compute(), map_statistics(ref), rtol=1e-12)


def test_dask_halo_chunks_equal_in_memory(field):
    m, truth = field
    ref = project_flat(m, center=CENTER, size=30.0, pixel_scale=0.5)
    for chunks in ({"halo": 500}, {"halo": 999, "sample": 5}):
        out = project_flat(m.chunk(chunks), center=CENTER, size=30.0, pixel_scale=0.5)
        np.testing.assert_allclose(out.values, ref.values, rtol=1e-12, atol=0)
    t_ref = project_healpix(truth, 128, nest=False)
    t_lazy = project_healpix(truth.chunk({"halo": 400}), 128, nest=False)
    np.testing.assert_allclose(t_lazy.values, t_ref.values, rtol=1e-12)


def test_dask_bad_masses_raise_at_compute(field):
    m, _ = field
    bad = m.copy()
    bad[5, 2] = np.nan
    lazy = project_flat(bad.chunk({"halo": 1000}), center=CENTER, size=30.0, pixel_scale=0.5)
    with pytest.raises(ProjectionError, match="NaN"):
        lazy.compute()


# --------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------
def test_map_statistics_match_numpy(field):
    m, truth = field
    fmap = project_flat(m, center=CENTER, size=20.0, pixel_scale=1.0)
    tmap = project_flat(truth, center=CENTER, size=20.0, pixel_scale=1.0)
    st = map_statistics(fmap, truth=tmap, quantiles=(0.1, 0.5, 0.9))
    v = fmap.values
    np.testing.assert_allclose(st["mean"], v.mean(0), rtol=1e-12)
    np.testing.assert_allclose(st["std"], v.std(0), rtol=1e-12)
    np.testing.assert_allclose(st["quantiles"], np.quantile(v, [0.1, 0.5, 0.9], axis=0), rtol=1e-12)
    np.testing.assert_allclose(st["truth"], tmap.values)
    pos = v.std(0) > 0
    expected = (v.mean(0)[pos] - tmap.values[pos]) / v.std(0)[pos]
    np.testing.assert_allclose(st["residual"].values[pos], expected, rtol=1e-10)
    assert st["mean"].attrs["units"] == "solMass" and st["snr"].attrs["units"] == "1"
    assert st.attrs["CTYPE1"] == "RA---TAN" and st.attrs["n_samples"] == m.sizes["sample"]
    assert {"ra", "dec", "pixel_area"} <= set(st.coords)


def test_snr_and_residual_safe_where_std_is_zero():
    m = xr.DataArray(
        [[1e12, 1e12], [2e12, 4e12]], dims=("halo", "sample"),
        coords={"ra": ("halo", [150.0, 150.2]), "dec": ("halo", [2.0, 2.0])},
    )
    fmap = project_flat(m, center=(150.1, 2.0), size=20.0, pixel_scale=2.0)
    truth = fmap.isel(sample=0).copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        st = map_statistics(fmap, truth=truth)
    empty = (st["mean"] == 0).values
    fixed = ((st["std"] == 0) & (st["mean"] > 0)).values
    varying = (st["std"] > 0).values
    assert empty.sum() > 0 and fixed.sum() == 1 and varying.sum() == 1
    assert np.all(st["snr"].values[empty] == 0) and np.all(np.isnan(st["snr"].values[fixed]))
    assert st["snr"].values[varying][0] == pytest.approx(3.0)
    assert st["residual"].values[fixed][0] == 0.0  # mean equals the truth there
    assert st["residual"].values[varying][0] == pytest.approx(1.0)


def test_healpix_statistics_align_different_cells():
    m = xr.DataArray(
        [[1e12, 3e12], [2e12, 2e12]], dims=("halo", "sample"),
        coords={"ra": ("halo", [10.0, 50.0]), "dec": ("halo", [0.0, 0.0])},
    )
    maps = project_healpix(m.isel(halo=[0]), 8)
    truth = project_healpix(m.isel(halo=[1], sample=0, drop=True), 8)
    st = map_statistics(maps, truth=truth)
    assert st.sizes["cells"] == 2 and dict(st["cell_ids"].attrs)["level"] == 3
    assert sorted(st["mean"].values.tolist()) == [0.0, 2e12]
    assert sorted(st["truth"].values.tolist()) == [0.0, 2e12]


def test_statistics_reject_mismatched_truth(field):
    m, truth = field
    fmap = project_flat(m, center=CENTER, size=20.0, pixel_scale=1.0)
    with pytest.raises(ProjectionError, match="grid differs"):
        map_statistics(fmap, truth=project_flat(truth, center=CENTER, size=20.0, pixel_scale=0.5))
    with pytest.raises(ProjectionError, match="units"):
        map_statistics(fmap, truth=project_flat(truth, center=CENTER, size=20.0, pixel_scale=1.0, quantity="surface_density"))
    with pytest.raises(ProjectionError, match="sample dimension"):
        map_statistics(fmap.isel(sample=0))


# --------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------
def test_flat_fits_roundtrip_and_sliced_header(field, tmp_path):
    _, truth = field
    tmap = project_flat(truth, center=CENTER, size=20.0, pixel_scale=0.5)
    path = to_fits(tmap, tmp_path / "t.fits")
    with fits.open(path) as hdul:
        h = hdul[0].header
        np.testing.assert_allclose(hdul[0].data, tmap.values)
        assert h["BUNIT"] == "solMass" and h["RADESYS"] == "ICRS"
        assert WCS(h).wcs.compare(wcs_of(tmap).wcs)
    back = read_fits(path)
    xr.testing.assert_allclose(back, tmap.drop_vars("pixel_area"))
    # a sliced map: the header is rebuilt, so every halo keeps its pixel on the sky
    cut = tmap.isel(y=slice(7, 30), x=slice(3, 25))
    h = flat_header(cut)
    assert h["CRPIX1"] == tmap.attrs["CRPIX1"] - 3 and h["NAXIS2"] == 23
    path2 = to_fits(cut, tmp_path / "cut.fits")
    w = WCS(fits.getheader(path2))
    row, col, inside = astropy_index(tmap, truth.ra.values, truth.dec.values)
    crow, ccol = w.world_to_array_index_values(truth.ra.values, truth.dec.values)
    in_cut = inside & (row >= 7) & (row < 30) & (col >= 3) & (col < 25)
    np.testing.assert_array_equal(crow[in_cut], row[in_cut] - 7)
    np.testing.assert_array_equal(ccol[in_cut], col[in_cut] - 3)
    with pytest.raises(FileExistsError):
        to_fits(cut, path2)
    to_fits(cut, path2, overwrite=True)


def test_flat_fits_cube_and_statistics(field, tmp_path):
    m, truth = field
    fmap = project_flat(m, center=CENTER, size=20.0, pixel_scale=1.0)
    cube = read_fits(to_fits(fmap, tmp_path / "cube.fits"))
    assert cube.dims == ("sample", "y", "x")
    np.testing.assert_allclose(cube.values, fmap.values)
    np.testing.assert_array_equal(cube["sample"].values, fmap["sample"].values)
    assert fits.getheader(tmp_path / "cube.fits")["NAXIS3"] == m.sizes["sample"]
    st = map_statistics(fmap, truth=project_flat(truth, center=CENTER, size=20.0, pixel_scale=1.0))
    path = to_fits(st, tmp_path / "stats.fits")
    with fits.open(path) as hdul:
        names = [h.name for h in hdul[1:]]
    assert names == ["MEAN", "STD", "QUANTILES", "SNR", "TRUTH", "RESIDUAL"]
    back = read_fits(path)
    for k in ("mean", "std", "truth"):
        np.testing.assert_allclose(back[k].values, st[k].values)
    np.testing.assert_allclose(back["quantiles"].values, st["quantiles"].values)
    np.testing.assert_allclose(back["quantile"].values, [0.16, 0.5, 0.84])


@pytest.mark.parametrize("suffix", [".zarr", ".nc"])
def test_write_map_netcdf_zarr_roundtrip(field, tmp_path, suffix):
    m, _ = field
    fmap = project_flat(m.chunk({"sample": 4}), center=CENTER, size=20.0, pixel_scale=1.0)
    hmap = project_healpix(m, 256)
    for name, obj in (("flat", fmap), ("hpx", hmap), ("stats", map_statistics(fmap))):
        path = write_map(obj, tmp_path / f"{name}{suffix}")
        back = xr.open_zarr(path, consolidated=False) if suffix == ".zarr" else xr.open_dataset(path, engine="h5netcdf")
        back = back.load()
        if isinstance(obj, xr.DataArray):
            xr.testing.assert_identical(back[obj.name], obj.compute())
        else:
            xr.testing.assert_allclose(back, obj.compute())
        with pytest.raises(FileExistsError):
            write_map(obj, path)
    if suffix == ".zarr":
        xdggs = pytest.importorskip("xdggs")
        xdggs.decode(xr.open_zarr(tmp_path / "hpx.zarr", consolidated=False))


def test_write_map_fits_and_png(field, tmp_path):
    m, _ = field
    fmap = project_flat(m, center=CENTER, size=20.0, pixel_scale=1.0)
    assert write_map(fmap, tmp_path / "m.fits").stat().st_size > 0
    png = write_map(fmap, tmp_path / "m.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    hpng = write_map(project_healpix(m, 512), tmp_path / "h.png")
    assert hpng.stat().st_size > 1000
    with pytest.raises(ProjectionError, match="extension"):
        write_map(fmap, tmp_path / "m.txt")


# --------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------
def _m(**coords):
    base = {"ra": ("halo", [150.0, 150.1]), "dec": ("halo", [2.0, 2.1])}
    base.update(coords)
    return xr.DataArray([[1e12, 2e12], [3e12, 4e12]], dims=("halo", "sample"), coords={k: v for k, v in base.items() if v is not None})


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: project_healpix(_m(), 100), "power of 2"),
        (lambda: project_healpix(_m(), 0), "power of 2"),
        (lambda: project_healpix(_m(), 2.5), "power of 2"),
        (lambda: project_healpix(_m(), 64, cells="some"), "cells must be"),
        (lambda: project_flat(_m(), pixel_scale=0), "pixel_scale must be a positive"),
        (lambda: project_flat(_m(), pixel_scale=-1.0), "pixel_scale must be a positive"),
        (lambda: project_flat(_m(), pixel_scale=float("nan")), "pixel_scale must be a positive"),
        (lambda: project_flat(_m(ra=None)), "missing ra/dec"),
        (lambda: project_healpix(_m(dec=None), 64), "missing ra/dec"),
        (lambda: project_flat(_m(), ra=[1.0, 2.0, 3.0]), "shape mismatch"),
        (lambda: project_flat(_m(ra=("halo", [np.nan, 1.0]))), "ra: NaN"),
        (lambda: project_flat(_m(dec=("halo", [95.0, 1.0]))), r"dec: must be in \[-90, 90\]"),
        (lambda: project_flat(_m(), quantity="density"), "unknown quantity"),
        (lambda: project_flat(_m(), quantity="surface_density", area_unit="deg2"), "unknown area_unit"),
        (lambda: project_flat(_m() * -1), "negative"),
        (lambda: project_flat(_m().where(_m() < 3e12)), "NaN"),
        (lambda: project_flat(_m().assign_attrs(units="dex(solMass)")), "linear masses"),
        (lambda: project_flat(_m(), size=10, shape=(3, 3)), "not both"),
        (lambda: project_flat(_m(), size=-5.0), "size must be"),
        (lambda: project_flat(_m(), center=(150, 95)), "center"),
        (lambda: project_flat(_m(), pixel_scale=1e-6, size=600.0), "too large"),
        (lambda: project_flat(_m().expand_dims(z=2)), "dims"),
        (lambda: project_flat(_m().to_dataset(name="m")), "not a Dataset"),
        (lambda: project_flat(xr.DataArray(np.ones(3), dims="halo", coords={"ra": ("halo", [0.0, 120.0, 240.0]),
                                                                             "dec": ("halo", [0.0, 0.0, 0.0])})), "healpix"),
    ],
)
def test_bad_input_raises_projection_error(call, words):
    with pytest.raises(ProjectionError, match=words):
        call()


def test_negative_mass_message_names_the_halos():
    m = _m().assign_coords(halo=[7, 9])
    m[1, 0] = -1.0
    with pytest.raises(ProjectionError) as info:
        project_healpix(m, 64)
    assert "1 value(s) in 1 halo(s), first ids: 9" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_flat_grid_validates_and_roundtrips():
    g = FlatGrid.centered((359.9, -89.0), pixel_scale=0.25, shape=(5, 7), east_left=False)
    assert FlatGrid.from_dict(g.to_dict()) == g and FlatGrid.from_header(g.header()) == g
    assert g.cdelt1 > 0
    with pytest.raises(ProjectionError, match="cdelt1"):
        FlatGrid(crval1=0.0, crval2=0.0, cdelt1=0.0, cdelt2=1.0, crpix1=1.0, crpix2=1.0, nx=1, ny=1)
    with pytest.raises(ProjectionError, match="nx must be a positive integer"):
        FlatGrid(crval1=0.0, crval2=0.0, cdelt1=1.0, cdelt2=1.0, crpix1=1.0, crpix2=1.0, nx=0, ny=1)
