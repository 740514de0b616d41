"""Inference: the hyperparameters (α, S) of the mass–luminosity relation from a catalogue.

This stage turns a halo catalogue and a mass prior into draws of the hyper-posterior
P(α, S | catalogue), a hyperparameter Dataset along ``realization`` that
:func:`massmap_xr.cube.build_posterior` takes directly.

- :mod:`~massmap_xr.inference.likelihood`: the catalogue likelihood (:class:`CatalogLikelihood`,
  :func:`log_likelihood`), optional grouping of halos and the cache of the functional form;
- :mod:`~massmap_xr.inference.hyperprior`: the hyperpriors (:class:`HyperPrior`,
  :data:`FLAT_BOUNDS`) and their unconstrained coordinates;
- :mod:`~massmap_xr.inference.samplers`: the hyper-posterior density, the Laplace
  approximation with importance sampling, emcee, split-R̂ and the Student-t density;
- :mod:`~massmap_xr.inference.infer`: the entry points :func:`infer_hyperparameters` and
  :func:`infer_to_file` (the ``massmap infer`` command).

:func:`to_arviz` lives beside :func:`~massmap_xr.model.hyper.from_arviz` in
:mod:`massmap_xr.model.hyper`.
"""

from massmap_xr.inference.hyperprior import FLAT_BOUNDS, HyperPrior
from massmap_xr.inference.infer import DEFAULT_FREE, infer_hyperparameters, infer_to_file
from massmap_xr.inference.likelihood import CatalogLikelihood, log_likelihood
from massmap_xr.model.hyper import to_arviz

__all__ = [
    "DEFAULT_FREE",
    "FLAT_BOUNDS",
    "CatalogLikelihood",
    "HyperPrior",
    "infer_hyperparameters",
    "infer_to_file",
    "log_likelihood",
    "to_arviz",
]
