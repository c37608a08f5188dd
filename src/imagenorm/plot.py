"""Per-channel histograms with mean, ±1 std and percentiles marked (matplotlib, the ``plot`` extra)."""

from __future__ import annotations

import os

import numpy as np

from .atomic import atomic_write
from .errors import ImagenormError
from .stats.result import DatasetStats

#: Bars per channel: 16-bit data are grouped into this many bins between min and max.
PLOT_BINS = 256


def channel_histogram(stats: DatasetStats, channel: int) -> tuple[np.ndarray, np.ndarray]:
    """(edges, counts) of one channel, at most PLOT_BINS bins, from the stats file's histograms."""
    if stats.exact:
        return integer_bars(stats.state.counts[channel], stats.state.offset)
    if stats.float_histograms is None:
        raise ImagenormError("these float statistics carry no histogram (merged, or measured without percentiles)")
    edges, counts = stats.float_histograms[channel]
    return np.asarray(edges), np.asarray(counts)


def integer_bars(counts: np.ndarray, offset: int, bins: int = PLOT_BINS) -> tuple[np.ndarray, np.ndarray]:
    """(edges, counts) of exact integer counts (bin ``b`` holds value ``b + offset``) from the
    first to the last value present, grouped into at most ``bins`` bars."""
    present = np.flatnonzero(counts)
    first, last = present[0], present[-1] + 1
    counts = counts[first:last]
    group = max(1, -(-counts.size // bins))  # integer values per bar
    padded = np.pad(counts, (0, (-counts.size) % group))
    edges = offset + first + np.arange(0, padded.size + 1, group) - 0.5
    return edges.astype(np.float64), padded.reshape(-1, group).sum(axis=1)


def plot_histograms(stats: DatasetStats, path: str | os.PathLike, *, log: bool = False, percentiles=("0.5", "99.5")) -> None:
    """Save one histogram panel per channel to ``path`` (PNG, SVG or PDF by extension)."""
    try:
        import matplotlib  # noqa: F401  (the extra itself, before any of its modules)
        from matplotlib.figure import Figure  # no pyplot: the user's backend and figures stay as they are
    except ImportError:
        raise ImagenormError("plotting needs matplotlib: pip install 'imagenorm[plot]'") from None
    names = stats.channel_names
    figure = Figure(figsize=(8, 2.6 * len(names)))
    axes = figure.subplots(len(names), 1, squeeze=False)
    for index, (axis, name, summary) in enumerate(zip(axes[:, 0], names, stats.channels)):
        edges, counts = channel_histogram(stats, index)
        axis.stairs(counts, edges, fill=True, color="0.6", zorder=3)  # bars above the markers: none hides a spike
        axis.axvline(summary.mean, color="C0", label=f"mean {summary.mean:.4g}", zorder=2)
        axis.axvspan(summary.mean - summary.std, summary.mean + summary.std, color="C0", alpha=0.12,
                     label=f"±1 std {summary.std:.4g}", zorder=1)
        for key, color in zip(percentiles, ("C3", "C1", "C2", "C4")):
            if key in summary.percentiles:
                value = summary.percentiles[key]
                axis.axvline(value, color=color, linestyle="--", label=f"p{key} {value:.4g}", zorder=2)
        if log:
            axis.set_yscale("log")
        axis.set_title(f"{name} ({stats.dtype}, {stats.files} images)", loc="left")
        axis.set_ylabel("pixels")
        axis.legend(fontsize="small", loc="upper right")
    axes[-1, 0].set_xlabel(units_label(stats))
    figure.tight_layout()
    extension = os.path.splitext(os.fspath(path))[1].lstrip(".") or "png"
    with atomic_write(path, "wb") as file:
        figure.savefig(file, format=extension, dpi=110)


def units_label(stats: DatasetStats) -> str:
    """What the x axis counts: physical units, raw pixel values of a dtype, or the [0, 1] scale."""
    units = stats.measurement.units
    if "physical" in units:
        return "value in physical units (DICOM modality values such as HU, NIfTI values)"
    if stats.measurement.scaled:
        return "value in the [0, 1] scale (raw / dtype maximum)"
    if "float" in units:
        return f"float value ({stats.dtype})"
    return f"raw {stats.dtype} value ([0, 1] scale = raw / {stats.value_scale:g})"
