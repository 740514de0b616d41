"""Shared hypothesis strategies for catalogues, hyperparameters and mass grids.

Two families:

- ``valid_*`` draw inputs that must be accepted, including the awkward corners of the valid
  domain (redshifts exactly at the prior's limits, luminosities near the float limits, ra just
  below 360, dec at the poles, scatters near zero or huge, zero weights);
- ``catalogs()`` / ``hypers()`` draw anything: a valid input or one corrupted in one or more
  ways (NaN, inf, zeros, negatives, duplicates, empty, missing variables, odd dtypes, extra
  dimensions, ra/dec outside their ranges, z outside the prior).

Sizes stay small (a handful of halos and realizations) so that a cube can be computed for every
example.  Use :data:`FUZZ` (or :data:`QUICK`) as the ``@settings`` of a test; examples come from a
fixed seed, so runs are reproducible, unless the environment sets ``MASSMAP_FUZZ=random``
(``MASSMAP_FUZZ_EXAMPLES=N`` sets the number of examples of a fuzz test, default 60).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import xarray as xr
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from massmap_xr.model.relation import HYPER_NAMES

__all__ = [
    "FLOAT_SPECIALS",
    "FUZZ",
    "QUICK",
    "Z_MAX",
    "catalogs",
    "hyper_mappings",
    "hypers",
    "mass_grids",
    "sky_fields",
    "valid_catalogs",
    "valid_hypers",
]

#: examples are drawn from a fixed seed (reproducible runs) unless MASSMAP_FUZZ=random
_FIXED = os.environ.get("MASSMAP_FUZZ", "fixed") != "random"
#: examples per fuzz test (raise it for a deeper local run: MASSMAP_FUZZ_EXAMPLES=1000)
_EXAMPLES = int(os.environ.get("MASSMAP_FUZZ_EXAMPLES", "60"))
#: fuzzing profile: 60 examples, no deadline (the first example compiles kernels)
FUZZ = settings(
    max_examples=_EXAMPLES,
    deadline=None,
    derandomize=_FIXED,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
#: lighter profile for property tests
QUICK = settings(max_examples=30, deadline=None, derandomize=_FIXED, suppress_health_check=[HealthCheck.too_slow])

#: upper redshift of the priors the fuzz tests use (TinkerPrior() tabulates 0 to 4)
Z_MAX = 4.0

TINY = 5e-324  # smallest subnormal float64
HUGE = float(np.finfo(float).max)
#: values every numeric input should meet: NaN, infinities, signed zeros, tiny and huge, negative
FLOAT_SPECIALS = (np.nan, np.inf, -np.inf, 0.0, -0.0, TINY, -TINY, 1e-300, 1e300, -1e300, HUGE, -HUGE, -1.0)


def _log_uniform(lo: float, hi: float) -> st.SearchStrategy[float]:
    """Floats log-uniform in [10**lo, 10**hi]."""
    return st.floats(lo, hi).map(lambda e: float(10.0**e))


def _mix(typical: st.SearchStrategy, corners: tuple) -> st.SearchStrategy[float]:
    """Mostly typical values, often a corner of the valid domain."""
    return st.one_of(typical, typical, st.sampled_from(corners))


# --- valid values, corners included -----------------------------------------------------
VALID = {
    "z": _mix(st.floats(0.0, Z_MAX), (0.0, Z_MAX, Z_MAX - 1e-12, np.nextafter(Z_MAX, 0), TINY, 1e-12, 3.19)),
    "lum_obs": _mix(_log_uniform(2.0, 6.0), (TINY, 1e-300, 1e-30, 1.0, 1e30, 1e300, HUGE)),
    "ra": _mix(st.floats(0.0, 360.0, exclude_max=True), (0.0, TINY, np.nextafter(360.0, 0), 359.9999, 180.0)),
    "dec": _mix(st.floats(-90.0, 90.0), (-90.0, 90.0, 0.0, -0.0, np.nextafter(90.0, 0))),
    "sigma_obs": _mix(_log_uniform(-3.0, 0.5), (TINY, 1e-300, 1e-160, 1e-8, 10.0, 1e300)),
    "mass_true": _mix(_log_uniform(9.0, 16.0), (TINY, 1e300)),
}
#: the moderate part of the valid domain: realistic luminosities, scatters and hyperparameters
#: around the Reddick (2013) values (every halo within a few sigma of some mean luminosity on a
#: 1e10 to 10^15.5 M_sun grid)
MODERATE = {
    **VALID,
    "lum_obs": _log_uniform(3.2, 5.0),
    "sigma_obs": _mix(st.floats(0.01, 0.5), (0.01, 0.5)),
    "mass_true": _log_uniform(10.0, 15.5),
}
VALID_HYPER = {
    "alpha1": _mix(st.floats(9.0, 12.0), (0.0, -50.0, 50.0, -1e3, 1e3, 1e300, -HUGE)),
    "alpha2": _mix(st.floats(0.1, 1.0), (0.0, -0.4, 1e-12, TINY, 5.0, 100.0, 1e300, -HUGE)),
    "alpha3": _mix(_log_uniform(12.0, 16.0), (TINY, 1e-300, 1.0, 1e300, HUGE)),
    "alpha4": _mix(st.floats(0.0, 2.0), (0.0, -5.0, 5.0, 1e3, 1e300, -HUGE)),
    "S": _mix(_log_uniform(-3.0, 0.5), (TINY, 1e-300, 1e-160, 1e-8, 10.0, 1e300)),
    "weight": _mix(st.floats(0.0, 1.0), (0.0, TINY, 1e300, HUGE)),
}

MODERATE_HYPER = {
    "alpha1": st.floats(10.6, 10.8),
    "alpha2": st.floats(0.33, 0.39),
    "alpha3": st.sampled_from([2.35e14, 1e14, 5e14]),
    "alpha4": st.floats(0.9, 1.3),
    "S": st.floats(0.1, 0.3),
    "weight": _mix(st.floats(0.0, 1.0), (0.0, TINY, 1e300, HUGE)),
}

# --- invalid values, per variable --------------------------------------------------------
INVALID = {
    "z": (np.nan, np.inf, -np.inf, -1e-12, -1.0, np.nextafter(Z_MAX, 10), Z_MAX + 1e-9, 10.0, 1e300),
    "lum_obs": (np.nan, np.inf, -np.inf, 0.0, -0.0, -TINY, -1.0, -20.5, -HUGE),
    "ra": (np.nan, np.inf, -np.inf, 360.0, -TINY, -1e-9, -180.0, 720.0, 9000.0, 1e300),
    "dec": (np.nan, np.inf, -np.inf, np.nextafter(90.0, 100), -90.0000001, 180.0, -1e300),
    "sigma_obs": (np.nan, np.inf, -np.inf, 0.0, -0.0, -TINY, -0.05),
    "mass_true": (np.nan, np.inf, 0.0, -1e12),
}
INVALID_HYPER = {
    "alpha1": (np.nan, np.inf, -np.inf),
    "alpha2": (np.nan, np.inf, -np.inf),
    "alpha3": (np.nan, np.inf, 0.0, -0.0, -TINY, -2.35e14, 14.37 - 20.0),
    "alpha4": (np.nan, -np.inf),
    "S": (np.nan, np.inf, 0.0, -0.0, -TINY, -0.155),
    "weight": (np.nan, np.inf, -TINY, -1.0),
}
ODD_DTYPES = ("float32", "float16", "int64", "uint8", "object", "str", "bool", "complex", "timedelta", "datetime")


def _cast(values: np.ndarray, kind: str) -> np.ndarray:
    """``values`` converted to an odd dtype, the way a careless reader might produce it."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        if kind == "str":
            return values.astype(str)
        if kind == "object":
            return values.astype(object)
        if kind == "complex":
            return values.astype(complex) + 1j
        if kind == "timedelta":
            return np.arange(values.size).astype("m8[s]")
        if kind == "datetime":
            return np.arange(values.size).astype("M8[s]")
        if kind == "bool":
            return values > 0
        if kind in ("int64", "uint8"):
            return np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0).clip(-1e18, 1e18).astype(kind)
        return values.astype(kind)


