"""Histogram charts of the HTML report: inline SVG drawn with matplotlib's ``Figure`` (never pyplot).

Each chart is drawn twice, linear and logarithmic counts, and the page switches between
them. Text in the SVG stays text (``svg.fonttype='none'``) in the page's system fonts, and
every element id carries a salt of its own, so that many SVGs share one page.
"""

from __future__ import annotations

import functools
import io
import re
import threading
from dataclasses import dataclass

import numpy as np

from ..plot import PLOT_BINS, channel_histogram, integer_bars
from ..stats.result import DatasetStats
from ..stats.summary import Summary

#: Colours of the markers; the page's legend uses the same ones.
COLOURS = {"bars": "#8d99a6", "mean": "#1f6fb4", "std": "#1f6fb4", "range": "#555555", "low": "#c0392b",
           "high": "#d9822b", "reference": "#8d99a6", "other": "#c0392b"}
#: The percentiles marked on every chart (the bounds of percentile scaling).
MARKED_PERCENTILES = ("0.5", "99.5")
FIGURE_SIZE = (7.2, 2.3)  # inches; the page scales the SVG to its column
MARGINS = {"left": 0.085, "right": 0.99, "bottom": 0.19, "top": 0.91}  # top: room for a "1e-5" above the axis

_HEADER = re.compile(r"\A.*?(?=<svg)", re.S)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)
_NAMESPACES = re.compile(r'\s+xmlns(?::xlink)?="[^"]*"')
_STYLE_ELEMENT = re.compile(r"<defs>\s*<style[^>]*>[^<]*</style>\s*</defs>\s*")  # the page's CSS says it, scoped
_GROUP_IDS = re.compile(r'<g id="[^"]*"')  # names of groups (figure_1, ...): repeated in every chart, never referenced
_FONT_FAMILY = re.compile(r"font-family: [^;\"]*(; )?")  # the page's CSS gives the system fonts
_NO_ROTATION = re.compile(r' transform="rotate\(-?0 [^)]*\)"')
_INDENT = re.compile(r"[ \t]*\n[ \t]*")
_COORDINATES = re.compile(r'( (?:d|x|y|x1|x2|y1|y2)=")([^"]*)"')
_DIGITS = re.compile(r"(\.\d\d)\d+")  # hundredths of a point: far below a pixel


@dataclass(frozen=True)
class Histogram:
    """Bars of one channel (or pooled): ``counts[i]`` values in ``[edges[i], edges[i + 1])``."""

    edges: np.ndarray
    counts: np.ndarray

    def scaled(self, divisor: float) -> "Histogram":
        return Histogram(self.edges / divisor, self.counts)

    def density(self) -> np.ndarray:
        """Counts per unit of value, over all counts: comparable between datasets of other sizes."""
        total = self.counts.sum()
        widths = np.diff(self.edges)
        return self.counts / (total * np.where(widths > 0, widths, 1.0)) if total else self.counts.astype(float)


def histograms(stats: DatasetStats) -> list[Histogram] | None:
    """Per channel, then pooled (with more than one channel): the bars to draw, at most
    :data:`imagenorm.plot.PLOT_BINS` each; None for float statistics without histograms."""
    if not stats.exact and stats.float_histograms is None:
        return None
    found = [_drawable(*map(np.asarray, channel_histogram(stats, c))) for c in range(len(stats.channel_names))]
    if len(found) == 1:
        return found
    if stats.exact:  # the exact per-channel counts summed, binned as channel_histogram bins one channel
        pooled = Histogram(*integer_bars(stats.state.counts.sum(axis=0), stats.state.offset))
    else:
        pooled = _common_grid(found)
    return found + [pooled]


def _drawable(edges: np.ndarray, counts: np.ndarray) -> Histogram:
    """The bars of a histogram; a float channel of one value (all edges equal) as one bar."""
    if edges.size > 2 and not edges[-1] > edges[0]:
        return Histogram(edges[[0, -1]], np.array([counts.sum()]))
    return Histogram(edges, counts)


def _common_grid(parts: list[Histogram], bins: int = PLOT_BINS) -> Histogram:
    """Float channels' histograms rebinned onto one grid (uniform within each bin) and summed."""
    low = min(float(h.edges[0]) for h in parts)
    high = max(float(h.edges[-1]) for h in parts)
    if not high > low:
        return Histogram(np.array([low - 0.5, low + 0.5]), np.array([sum(h.counts.sum() for h in parts)], np.float64))
    grid = np.linspace(low, high, bins + 1)
    total = np.zeros(bins)
    for part in parts:
        cumulative = np.concatenate([[0.0], np.cumsum(part.counts, dtype=np.float64)])
        if part.edges[-1] > part.edges[0]:
            total += np.diff(np.interp(grid, part.edges, cumulative))
        else:  # a constant channel: all its values in the grid bin that holds them
            total[min(bins - 1, int(np.searchsorted(grid, part.edges[0], side="right")) - 1)] += cumulative[-1]
    return Histogram(grid, total)


