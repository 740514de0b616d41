"""Flux-limited catalogues, photometric redshifts and table priors in the catalogue likelihood,
against brute-force integrals (scipy quadrature) and mock recovery."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats

from massmap_xr.catalog import mock_catalog
from massmap_xr.errors import CatalogError, InferenceError
from massmap_xr.inference import CatalogLikelihood, infer_hyperparameters, log_likelihood
from massmap_xr.inference import likelihood as likemod
from massmap_xr.model.prior import TablePrior, TinkerPrior
from massmap_xr.model.relation import mean_log_luminosity

REDDICK = (10.709, 0.359, 2.35e14, 1.10, 0.155)
BROAD = {"alpha1": (10.709, 0.1), "alpha2": (0.359, 0.03), "alpha4": (1.10, 0.2), "S": (0.155, 0.03)}
FREE = ("alpha1", "alpha2", "alpha4", "S")


@pytest.fixture(scope="module")
def limited():
    """A flux-limited mock: 300 halos drawn, the faintest ~40 % dropped."""
    cat = mock_catalog(300, seed=3)
    lmin = float(np.quantile(cat.lum_obs.values, 0.4))
    return mock_catalog(300, seed=3, lum_min=lmin), lmin


def _prior_row(like, z):
    x = np.log(like.mass)
    lp = like.prior.log_density([z], like.mass)[0] + x
    return x, lp


def _quad_selection(like, z, sd, completeness, p, ln_lmin=None):
    """∫ p(M|z) ∫ S(L, z) N(ln L; μ(M), sd) d ln L d ln M by dense trapezoid rules in both.

    ln M: 12,001 points with the prior linear in ln M between the grid's nodes; ln L: 4,001
    points over μ ± 12 sd (for a hard limit, from the limit up, so the step is resolved).
    """
    x, lp = _prior_row(like, z)
    lnm = np.linspace(x[0], x[-1], 12001)
    prior = np.exp(np.interp(lnm, x, lp) - lp.max())
    mu = mean_log_luminosity(np.exp(lnm), z, *p[:4])
    t = np.linspace(0.0, 1.0, 4001)
    lo = mu - 12 * sd if ln_lmin is None else np.clip(ln_lmin, mu - 12 * sd, mu + 12 * sd)
    ell = lo[:, None] + (mu + 12 * sd - lo)[:, None] * t[None, :]
    f = completeness(ell) * np.exp(-0.5 * ((ell - mu[:, None]) / sd) ** 2) / (sd * np.sqrt(2 * np.pi))
    psel = integrate.trapezoid(f, ell, axis=1)
    return integrate.trapezoid(prior * psel, lnm) / integrate.trapezoid(prior, lnm)


def test_mock_lum_min_drops_faint_halos(limited):
    cat, lmin = limited
    assert 0 < cat.sizes["halo"] < 300
    assert np.all(cat.lum_obs.values >= lmin)
    assert cat.attrs["lum_min"] == lmin and cat.attrs["n_drawn"] == 300
    with pytest.raises(CatalogError, match="lum_min"):
        mock_catalog(10, seed=1, lum_min=-1.0)
    with pytest.raises(CatalogError, match="removes all"):
        mock_catalog(10, seed=1, lum_min=1e30)


@pytest.mark.parametrize("kind", ["hard", "callable_z", "completeness"])
def test_selected_likelihood_matches_quadrature(limited, kind):
    cat, lmin = limited
    p = (10.68, 0.37, 2.35e14, 1.05, 0.17)
    sd = float(np.hypot(p[4], 0.05))
    width = 0.15
    if kind == "hard":
        like = CatalogLikelihood(cat, lum_min=lmin)
    elif kind == "callable_z":
        like = CatalogLikelihood(cat, lum_min=lambda z: lmin * (1.0 + 0.0 * z))
    else:
        like = CatalogLikelihood(cat, selection=lambda lum, z: stats.norm.cdf((np.log(lum) - np.log(lmin)) / width))
    plain = CatalogLikelihood(cat)
    per, per0 = like.per_halo(*p), plain.per_halo(*p)
    for k in (0, 7, 19):
        z = float(cat.z.values[k])
        if kind == "completeness":
            comp = lambda ell: stats.norm.cdf((ell - np.log(lmin)) / width)  # noqa: E731
            s_obs = stats.norm.logcdf((np.log(cat.lum_obs.values[k]) - np.log(lmin)) / width)
        else:
            comp = lambda ell: np.ones_like(ell)  # noqa: E731
            s_obs = 0.0
        d = _quad_selection(plain, z, sd, comp, p, ln_lmin=None if kind == "completeness" else np.log(lmin))
        expect = per0[k] + s_obs - np.log(d)
        # the likelihood's trapezoid rule in ln M on 400 points, against adaptive quadrature
        assert per[k] == pytest.approx(expect, abs=2e-3 if kind == "completeness" else 5e-4)
    assert float(like(*p)) == pytest.approx(per.sum(), rel=1e-12)


def test_hard_limit_equals_same_grid_sum(limited):
    """The closed-form erfc denominator equals the same trapezoid sum done with scipy's ∫ dL."""
    cat, lmin = limited
    like = CatalogLikelihood(cat, lum_min=lmin)
    plain = CatalogLikelihood(cat)
    k = 3
    z = float(cat.z.values[k])
    x, lp = _prior_row(plain, z)
    w = np.exp(lp - lp.max()) * likemod.trapezoid_weights(x)
    w /= w.sum()
    sd = float(np.hypot(REDDICK[4], 0.05))
    mu = mean_log_luminosity(plain.mass, z, *REDDICK[:4])
    hi = mu + 14 * sd
    lo = np.minimum(np.log(lmin), hi)
    ell = lo[:, None] + (hi - lo)[:, None] * np.linspace(0.0, 1.0, 20001)[None, :]
    psel = integrate.simpson(np.exp(-0.5 * ((ell - mu[:, None]) / sd) ** 2) / (sd * np.sqrt(2 * np.pi)), x=ell, axis=1)
    d = np.sum(w * psel)
    assert like.per_halo(*REDDICK)[k] == pytest.approx(plain.per_halo(*REDDICK)[k] - np.log(d), abs=1e-9)


