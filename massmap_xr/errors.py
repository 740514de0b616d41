"""Exception and warning hierarchy of :mod:`massmap_xr`.

Every error the package raises for bad input derives from :class:`MassmapError`, which
is itself a :class:`ValueError`, so ``except ValueError`` keeps working for callers that
do not care about the detail.  Messages name the variable, the rule broken, how many
entries break it, the first few offenders and what to do about it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "MassmapError",
    "CatalogError",
    "HyperparameterError",
    "PriorError",
    "StoreError",
    "IncompleteStoreError",
    "SchemaVersionError",
    "ProjectionError",
    "AnalysisError",
    "InferenceError",
    "MassmapWarning",
    "CatalogWarning",
    "format_offenders",
]


class MassmapError(ValueError):
    """Base class of every input or data error raised by massmap_xr."""


class CatalogError(MassmapError):
    """A halo catalogue breaks a rule (missing variable, NaN, negative luminosity, ...)."""


class HyperparameterError(MassmapError):
    """A hyperparameter table breaks a rule (missing name, S <= 0, bad weights, ...)."""


class PriorError(MassmapError):
    """A mass prior table is malformed or does not cover what is asked of it."""


class StoreError(MassmapError):
    """A Zarr store is not a massmap cube, is damaged, or cannot be written safely."""


class IncompleteStoreError(StoreError):
    """A store whose build has not finished (opened without ``allow_incomplete=True``)."""


class SchemaVersionError(StoreError):
    """A store written with a schema version this version of massmap_xr cannot read."""


class ProjectionError(MassmapError):
    """A sky projection was asked for with inconsistent or invalid parameters."""


class AnalysisError(MassmapError):
    """An analysis step was asked for something the cube cannot provide."""


class InferenceError(MassmapError):
    """Hyperparameter inference was asked for with invalid settings or failed."""


class MassmapWarning(UserWarning):
    """Base class of the warnings massmap_xr emits."""


class CatalogWarning(MassmapWarning):
    """A catalogue is valid but suspicious (e.g. positions that look like arcmin)."""


def format_offenders(labels: Sequence | np.ndarray, n_show: int = 5) -> str:
    """Format the first few offending labels, e.g. ``"12, 40, 41 (and 7 more)"``."""
    labels = list(np.asarray(labels).ravel().tolist())
    shown = ", ".join(str(v) for v in labels[:n_show])
    if len(labels) > n_show:
        shown += f" (and {len(labels) - n_show} more)"
    return shown