def _column(draw, n: int, strategy: st.SearchStrategy) -> np.ndarray:
    return np.array(draw(st.lists(strategy, min_size=n, max_size=n)), dtype=float)


def _dataset(columns: dict, ids: np.ndarray, *, positions_as_coords: bool = True) -> xr.Dataset:
    coords: dict = {"halo": ids}
    data = {}
    for k, v in columns.items():
        dims = ("halo",) if np.ndim(v) == 1 else ("halo", "extra")
        if k in ("ra", "dec") and positions_as_coords:
            coords[k] = (dims, v, {"units": "deg"})
        else:
            data[k] = (dims, v)
    return xr.Dataset(data, coords=coords)


@st.composite
def valid_catalogs(
    draw, *, min_halos: int = 1, max_halos: int = 5, sigma: bool | None = None, extreme: bool = True
) -> xr.Dataset:
    """Catalogues that every check must accept (valid corners included).

    Parameters
    ----------
    min_halos, max_halos : int
        Size range (min_halos >= 1).
    sigma : bool or None
        Whether to include a per-halo ``sigma_obs`` (None: either).
    extreme : bool, default True
        Include the extreme corners of the valid domain (luminosities and scatters near the
        float limits); False keeps luminosities and scatters realistic.
    """
    domain = VALID if extreme else MODERATE
    n = draw(st.integers(max(min_halos, 1), max_halos))
    names = ["z", "lum_obs", "ra", "dec"]
    if draw(st.booleans()) if sigma is None else sigma:
        names.append("sigma_obs")
    if draw(st.booleans()):
        names.append("mass_true")
    columns = {k: _column(draw, n, domain[k]) for k in names}
    ids = draw(
        st.one_of(
            st.just(np.arange(n, dtype=np.int64)),
            st.lists(st.integers(-(2**63), 2**63 - 1), min_size=n, max_size=n, unique=True).map(
                lambda v: np.array(v, dtype=np.int64)
            ),
            st.lists(st.integers(0, 2**64 - 1), min_size=n, max_size=n, unique=True).map(
                lambda v: np.array(v, dtype=np.uint64)
            ),
        )
    )
    for k in names:
        if draw(st.integers(0, 9)) == 0:  # lossless narrower or integer dtypes are valid too
            kind = draw(st.sampled_from(["float32", "int64"]))
            cast = _cast(columns[k], kind)
            if np.all(np.isfinite(cast.astype(float))) and _still_valid(k, cast.astype(float)):
                columns[k] = cast
    return _dataset(columns, ids)


