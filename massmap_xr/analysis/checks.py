"""Checks of the arguments shared by the analysis functions (probabilities and credible levels).

Each check raises an :class:`~massmap_xr.errors.AnalysisError` that names the argument, says
what it must be and gives an example, so a wrong call is fixed from the message alone.
"""

from __future__ import annotations

import numpy as np

from massmap_xr.errors import AnalysisError

__all__ = ["as_float_array", "validate_levels"]


def as_float_array(value, name: str, what: str, example: str) -> np.ndarray:
    """``value`` as a float64 array, or an :class:`AnalysisError` naming ``name`` if it is not numeric."""
    if isinstance(value, (str, bytes)):
        raise AnalysisError(f"{name} must be {what}, got the string {value!r}; pass numbers, e.g. {name}={example}")
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise AnalysisError(
            f"{name} must be {what}, got {value!r} ({type(value).__name__}); pass numbers, e.g. {name}={example}"
        ) from None


def validate_levels(levels, name: str = "levels") -> tuple[float, ...]:
    """``levels`` as a tuple of distinct probabilities strictly between 0 and 1."""
    vals = np.atleast_1d(as_float_array(levels, name, "a probability or a sequence of probabilities in (0, 1)", "[0.68, 0.95]"))
    if vals.ndim != 1 or vals.size == 0:
        raise AnalysisError(f"{name} must be a non-empty sequence of probabilities, got {levels!r}")
    if not np.all((vals > 0) & (vals < 1)):
        raise AnalysisError(f"{name} must lie strictly between 0 and 1 (e.g. 0.68 for a 68% interval), got {levels!r}")
    if np.unique(vals).size != vals.size:
        raise AnalysisError(f"{name} must not repeat a value, got {levels!r}")
    return tuple(float(v) for v in vals)
