"""Hyperpriors P(α, S): independent normal or flat priors on the free hyperparameters.

:class:`HyperPrior` builds them from a name (``"reddick2013"``, ``"flat"`` within
:data:`FLAT_BOUNDS`), a mapping or a Dataset of earlier draws, and maps the hyperparameters to
the unconstrained coordinates the samplers of :mod:`massmap_xr.inference.samplers` work in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import xarray as xr

from massmap_xr.errors import InferenceError
from massmap_xr.kernels.numerics import LN_SQRT_2PI
from massmap_xr.model.hyper import REDDICK2013
from massmap_xr.model.relation import HYPER_NAMES

__all__ = ["FLAT_BOUNDS", "HyperPrior"]

#: Bounds of the ``"flat"`` hyperprior: name -> (low, high).
FLAT_BOUNDS = {
    "alpha1": (5.0, 20.0),
    "alpha2": (0.01, 2.0),
    "alpha3": (1e12, 1e16),
    "alpha4": (-5.0, 5.0),
    "S": (1e-3, 2.0),
}


class HyperPrior:
    """Independent priors on the free hyperparameters, with an unconstrained parametrisation.

    Each free name has either a normal prior ``("normal", mean, sd)`` (S > 0 is enforced: its
    normal prior is truncated at zero) or a flat prior ``("flat", low, high)``.  Sampling and
    optimisation happen in unconstrained coordinates: ln S for S, logit((θ - low)/(high - low))
    for flat priors, the parameter itself otherwise; :meth:`log_density_unconstrained` includes
    the Jacobian of that map.

    Parameters
    ----------
    spec : str, mapping or xarray.Dataset
        ``"reddick2013"`` (normals from :data:`massmap_xr.model.hyper.REDDICK2013`), ``"flat"``
        (uniform within :data:`FLAT_BOUNDS`), a mapping name -> ``(mean, sd)`` (normal),
        ``("normal", mean, sd)`` or ``("flat", low, high)``, or a Dataset of hyperparameter
        draws along ``realization`` (e.g. :func:`~massmap_xr.model.hyper.reddick2013` output or an
        earlier inference), summarised by independent normals with the draws' weighted mean
        and standard deviation.
    free : sequence of str
        The names inferred.

    Examples
    --------
    >>> hp = HyperPrior("reddick2013", ("alpha1", "S"))
    >>> hp.kinds
    ('normal', 'normal')
    """

    def __init__(self, spec, free: Sequence[str]):
        self.free = tuple(free)
        entries = self._entries(spec)
        missing = [k for k in self.free if k not in entries]
        if missing:
            raise InferenceError(
                f"hyperprior: no entry for free hyperparameter(s) {missing}; give each free name a "
                "(mean, sd) normal or a ('flat', low, high) range, or use hyperprior='reddick2013' / 'flat'"
            )
        kinds, p1, p2, problems = [], [], [], []
        for k in self.free:
            kind, a, b = entries[k]
            if kind == "normal":
                if not (np.isfinite(a) and np.isfinite(b) and b > 0):
                    problems.append(f"{k}: normal prior needs a finite mean and sd > 0, got ({a!r}, {b!r})")
            elif kind == "flat":
                if not (np.isfinite(a) and np.isfinite(b) and b > a):
                    problems.append(f"{k}: flat prior needs finite low < high, got ({a!r}, {b!r})")
                elif k in ("S", "alpha3") and a < 0:
                    problems.append(f"{k}: must be > 0, so its flat prior needs low >= 0, got low={a!r}")
            kinds.append(kind)
            p1.append(float(a))
            p2.append(float(b))
        if problems:
            raise InferenceError("invalid hyperprior:\n  - " + "\n  - ".join(problems), problems=problems)
        self.kinds = tuple(kinds)
        self._p1 = np.array(p1)
        self._p2 = np.array(p2)
        self._log_pos = np.array([k in ("S", "alpha3") and kd == "normal" for k, kd in zip(self.free, kinds, strict=True)])
        self._flat = np.array([kd == "flat" for kd in kinds])

    @staticmethod
    def _parse(name, value):
        if isinstance(value, (tuple, list)) and len(value) == 3 and isinstance(value[0], str):
            kind = value[0].lower()
            if kind in ("uniform", "flat"):
                return "flat", float(value[1]), float(value[2])
            if kind in ("normal", "gaussian"):
                return "normal", float(value[1]), float(value[2])
            raise InferenceError(f"hyperprior {name}: unknown kind {value[0]!r}; use 'normal' or 'flat'")
        if isinstance(value, (tuple, list)) and len(value) == 2:
            try:
                return "normal", float(value[0]), float(value[1])
            except (TypeError, ValueError):
                pass
        raise InferenceError(
            f"hyperprior {name}: expected (mean, sd), ('normal', mean, sd) or ('flat', low, high), got {value!r}"
        )

    def _entries(self, spec) -> dict:
        if isinstance(spec, str):
            if spec.lower() == "reddick2013":
                return {k: ("normal", mu, sd) for k, (mu, sd) in REDDICK2013.items() if sd > 0}
            if spec.lower() == "flat":
                return {k: ("flat", lo, hi) for k, (lo, hi) in FLAT_BOUNDS.items()}
            raise InferenceError(f"hyperprior: unknown name {spec!r}; use 'reddick2013', 'flat', a mapping or a Dataset")
        if isinstance(spec, xr.Dataset):
            if "realization" not in spec.dims:
                raise InferenceError(f"hyperprior Dataset needs a 'realization' dimension, has {tuple(spec.dims)}")
            w = np.asarray(spec["weight"].values, dtype=float) if "weight" in spec else np.ones(spec.sizes["realization"])
            if not (np.all(np.isfinite(w)) and np.all(w >= 0) and w.sum() > 0):
                raise InferenceError("hyperprior Dataset: weights must be finite, >= 0 and not all zero")
            w = w / w.sum()
            out = {}
            for k in HYPER_NAMES:
                if k in spec:
                    a = np.asarray(spec[k].values, dtype=float)
                    mu = float(np.sum(w * a))
                    sd = float(np.sqrt(np.sum(w * (a - mu) ** 2)))
                    if sd > 0:
                        out[k] = ("normal", mu, sd)
            return out
        if isinstance(spec, Mapping):
            return {str(k): self._parse(k, v) for k, v in spec.items()}
        raise InferenceError(
            f"hyperprior must be 'reddick2013', 'flat', a mapping or an xarray.Dataset, got {type(spec).__name__}"
        )

    def describe(self) -> str:
        """One line per free name, e.g. ``"alpha1 ~ normal(10.709, 0.022)"``."""
        return "; ".join(f"{k} ~ {kd}({a:.6g}, {b:.6g})" for k, kd, a, b in
                         zip(self.free, self.kinds, self._p1, self._p2, strict=True))

    def center(self) -> np.ndarray:
        """A point inside the support: prior means, or the middle of flat ranges."""
        c = np.where(self._flat, 0.5 * (self._p1 + self._p2), self._p1)
        return np.where(self._log_pos & (c <= 0), self._p2, c)

    def log_density(self, theta: np.ndarray) -> np.ndarray:
        """ln prior density at natural-coordinate points ``theta`` (..., n_free); -inf outside."""
        theta = np.asarray(theta, dtype=float)
        a, b = self._p1, self._p2
        normal = -0.5 * ((theta - a) / b) ** 2 - np.log(b) - LN_SQRT_2PI
        flat = np.where((theta > a) & (theta < b), -np.log(np.where(self._flat, b - a, 1.0)), -np.inf)
        lp = np.where(self._flat, flat, normal)
        lp = np.where(self._log_pos & (theta <= 0), -np.inf, lp)
        return lp.sum(axis=-1)

    def to_natural(self, y: np.ndarray) -> np.ndarray:
        """Map unconstrained coordinates to natural ones."""
        y = np.asarray(y, dtype=float)
        a, b = self._p1, self._p2
        with np.errstate(over="ignore"):
            flat = a + (b - a) * 0.5 * (1.0 + np.tanh(0.5 * y))
        return np.where(self._flat, flat, np.where(self._log_pos, np.exp(np.clip(y, -700, 700)), y))

    def to_unconstrained(self, theta: np.ndarray) -> np.ndarray:
        """Map natural coordinates (inside the support) to unconstrained ones."""
        theta = np.asarray(theta, dtype=float)
        a, b = self._p1, self._p2
        with np.errstate(divide="ignore", invalid="ignore"):
            f = np.clip((theta - a) / np.where(self._flat, b - a, 1.0), 1e-12, 1 - 1e-12)
            flat = np.log(f) - np.log1p(-f)
            logp = np.log(np.where(self._log_pos, theta, 1.0))
        return np.where(self._flat, flat, np.where(self._log_pos, logp, theta))

    def log_jacobian(self, y: np.ndarray) -> np.ndarray:
        """ln |dθ/dy| summed over free names, at unconstrained points ``y`` (..., n_free)."""
        y = np.asarray(y, dtype=float)
        a, b = self._p1, self._p2
        # d/dy [a + (b-a) sigmoid(y)] = (b-a) sigmoid(y) (1 - sigmoid(y))
        flat = np.log(np.where(self._flat, b - a, 1.0)) - np.logaddexp(0.0, -y) - np.logaddexp(0.0, y)
        return np.where(self._flat, flat, np.where(self._log_pos, y, 0.0)).sum(axis=-1)

    def dlog_jacobian(self, y: np.ndarray) -> np.ndarray:
        """Gradient of :meth:`log_jacobian` with respect to ``y``."""
        y = np.asarray(y, dtype=float)
        sig = 0.5 * (1.0 + np.tanh(0.5 * y))
        return np.where(self._flat, 1.0 - 2.0 * sig, np.where(self._log_pos, 1.0, 0.0))

    def dlog_density(self, theta: np.ndarray) -> np.ndarray:
        """Gradient of :meth:`log_density` (natural coordinates, inside the support)."""
        theta = np.asarray(theta, dtype=float)
        return np.where(self._flat, 0.0, -(theta - self._p1) / self._p2**2)

    def dtheta_dy(self, y: np.ndarray) -> np.ndarray:
        """dθ/dy per free name (diagonal of the Jacobian)."""
        y = np.asarray(y, dtype=float)
        a, b = self._p1, self._p2
        sig = 0.5 * (1.0 + np.tanh(0.5 * y))
        return np.where(self._flat, (b - a) * sig * (1.0 - sig), np.where(self._log_pos, np.exp(np.clip(y, -700, 700)), 1.0))

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``n`` points (n, n_free) from the prior (natural coordinates)."""
        out = np.empty((n, len(self.free)))
        for j in range(len(self.free)):
            a, b = self._p1[j], self._p2[j]
            if self._flat[j]:
                out[:, j] = rng.uniform(a, b, n)
            else:
                v = rng.normal(a, b, n)
                while self._log_pos[j] and np.any(v <= 0):
                    bad = v <= 0
                    v[bad] = rng.normal(a, b, int(bad.sum()))
                out[:, j] = v
        return out
