"""Hyperparameter samples of the mass–luminosity relation.

A hyperparameter table is an :class:`xarray.Dataset` with dimension ``realization`` and
variables ``alpha1 alpha2 alpha3 alpha4 S`` (optional ``weight``, non-negative).  Sources:

- :func:`reddick2013`: draws from the Reddick et al. (2013) constraints (a prior, not a
  posterior of your catalogue);
- :func:`read_hyper`: a CSV or NetCDF table with those columns/variables;
- :func:`from_arviz`: an ArviZ-style posterior with ``(chain, draw)`` dims, stacked into
  ``realization`` (without a MultiIndex, which Zarr cannot store).

:func:`as_hyper` accepts any of these (or a mapping of arrays) and validates it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import xarray as xr

from massmap_xr.errors import HyperparameterError, format_offenders
from massmap_xr.relation import HYPER_NAMES

__all__ = ["REDDICK2013", "reddick2013", "read_hyper", "from_arviz", "as_hyper", "validate_hyper", "hyper_hash"]

#: Reddick et al. (2013) constraints used as the default hyperparameter distribution:
#: name -> (mean, standard deviation); alpha3 (pivot mass, M_sun) is fixed.
REDDICK2013 = {
    "alpha1": (10.709, 0.022),
    "alpha2": (0.359, 0.009),
    "alpha3": (2.35e14, 0.0),
    "alpha4": (1.10, 0.06),
    "S": (0.155, 0.0009),
}

_ATTRS = {
    "alpha1": {"long_name": "normalisation of ln mean luminosity", "units": "1"},
    "alpha2": {"long_name": "slope of ln luminosity in ln mass", "units": "1"},
    "alpha3": {"long_name": "pivot mass", "units": "solMass"},
    "alpha4": {"long_name": "redshift evolution of ln luminosity", "units": "1"},
    "S": {"long_name": "intrinsic log-normal scatter of luminosity (natural log)", "units": "1"},
    "weight": {"long_name": "realization weight", "units": "1"},
}


def _dataset(values: Mapping[str, np.ndarray], attrs: dict | None = None) -> xr.Dataset:
    n = len(next(iter(values.values())))
    ds = xr.Dataset(
        {k: ("realization", np.asarray(v, dtype=float), dict(_ATTRS.get(k, {}))) for k, v in values.items()},
        coords={"realization": np.arange(n, dtype=np.int64)},
        attrs=attrs or {},
    )
    return ds


def reddick2013(n: int, seed=None) -> xr.Dataset:
    """Draw ``n`` hyperparameter realizations from the Reddick (2013) constraints.

    α1 ~ N(10.709, 0.022), α2 ~ N(0.359, 0.009), α3 = 2.35e14 M_sun, α4 ~ N(1.10, 0.06),
    S ~ N(0.155, 0.0009), independent.

    Parameters
    ----------
    n : int
        Number of realizations (>= 1).
    seed : int, numpy.random.Generator or None
        Seed for reproducible draws.

    Returns
    -------
    xarray.Dataset
        dims (realization,), variables alpha1..alpha4, S.

    Examples
    --------
    >>> h = reddick2013(10, seed=1)
    >>> h.sizes["realization"], float(h.alpha3[0])
    (10, 235000000000000.0)
    """
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise HyperparameterError(f"reddick2013: n must be a positive integer, got {n!r}")
    rng = np.random.default_rng(seed)
    vals = {k: mu + sd * rng.standard_normal(int(n)) if sd > 0 else np.full(int(n), mu) for k, (mu, sd) in REDDICK2013.items()}
    return _dataset(vals, {"source": "Reddick et al. 2013 constraints (prior draws)", "seed": str(seed)})


def read_hyper(path) -> xr.Dataset:
    """Read a hyperparameter table from CSV (one column per name) or NetCDF.

    An ArviZ-style NetCDF (``chain``/``draw`` dims, or an InferenceData file with a
    ``posterior`` group) is stacked into ``realization``.
    """
    path = Path(path)
    if not path.exists():
        raise HyperparameterError(f"hyperparameter file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".txt", ".tsv"):
        import pandas as pd

        sep = "," if suffix == ".csv" else r"\s+"
        df = pd.read_csv(path, sep=sep)
        missing = [k for k in HYPER_NAMES if k not in df.columns]
        if missing:
            raise HyperparameterError(
                f"{path}: missing column(s) {missing}; a hyperparameter table needs columns "
                f"{list(HYPER_NAMES)} (optional 'weight'), found {list(df.columns)}"
            )
        cols = [*HYPER_NAMES] + (["weight"] if "weight" in df.columns else [])
        return as_hyper(_dataset({k: df[k].to_numpy() for k in cols}, {"source": str(path)}))
    if suffix in (".nc", ".nc4", ".netcdf", ".h5"):
        try:
            ds = xr.open_dataset(path, group="posterior")
        except (OSError, KeyError, ValueError):
            ds = xr.open_dataset(path)
        return as_hyper(ds.load())
    raise HyperparameterError(f"{path}: unknown hyperparameter file type {suffix!r}; use .csv or .nc")


def from_arviz(posterior) -> xr.Dataset:
    """Stack an ArviZ posterior (``InferenceData`` or Dataset with ``chain``, ``draw``).

    ``(chain, draw)`` become one ``realization`` dimension with plain integer labels; the
    original chain and draw of each realization are kept as coordinates.
    """
    ds = getattr(posterior, "posterior", posterior)
    if not isinstance(ds, xr.Dataset):
        raise HyperparameterError(f"from_arviz: expected an InferenceData or Dataset, got {type(posterior).__name__}")
    if not {"chain", "draw"} <= set(ds.dims):
        raise HyperparameterError(f"from_arviz: expected dims ('chain', 'draw'), got {tuple(ds.dims)}")
    names = [k for k in (*HYPER_NAMES, "weight") if k in ds]
    ds = ds[names].transpose("chain", "draw", ...)
    n_chain, n_draw = ds.sizes["chain"], ds.sizes["draw"]
    chain = np.repeat(ds["chain"].values if "chain" in ds.coords else np.arange(n_chain), n_draw)
    draw = np.tile(ds["draw"].values if "draw" in ds.coords else np.arange(n_draw), n_chain)
    st = ds.drop_vars([c for c in ("chain", "draw") if c in ds.coords]).stack(
        realization=("chain", "draw"), create_index=False
    )
    st = st.drop_vars([c for c in ("chain", "draw") if c in st.coords])
    st = st.assign_coords(
        realization=np.arange(n_chain * n_draw, dtype=np.int64),
        chain=("realization", chain),
        draw=("realization", draw),
    )
    st.attrs = dict(ds.attrs)
    return st


def validate_hyper(hyper: xr.Dataset) -> None:
    """Check a hyperparameter Dataset; raise :class:`HyperparameterError` listing every problem."""
    if not isinstance(hyper, xr.Dataset):
        raise HyperparameterError(f"hyperparameters must be an xarray.Dataset, got {type(hyper).__name__}")
    problems = []
    if "realization" not in hyper.dims:
        raise HyperparameterError(f"hyperparameters need a 'realization' dimension, got dims {tuple(hyper.dims)}")
    n = hyper.sizes["realization"]
    if n == 0:
        raise HyperparameterError("hyperparameters: zero realizations; provide at least one draw")
    missing = [k for k in HYPER_NAMES if k not in hyper]
    if missing:
        raise HyperparameterError(
            f"hyperparameters: missing variable(s) {missing}; need {list(HYPER_NAMES)} along 'realization'"
        )
    labels = hyper["realization"].values
    for k in (*HYPER_NAMES, "weight"):
        if k not in hyper:
            continue
        v = hyper[k]
        if v.dims != ("realization",):
            problems.append(f"{k}: must have dims ('realization',), has {v.dims}")
            continue
        if not np.issubdtype(v.dtype, np.number):
            problems.append(f"{k}: must be numeric, has dtype {v.dtype}")
            continue
        a = np.asarray(v.values, dtype=float)
        bad = ~np.isfinite(a)
        if bad.any():
            problems.append(f"{k}: {int(bad.sum())} NaN/inf value(s) at realization(s) {format_offenders(labels[bad])}")
            continue
        rule = {"S": ("S must be > 0", a <= 0), "alpha3": ("alpha3 (pivot mass) must be > 0", a <= 0),
                "weight": ("weights must be >= 0", a < 0)}.get(k)
        if rule is not None and rule[1].any():
            problems.append(f"{k}: {rule[0]}; {int(rule[1].sum())} violate it at realization(s) {format_offenders(labels[rule[1]])}")
    if "weight" in hyper and not problems:
        if float(np.sum(hyper["weight"].values)) <= 0:
            problems.append("weight: all weights are zero; at least one realization needs positive weight")
    if problems:
        raise HyperparameterError("invalid hyperparameters:\n  - " + "\n  - ".join(problems))


def as_hyper(hyper) -> xr.Dataset:
    """Normalise any supported hyperparameter source to a validated Dataset with ``weight``.

    Accepts a Dataset (``realization`` dim, or ArviZ ``chain``/``draw``), an ArviZ
    InferenceData, a mapping name -> array, a path (CSV/NetCDF), or an int ``n`` meaning
    ``reddick2013(n, seed=0)``.  The returned ``weight`` sums to 1.
    """
    if isinstance(hyper, (str, Path)):
        return read_hyper(hyper)
    if isinstance(hyper, (int, np.integer)) and not isinstance(hyper, bool):
        hyper = reddick2013(int(hyper), seed=0)
    elif hasattr(hyper, "posterior") and not isinstance(hyper, xr.Dataset):
        hyper = from_arviz(hyper)
    elif isinstance(hyper, Mapping) and not isinstance(hyper, xr.Dataset):
        try:
            arrays = {k: np.atleast_1d(np.asarray(v, dtype=float)) for k, v in hyper.items()}
        except (TypeError, ValueError) as exc:
            raise HyperparameterError(f"hyperparameters: values must be numeric arrays ({exc})") from None
        arrays = dict(zip(arrays, np.broadcast_arrays(*arrays.values()), strict=True))
        hyper = _dataset(arrays)
    if isinstance(hyper, xr.Dataset) and {"chain", "draw"} <= set(hyper.dims):
        hyper = from_arviz(hyper)
    validate_hyper(hyper)
    names = [*HYPER_NAMES, "weight"] if "weight" in hyper else list(HYPER_NAMES)
    out = hyper[names].copy()
    for k in names:
        out[k] = out[k].astype(float)
        out[k].attrs = {**_ATTRS.get(k, {}), **out[k].attrs}
    w = np.asarray(out["weight"].values, dtype=float) if "weight" in out else np.ones(out.sizes["realization"])
    out["weight"] = ("realization", w / w.sum(), _ATTRS["weight"])
    if "realization" not in out.coords:
        out = out.assign_coords(realization=np.arange(out.sizes["realization"], dtype=np.int64))
    return out


def hyper_hash(hyper: xr.Dataset) -> str:
    """SHA-256 of the hyperparameter values (names, order and weights), for store provenance."""
    h = hashlib.sha256()
    for k in (*HYPER_NAMES, "weight"):
        if k in hyper:
            h.update(k.encode())
            h.update(np.ascontiguousarray(hyper[k].values, dtype="<f8").tobytes())
    return h.hexdigest()
