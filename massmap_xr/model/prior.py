"""Halo-mass-function prior P(M | z).

Two sources share one interface, :class:`MassPrior`:

- :class:`TinkerPrior`: the Tinker et al. (2010) mass function computed with ``hmf``
  (WMAP5 cosmology and the Eisenstein & Hu transfer function by default, the configuration
  that reproduces the original study's table to 0.2 %).  hmf works in M_sun/h and
  h^4 Mpc^-3 M_sun^-1; this module converts to M_sun and Mpc^-3 M_sun^-1 with the
  cosmology's ``h``, stated in the attributes of every table.
- :class:`TablePrior`: any user table, an :class:`xarray.DataArray` with dims ``(z, mass)``
  holding dn/dM (any normalisation) on masses in M_sun.

Both are tabulated once on a grid of redshift nodes and evaluated at a halo's redshift by
interpolating ln(dn/dM) linearly in z between nodes (continuous in z, unlike the original
analysis which snapped each halo to one of 20 redshift bins).  On the mass axis the table is
interpolated linearly in (ln M, ln dn/dM); outside a table's mass range the prior is zero.
"""

from __future__ import annotations

import abc
import functools
import warnings
from dataclasses import dataclass

import numpy as np
import xarray as xr

from massmap_xr.errors import MassmapError, PriorError, format_offenders

__all__ = ["MassPrior", "TinkerPrior", "TablePrior", "as_prior", "check_mass_grid", "cosmology_json",
           "cosmology_key", "cosmology_label", "default_mass_grid", "read_prior_table", "prior_from_attrs", "resolve_cosmology",
           "log_dndm"]

#: ln-density assigned where a prior is zero (outside its mass range); finite so that
#: arithmetic stays NaN-free, small enough that exp() of it is exactly zero.
LOG_ZERO = -1.0e4


