"""Lensing maps: physics against independent computations, map conventions, laziness, errors."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import xarray as xr
from astropy import constants as const
from astropy import units as u
from astropy.cosmology import WMAP5
from scipy.integrate import quad

from massmap_xr import lensing as L
from massmap_xr.errors import MassmapError, ProjectionError
from massmap_xr.sky import map_statistics

ZS = 1.0
CENTER = (150.0, 2.0)


# ----------------------------------------------------------------------------------------
# independent oracles (written from the papers, not from the package)
# ----------------------------------------------------------------------------------------
def oracle_sigma_crit(zl, zs):
    """c^2 D_s / (4 pi G D_l D_ls) with astropy constants, M_sun / Mpc^2."""
    dl = WMAP5.angular_diameter_distance(zl)
    ds = WMAP5.angular_diameter_distance(zs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dls = WMAP5.angular_diameter_distance_z1z2(zl, zs)
    return (const.c**2 / (4 * math.pi * const.G) * ds / (dl * dls)).to_value(u.solMass / u.Mpc**2)


def oracle_halo(mass, z):
    """r200m (Mpc), c (Duffy 2008 M200m), r_s, rho_s for WMAP5 (h = 0.702)."""
    rho_m = (WMAP5.Om0 * WMAP5.critical_density0 * (1 + z) ** 3).to_value(u.solMass / u.Mpc**3)
    r200 = (3 * mass / (800 * math.pi * rho_m)) ** (1 / 3)
    c = 10.14 * (mass * 0.702 / 2e12) ** -0.081 * (1 + z) ** -1.01
    rs = r200 / c
    rho_s = mass / (4 * math.pi * rs**3 * (math.log(1 + c) - c / (1 + c)))
    return r200, c, rs, rho_s


def wright_brainerd_sigma(x, rs, rho_s):
    """Wright & Brainerd (2000) eq. 11."""
    x = np.asarray(x, dtype=float)
    out = np.empty_like(x)
    lo, hi, one = x < 1, x > 1, x == 1
    out[lo] = 2 * rs * rho_s / (x[lo] ** 2 - 1) * (1 - 2 / np.sqrt(1 - x[lo] ** 2) * np.arctanh(np.sqrt((1 - x[lo]) / (1 + x[lo]))))
    out[hi] = 2 * rs * rho_s / (x[hi] ** 2 - 1) * (1 - 2 / np.sqrt(x[hi] ** 2 - 1) * np.arctan(np.sqrt((x[hi] - 1) / (1 + x[hi]))))
    out[one] = 2 * rs * rho_s / 3
    return out


def los_sigma_truncated(R, rs, rho_s, rt):
    """Sigma of the NFW cut at rt by numerical line-of-sight integration."""
    if R >= rt:
        return 0.0
    f = lambda t: rho_s / ((math.hypot(R, t) / rs) * (1 + math.hypot(R, t) / rs) ** 2)
    return 2 * quad(f, 0, math.sqrt(rt * rt - R * R), limit=200)[0]


def arcmin_to_mpc(theta, z):
    return np.radians(np.asarray(theta) / 60) * WMAP5.angular_diameter_distance(z).to_value(u.Mpc)


def halos(masses, ra, dec, z):
    masses = np.asarray(masses, dtype=float)
    dims = ("halo",) if masses.ndim == 1 else ("halo", "sample")
    return xr.DataArray(masses, dims=dims, coords={"ra": ("halo", np.asarray(ra, float)),
                                                   "dec": ("halo", np.asarray(dec, float)),
                                                   "z": ("halo", np.asarray(z, float))}, attrs={"units": "solMass"})


# ----------------------------------------------------------------------------------------
# geometry
# ----------------------------------------------------------------------------------------
def test_sigma_crit_against_astropy_constants():
    zl = np.array([0.1, 0.3, 0.8])
    np.testing.assert_allclose(L.sigma_crit(zl, 1.5), [oracle_sigma_crit(z, 1.5) for z in zl], rtol=1e-6)


def test_sigma_crit_behind_source_is_infinite_and_kappa_zero():
    assert np.isinf(L.sigma_crit(1.2, 1.0)) and np.isinf(L.sigma_crit(1.0, 1.0))
    assert L.sigma_crit_inverse(1.2, 1.0) == 0
    assert L.nfw_kappa(1e14, 1.2, 1.0, z_source=1.0) == 0
    m = halos([1e14, 1e14], [150.0, 150.05], [2.0, 2.0], [1.5, 1.0])
    k = L.kappa_flat(m, z_source=1.0, center=CENTER, size=10, pixel_scale=0.5)
    assert float(abs(k).max()) == 0.0


def test_source_distribution_averages_inverse_sigma_crit():
    zs, w = np.array([0.8, 1.0, 2.0]), np.array([1.0, 2.0, 1.0])
    zl = np.array([0.3, 0.9])
    expect = [sum(wi / oracle_sigma_crit(z, s) if z < s else 0.0 for s, wi in zip(zs, w, strict=True)) / w.sum() for z in zl]
    np.testing.assert_allclose(L.sigma_crit_inverse(zl, (zs, w)), expect, rtol=1e-6)
    m = halos([2e14], [150.0], [2.0], [0.3])
    k1 = L.kappa_flat(m, z_source=(zs, w), center=CENTER, size=10, pixel_scale=0.5)
    k0 = L.kappa_flat(m, z_source=1.0, center=CENTER, size=10, pixel_scale=0.5)
    ratio = expect[0] * oracle_sigma_crit(0.3, 1.0)
    np.testing.assert_allclose(k1.values, k0.values * ratio, rtol=1e-5, atol=1e-12)
    assert k1.attrs["z_source"] == "distribution" and k1.attrs["z_source_n"] == 3


# ----------------------------------------------------------------------------------------
# profiles
# ----------------------------------------------------------------------------------------
def test_duffy08_concentration_matches_colossus():
    from colossus.halo import concentration as cc

    m = np.array([1e11, 1e13, 1e15])
    expect = cc.modelDuffy08(m * 0.702, 0.5, "200m")[0]
    np.testing.assert_allclose(L.concentration(m, 0.5), expect, rtol=1e-12)


def test_untruncated_kappa_against_wright_brainerd():
    mass, z = 2e14, 0.3
    theta = np.array([0.05, 0.5, 1.0, 2.0, 5.0, 12.0])
    r200, c, rs, rho_s = oracle_halo(mass, z)
    R = arcmin_to_mpc(theta, z)
    expect = wright_brainerd_sigma(R / rs, rs, rho_s) / oracle_sigma_crit(z, ZS)
    got = L.nfw_kappa(mass, z, theta, z_source=ZS, truncation=None)
    np.testing.assert_allclose(got, expect, rtol=1e-6)


def test_truncated_kappa_against_line_of_sight_integral():
    mass, z = 5e13, 0.4
    r200, c, rs, rho_s = oracle_halo(mass, z)
    theta = np.array([0.1, 0.7, 1.5, 2.4])
    R = arcmin_to_mpc(theta, z)
    expect = np.array([los_sigma_truncated(r, rs, rho_s, r200) for r in R]) / oracle_sigma_crit(z, ZS)
    np.testing.assert_allclose(L.nfw_kappa(mass, z, theta, z_source=ZS), expect, rtol=1e-6)


@pytest.mark.parametrize("truncation", ["r200m", None])
def test_shear_is_mean_inside_minus_local(truncation):
    mass, z = 1e14, 0.3
    kap = lambda t: float(L.nfw_kappa(mass, z, t, z_source=ZS, truncation=truncation))
    for theta in (0.3, 1.0, 2.5, 6.0):
        inside = 2 / theta**2 * quad(lambda t: kap(t) * t, 0, theta, limit=200, points=[1e-4, 0.01])[0]
        np.testing.assert_allclose(L.nfw_shear(mass, z, theta, z_source=ZS, truncation=truncation), inside - kap(theta), rtol=2e-4)


def test_truncated_projected_mass_is_m200m():
    mass, z = 3e13, 0.5
    r200, *_ = oracle_halo(mass, z)
    tmax = np.degrees(r200 / WMAP5.angular_diameter_distance(z).to_value(u.Mpc)) * 60
    sc = oracle_sigma_crit(z, ZS)
    d = WMAP5.angular_diameter_distance(z).to_value(u.Mpc)
    integrand = lambda t: 2 * math.pi * t * float(L.nfw_kappa(mass, z, t, z_source=ZS)) * sc * (math.radians(1 / 60) * d) ** 2
    total = quad(integrand, 0, tmax, limit=400, points=[1e-3, 0.01, 0.1])[0]
    assert abs(total / mass - 1) < 0.01


# ----------------------------------------------------------------------------------------
# flat maps
# ----------------------------------------------------------------------------------------
def _offsets(k, ra, dec):
    """Tangent-plane offsets (arcmin) of the pixel centres from a halo, small-field approximation."""
    dx = (k["ra"].values - ra) * math.cos(math.radians(dec)) * 60
    dy = (k["dec"].values - dec) * 60
    return np.hypot(dx, dy)


def test_single_halo_map_matches_profile_away_from_cusp():
    mass, z = 2e14, 0.3
    ra, dec = 150.0 + 0.1 / 60, 2.0 - 0.2 / 60
    k = L.kappa_flat(halos([mass], [ra], [dec], [z]), z_source=ZS, center=CENTER, size=20, pixel_scale=0.25)
    r = _offsets(k, ra, dec)
    r200, *_ = oracle_halo(mass, z)
    tmax = np.degrees(r200 / WMAP5.angular_diameter_distance(z).to_value(u.Mpc)) * 60
    sel = (r > 6 * 0.25) & (r < 0.9 * tmax)
    expect = L.nfw_kappa(mass, z, r[sel], z_source=ZS)
    # pixel averages differ from centre values by ~ (pixel / r)^2 / 24 of the curvature
    np.testing.assert_allclose(k.values[sel], expect, rtol=0.01)
    assert k.attrs["units"] == "1" and k.attrs["mass_definition"] == "M200m"
    u.Unit(k.attrs["units"])


def test_pixel_values_are_pixel_integrals():
    """Against brute-force pixel averages (64 x 64 points per pixel) of the analytic profile."""
    mass, z, pix = 1e13, 0.4, 0.5
    ra, dec = 150.0 + 0.13 / 60, 2.0 + 0.07 / 60
    k = L.kappa_flat(halos([mass], [ra], [dec], [z]), z_source=ZS, center=CENTER, size=5, pixel_scale=pix)
    n = 64
    sub = ((np.arange(n) + 0.5) / n - 0.5) * pix
    hx, hy = 0.13 * math.cos(math.radians(2.0)), 0.07
    X = k.x.values[None, :, None, None] + sub[None, None, :, None] - hx
    Y = k.y.values[:, None, None, None] + sub[None, None, None, :] - hy
    ref = L.nfw_kappa(mass, z, np.maximum(np.hypot(X, Y), 1e-6), z_source=ZS).mean(axis=(2, 3))
    peak = ref.max()
    assert np.abs(k.values - ref).max() < 3e-3 * peak          # everywhere, cusp included
    big = ref > 0.05 * peak
    assert np.abs(k.values[big] / ref[big] - 1).max() < 0.005  # 0.5 % where kappa > 5 % of the peak
    # all of the halo's mass is in the map, exactly
    d = WMAP5.angular_diameter_distance(z).to_value(u.Mpc)
    area = (math.radians(pix / 60) * d) ** 2
    np.testing.assert_allclose(k.values.sum() * area * oracle_sigma_crit(z, ZS), mass, rtol=1e-6)


def test_many_halos_are_the_sum_of_single_halos():
    rng = np.random.default_rng(3)
    n = 6
    ra = 150 + rng.uniform(-0.1, 0.1, n)
    dec = 2 + rng.uniform(-0.1, 0.1, n)
    z = rng.uniform(0.1, 0.8, n)
    m = 10 ** rng.uniform(12, 14.5, (n, 3))
    kw = dict(z_source=ZS, center=CENTER, size=16, pixel_scale=0.5)
    total = L.kappa_flat(halos(m, ra, dec, z), **kw)
    single = sum(L.kappa_flat(halos(m[i:i + 1], ra[i:i + 1], dec[i:i + 1], z[i:i + 1]), **kw) for i in range(n))
    np.testing.assert_allclose(total.values, single.values, rtol=1e-10, atol=1e-15)
    assert total.dims == ("sample", "y", "x")


def test_plain_arrays_with_explicit_positions():
    m = np.array([[1e14, 2e14]])
    k = L.kappa_flat(m, [0.3], z_source=ZS, ra=[150.0], dec=[2.0], center=CENTER, size=6, pixel_scale=0.5)
    ref = L.kappa_flat(halos(m, [150.0], [2.0], [0.3]), z_source=ZS, center=CENTER, size=6, pixel_scale=0.5)
    np.testing.assert_array_equal(k.values, ref.values)


def test_flat_and_healpix_agree():
    mass, z = 3e14, 0.3
    m = halos([mass], [150.0], [2.0], [z])
    kf = L.kappa_flat(m, z_source=ZS, center=CENTER, size=24, pixel_scale=0.25)
    kh = L.kappa_healpix(m, nside=4096, z_source=ZS, margin_arcmin=15)
    import healpy as hp

    cra, cdec = hp.pix2ang(4096, kh.cell_ids.values, nest=True, lonlat=True)
    rh = np.hypot((cra - 150) * math.cos(math.radians(2)) * 60, (cdec - 2) * 60)
    x = (cra - 150) * math.cos(math.radians(2)) * 60
    y = (cdec - 2) * 60
    sel = (rh > 2.0) & (rh < 5.0)
    flat_at_cells = kf.interp(x=xr.DataArray(x[sel], dims="p"), y=xr.DataArray(y[sel], dims="p")).values
    np.testing.assert_allclose(kh.values[sel], flat_at_cells, rtol=0.02)
    np.testing.assert_allclose(kh.values[sel], L.nfw_kappa(mass, z, rh[sel], z_source=ZS), rtol=0.02)
    # the same projected mass
    area_f = float(kf.attrs["CDELT2"] * 60) ** 2
    np.testing.assert_allclose(kh.values.sum() * kh.attrs["cell_area"], kf.values.sum() * area_f, rtol=1e-3)
    assert dict(kh.cell_ids.attrs) == {"grid_name": "healpix", "level": 12, "indexing_scheme": "nested"}


# ----------------------------------------------------------------------------------------
# shear
# ----------------------------------------------------------------------------------------
def test_flat_shear_sign_convention_and_profile():
    mass, z = 3e14, 0.3
    g = L.shear_flat(halos([mass], [150.0], [2.0], [z]), z_source=ZS, center=CENTER, size=30, pixel_scale=0.5)
    east = g.sel(x=8.25, y=0.25, method="nearest")   # x is the offset towards east
    north = g.sel(x=0.25, y=8.25, method="nearest")
    ne = g.sel(x=6.25, y=6.25, method="nearest")
    gt = lambda p: float(L.nfw_shear(mass, z, math.hypot(float(p.x), float(p.y)), z_source=ZS))
    phi = lambda p: math.atan2(float(p.y), float(p.x))
    for p in (east, north, ne):
        np.testing.assert_allclose(float(p.gamma1), -gt(p) * math.cos(2 * phi(p)), rtol=0.01, atol=1e-5)
        np.testing.assert_allclose(float(p.gamma2), -gt(p) * math.sin(2 * phi(p)), rtol=0.01, atol=1e-5)
    assert float(east.gamma1) < 0 < float(north.gamma1) and float(ne.gamma2) < 0
    assert "stretches along the ra axis" in g.attrs["shear_convention"]


def test_kaiser_squires_agrees_with_superposition():
    rng = np.random.default_rng(5)
    n = 5
    ra = 150 + rng.uniform(-4, 4, n) / 60
    dec = 2 + rng.uniform(-4, 4, n) / 60
    m = halos(10 ** rng.uniform(13.5, 14.3, n), ra, dec, rng.uniform(0.2, 0.5, n))
    kw = dict(z_source=ZS, center=CENTER, size=40, pixel_scale=0.5)
    ks = L.kaiser_squires(L.kappa_flat(m, **kw))
    sp = L.shear_flat(m, **kw)
    inner = dict(x=slice(10, -10), y=slice(-10, 10))
    d1 = (ks.gamma1 - sp.gamma1).sel(**inner)
    d2 = (ks.gamma2 - sp.gamma2).sel(**inner)
    scale = float(np.abs(sp.gamma1.sel(**inner)).max())
    # beyond 5 pixels of every halo centre (where pixels act as point masses) the two agree
    far = np.ones(d1.shape, bool)
    sub = sp.sel(**inner)
    for a, b in zip(ra, dec, strict=True):
        far &= _offsets(sub, a, b) > 2.5
    assert float(np.abs(d1.values[far]).max()) < 0.02 * scale
    assert float(np.abs(d2.values[far]).max()) < 0.02 * scale
    assert float(np.median(np.abs(d1.values))) < 1e-3 * scale


def test_healpix_shear_sign_and_profile():
    import healpy as hp

    mass, z, nside = 1e15, 0.1, 512
    g = L.shear_healpix(halos([mass], [150.0], [2.0], [z]), nside=nside, z_source=ZS, margin_arcmin=120)
    ids = g.cell_ids.values
    for dra, ddec in ((40.0, 0.0), (0.0, 40.0), (28.0, 28.0), (-60.0, 0.0), (-42.0, -42.0)):
        p = hp.ang2pix(nside, 150 + dra / 60 / math.cos(math.radians(2)), 2 + ddec / 60, nest=True, lonlat=True)
        i = np.searchsorted(ids, p)
        cra, cdec = hp.pix2ang(nside, p, nest=True, lonlat=True)
        x, y = (cra - 150) * math.cos(math.radians(2)) * 60, (cdec - 2) * 60
        gt = float(L.nfw_shear(mass, z, math.hypot(x, y), z_source=ZS))
        phi = math.atan2(y, x)
        np.testing.assert_allclose(float(g.gamma1[i]), -gt * math.cos(2 * phi), atol=0.03 * gt)
        np.testing.assert_allclose(float(g.gamma2[i]), -gt * math.sin(2 * phi), atol=0.03 * gt)


# ----------------------------------------------------------------------------------------
# statistics, laziness, errors
# ----------------------------------------------------------------------------------------
def test_map_statistics_on_kappa_maps():
    rng = np.random.default_rng(2)
    m = halos(10 ** rng.normal(13.5, 0.3, (4, 20)), 150 + rng.uniform(-0.05, 0.05, 4), 2 + rng.uniform(-0.05, 0.05, 4),
              rng.uniform(0.2, 0.6, 4))
    k = L.kappa_flat(m, z_source=ZS, center=CENTER, size=10, pixel_scale=0.5)
    st = map_statistics(k)
    np.testing.assert_allclose(st["mean"].values, k.values.mean(0))
    np.testing.assert_allclose(st["std"].values, k.values.std(0))
    assert st["mean"].attrs["units"] == "1" and st["snr"].attrs["units"] == "1"
    assert st.attrs["CTYPE1"] == "RA---TAN"
    kh = L.kappa_healpix(m, nside=1024, z_source=ZS, margin_arcmin=5)
    sth = map_statistics(kh)
    np.testing.assert_allclose(sth["mean"].values, kh.values.mean(0))


def test_dask_samples_give_the_same_maps_lazily():
    from tests.test_analysis import raise_if_dask_computes

    rng = np.random.default_rng(4)
    m = halos(10 ** rng.normal(13.0, 0.4, (30, 6)), 150 + rng.uniform(-0.1, 0.1, 30), 2 + rng.uniform(-0.1, 0.1, 30),
              rng.uniform(0.1, 1.4, 30))
    kw = dict(z_source=ZS, center=CENTER, size=14, pixel_scale=0.5)
    import dask.array as da

    md = m.copy(data=da.from_array(m.values, chunks=(10, 2)))  # positions stay in memory
    with raise_if_dask_computes():
        kd = L.kappa_flat(md, **kw)
        gd = L.shear_flat(md, **kw)
        hd = L.kappa_healpix(md, nside=1024, z_source=ZS, margin_arcmin=5)
    assert kd.chunks is not None and kd.chunks[0] == (2, 2, 2)
    np.testing.assert_allclose(kd.values, L.kappa_flat(m, **kw).values, rtol=1e-12, atol=1e-16)
    np.testing.assert_allclose(gd.gamma1.values, L.shear_flat(m, **kw).gamma1.values, rtol=1e-12, atol=1e-16)
    np.testing.assert_allclose(hd.values, L.kappa_healpix(m, nside=1024, z_source=ZS, margin_arcmin=5).values, rtol=1e-12)
    assert md.chunks is not None  # input untouched


def test_untruncated_map_is_cut_at_stated_radius():
    mass, z = 1e14, 0.3
    m = halos([mass], [150.0], [2.0], [z])
    k = L.kappa_flat(m, z_source=ZS, center=CENTER, size=60, pixel_scale=0.5, truncation=None)
    r200, c, rs, rho_s = oracle_halo(mass, z)
    x = 3 * c
    h = math.log(x / 2) + math.acos(1 / x) / math.sqrt(x * x - 1)
    m_cut = 4 * math.pi * rho_s * rs**3 * h
    d = WMAP5.angular_diameter_distance(z).to_value(u.Mpc)
    total = k.values.sum() * (math.radians(0.5 / 60) * d) ** 2 * oracle_sigma_crit(z, ZS)
    np.testing.assert_allclose(total, m_cut, rtol=1e-6)
    assert k.attrs["truncation"] == "none" and k.attrs["profile_cut_r200m"] == 3.0


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(z_source=-1.0), ["z_source", "> 0"]),
        (dict(z_source=(np.array([1.0, 2.0]), np.array([1.0]))), ["z_source", "equal length"]),
        (dict(z_source=1.0, truncation="r500c"), ["truncation", "'r200m'", "None"]),
        (dict(z_source=1.0, concentration="no-such-model"), ["concentration", "unknown model"]),
        (dict(z_source=1.0, cosmology="NotACosmology"), ["cosmology", "astropy"]),
        (dict(z_source=1.0, cut=2.0), ["cut", "truncation=None"]),
    ],
)
def test_bad_inputs_raise_lensing_error(kwargs, words):
    m = halos([1e14], [150.0], [2.0], [0.3])
    with pytest.raises(L.LensingError) as exc:
        L.kappa_flat(m, center=CENTER, size=5, pixel_scale=0.5, **kwargs)
    for w in words:
        assert w in str(exc.value)
    assert isinstance(exc.value, ProjectionError) and isinstance(exc.value, MassmapError)


def test_missing_redshift_and_negative_masses():
    m = xr.DataArray([1e14], dims="halo", coords={"ra": ("halo", [150.0]), "dec": ("halo", [2.0])})
    with pytest.raises(L.LensingError, match="missing z"):
        L.kappa_flat(m, z_source=1.0)
    with pytest.raises(MassmapError, match="negative"):
        L.kappa_flat(halos([-1e14], [150.0], [2.0], [0.3]), z_source=1.0, center=CENTER, size=5)
    with pytest.raises(L.LensingError, match="nside is required"):
        L.kappa_healpix(halos([1e14], [150.0], [2.0], [0.3]), z_source=1.0)


def test_kappa_map_samples_a_cube(small_cube):
    k = L.kappa_map(small_cube, 4, flat=2.0, z_source=3.5, seed=1)
    assert k.dims == ("sample", "y", "x") and k.sizes["sample"] == 4
    assert float(k.max().compute()) > 0
    with pytest.raises(L.LensingError, match="exactly one"):
        L.kappa_map(small_cube, 4, z_source=1.0)
