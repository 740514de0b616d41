"""Hyperparameter samples of the mass–luminosity relation.

A hyperparameter table is an :class:`xarray.Dataset` with dimension ``realization`` and
variables ``alpha1 alpha2 alpha3 alpha4 S`` (optional ``weight``, non-negative).  Sources:

- :func:`reddick2013`: draws from the Reddick et al. (2013) constraints (a prior, not a
  posterior of your catalogue);
- :func:`read_hyper`: a CSV or NetCDF table with those columns/variables;
- :func:`from_arviz`: an ArviZ-style posterior with ``(chain, draw)`` dims, stacked into
  ``realization`` (without a MultiIndex, which Zarr cannot store); :func:`to_arviz` goes the
  other way, from inferred draws to ArviZ's layout.

:func:`as_hyper` accepts any of these (or a mapping of arrays) and validates it.

Every set of draws has a *kind*, the attribute ``hyper_kind`` (:func:`hyper_kind`):

- ``"posterior"``: draws from this catalogue's hyper-posterior P(θ | data) (e.g. from
  :func:`massmap_xr.inference.infer_hyperparameters`).  The marginal mass posterior is then the
  ``weight``-weighted mean of the per-draw posteriors.  The default for tables, ArviZ posteriors
  and mappings, unless stated otherwise with ``kind=``;
- ``"prior"``: draws from a prior P(θ) that knows nothing of this catalogue (the
  :func:`reddick2013` default).  The analysis then weights each draw, for each halo, by that
  halo's evidence P(L_obs,k | θ_r) (see :mod:`massmap_xr.analysis.weights`).

:func:`build_posterior` records the kind in the cube's attributes, and stores keep it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import xarray as xr

from massmap_xr.errors import HyperparameterError, InferenceError, describe_offenders, format_offenders
from massmap_xr.model.relation import HYPER_NAMES

__all__ = ["HYPER_ATTRS", "HYPER_KINDS", "REDDICK2013", "reddick2013", "read_hyper", "from_arviz", "to_arviz", "as_hyper",
           "validate_hyper", "hyper_hash", "hyper_kind", "check_hyper_kind"]

#: the kinds of hyperparameter draws (attribute ``hyper_kind``): prior draws or draws of this catalogue's hyper-posterior
HYPER_KINDS = ("prior", "posterior")

#: kind of draws that carry no ``hyper_kind`` attribute (tables, ArviZ posteriors, older cubes and stores)
DEFAULT_KIND = "posterior"


def check_hyper_kind(kind, who: str = "hyperparameters") -> str:
    """``kind`` if it is one of :data:`HYPER_KINDS`; :class:`HyperparameterError` otherwise."""
    if not isinstance(kind, str) or kind not in HYPER_KINDS:
        raise HyperparameterError(
            f"{who}: hyper_kind must be 'prior' (draws from a prior that ignores this catalogue, e.g. reddick2013) "
            f"or 'posterior' (draws from this catalogue's hyper-posterior), got {kind!r}"
        )
    return kind


def hyper_kind(obj) -> str:
    """Kind of the hyperparameter draws of a hyper Dataset or cube: its ``hyper_kind`` attribute,
    ``"posterior"`` when absent (see the module docstring)."""
    return check_hyper_kind(getattr(obj, "attrs", {}).get("hyper_kind", DEFAULT_KIND))

#: Reddick et al. (2013) constraints used as the default hyperparameter distribution:
#: name -> (mean, standard deviation); alpha3 (pivot mass, M_sun) is fixed.
REDDICK2013 = {
    "alpha1": (10.709, 0.022),
    "alpha2": (0.359, 0.009),
    "alpha3": (2.35e14, 0.0),
    "alpha4": (1.10, 0.06),
    "S": (0.155, 0.0009),
}

#: variable attributes (long_name, units) of a hyperparameter Dataset
HYPER_ATTRS = {
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
        {k: ("realization", np.asarray(v, dtype=float), dict(HYPER_ATTRS.get(k, {}))) for k, v in values.items()},
        coords={"realization": np.arange(n, dtype=np.int64)},
        attrs=attrs or {},
    )
    return ds


def reddick2013(n: int, seed=None, *, kind: str = "prior") -> xr.Dataset:
    """Draw ``n`` hyperparameter realizations from the Reddick (2013) constraints.

    α1 ~ N(10.709, 0.022), α2 ~ N(0.359, 0.009), α3 = 2.35e14 M_sun, α4 ~ N(1.10, 0.06),
    S ~ N(0.155, 0.0009), independent.  These are prior draws (``hyper_kind = "prior"``): the
    analysis weights them per halo by the halo's evidence.

    Parameters
    ----------
    n : int
        Number of realizations (>= 1).
    seed : int, numpy.random.Generator or None
        Seed for reproducible draws.
    kind : {"prior", "posterior"}, default "prior"
        ``hyper_kind`` recorded on the draws; ``"posterior"`` only if these constraints are known
        to be the hyper-posterior of the catalogue analysed.

    Returns
    -------
    xarray.Dataset
        dims (realization,), variables alpha1..alpha4, S; attribute ``hyper_kind``.

    Examples
    --------
    >>> h = reddick2013(10, seed=1)
    >>> h.sizes["realization"], float(h.alpha3[0]), h.attrs["hyper_kind"]
    (10, 235000000000000.0, 'prior')
    """
    check_hyper_kind(kind, "reddick2013")
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise HyperparameterError(f"reddick2013: n must be a positive integer, got {n!r}")
    rng = np.random.default_rng(seed)
    vals = {k: mu + sd * rng.standard_normal(int(n)) if sd > 0 else np.full(int(n), mu) for k, (mu, sd) in REDDICK2013.items()}
    return _dataset(vals, {"source": "Reddick et al. 2013 constraints (prior draws)", "seed": str(seed),
                           "hyper_kind": kind})


def read_hyper(path, *, kind: str | None = None) -> xr.Dataset:
    """Read a hyperparameter table from CSV (one column per name) or NetCDF.

    An ArviZ-style NetCDF (``chain``/``draw`` dims, or an InferenceData file with a
    ``posterior`` group) is stacked into ``realization``.

    ``kind`` (``"prior"`` or ``"posterior"``) sets ``hyper_kind``; by default a NetCDF file's own
    ``hyper_kind`` attribute is kept, and draws without one are ``"posterior"``.
    """
    if kind is not None:
        check_hyper_kind(kind, "read_hyper")
    path = Path(path)
    if not path.exists():
        raise HyperparameterError(f"hyperparameter file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".txt", ".tsv"):
        import pandas as pd

        sep = "," if suffix == ".csv" else r"\s+"
        try:
            df = pd.read_csv(path, sep=sep, comment="#")
        except Exception as exc:  # pandas parser errors: empty file, ragged rows, binary data, ...
            raise HyperparameterError(
                f"{path}: cannot be parsed as a hyperparameter table ({type(exc).__name__}: {str(exc).strip()}); "
                f"expected a header line with {list(HYPER_NAMES)} (optional 'weight') and one row per realization"
            ) from exc
        missing = [k for k in HYPER_NAMES if k not in df.columns]
        if missing:
            raise HyperparameterError(
                f"{path}: missing column(s) {missing}; a hyperparameter table needs columns "
                f"{list(HYPER_NAMES)} (optional 'weight'), found {list(df.columns)}"
            )
        cols = [*HYPER_NAMES] + (["weight"] if "weight" in df.columns else [])
        for k in cols:
            values = pd.to_numeric(df[k], errors="coerce")
            text = values.isna() & df[k].notna()
            if text.any():
                rows = np.flatnonzero(text.to_numpy())
                raise HyperparameterError(
                    f"{path}: column {k!r} must hold numbers, but {rows.size} row(s) hold text (first data rows "
                    f"{format_offenders(rows + 1)}: {format_offenders(df[k].to_numpy()[rows])}); fix those entries"
                )
        return as_hyper(_dataset({k: df[k].to_numpy() for k in cols}, {"source": str(path)}), kind=kind)
    if suffix in (".nc", ".nc4", ".netcdf", ".h5"):
        try:
            ds = xr.open_dataset(path, group="posterior")
        except (OSError, KeyError, ValueError):
            try:
                ds = xr.open_dataset(path)
            except Exception as exc:  # any reader failure is a bad input file
                raise HyperparameterError(
                    f"{path}: cannot be read as NetCDF ({type(exc).__name__}: {exc}); check the path and format"
                ) from exc
        return as_hyper(ds.load(), kind=kind)
    raise HyperparameterError(f"{path}: unknown hyperparameter file type {suffix!r}; use .csv or .nc")


def from_arviz(posterior, *, kind: str = "posterior") -> xr.Dataset:
    """Stack an ArviZ posterior (``InferenceData`` or Dataset with ``chain``, ``draw``).

    ``(chain, draw)`` become one ``realization`` dimension with plain integer labels; the
    original chain and draw of each realization are kept as coordinates.  ``kind`` is recorded
    as ``hyper_kind`` (default ``"posterior"``: the draws of a fit to this catalogue).
    """
    check_hyper_kind(kind, "from_arviz")
    ds = getattr(posterior, "posterior", posterior)
    if not isinstance(ds, xr.Dataset) and callable(getattr(posterior, "groups", None)):
        raise HyperparameterError(
            f"from_arviz: the {type(posterior).__name__} has no 'posterior' group (its groups: "
            f"{list(posterior.groups())}); pass one with posterior samples of {list(HYPER_NAMES)}, e.g. from "
            "arviz.from_emcee or infer_hyperparameters"
        )
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
    st.attrs = {**ds.attrs, "hyper_kind": kind}
    return st


def to_arviz(result: xr.Dataset, *, seed: int | None = 0):
    """The inferred hyperparameters in ArviZ's ``(chain, draw)`` layout.

    Parameters
    ----------
    result : xarray.Dataset
        Output of :func:`massmap_xr.inference.infer_hyperparameters` (``realization`` with ``chain``/``draw``
        coordinates).  Importance-weighted draws (non-uniform ``weight``) are first resampled
        (systematic resampling with ``seed``) into one unweighted chain, since ArviZ has no
        notion of weights.
    seed : int, optional
        Seed of that resampling.

    Returns
    -------
    arviz.InferenceData or xarray.Dataset
        An ``InferenceData`` with a ``posterior`` group when :mod:`arviz` is importable,
        otherwise a Dataset with dims ``(chain, draw)``.  Either is accepted by
        :func:`from_arviz` / :func:`as_hyper`.
    """
    if not isinstance(result, xr.Dataset) or "realization" not in result.dims:
        raise InferenceError("to_arviz expects the Dataset returned by infer_hyperparameters (dim 'realization')")
    missing = [k for k in HYPER_NAMES if k not in result]
    if missing:
        raise InferenceError(f"to_arviz: missing hyperparameter variable(s) {missing}")
    n = result.sizes["realization"]
    w = np.asarray(result["weight"].values, dtype=float) if "weight" in result else np.full(n, 1.0 / n)
    w = w / w.sum()
    names = [k for k in (*HYPER_NAMES, "log_likelihood") if k in result]
    attrs = {k: v for k, v in result.attrs.items() if isinstance(v, (str, int, float, np.integer, np.floating))}
    if not np.allclose(w, 1.0 / n, rtol=1e-9, atol=0) or "chain" not in result.coords:
        rng = np.random.default_rng(seed)
        pos = (rng.uniform() + np.arange(n)) / n
        idx = np.minimum(np.searchsorted(np.cumsum(w), pos), n - 1)
        arrays = {k: np.asarray(result[k].values)[idx][None, :] for k in names}
        attrs["resampled_from_weights"] = 1
    else:
        chain = np.asarray(result["chain"].values)
        draw = np.asarray(result["draw"].values)
        chains, ci = np.unique(chain, return_inverse=True)
        draws, di = np.unique(draw, return_inverse=True)
        if chains.size * draws.size != n:
            raise InferenceError("to_arviz: the (chain, draw) coordinates do not form a full grid")
        arrays = {}
        for k in names:
            a = np.full((chains.size, draws.size), np.nan)
            a[ci, di] = np.asarray(result[k].values)
            arrays[k] = a
    try:
        import arviz as az
    except ImportError:
        n_c, n_d = next(iter(arrays.values())).shape
        return xr.Dataset({k: (("chain", "draw"), v) for k, v in arrays.items()},
                          coords={"chain": np.arange(n_c), "draw": np.arange(n_d)}, attrs=attrs)
    post = {k: v for k, v in arrays.items() if k != "log_likelihood"}
    stats = {"lp": arrays["log_likelihood"]} if "log_likelihood" in arrays else None
    return az.from_dict(posterior=post, sample_stats=stats, attrs=attrs)


def validate_hyper(hyper: xr.Dataset) -> None:
    """Check a hyperparameter Dataset; raise :class:`HyperparameterError` listing every problem.

    Rules: an :class:`xarray.Dataset` with a ``realization`` dimension of length >= 1; variables
    ``alpha1 alpha2 alpha3 alpha4 S`` present; each of them (and ``weight`` if present) 1-D along
    ``realization``, numeric (integer or float) and finite; ``S`` > 0; ``alpha3`` (pivot mass,
    M_sun) > 0; ``weight`` >= 0 with a positive sum.  Every broken rule is reported in one
    error (also available one by one as its ``problems``), with the number of realizations
    breaking it and the first few labels.  The Dataset is not modified.

    Parameters
    ----------
    hyper : xarray.Dataset
        Hyperparameter realizations.

    Raises
    ------
    HyperparameterError
        If any rule is broken.

    Examples
    --------
    >>> h = reddick2013(3, seed=1)
    >>> validate_hyper(h)  # valid: returns None
    >>> try:
    ...     validate_hyper(h.assign(S=("realization", [0.15, -0.1, 0.0])))
    ... except HyperparameterError as err:
    ...     print(err.problems[0])
    S: must be > 0 (intrinsic scatter of ln L); broken by 2 of 3 realizations (first labels: 1, 2; values: -0.1, 0); drop these draws or fix the sampler's support
    """
    if not isinstance(hyper, xr.Dataset):
        raise HyperparameterError(
            f"hyperparameters must be an xarray.Dataset, got {type(hyper).__name__}; use as_hyper(...) to convert "
            "a mapping of arrays, an ArviZ posterior, a file path or a number of Reddick (2013) draws"
        )
    if "realization" not in hyper.dims:
        raise HyperparameterError(
            f"hyperparameters need a 'realization' dimension, got dims {tuple(hyper.dims)}; stack ArviZ "
            "(chain, draw) samples with from_arviz(...)"
        )
    n = hyper.sizes["realization"]
    if n == 0:
        raise HyperparameterError("hyperparameters: zero realizations; provide at least one draw")
    missing = [k for k in HYPER_NAMES if k not in hyper.variables]
    if missing:
        raise HyperparameterError(
            f"hyperparameters: missing variable(s) {missing}; need {list(HYPER_NAMES)} along 'realization' "
            f"(optional 'weight'), found {sorted(map(str, hyper.data_vars))}"
        )
    labels = np.asarray(hyper["realization"].values)
    problems: list[str] = []
    if "hyper_kind" in hyper.attrs and hyper.attrs["hyper_kind"] not in HYPER_KINDS:
        problems.append(f"hyper_kind: attribute must be 'prior' or 'posterior', got {hyper.attrs['hyper_kind']!r}; "
                        "set hyper.attrs['hyper_kind'] (prior draws need each halo's evidence in the analysis)")
    rules = {
        "S": (lambda a: a <= 0, "must be > 0 (intrinsic scatter of ln L)", "drop these draws or fix the sampler's support"),
        "alpha3": (lambda a: a <= 0, "must be > 0 (pivot mass in M_sun, not log10)",
                   "drop these draws, or convert a log10 pivot mass with 10**alpha3"),
        "weight": (lambda a: a < 0, "must be >= 0", "weights are relative probabilities: drop or fix the negative ones"),
    }
    for k in (*HYPER_NAMES, "weight"):
        if k not in hyper.variables:
            continue
        v = hyper[k]
        if v.dims != ("realization",):
            problems.append(f"{k}: must be 1-D along 'realization', has dims {v.dims}; select or stack the extra dimension(s)")
            continue
        if v.dtype.kind not in "iuf":
            problems.append(
                f"{k}: must be numeric (integer or float), has dtype {v.dtype}; convert with astype(float) if the "
                "values are numbers, or fix the table"
            )
            continue
        a = np.asarray(v.values, dtype=float)
        bad = ~np.isfinite(a)
        if bad.any():
            problems.append(
                f"{k}: must be finite; NaN or inf in {describe_offenders(labels, bad, values=a, noun='realization')}; "
                "drop these draws (e.g. divergent samples)"
            )
            continue
        if k in rules:
            test, text, todo = rules[k]
            bad = test(a)
            if bad.any():
                problems.append(
                    f"{k}: {text}; broken by {describe_offenders(labels, bad, values=a, noun='realization')}; {todo}"
                )
                continue
        if k == "weight" and not np.any(a > 0):
            problems.append(
                f"weight: all {n} weights are zero; at least one realization needs a positive weight "
                "(drop the variable for equal weights)"
            )
    if problems:
        raise HyperparameterError(
            f"invalid hyperparameters ({n} realizations), {len(problems)} problem(s):\n  - " + "\n  - ".join(problems),
            problems=problems,
        )


def as_hyper(hyper, *, kind: str | None = None) -> xr.Dataset:
    """Normalise any supported hyperparameter source to a validated Dataset with ``weight``.

    Accepts a Dataset (``realization`` dim, or ArviZ ``chain``/``draw``), an ArviZ
    InferenceData, a mapping name -> array, a path (CSV/NetCDF), or an int ``n`` meaning
    ``reddick2013(n, seed=0)``.  The returned ``weight`` sums to 1.  The input is not modified.

    The result always carries ``hyper_kind``: ``kind`` when given, else the input's own attribute,
    else ``"prior"`` for an int (Reddick 2013 draws) and ``"posterior"`` for anything else.

    Raises
    ------
    HyperparameterError
        If the input is of an unsupported type or breaks a rule of :func:`validate_hyper`.
    """
    if kind is not None:
        check_hyper_kind(kind, "as_hyper")
    if isinstance(hyper, (str, Path)):
        return read_hyper(hyper, kind=kind)
    if isinstance(hyper, (int, np.integer)) and not isinstance(hyper, (bool, np.bool_)):
        hyper = reddick2013(int(hyper), seed=0)
    elif hasattr(hyper, "posterior") and not isinstance(hyper, xr.Dataset):
        hyper = from_arviz(hyper)
    elif isinstance(hyper, Mapping) and not isinstance(hyper, xr.Dataset):
        hyper = _from_mapping(hyper)
    if isinstance(hyper, xr.Dataset) and {"chain", "draw"} <= set(hyper.dims):
        hyper = from_arviz(hyper)
    validate_hyper(hyper)
    names = [*HYPER_NAMES, "weight"] if "weight" in hyper else list(HYPER_NAMES)
    out = hyper[names].copy()
    for k in names:
        out[k] = out[k].astype(float)
        out[k].attrs = {**HYPER_ATTRS.get(k, {}), **out[k].attrs}
    w = np.asarray(out["weight"].values, dtype=float) if "weight" in out else np.ones(out.sizes["realization"])
    w = w / w.max()  # scale first: the plain sum of huge weights overflows
    out["weight"] = ("realization", w / w.sum(), HYPER_ATTRS["weight"])
    if "realization" not in out.coords:
        out = out.assign_coords(realization=np.arange(out.sizes["realization"], dtype=np.int64))
    out.attrs = {**out.attrs, "hyper_kind": kind or hyper.attrs.get("hyper_kind", DEFAULT_KIND)}
    return out


def _from_mapping(hyper: Mapping) -> xr.Dataset:
    """A realization Dataset from a mapping name -> scalar or 1-D array (broadcast to one length)."""
    if not hyper:
        raise HyperparameterError(f"hyperparameters: empty mapping; need {list(HYPER_NAMES)} (optional 'weight')")
    arrays = {}
    for k, v in hyper.items():
        a = np.atleast_1d(np.asarray(v))
        if a.dtype.kind in "bcmM":
            raise HyperparameterError(
                f"hyperparameters: {k} must be real numbers, got values of dtype {a.dtype}; convert them to float"
            )
        if a.dtype.kind not in "iuf":
            try:
                a = a.astype(float)
            except (TypeError, ValueError):
                raise HyperparameterError(
                    f"hyperparameters: {k} must be numeric, got values of dtype {a.dtype} "
                    f"(first: {format_offenders(a, 3)})"
                ) from None
        if a.ndim != 1:
            raise HyperparameterError(f"hyperparameters: {k} must be a number or a 1-D array, has shape {a.shape}")
        arrays[str(k)] = a
    try:
        arrays = dict(zip(arrays, np.broadcast_arrays(*arrays.values()), strict=True))
    except ValueError:
        lengths = {k: a.size for k, a in arrays.items()}
        raise HyperparameterError(
            f"hyperparameters: arrays have different lengths {lengths}; give every name one value per "
            "realization (or a single value shared by all)"
        ) from None
    return _dataset(arrays)


def hyper_hash(hyper: xr.Dataset) -> str:
    """SHA-256 of the hyperparameter values (names, order and weights), for store provenance."""
    h = hashlib.sha256()
    for k in (*HYPER_NAMES, "weight"):
        if k in hyper:
            h.update(k.encode())
            h.update(np.ascontiguousarray(hyper[k].values, dtype="<f8").tobytes())
    return h.hexdigest()