def _central_difference(like, j: int) -> float:
    """d like / d hyperparameter j at the Reddick values, by a central difference."""
    h = 1e-6 * max(1.0, abs(REDDICK[j]))
    up, dn = list(REDDICK), list(REDDICK)
    up[j] += h
    dn[j] -= h
    return (like(*up) - like(*dn)) / (2 * h)


@pytest.mark.parametrize("sel", ["hard", "completeness"])
def test_selected_gradient_matches_differences(limited, sel):
    cat, lmin = limited
    kw = {"lum_min": lmin} if sel == "hard" else {"selection": lambda lum, z: 1 / (1 + (lmin / lum) ** 8)}
    like = CatalogLikelihood(cat, **kw)
    _, g = like.value_and_grad(*REDDICK)
    for j in (0, 1, 3, 4):
        assert g[j] == pytest.approx(_central_difference(like, j), rel=1e-5 if sel == "hard" else 2e-3, abs=1e-6)


def test_halo_below_limit_is_refused(limited):
    cat, lmin = limited
    with pytest.raises(CatalogError, match="below lum_min"):
        CatalogLikelihood(cat, lum_min=lmin * 1.5)
    with pytest.raises(InferenceError, match="lum_min"):
        CatalogLikelihood(cat, lum_min="bright")
    with pytest.raises(InferenceError, match="selection"):
        CatalogLikelihood(cat, selection=0.5)


def _summary(post, k):
    w = post.weight.values
    m = np.sum(w * post[k].values)
    return m, np.sqrt(np.sum(w * (post[k].values - m) ** 2))


@pytest.mark.slow
def test_flux_limited_recovery_and_bias_without_selection():
    """Selected likelihood recovers the truth within 3 sigma; the unselected one is > 3 sigma off."""
    truth = {"alpha1": 10.75, "alpha2": 0.34, "alpha4": 1.0, "S": 0.18}
    full = mock_catalog(6000, seed=11, truth=truth)
    lmin = float(np.quantile(full.lum_obs.values, 0.6))
    cat = mock_catalog(6000, seed=11, truth=truth, lum_min=lmin)
    sel = infer_hyperparameters(cat, hyperprior=BROAD, n=200, seed=2, lum_min=lmin)
    raw = infer_hyperparameters(cat, hyperprior=BROAD, n=200, seed=2)
    assert sel.attrs["selection"] == f"lum_min={lmin:g}"
    pulls_sel, pulls_raw = [], []
    for k in FREE:
        m, sd = _summary(sel, k)
        pulls_sel.append((m - truth[k]) / sd)
        m, sd = _summary(raw, k)
        pulls_raw.append((m - truth[k]) / sd)
    assert np.all(np.abs(pulls_sel) < 3), pulls_sel
    assert np.max(np.abs(pulls_raw)) > 3, pulls_raw