def _still_valid(k: str, a: np.ndarray) -> bool:
    return {
        "z": lambda: np.all((a >= 0) & (a <= Z_MAX)),
        "ra": lambda: np.all((a >= 0) & (a < 360)),
        "dec": lambda: np.all(np.abs(a) <= 90),
    }.get(k, lambda: np.all(a > 0))()


CORRUPTIONS = ("value", "value", "value", "duplicate_ids", "empty", "missing", "dtype", "extra_dim",
               "float_ids", "string_ids", "positions_as_data", "units_rad")


@st.composite
def catalogs(draw, *, max_halos: int = 5, extreme: bool = True, corruptions: tuple = CORRUPTIONS) -> xr.Dataset:
    """Any catalogue: valid (about a third) or corrupted in one to three ways.

    Parameters
    ----------
    max_halos : int
        Largest number of halos.
    extreme : bool
        Passed to :func:`valid_catalogs` for the valid part.
    corruptions : tuple of str
        The kinds of corruption to draw from (default all of :data:`CORRUPTIONS`).
    """
    ds = draw(valid_catalogs(max_halos=max_halos, extreme=extreme))
    if draw(st.integers(0, 2)) == 0:
        return ds
    n = ds.sizes["halo"]
    columns = {k: np.asarray(ds[k].values) for k in ("z", "lum_obs", "ra", "dec", "sigma_obs", "mass_true") if k in ds}
    ids = np.asarray(ds["halo"].values)
    as_coords = True
    units = None
    empty = False
    for what in draw(st.lists(st.sampled_from(corruptions), min_size=1, max_size=3)):
        k = draw(st.sampled_from(sorted(columns))) if columns else None
        if k is not None and (columns[k].dtype.kind not in "iuf" or columns[k].ndim != 1):
            k = None  # already corrupted: leave it
        if what == "value" and k is not None:
            a = columns[k].astype(float)
            idx = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n))
            a[idx] = draw(st.sampled_from(INVALID[k]))
            columns[k] = a
        elif what == "duplicate_ids" and n > 1:
            ids = ids.copy()
            ids[-1] = ids[0]
        elif what == "empty":
            empty = True
        elif what == "missing" and k is not None:
            del columns[k]
        elif what == "dtype" and k is not None:
            columns[k] = _cast(columns[k], draw(st.sampled_from(ODD_DTYPES)))
        elif what == "extra_dim" and k is not None:
            columns[k] = np.repeat(columns[k][:, None], 2, axis=1)
        elif what == "float_ids" and ids.dtype.kind in "iu":
            ids = ids.astype(float) + 0.5
        elif what == "string_ids":
            ids = np.array([f"h{i}" for i in range(n)])
        elif what == "positions_as_data":
            as_coords = False
        elif what == "units_rad":
            units = draw(st.sampled_from(["rad", "arcmin"]))
    if empty:
        columns = {c: v[:0] for c, v in columns.items()}
        ids = ids[:0]
    out = _dataset(columns, ids, positions_as_coords=as_coords)
    if units is not None:
        for c in ("ra", "dec"):
            if c in out.variables:
                out[c].attrs["units"] = units
    return out


