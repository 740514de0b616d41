"""Exception and warning hierarchy of :mod:`massmap_xr`.

Every error the package raises for bad input derives from :class:`MassmapError`, which
is itself a :class:`ValueError`, so ``except ValueError`` keeps working for callers that
do not care about the detail.  Messages name the variable, the rule broken, how many
entries break it, the first few offenders and what to do about it.
"""

from __future__ import annotations

import os
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
    "LensingError",
    "AnalysisError",
    "InferenceError",
    "OutputExistsError",
    "StoreExistsError",
    "RecipeVersionError",
    "MassmapWarning",
    "CatalogWarning",
    "EdgeWarning",
    "format_offenders",
    "describe_offenders",
    "check_output",
]


class MassmapError(ValueError):
    """Base class of every input or data error raised by massmap_xr.

    Parameters
    ----------
    message : str
        The full message.
    problems : sequence of str, optional
        One line per rule broken when several are reported at once (also part of ``message``),
        so that callers can inspect them individually.
    """

    def __init__(self, message: str = "", *, problems: Sequence[str] = ()):
        super().__init__(message)
        self.problems: tuple[str, ...] = tuple(problems)


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


class LensingError(ProjectionError):
    """A lensing quantity was asked for with invalid inputs (redshifts, profile, grid, ...)."""


class AnalysisError(MassmapError):
    """An analysis step was asked for something the cube cannot provide."""


class InferenceError(MassmapError):
    """Hyperparameter inference was asked for with invalid settings or failed."""


class OutputExistsError(MassmapError, FileExistsError):
    """An output file or store already exists and overwriting was not asked for."""


class StoreExistsError(StoreError, OutputExistsError):
    """A store already exists where a new one was to be written."""


class MassmapWarning(UserWarning):
    """Base class of the warnings massmap_xr emits."""


class CatalogWarning(MassmapWarning):
    """A catalogue is valid but suspicious (e.g. positions that look like arcmin)."""


class EdgeWarning(CatalogWarning):
    """Posteriors of some halos have more than a small fraction of their probability in the outermost
    cells of the mass grid: the grid cuts them (widen it)."""


def format_offenders(labels: Sequence | np.ndarray, n_show: int = 5) -> str:
    """Format the first few offending labels, e.g. ``"12, 40, 41 (and 7 more)"``."""
    labels = list(np.asarray(labels).ravel().tolist())
    shown = ", ".join(str(v) for v in labels[:n_show])
    if len(labels) > n_show:
        shown += f" (and {len(labels) - n_show} more)"
    return shown


def describe_offenders(
    labels: Sequence | np.ndarray,
    mask: np.ndarray,
    *,
    values: np.ndarray | None = None,
    noun: str = "halo",
    n_show: int = 5,
) -> str:
    """Count and first few offenders of a rule, for error messages.

    Parameters
    ----------
    labels : array_like
        Labels of all entries (halo ids, realization labels), same length as ``mask``.
    mask : numpy.ndarray of bool
        True where the rule is broken.
    values : array_like, optional
        The offending variable's values (all entries); the first few offending ones are shown.
    noun : str, default "halo"
        What one entry is (``"halo"``, ``"realization"``).
    n_show : int, default 5
        How many offenders to name.

    Returns
    -------
    str
        e.g. ``"3 of 100 halos (first ids: 4, 8, 12; values: -1, 0, -3)"``.

    Examples
    --------
    >>> describe_offenders([10, 11, 12], np.array([False, True, True]), values=np.array([1.0, -2.0, 0.0]))
    '2 of 3 halos (first ids: 11, 12; values: -2, 0)'
    """
    labels = np.asarray(labels).ravel()
    mask = np.asarray(mask, dtype=bool).ravel()
    text = f"{int(mask.sum())} of {mask.size} {noun}s (first {'ids' if noun == 'halo' else 'labels'}: "
    text += format_offenders(labels[mask], n_show)
    if values is not None:
        bad = np.asarray(values).ravel()[mask][:n_show]
        text += "; values: " + ", ".join(f"{v:.6g}" if isinstance(v, (float, np.floating)) else str(v) for v in bad.tolist())
    return text + ")"


#: how to ask for replacement, in Python and on the command line
OVERWRITE_HINT = "pass overwrite=True (CLI: --overwrite) to replace it"


def check_output(path, *, overwrite: bool, what: str, exists: bool | None = None,
                 hint: str = OVERWRITE_HINT, error: type[MassmapError] = OutputExistsError) -> None:
    """Refuse to replace an existing output unless ``overwrite`` was asked for.

    The one output-exists check of every writer (summaries, samples, maps, FITS files,
    inference results, stores), so that they all say the same thing.

    Parameters
    ----------
    path : str or os.PathLike
        The output about to be written.
    overwrite : bool
        Whether the caller asked to replace an existing output.
    what : str
        The writer's name, which starts the message (e.g. ``"write_summary"``).
    exists : bool, optional
        Whether the output exists, for outputs that are not local paths (object stores);
        by default the local path is looked at (a URL with ``://`` never counts as existing).
    hint : str
        What to do instead, appended to the message.
    error : type, default OutputExistsError
        The exception class raised (a subclass of :class:`OutputExistsError`).

    Raises
    ------
    OutputExistsError
        ``"<what>: '<path>' already exists; <hint>"``.

    Examples
    --------
    >>> check_output("/nonexistent/out.nc", overwrite=False, what="write_summary")
    >>> check_output(".", overwrite=False, what="write_summary")
    Traceback (most recent call last):
    ...
    massmap_xr.errors.OutputExistsError: write_summary: '.' already exists; pass overwrite=True (CLI: --overwrite) to replace it
    """
    if overwrite:
        return
    if exists is None:
        text = os.fspath(path)
        exists = "://" not in text and os.path.lexists(text)
    if exists:
        raise error(f"{what}: {os.fspath(path)!r} already exists; {hint}")


class ConvergenceWarning(MassmapWarning):
    """An MCMC run of the hyper-posterior has not demonstrably converged.

    Given by :func:`massmap_xr.inference.infer_hyperparameters` (``method="emcee"``) when the
    split-R̂ of a free hyperparameter exceeds 1.01 or the chains are shorter than 50
    integrated autocorrelation times (the autocorrelation estimate is then unreliable); the
    message names the number of steps that would suffice.
    """


class RecipeVersionError(StoreError):
    """A recipe store (computed on read) was written by another massmap_xr or kernel version than the
    installed one, so recomputing it would not give the values it stands for."""


class VersionConflictError(StoreError):
    """A write to a versioned (Icechunk) store conflicts with one committed since it began; nothing
    of it was committed.  The message names both writes (their halo or realization ranges)."""