def log_dndm(values) -> np.ndarray:
    """ln of a dn/dM table, :data:`LOG_ZERO` where it is zero (the one rule turning a table into logs:
    :class:`TablePrior` and the posterior kernel's input both use it)."""
    v = np.asarray(values, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(v > 0, np.log(np.where(v > 0, v, 1.0)), LOG_ZERO)



def default_mass_grid(n: int = 400, log10_min: float = 8.0, log10_max: float = 15.5) -> np.ndarray:
    """The default log-uniform mass grid in M_sun (400 points from 1e8 to 10^15.5, 0.019 dex apart).

    The lower end is 1e8 (it was 1e10) so that the grid covers every posterior of the seed
    field: with 1e10, 97 % of its halos (Reddick 2013 hyperparameters) had more than 1e-3 of
    their posterior in the lowest cell; from 1e8 none has (largest edge fraction below 5e-5,
    ``tests/test_edges.py``).  hmf evaluates the Tinker (2010) fit there (it is calibrated above
    ~1e10.5 M_sun/h and extrapolated smoothly below).  400 points keep ≈ 10 points per standard
    deviation of a Reddick posterior (≈ 0.19 dex), where the trapezoid rule is exact to far below
    float32 resolution.
    """
    if n < 2 or not log10_max > log10_min:
        raise PriorError(
            f"mass grid: need n >= 2 and log10_max > log10_min, got n={n}, "
            f"log10_min={log10_min}, log10_max={log10_max}"
        )
    return np.logspace(log10_min, log10_max, int(n))


class MassPrior(abc.ABC):
    """Interface of a mass prior tabulated on redshift nodes.

    Subclasses provide :meth:`log_table`, ln(dn/dM) on redshift nodes × a requested mass grid.
    """

    #: inclusive redshift range covered by the table
    z_range: tuple[float, float]

    @abc.abstractmethod
    def log_table(self, mass: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(z_nodes, ln_dndm)`` with ``ln_dndm`` of shape (n_z, n_mass).

        Raises :class:`~massmap_xr.errors.PriorError` unless ``mass`` is a 1-D grid of finite,
        positive masses (M_sun).
        """

    def table(self, mass: np.ndarray | None = None) -> xr.DataArray:
        """dn/dM on the redshift nodes and ``mass`` grid, as a DataArray (prior_z, mass)."""
        mass = default_mass_grid() if mass is None else np.asarray(mass, dtype=float)
        zn, lt = self.log_table(mass)
        return xr.DataArray(
            np.exp(lt),
            dims=("prior_z", "mass"),
            coords={"prior_z": zn, "mass": mass},
            name="prior_dndm",
            attrs={"long_name": "halo mass function prior dn/dM", **self.describe()},
        )

    def log_density(self, z, mass) -> np.ndarray:
        """ln(dn/dM) at redshifts ``z`` (1-D) on the ``mass`` grid: shape (len(z), len(mass)).

        ln(dn/dM) is interpolated linearly in z between the tabulated nodes.
        """
        z = np.atleast_1d(np.asarray(z, dtype=float))
        zn, lt = self.log_table(np.asarray(mass, dtype=float))
        return interpolate_log_table(zn, lt, z, self.z_range)

    def describe(self) -> dict:
        """Attributes describing the prior (serialisable scalars only)."""
        return {}


def interpolate_log_table(z_nodes, log_table, z, z_range=None) -> np.ndarray:
    """Linear-in-z interpolation of ln-table rows; errors for z outside the nodes."""
    z = np.asarray(z, dtype=float)
    lo, hi = (z_nodes[0], z_nodes[-1]) if z_range is None else z_range
    bad = (z < lo) | (z > hi) | ~np.isfinite(z)
    if bad.any():
        raise PriorError(
            f"prior: {int(bad.sum())} redshift(s) outside the prior's range [{lo:g}, {hi:g}] "
            f"(first: {z[bad][:5].tolist()}); extend the prior's z grid"
        )
    i, w = z_weights(z_nodes, z)
    return (1.0 - w)[:, None] * log_table[i] + w[:, None] * log_table[i + 1]


def z_weights(z_nodes: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Left node index and linear weight of each redshift between tabulated nodes."""
    z_nodes = np.asarray(z_nodes, dtype=float)
    if z_nodes.size == 1:
        return np.zeros(np.shape(z), dtype=np.intp), np.zeros(np.shape(z))
    i = np.clip(np.searchsorted(z_nodes, z, side="right") - 1, 0, z_nodes.size - 2)
    w = (np.asarray(z, dtype=float) - z_nodes[i]) / (z_nodes[i + 1] - z_nodes[i])
    return i.astype(np.intp), np.clip(w, 0.0, 1.0)


def check_mass_grid(mass, who: str, *, min_size: int = 2, increasing: bool = True,
                    error: type[MassmapError] = PriorError) -> np.ndarray:
    """``mass`` as a 1-D float64 grid of finite, positive masses (M_sun), else ``error``.

    The one rule every mass grid of the package follows: numbers, 1-D, at least ``min_size``
    points, finite and > 0, and (with ``increasing``) strictly increasing.  ``who`` starts the
    message; ``error`` is the :class:`~massmap_xr.errors.MassmapError` subclass of the caller.
    """
    try:
        mass = np.asarray(mass, dtype=np.float64)
    except (TypeError, ValueError):
        raise error(f"{who}: mass grid must be numbers (M_sun), got {mass!r:.120}") from None
    if mass.ndim != 1 or mass.size < min_size:
        raise error(
            f"{who}: mass grid must be 1-D with at least {min_size} point{'s' if min_size != 1 else ''}, got shape "
            f"{mass.shape}; pass e.g. numpy.logspace(10, 15.5, 400)"
        )
    bad = ~np.isfinite(mass) | ~(mass > 0)
    if bad.any():
        idx = np.flatnonzero(bad)
        raise error(
            f"{who}: mass grid must be finite and positive (> 0, M_sun); {idx.size} of {mass.size} points are not "
            f"(first indices: {format_offenders(idx)}; values: {format_offenders(mass[bad])}); drop them or "
            "give masses in M_sun, not log10"
        )
    if increasing and np.any(np.diff(mass) <= 0):
        idx = np.flatnonzero(np.diff(mass) <= 0) + 1
        raise error(
            f"{who}: mass grid must be strictly increasing; {idx.size} point(s) are not above the one before "
            f"(first indices: {format_offenders(idx)}); sort it and drop repeated masses"
        )
    return mass


def _interp_mass(log_m_src, log_p_src, log_m):
    """Interpolate ln p linearly in ln M; LOG_ZERO outside the source range."""
    out = np.interp(log_m, log_m_src, log_p_src)
    # tolerate round-off at the ends
    tol = 1e-9 * max(1.0, abs(log_m_src[-1]))
    outside = (log_m < log_m_src[0] - tol) | (log_m > log_m_src[-1] + tol)
    out[outside] = LOG_ZERO
    return out


def cosmology_label(cosmo) -> str:
    """A cosmology's name (``"WMAP5"``), or its class and parameters when it has none."""
    name = getattr(cosmo, "name", None)
    return str(name) if name else f"{type(cosmo).__name__}({cosmology_key(cosmo)})"


def cosmology_key(cosmo) -> str:
    """A named astropy realisation's name, or the JSON of a cosmology's class and parameters
    (:func:`cosmology_json`): what priors are cached and compared by."""
    import astropy.cosmology

    if isinstance(cosmo, str):
        cosmo = resolve_cosmology(cosmo)
    name = getattr(cosmo, "name", None)
    if name and name in astropy.cosmology.realizations.available and getattr(astropy.cosmology, name) == cosmo:
        return name
    return cosmology_json(cosmo)


def cosmology_json(cosmo) -> str:
    """The JSON of a cosmology's class, name and every parameter (with units), as recorded in the
    ``prior_cosmology_parameters`` attribute; :func:`resolve_cosmology` turns it back."""
    import json

    import astropy.units as u

    if isinstance(cosmo, str):
        cosmo = resolve_cosmology(cosmo)
    params = {}
    for k, v in dict(cosmo.parameters).items():
        if isinstance(v, u.Quantity):
            params[k] = {"value": np.atleast_1d(v.value).tolist() if v.ndim else float(v.value),
                         "unit": v.unit.to_string()}
        else:
            params[k] = float(v) if v is not None else None
    name = getattr(cosmo, "name", None)
    return json.dumps({"class": type(cosmo).__name__, "name": name, "parameters": params}, sort_keys=True)


def resolve_cosmology(spec):
    """An astropy cosmology from a realisation name, a :func:`cosmology_key` JSON, or a cosmology."""
    import json

    import astropy.cosmology
    import astropy.units as u

    if isinstance(spec, astropy.cosmology.Cosmology):
        return spec
    if not isinstance(spec, str):
        raise PriorError(
            f"cosmology must be the name of an astropy realisation (e.g. 'WMAP5') or an astropy cosmology, got "
            f"{type(spec).__name__}"
        )
    if spec.lstrip().startswith("{"):
        try:
            d = json.loads(spec)
            cls = getattr(astropy.cosmology, d["class"])
            kwargs = {k: (u.Quantity(v["value"], v["unit"]) if isinstance(v, dict) else v)
                      for k, v in d["parameters"].items()}
            return cls(name=d.get("name"), **kwargs)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise PriorError(f"cosmology parameters {spec[:120]!r} cannot be read ({type(exc).__name__}: {exc})") from None
    available = tuple(astropy.cosmology.realizations.available)
    if spec not in available:
        raise PriorError(f"cosmology {spec!r} is not an astropy realisation; choose one of {available} or pass "
                         "an astropy cosmology object")
    return getattr(astropy.cosmology, spec)


@functools.lru_cache(maxsize=16)
def _tinker_hmf_table(
    z_nodes: tuple, log10_mmin_h: float, log10_mmax_h: float, dlog10m: float, hmf_model: str,
    cosmo_key: str, transfer_model: str, sigma_8: float, n_s: float,
):
    """hmf dn/dm (h^4 Mpc^-3 M_sun^-1) and m (M_sun/h) on redshift nodes (cached)."""
    from hmf import MassFunction

    cosmo = resolve_cosmology(cosmo_key)
    kwargs = {}
    if transfer_model == "CAMB":
        kwargs["transfer_params"] = {"extrapolate_with_eh": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        mf = MassFunction(
            z=float(z_nodes[0]),
            Mmin=log10_mmin_h,
            Mmax=log10_mmax_h,
            dlog10m=dlog10m,
            hmf_model=hmf_model,
            cosmo_model=cosmo,
            sigma_8=float(sigma_8),
            n=float(n_s),
            transfer_model=transfer_model,
            **kwargs,
        )
        m = np.array(mf.m)
        rows = []
        for z in z_nodes:
            mf.update(z=float(z))
            rows.append(np.array(mf.dndm))
    return m, np.array(rows), float(cosmo.h)


@dataclass(frozen=True)
class TinkerPrior(MassPrior):
    """Tinker (2010) halo mass function prior from ``hmf``, in M_sun.

    Parameters
    ----------
    z_max : float, default 4.0
        Highest tabulated redshift (nodes from 0 to ``z_max`` every ``dz``).
    dz : float, default 0.05
        Spacing of the redshift nodes; ln(dn/dM) is linear in z between them.
    cosmology : str or astropy.cosmology.Cosmology, default "WMAP5"
        Name of an :mod:`astropy.cosmology` realisation (WMAP5 as in the original analysis), or any
        astropy FLRW cosmology object (then give ``sigma_8`` and ``n_s`` unless its ``meta`` has
        ``sigma8`` and ``n``).
    sigma_8, n_s : float, optional
        Amplitude and spectral index of the linear power spectrum passed to hmf; default the
        named cosmology's own (WMAP5: 0.817, 0.962 from ``WMAP5.meta``), never hmf's built-in
        defaults (0.8159, 0.9667, which belong to Planck 2015).  The original study's table was
        made with hmf's defaults; ``TinkerPrior(sigma_8=0.8159, n_s=0.9667)`` reproduces it.
    hmf_model : str, default "Tinker10"
        hmf fitting function.
    transfer_model : str, default "EH"
        hmf transfer function ("EH" needs no Boltzmann code; "CAMB" needs camb).
    dlog10m : float, default 0.005
        Resolution of the internal hmf mass grid (dex), interpolated onto any requested grid.

    Notes
    -----
    hmf returns masses in M_sun/h and dn/dm in h^4 Mpc^-3 M_sun^-1.  This prior uses
    M = m / h (M_sun) and dn/dM = h^4 dn/dm (Mpc^-3 M_sun^-1) with ``h`` the cosmology's
    (0.702 for WMAP5); the value is recorded as attribute ``h``.  Every parameter of the
    cosmology, ``sigma_8`` and ``n_s`` are recorded in :meth:`describe` (the cube's ``prior_*``
    attributes), so a store's prior is rebuilt exactly by :func:`prior_from_attrs`.

    Examples
    --------
    >>> prior = TinkerPrior()
    >>> prior.log_density([0.5], [1e12, 1e13]).shape
    (1, 2)
    """

    z_max: float = 4.0
    dz: float = 0.05
    cosmology: object = "WMAP5"
    hmf_model: str = "Tinker10"
    transfer_model: str = "EH"
    dlog10m: float = 0.005
    sigma_8: float | None = None
    n_s: float | None = None

    def __post_init__(self):
        if not (self.z_max > 0 and self.dz > 0):
            raise PriorError(f"TinkerPrior: z_max and dz must be > 0, got {self.z_max}, {self.dz}")
        if not 0 < self.dlog10m <= 0.05:
            raise PriorError(f"TinkerPrior: dlog10m must be in (0, 0.05], got {self.dlog10m}")
        cosmo = resolve_cosmology(self.cosmology)
        meta = dict(getattr(cosmo, "meta", {}) or {})
        for field, key in (("sigma_8", "sigma8"), ("n_s", "n")):
            value = getattr(self, field)
            if value is None:
                value = meta.get(key)
                if value is None:
                    raise PriorError(
                        f"TinkerPrior: the cosmology {cosmology_label(cosmo)} does not state {key} (its meta has "
                        f"no {key!r}); pass {field}=... (e.g. TinkerPrior(cosmology=cosmo, sigma_8=0.81, n_s=0.96))"
                    )
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise PriorError(f"TinkerPrior: {field} must be a number, got {value!r}") from None
            if not (np.isfinite(value) and value > 0):
                raise PriorError(f"TinkerPrior: {field} must be finite and > 0, got {value!r}")
            object.__setattr__(self, field, value)
        object.__setattr__(self, "_cosmo_key", cosmology_key(cosmo))

    def __hash__(self):  # an astropy cosmology object is not hashable: hash its parameters
        return hash((self.z_max, self.dz, self._cosmo_key, self.hmf_model, self.transfer_model, self.dlog10m,
                     self.sigma_8, self.n_s))

    def __eq__(self, other):
        if not isinstance(other, TinkerPrior):
            return NotImplemented
        return hash(self) == hash(other) and (self.z_max, self.dz, self._cosmo_key, self.hmf_model,
                                              self.transfer_model, self.dlog10m, self.sigma_8, self.n_s) == (
            other.z_max, other.dz, other._cosmo_key, other.hmf_model, other.transfer_model, other.dlog10m,
            other.sigma_8, other.n_s)

    @property
    def z_nodes(self) -> np.ndarray:
        n = int(round(self.z_max / self.dz))
        return np.linspace(0.0, n * self.dz, n + 1)

    @property
    def z_range(self) -> tuple[float, float]:  # type: ignore[override]
        zn = self.z_nodes
        return float(zn[0]), float(zn[-1])

    @property
    def h(self) -> float:
        return float(resolve_cosmology(self._cosmo_key).h)

    def log_table(self, mass):
        mass = check_mass_grid(mass, "TinkerPrior", increasing=False)
        h = self.h
        lo = np.log10(mass.min() * h) - 2 * self.dlog10m
        hi = np.log10(mass.max() * h) + 3 * self.dlog10m
        m_h, dndm_h, h = _tinker_hmf_table(
            tuple(self.z_nodes.tolist()), round(lo, 6), round(hi, 6), self.dlog10m,
            self.hmf_model, self._cosmo_key, self.transfer_model, self.sigma_8, self.n_s,
        )
        log_m_src = np.log(m_h / h)
        with np.errstate(divide="ignore"):
            log_p = np.log(dndm_h * h**4)
        log_p = np.where(np.isfinite(log_p), log_p, LOG_ZERO)
        if np.all(log_p <= LOG_ZERO):
            raise PriorError(
                f"TinkerPrior: hmf returned no finite mass function for the cosmology "
                f"{cosmology_label(resolve_cosmology(self._cosmo_key))} (sigma_8={self.sigma_8}, n_s={self.n_s}); "
                "check its parameters (the EH transfer function needs Tcmb0 > 0 and Ob0 > 0)"
            )
        log_m = np.log(mass)
        table = np.stack([_interp_mass(log_m_src, row, log_m) for row in log_p])
        return self.z_nodes, table

    def describe(self):
        return {
            "prior": "TinkerPrior",
            "hmf_model": self.hmf_model,
            "cosmology": cosmology_label(resolve_cosmology(self._cosmo_key)),
            "cosmology_parameters": cosmology_json(self._cosmo_key),
            "sigma_8": float(self.sigma_8),
            "n_s": float(self.n_s),
            "transfer_model": self.transfer_model,
            "z_max": float(self.z_max),
            "dz": float(self.dz),
            "dlog10m": float(self.dlog10m),
            "h": self.h,
            "units": "Mpc-3 solMass-1",
            "mass_units": "solMass",
        }


class TablePrior(MassPrior):
    """A user-supplied prior table dn/dM(z, M) (any normalisation).

    Parameters
    ----------
    table : xarray.DataArray
        dims ``("z", "mass")`` with 1-D coordinates ``z`` (increasing) and ``mass`` (M_sun,
        increasing), values dn/dM >= 0, finite.  Where the table is zero, or outside its mass
        range, the prior is zero.

    Examples
    --------
    >>> import xarray as xr, numpy as np
    >>> m = np.logspace(10, 15, 50)
    >>> t = xr.DataArray(np.vstack([m**-1.9, m**-2.0]), dims=("z", "mass"),
    ...                  coords={"z": [0.0, 1.0], "mass": m})
    >>> TablePrior(t).z_range
    (0.0, 1.0)
    """

    def __init__(self, table: xr.DataArray):
        if not isinstance(table, xr.DataArray):
            raise PriorError(f"prior table must be an xarray.DataArray with dims (z, mass), got {type(table).__name__}")
        if set(table.dims) != {"z", "mass"}:
            raise PriorError(f"prior table must have dims ('z', 'mass'), got {table.dims}")
        table = table.transpose("z", "mass")
        for c in ("z", "mass"):
            if c not in table.coords:
                raise PriorError(f"prior table: coordinate {c!r} is missing")
        kinds = {"values": table.dtype.kind, "z": table["z"].dtype.kind, "mass": table["mass"].dtype.kind}
        not_real = [k for k, kind in kinds.items() if kind not in "iuf"]
        if not_real:
            raise PriorError(f"prior table: {', '.join(not_real)} must be real numbers, got dtypes "
                             f"{ {k: str(table[k].dtype) if k != 'values' else str(table.dtype) for k in not_real} }")
        z = np.asarray(table["z"].values, dtype=float)
        m = np.asarray(table["mass"].values, dtype=float)
        v = np.asarray(table.values, dtype=float)
        if not (np.all(np.isfinite(z)) and np.all(np.isfinite(m))):
            raise PriorError("prior table: coordinates z and mass must be finite (no NaN or inf)")
        if z.size < 1 or m.size < 2:
            raise PriorError("prior table needs at least 1 redshift and 2 masses")
        if np.any(np.diff(z) <= 0) or np.any(np.diff(m) <= 0) or np.any(m <= 0):
            raise PriorError("prior table: coordinates z and mass must be strictly increasing (mass > 0)")
        if not np.all(np.isfinite(v)) or np.any(v < 0):
            n = int((~np.isfinite(v) | (v < 0)).sum())
            raise PriorError(f"prior table: {n} values are negative, NaN or infinite; dn/dM must be finite and >= 0")
        if np.any(v.max(axis=1) <= 0):
            raise PriorError("prior table: a redshift row is zero everywhere")
        self._z = z
        self._m, self._v = m, v
        self._log_m = np.log(m)
        self._log_v = log_dndm(v)
        self.z_range = (float(z[0]), float(z[-1]))
        self._attrs = {k: v for k, v in table.attrs.items() if isinstance(v, (str, int, float))}

    def log_table(self, mass):
        log_m = np.log(check_mass_grid(mass, "TablePrior", min_size=1, increasing=False))
        return self._z, np.stack([_interp_mass(self._log_m, row, log_m) for row in self._log_v])

    def table(self, mass: np.ndarray | None = None) -> xr.DataArray:
        """dn/dM on the redshift nodes and ``mass``; on the table's own mass grid its values exactly
        (not exp of their logs, which can differ in the last bit), so a table recorded by a cube and
        read back is the same table."""
        out = super().table(mass)
        if out.sizes["mass"] == self._m.size and np.array_equal(np.asarray(out["mass"].values, float), self._m):
            out = out.copy(data=self._v.copy())
        return out

    def describe(self):
        return {"prior": "TablePrior", **{f"table_{k}": v for k, v in self._attrs.items()}}


def as_prior(prior) -> MassPrior:
    """Normalise ``None`` (default Tinker prior), a :class:`MassPrior` or a DataArray table."""
    if prior is None:
        return TinkerPrior()
    if isinstance(prior, MassPrior):
        return prior
    if isinstance(prior, xr.DataArray):
        return TablePrior(prior)
    raise PriorError(
        f"prior must be None, a MassPrior (e.g. TinkerPrior()) or an xarray.DataArray (z, mass); "
        f"got {type(prior).__name__}"
    )


def read_prior_table(path, *, mass_factor: float = 1.0) -> xr.DataArray:
    """Read a whitespace table ``z M p`` (like the original study's) into a (z, mass) DataArray.

    Parameters
    ----------
    path : str or path-like
        Text file with three columns: redshift, mass, dn/dM.
    mass_factor : float, default 1
        Multiply the mass column by this to get M_sun.  The original study's table holds
        hmf masses (M_sun/h) multiplied by 0.73, so M_sun = M_column / (0.73 h): pass
        ``mass_factor=1 / (0.73 * h)`` to read it in M_sun.
    """
    d = np.loadtxt(path)
    z = np.unique(d[:, 0])
    n_m = d.shape[0] // z.size
    if n_m * z.size != d.shape[0]:
        raise PriorError(f"{path}: {d.shape[0]} rows are not a full (z, mass) grid of {z.size} redshifts")
    d = d[np.lexsort((d[:, 1], d[:, 0]))]
    mass = d[:n_m, 1] * mass_factor
    return xr.DataArray(
        d[:, 2].reshape(z.size, n_m), dims=("z", "mass"), coords={"z": z, "mass": mass},
        name="prior_dndm", attrs={"source": str(path)},
    )


def prior_from_attrs(attrs: dict, prior_z=None, prior_dndm: xr.DataArray | None = None, *,
                     source: str = "the attributes", error: type[Exception] = PriorError) -> MassPrior:
    """The prior a cube's (or store's) ``prior*`` attributes describe, rebuilt.

    A Tinker prior is rebuilt with the recorded ``z_max``, ``dz`` and ``dlog10m`` (read from the
    ``prior_z`` nodes when those attributes predate them); a table prior from ``prior_dndm`` (on
    ``prior_z``) and its ``prior_table_*`` attributes.  ``source`` names the owner of ``attrs``
    in messages; ``error`` is the exception class raised when the prior cannot be rebuilt.
    """
    kind = attrs.get("prior")
    if kind == "TinkerPrior":
        # stores written before z_max, dz and dlog10m were recorded still have the nodes in prior_z
        zn = np.asarray(prior_z.values if hasattr(prior_z, "values") else prior_z, dtype=float) \
            if prior_z is not None else np.zeros(0)
        z_max = attrs.get("prior_z_max", float(zn[-1]) if zn.size > 1 else 4.0)
        dz = attrs.get("prior_dz", float(np.round(zn[1] - zn[0], 12)) if zn.size > 1 else 0.05)
        try:
            # stores written before sigma_8/n_s were recorded used hmf's defaults (0.8159, 0.9667)
            return TinkerPrior(z_max=float(z_max), dz=float(dz),
                               cosmology=attrs.get("prior_cosmology_parameters", attrs["prior_cosmology"]),
                               hmf_model=attrs["prior_hmf_model"], transfer_model=attrs["prior_transfer_model"],
                               dlog10m=float(attrs.get("prior_dlog10m", 0.005)),
                               sigma_8=float(attrs.get("prior_sigma_8", 0.8159)),
                               n_s=float(attrs.get("prior_n_s", 0.9667)))
        except (KeyError, TypeError, ValueError) as exc:  # PriorError is a ValueError
            raise error(f"{source}: cannot rebuild its TinkerPrior from the prior_* attributes "
                        f"({type(exc).__name__}: {exc}); build the cube with build_posterior(..., prior=...) "
                        "using the store's prior") from None
    if kind == "TablePrior" and prior_dndm is not None:
        table = prior_dndm.load().rename(prior_z="z")
        table.attrs = {k[len("prior_table_"):]: v for k, v in attrs.items() if k.startswith("prior_table_")}
        return TablePrior(table)
    raise error(f"{source}: cannot rebuild its prior ({kind!r}); build the cube with "
                "build_posterior(..., prior=...) using the store's prior")