@st.composite
def valid_hypers(
    draw, *, min_realizations: int = 1, max_realizations: int = 4, weight: bool | None = None, extreme: bool = True
) -> xr.Dataset:
    """Hyperparameter Datasets that must be accepted (valid corners included unless ``extreme=False``)."""
    domain = VALID_HYPER if extreme else MODERATE_HYPER
    n = draw(st.integers(max(min_realizations, 1), max_realizations))
    values = {k: _column(draw, n, domain[k]) for k in HYPER_NAMES}
    if draw(st.booleans()) if weight is None else weight:
        w = _column(draw, n, domain["weight"])
        if not np.any(w > 0):
            w[draw(st.integers(0, n - 1))] = 1.0
        values["weight"] = w
    return xr.Dataset(
        {k: ("realization", v) for k, v in values.items()},
        coords={"realization": np.arange(n, dtype=np.int64)},
    )


HYPER_CORRUPTIONS = ("value", "value", "value", "zero_weights", "empty", "missing", "dtype", "extra_dim", "no_dim")


@st.composite
def hypers(draw, *, max_realizations: int = 4, extreme: bool = True) -> xr.Dataset:
    """Any hyperparameter Dataset: valid (about a third) or corrupted in one to three ways."""
    ds = draw(valid_hypers(max_realizations=max_realizations, extreme=extreme))
    if draw(st.integers(0, 2)) == 0:
        return ds
    n = ds.sizes["realization"]
    values = {k: np.asarray(ds[k].values) for k in ds.data_vars}
    dim = "realization"
    empty = False
    for what in draw(st.lists(st.sampled_from(HYPER_CORRUPTIONS), min_size=1, max_size=3)):
        k = draw(st.sampled_from(sorted(values))) if values else None
        if k is not None and (values[k].dtype.kind not in "iuf" or values[k].ndim != 1):
            k = None  # already corrupted: leave it
        if what == "value" and k is not None:
            a = values[k].astype(float)
            idx = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n))
            a[idx] = draw(st.sampled_from(INVALID_HYPER[k]))
            values[k] = a
        elif what == "zero_weights":
            values["weight"] = np.zeros(n)
        elif what == "empty":
            empty = True
        elif what == "missing" and k is not None:
            del values[k]
        elif what == "dtype" and k is not None:
            values[k] = _cast(values[k], draw(st.sampled_from(ODD_DTYPES)))
        elif what == "extra_dim" and k is not None:
            values[k] = np.repeat(values[k][:, None], 2, axis=1)
        elif what == "no_dim":
            dim = "sample"
    if empty:
        values = {c: v[:0] for c, v in values.items()}
        n = 0
    return xr.Dataset(
        {k: ((dim,) if v.ndim == 1 else (dim, "extra"), v) for k, v in values.items()},
        coords={dim: np.arange(n, dtype=np.int64)},
    )