# ------------------------------------------------------------------------------------------
# photometric redshifts
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def photo_cat():
    cat = mock_catalog(120, seed=5)
    err = np.where(np.arange(120) % 2 == 0, 0.05 * (1 + cat.z.values), 0.0)
    return cat.assign(z_err=("halo", err))


def _brute_photoz(cat, k, p, **kw):
    """∫ N(z; z_k, z_err) p(L_obs | θ, z) dz / ∫ N dz over the prior's range, by scipy quadrature."""
    one = cat.isel(halo=[k]).drop_vars("z_err")
    z0, s0 = float(cat.z[k]), float(cat.z_err[k])

    def f(z):
        c = one.assign(z=("halo", [z]))
        return np.exp(CatalogLikelihood(c, **kw).per_halo(*p)[0])

    lo, hi = max(0.0, z0 - 10 * s0), min(TinkerPrior().z_range[1], z0 + 10 * s0)
    num = integrate.quad(lambda z: f(z) * stats.norm.pdf(z, z0, s0), lo, hi, epsrel=1e-9, limit=200)[0]
    return np.log(num / (stats.norm.cdf(hi, z0, s0) - stats.norm.cdf(lo, z0, s0)))


def test_photoz_matches_quadrature(photo_cat):
    like = CatalogLikelihood(photo_cat)
    spec = CatalogLikelihood(photo_cat.drop_vars("z_err"))
    assert like.n_photoz == 60 and like.n_terms == 60
    per = like.per_halo(*REDDICK)
    assert np.array_equal(per[1::2], spec.per_halo(*REDDICK)[1::2])  # spectroscopic halos unchanged
    for k in (0, 4, 10):
        assert per[k] == pytest.approx(_brute_photoz(photo_cat, k, REDDICK), abs=1e-5)
    assert float(like(*REDDICK)) == pytest.approx(per.sum(), rel=1e-12)


def test_photoz_with_limit_and_grouping(photo_cat):
    lmin = float(photo_cat.lum_obs.min()) * 0.9
    like = CatalogLikelihood(photo_cat, lum_min=lmin)
    per = like.per_halo(*REDDICK)
    assert per[2] == pytest.approx(_brute_photoz(photo_cat, 2, REDDICK, lum_min=lmin), abs=1e-5)
    grouped = CatalogLikelihood(photo_cat, group_tol=0.05)
    exact = CatalogLikelihood(photo_cat)
    assert float(grouped(*REDDICK)) == pytest.approx(float(exact(*REDDICK)), abs=1e-6)
    _, g = exact.value_and_grad(*REDDICK)
    for j in (0, 1, 3, 4):
        assert g[j] == pytest.approx(_central_difference(exact, j), rel=1e-5, abs=1e-6)


# ------------------------------------------------------------------------------------------
# table priors
# ------------------------------------------------------------------------------------------

def test_table_prior_equals_default_where_tables_agree():
    cat = mock_catalog(400, seed=8)
    tinker = TinkerPrior()
    table = tinker.table()  # the default prior on its z nodes and the default mass grid
    tp = TablePrior(table.rename(prior_z="z"))
    a = CatalogLikelihood(cat)
    b = CatalogLikelihood(cat, tp)
    pts = [REDDICK, (10.6, 0.38, 2.35e14, 1.2, 0.2)]
    for p in pts:
        assert float(b(*p)) == pytest.approx(float(a(*p)), rel=1e-12, abs=1e-9)
        np.testing.assert_allclose(b.value_and_grad(*p)[1], a.value_and_grad(*p)[1], rtol=1e-10, atol=1e-9)


def test_functional_form_caches_table_priors_by_content():
    cat = mock_catalog(200, seed=9)
    log_likelihood(cat, *REDDICK)
    default = next(iter(likemod._CACHE.values()))
    log_likelihood(cat, *REDDICK)
    assert next(iter(likemod._CACHE.values())) is default
    table = TinkerPrior().table().rename(prior_z="z")
    v1 = log_likelihood(cat, *REDDICK, prior=table)
    first = next(iter(likemod._CACHE.values()))
    v2 = log_likelihood(cat, *REDDICK, prior=table.copy(deep=True))  # a new object, same content
    assert next(iter(likemod._CACHE.values())) is first
    assert float(v1) == float(v2)
    log_likelihood(cat, *REDDICK, prior=table * 1.5 + 0 * table.mass)  # other content: rebuilt (normalised the same)
    assert next(iter(likemod._CACHE.values())) is not first
