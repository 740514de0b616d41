"""The package logger and progress bars.

All messages go to the ``massmap_xr`` logger (:data:`logger`, ``logging.getLogger("massmap_xr")``);
the library adds no handler of its own, so nothing is printed unless the application configures
logging (the ``massmap`` command does: :func:`configure`, ``-v/--verbose`` for debug messages,
``--quiet`` for warnings only).

Long computations show a progress bar when asked (``progress=True`` in Python, on by default on the
command line): :func:`progress_bar` wraps a dask computation in :class:`dask.diagnostics.ProgressBar`
(local schedulers), :func:`progress_iter` wraps a Python loop in :mod:`tqdm`.  Both write to standard
error and do nothing when ``enabled`` is False.
"""

from __future__ import annotations

import contextlib
import logging
import sys

__all__ = ["logger", "configure", "progress_bar", "progress_iter", "compute_once"]

#: the package logger
logger = logging.getLogger("massmap_xr")


def configure(verbosity: int = 0, *, stream=None) -> logging.Logger:
    """Send the package's messages to ``stream`` (standard error): ``verbosity`` -1 or less warnings
    only, 0 informational messages (the steps), 1 or more debug messages too.  Returns :data:`logger`.

    The ``massmap`` command calls it with -1 by default and with ``--quiet``, 0 with ``-v``, 1 with ``-vv``."""
    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    logger.setLevel(level)
    for h in [h for h in logger.handlers if getattr(h, "_massmap_cli", False)]:
        logger.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._massmap_cli = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("massmap: %(message)s"))
    logger.addHandler(handler)
    return logger


def progress_bar(enabled: bool = True, *, what: str = ""):
    """Context showing a dask progress bar (standard error) for the computations run inside it.

    Nothing happens when ``enabled`` is False, and the bar is only drawn by dask's local
    schedulers (under ``dask.distributed`` use the dashboard instead)."""
    if not enabled:
        return contextlib.nullcontext()
    from dask.diagnostics import ProgressBar

    if what:
        logger.info(what)
    return ProgressBar(out=sys.stderr, dt=0.5, minimum=1.0)


def progress_iter(iterable, *, enabled: bool = True, total: int | None = None, desc: str = "", unit: str = "it"):
    """``iterable`` wrapped in a :mod:`tqdm` bar (standard error) when ``enabled``."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, mininterval=0.5)


def compute_once(obj, *, progress: bool = False, what: str = ""):
    """``obj`` (an xarray object, or a tuple of them) with every dask-backed variable computed in
    ONE ``dask.compute`` call, so that shared inputs (the store, the mass samples) are read and
    drawn once for all outputs; numpy-backed objects are returned as they are."""
    import dask
    import xarray as xr

    items = obj if isinstance(obj, tuple) else (obj,)
    lazy = [isinstance(o, (xr.DataArray, xr.Dataset)) and o.chunks for o in items]
    if not any(lazy):
        return obj
    with progress_bar(progress, what=what):
        done = dask.compute(*items)
    return tuple(done) if isinstance(obj, tuple) else done[0]