@st.composite
def hyper_mappings(draw) -> dict:
    """Mappings name -> scalar, list or array, as users pass them to ``as_hyper``."""
    n = draw(st.integers(0, 3))
    out = {}
    for k in (*HYPER_NAMES, "weight"):
        choice = draw(st.integers(0, 9))
        if choice == 0 and k != "weight":
            continue  # missing
        if k == "weight" and choice < 5:
            continue
        strategy = st.one_of(VALID_HYPER[k], st.sampled_from(INVALID_HYPER[k]))
        if choice == 1:
            out[k] = draw(strategy)  # scalar, broadcast
        elif choice == 2:
            out[k] = draw(st.sampled_from(["x", "1.5", None, True, [1.0, "a"], [[1.0, 2.0]], 1 + 2j]))
        elif choice == 3:
            out[k] = draw(st.lists(strategy, min_size=0, max_size=4))  # maybe mismatched length
        else:
            out[k] = np.array(draw(st.lists(strategy, min_size=n, max_size=n)), dtype=float)
    return out


@st.composite
def mass_grids(draw) -> object:
    """Mass grids as users pass them: valid (log-uniform or not) or broken in one way."""
    n = draw(st.integers(2, 12))
    lo = draw(st.floats(8.0, 14.0))
    hi = lo + draw(st.floats(0.5, 6.0))
    grid = np.logspace(lo, hi, n)
    what = draw(st.sampled_from(["valid", "uneven", "reversed", "repeated", "special", "one", "empty", "2d", "str",
                                 "none"]))
    if what == "uneven":
        grid = np.sort(np.unique(grid * draw(st.floats(1.0, 1.01))))
    elif what == "reversed":
        grid = grid[::-1]
    elif what == "repeated":
        grid[-1] = grid[-2]
    elif what == "special":
        grid[draw(st.integers(0, n - 1))] = draw(st.sampled_from(FLOAT_SPECIALS))
    elif what == "one":
        grid = grid[:1]
    elif what == "empty":
        grid = grid[:0]
    elif what == "2d":
        grid = np.vstack([grid, grid])
    elif what == "str":
        grid = [str(v) for v in grid[:-1]] + ["heavy"]
    elif what == "none":
        return None
    return grid


@st.composite
def sky_fields(
    draw, *, min_halos: int = 30, max_halos: int = 200, max_size_arcmin: float = 240.0
) -> tuple[np.ndarray, np.ndarray]:
    """Ordinary fields in degrees: square, 5′ to ``max_size_arcmin`` wide, anywhere with |dec| <= 80.

    The centre's ra covers the wrap at 0/360 (e.g. a field centred at ra = 0.1 straddles it).
    """
    from massmap_xr.catalog import uniform_field_positions

    n = draw(st.integers(min_halos, max_halos))
    ra0 = draw(st.one_of(st.floats(0.0, 360.0, exclude_max=True), st.sampled_from([0.0, 0.1, 359.9, 180.0])))
    dec0 = draw(st.floats(-80.0, 80.0))
    size = draw(st.floats(5.0, max_size_arcmin))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return uniform_field_positions(n, rng, center=(ra0, dec0), size_arcmin=size)
