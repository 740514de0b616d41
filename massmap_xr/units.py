"""Units: the spellings the package writes, and a pint registry that reads them.

Every ``units`` attribute the package writes (cubes, stores, summaries, samples, maps, lensing
maps) is in the FITS / VOUnit style that :class:`astropy.units.Unit` parses (``solMass``,
``solLum``, ``deg``, ``arcmin``, ``solMass arcmin-2``, ``Mpc-3 solMass-1``, ``1``), except the
logarithmic ones, which only astropy's generic format knows: ``dex(solMass)`` for log10(M / M_sun)
and ``dex`` for widths of log masses, ``dex-1`` for densities per unit log10 M.  The test suite
collects all of them from built objects and parses each with astropy and with :data:`registry`.

pint does not know the astronomical units nor the exponent spelling ``arcmin-2``; :data:`registry`
is a :class:`pint.UnitRegistry` with

- ``solMass`` (alias ``M_sun``, 1.98841e30 kg, IAU 2015 nominal GM_sun / G), ``solLum`` (alias
  ``L_sun``, 3.828e26 W, IAU 2015 nominal);
- ``dex``, dimensionless: a log10 quantity is a plain number, so ``dex(solMass)`` (log10 of a mass
  in M_sun) reads as ``dex``; the reference unit stays in the ``units`` attribute;
- a preprocessor turning ``arcmin-2`` into ``arcmin ** -2`` and ``dex(X)`` into ``dex``.

With pint-xarray (the ``units`` extra)::

    import pint_xarray  # noqa: F401  (registers .pint)
    import massmap_xr.units
    q = ds.pint.quantify(unit_registry=massmap_xr.units.registry)
    q["mass"].pint.to("kg")

``import massmap_xr`` does not import this module (nor pint); ``import massmap_xr.units`` does.
"""

from __future__ import annotations

import re

__all__ = ["registry", "make_registry", "to_pint", "ASTROPY_FORMATS"]

#: astropy formats every non-logarithmic unit string of the package parses in
ASTROPY_FORMATS = ("generic", "fits", "vounit")

_DEX_OF = re.compile(r"dex\([^()]*\)")
_POWER = re.compile(r"(?<![\w.*])([A-Za-z_]+)(-?\d+)(?![\w.])")

#: pint definitions of the astronomical units (IAU 2015 nominal values)
DEFINITIONS = (
    "solMass = 1.988409870698051e30 * kilogram = M_sun = Msun",
    "solLum = 3.828e26 * watt = L_sun = Lsun",
    "dex = [] = _ = decade_of",
)


def to_pint(text: str) -> str:
    """A unit string as the package writes it, spelled for pint (``"solMass arcmin-2"`` ->
    ``"solMass arcmin**-2"``, ``"dex(solMass)"`` -> ``"dex"``)."""
    out = _DEX_OF.sub("dex", text)
    return _POWER.sub(lambda m: f"{m.group(1)}**{m.group(2)}", out)


def make_registry():
    """A new :class:`pint.UnitRegistry` that reads every unit string of the package."""
    import pint

    reg = pint.UnitRegistry(preprocessors=[to_pint], force_ndarray_like=True)  # as pint-xarray needs
    for line in DEFINITIONS:
        reg.define(line)
    return reg


#: the registry (created when this module is imported; pint is imported then, not by ``import massmap_xr``)
registry = make_registry()
