"""Figure style shared by the sky plots: colour-bar labels naming the quantity and the pixel,
evenly spaced colour-bar ticks with compact labels (they never overlap), the "no data" colour and
its legend entry, and the note on maps made from mock positions."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["NO_DATA_COLOR", "SNR_CMAP", "RESIDUAL_CMAP", "N_COLORBAR_TICKS", "quantity_label", "colorbar_ticks",
           "add_colorbar", "no_data_legend", "position_note", "tick_text"]

#: colour of cells without data (lavender: in none of the gray, viridis and RdBu colour maps)
NO_DATA_COLOR = "#d9b3ff"
#: colour maps of the signal-to-noise and residual panels
SNR_CMAP, RESIDUAL_CMAP = "viridis", "RdBu_r"
#: colour-bar ticks per colour bar (evenly spaced in display, so labels cannot overlap)
N_COLORBAR_TICKS = 5

_UNIT_TEXT = {"solMass": "M$_\\odot$", "solMass arcmin-2": "M$_\\odot$ arcmin$^{-2}$",
              "solMass deg-2": "M$_\\odot$ deg$^{-2}$", "solMass sr-1": "M$_\\odot$ sr$^{-1}$"}


def _pixel_text(attrs: dict) -> str:
    """``"1′ pixel"`` (flat) or ``"HEALPix cell (nside 4096, 0.86′)"``, from a map's attrs."""
    if "pixel_scale_arcmin" in attrs:
        return f"{float(attrs['pixel_scale_arcmin']):g}′ pixel"
    if "nside" in attrs:
        nside = int(attrs["nside"])
        return f"HEALPix cell (nside {nside}, {math.degrees(math.sqrt(4 * math.pi / (12 * nside * nside))) * 60:.3g}′)"
    return "pixel"


def quantity_label(attrs: dict, what: str = "") -> str:
    """Colour-bar label naming the statistic, the quantity, the pixel and the units, e.g.
    ``"posterior mean mass per 1′ pixel [M_sun]"``."""
    units = attrs.get("units")
    quantity = attrs.get("quantity", "mass")
    if units in (None, "", "1"):
        return what or str(attrs.get("long_name", ""))
    if quantity == "surface_density":
        body = f"surface density ({_pixel_text(attrs)}s)"
    else:
        body = f"mass per {_pixel_text(attrs)}"
    return f"{what} {body}".strip() + f" [{_UNIT_TEXT.get(units, units)}]"


def tick_text(v: float) -> str:
    """Compact tick label: ``0``, ``2.5``, ``3×10¹¹`` (mathtext)."""
    if v == 0 or not np.isfinite(v):
        return "0"
    exp = int(math.floor(math.log10(abs(v))))
    if -2 <= exp <= 3:
        return f"{v:.3g}"
    mant = v / 10.0**exp
    mant_text = "" if abs(round(mant, 1) - 1) < 1e-9 else f"{round(mant, 1):g}\\times"
    if mant_text and abs(round(mant, 1)) >= 10:
        exp, mant_text = exp + 1, ""
    return f"${mant_text}10^{{{exp}}}$"


def colorbar_ticks(norm, n: int = N_COLORBAR_TICKS) -> np.ndarray:
    """``n`` tick values evenly spaced in display (colour) space between the norm's limits,
    rounded to two significant digits, so that labels are spread evenly along the bar."""
    pos = np.linspace(0.0, 1.0, n)
    vals = np.asarray(norm.inverse(pos), dtype=float).ravel()
    out = []
    for v in vals:
        if v == 0 or not np.isfinite(v):
            out.append(0.0)
            continue
        e = math.floor(math.log10(abs(v))) - 1
        out.append(round(v / 10.0**e) * 10.0**e)
    out = np.clip(np.asarray(out), min(norm.vmin, norm.vmax), max(norm.vmin, norm.vmax))
    return np.unique(out)


def add_colorbar(fig, im, ax, label: str, norm=None):
    """A colour bar with :func:`colorbar_ticks` and compact labels (:func:`_tick_text`)."""
    from matplotlib.ticker import FixedFormatter, FixedLocator

    cbar = fig.colorbar(im, ax=ax, label=label, shrink=0.85)
    ticks = colorbar_ticks(norm if norm is not None else im.norm)
    cbar.ax.yaxis.set_major_locator(FixedLocator(ticks))
    cbar.ax.yaxis.set_major_formatter(FixedFormatter([tick_text(t) for t in ticks]))
    cbar.ax.yaxis.set_minor_locator(FixedLocator([]))
    return cbar


def no_data_legend(ax, where: str = "lower left"):
    """Legend entry for cells without data (:data:`NO_DATA_COLOR`)."""
    from matplotlib.patches import Patch

    return ax.legend(handles=[Patch(facecolor=NO_DATA_COLOR, edgecolor="0.3", label="no data (no halo in the cell)")],
                     loc=where, fontsize="small", framealpha=0.9)


def position_note(attrs: dict) -> str | None:
    """A note for maps made from mock positions (``attrs["positions"]`` or a mock source)."""
    positions = str(attrs.get("positions", ""))
    if "mock" in positions:
        return f"Halo positions are mock ({positions}): the map shows the method, not the real sky."
    if str(attrs.get("source", "")).startswith("mock"):
        return "Mock catalogue: positions, luminosities and masses drawn from the model."
    return None