def _visible(edges: np.ndarray) -> np.ndarray:
    """Edges of a degenerate histogram (one value) widened so that its bar has a width."""
    if edges[-1] > edges[0]:
        return edges
    half = max(abs(float(edges[0])) * 1e-3, 0.5)
    return np.array([edges[0] - half, edges[0] + half])


_DRAWING = threading.Lock()


def _isolated(draw):
    """Draw with matplotlib's default settings, whatever style the calling program set, one
    chart at a time: the SVG settings (text as text, id salt) are matplotlib's global
    ``rcParams``, changed only while a chart is saved and restored at once."""
    @functools.wraps(draw)
    def isolated(*args, **kwargs):
        import matplotlib

        with _DRAWING, matplotlib.rc_context():
            matplotlib.rcdefaults()
            return draw(*args, **kwargs)

    return isolated


@_isolated
def histogram_chart(histogram: Histogram, summary: Summary, xlabel: str, salt: str) -> tuple[str, str]:
    """(linear, log) SVG of one histogram with mean, ±1 std, min, max and the 0.5/99.5
    percentiles marked (lines above the bars, thin: a spike stays visible)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=FIGURE_SIZE)
    figure.subplots_adjust(**MARGINS)  # fixed: tight_layout would draw the figure once more
    axis = figure.subplots()
    edges = _visible(histogram.edges)
    axis.stairs(histogram.counts, edges, fill=True, color=COLOURS["bars"], linewidth=0, zorder=2)
    axis.axvspan(summary.mean - summary.std, summary.mean + summary.std, color=COLOURS["std"], alpha=0.12, zorder=1,
                 linewidth=0)
    axis.axvline(summary.mean, color=COLOURS["mean"], linewidth=1.2, zorder=3)
    for value in (summary.min, summary.max):
        axis.axvline(value, color=COLOURS["range"], linewidth=0.8, linestyle=":", zorder=3)
    for key, colour in zip(MARKED_PERCENTILES, (COLOURS["low"], COLOURS["high"])):
        if key in summary.percentiles:
            axis.axvline(summary.percentiles[key], color=colour, linewidth=1, linestyle="--", zorder=3)
    _style(axis, xlabel, "pixels")
    return _both_scales(figure, axis, histogram.counts, salt)


@_isolated
def overlay_chart(reference: Histogram, other: Histogram, xlabel: str, salt: str) -> tuple[str, str]:
    """(linear, log) SVG of two datasets' histograms as densities: the reference filled, the
    other as a line on top."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=FIGURE_SIZE)
    figure.subplots_adjust(**MARGINS)  # fixed: tight_layout would draw the figure once more
    axis = figure.subplots()
    first, second = reference.density(), other.density()
    axis.stairs(first, _visible(reference.edges), fill=True, color=COLOURS["reference"], alpha=0.8, linewidth=0, zorder=2)
    axis.stairs(second, _visible(other.edges), fill=False, color=COLOURS["other"], linewidth=1.2, zorder=3)
    _style(axis, xlabel, "density")
    return _both_scales(figure, axis, np.concatenate([first, second]), salt)


def _style(axis, xlabel: str, ylabel: str) -> None:
    axis.set_xlabel(xlabel, fontsize=8)
    axis.set_ylabel(ylabel, fontsize=8)
    axis.tick_params(labelsize=7)
    axis.locator_params(axis="x", nbins=8)
    for side in ("top", "right"):
        axis.spines[side].set_visible(False)
    axis.margins(x=0.01)


def _both_scales(figure, axis, heights: np.ndarray, salt: str) -> tuple[str, str]:
    linear = _svg(figure, f"{salt}-linear")
    positive = heights[heights > 0]
    axis.set_yscale("log")
    from matplotlib.ticker import NullLocator

    axis.yaxis.set_minor_locator(NullLocator())  # unlabelled minor ticks cost time and bytes, and tell little
    if positive.size:
        axis.set_ylim(bottom=float(positive.min()) * 0.5, top=float(positive.max()) * 2)
    return linear, _svg(figure, f"{salt}-log")


def _svg(figure, salt: str) -> str:
    """The figure as an ``<svg>`` element to place in HTML: no XML header, metadata or namespaces."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": salt, "font.family": "sans-serif"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = _HEADER.sub("", buffer.getvalue(), count=1)
    for pattern, replacement in ((_METADATA, ""), (_NAMESPACES, ""), (_STYLE_ELEMENT, ""), (_GROUP_IDS, "<g"),
                                 (_FONT_FAMILY, ""), (_NO_ROTATION, ""), (_INDENT, "\n")):
        text = pattern.sub(replacement, text)
    text = _COORDINATES.sub(_rounded, text)
    return text.replace(' version="1.1"', "", 1).strip()


def _rounded(match: re.Match) -> str:
    return match[1] + _DIGITS.sub(r"\1", match[2]) + '"'
