"""One self-contained HTML page of a stats file: what was measured, histograms, the numbers,
the advice, flagged images and, against another dataset, the drift (the ``report`` extra).

The page works offline and alone: styles, the small script, charts (inline SVG) and
thumbnails (data: URIs) are inside it, fonts are the system's, and a Content-Security-Policy
forbids every request to another address.

Example:
    >>> import numpy as np, imagenorm, imagenorm.report
    >>> stats = imagenorm.compute_stats(np.arange(12, dtype=np.uint8).reshape(3, 2, 2))
    >>> page = imagenorm.report.render_report(stats)
    >>> page.count("data-chart="), "Content-Security-Policy" in page
    (4, True)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from ..errors import ImagenormError, InputError, display_path
from ..options import OptionError
from ..stats.result import DatasetStats
from ..stats.summary import PERCENTILES, SCALED_PERCENTILES, Summary, percentile_key
from ..version import __version__

__all__ = ["render_report", "write_report", "CONTENT_SECURITY_POLICY"]

CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"
SCALED_KEYS = tuple(percentile_key(q) for q in SCALED_PERCENTILES)
TEMPLATE = "report.html.j2"


@dataclass(frozen=True)
class Chart:
    key: str  # a channel name or "pooled": the element's data-chart / data-overlay value
    title: str
    linear: Any  # markupsafe.Markup of the <svg>
    log: Any
    summary: Summary | None = None


def render_report(stats: DatasetStats | str | os.PathLike, audit: str | os.PathLike | None = None,
                  compare: DatasetStats | str | os.PathLike | None = None, **thresholds: float) -> str:
    """The HTML report of ``stats`` as text.

    Args:
        stats: the statistics, or the path of a stats file.
        audit: the per-image audit CSV of the same run (``imagenorm stats --audit``): the
            flagged images get their numbers and thumbnails.
        compare: another dataset's statistics (or stats file): its histograms overlaid on
            these, and the drift numbers of :func:`imagenorm.compare.compare_stats`
            (``max_wasserstein=``, ``max_ks=``: its drift thresholds).

    Raises:
        ImagenormError: jinja2 or matplotlib missing (the ``report`` extra), an unreadable
            stats or audit file, or statistics that cannot be compared.
    """
    jinja2, markup = _dependencies()
    stats = _as_stats(stats, "stats")
    other = None if compare is None else _as_stats(compare, "compare")
    from . import charts
    from .audit import audit_part

    xlabel = _units_label(stats)
    drawn = charts.histograms(stats)  # per channel, then pooled where there are several: as summaries()
    histogram_charts = []
    for index, ((key, summary), histogram) in enumerate(zip(stats.summaries(), drawn or [])):
        linear, log = charts.histogram_chart(histogram, summary, xlabel, f"h{index}")
        histogram_charts.append(Chart(key, key, markup(linear), markup(log), summary))
    comparison = None if other is None else _comparison(stats, drawn, other, markup, thresholds)
    context = {
        "stats": stats,
        "title": _title(stats),
        "version": __version__,
        "csp": CONTENT_SECURITY_POLICY,
        "measured": _measured(stats),
        "skipped": stats.skipped,
        "read_changes": stats.read_options.describe_changes(),
        "charts": histogram_charts,
        "no_charts": None if drawn is not None else "these float statistics carry no histogram (merged, or measured "
                                                      "without percentiles)",
        "single_channel": len(stats.channel_names) == 1,
        "raw_rows": _raw_rows(stats),
        "percentile_keys": [percentile_key(q) for q in PERCENTILES],
        "scaled_rows": _scaled_rows(stats) if stats.has_unit_scale and stats.value_scale != 1.0 else None,
        "scaled_keys": SCALED_KEYS,
        "normalize_line": stats.normalize_line() if stats.has_unit_scale else None,
        "advice": _advice(stats),
        "spread": _spread(stats),
        "audit": audit_part(stats, audit),
        "comparison": comparison,
        "colours": charts.COLOURS,
    }
    return _environment(jinja2).get_template(TEMPLATE).render(**context)


def write_report(stats: DatasetStats | str | os.PathLike, path: str | os.PathLike, audit: str | os.PathLike | None = None,
                 compare: DatasetStats | str | os.PathLike | None = None, **thresholds: float) -> None:
    """Write :func:`render_report`'s page to ``path`` atomically (a temporary file, then rename).

    Raises:
        OutputError: ``path`` cannot be written (checked before any work).
        ImagenormError: as :func:`render_report`.
    """
    from ..atomic import atomic_write, check_target

    check_target(path)
    page = render_report(stats, audit=audit, compare=compare, **thresholds)
    with atomic_write(path) as file:
        file.write(page)


# --- the parts --------------------------------------------------------------------------
def _dependencies():
    try:
        import jinja2
        import markupsafe
        import matplotlib  # noqa: F401  (charts import matplotlib.figure when drawing)
    except ImportError:
        raise ImagenormError("the HTML report needs jinja2 and matplotlib: pip install 'imagenorm[report]'") from None
    return jinja2, markupsafe.Markup


_ENVIRONMENT = None


def _environment(jinja2):
    global _ENVIRONMENT
    if _ENVIRONMENT is None:
        _ENVIRONMENT = jinja2.Environment(loader=jinja2.PackageLoader("imagenorm", "report"), autoescape=True,
                                          undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        _ENVIRONMENT.filters.update(number=_number, scaled=_scaled, exact=_exact, signed=_signed)
        _ENVIRONMENT.globals["zip"] = zip
    return _ENVIRONMENT


def _as_stats(value, name: str) -> DatasetStats:
    if isinstance(value, DatasetStats):
        return value
    if isinstance(value, (str, os.PathLike)):
        return DatasetStats.load(value)
    raise InputError(f"{name} must be a DatasetStats or the path of a stats file, got {type(value).__name__}")


def _title(stats: DatasetStats) -> str:
    source = f" of {os.path.basename(display_path(stats.source))}" if stats.source else ""
    return f"imagenorm report{source}: {stats.files} image(s), {stats.dtype}, {', '.join(stats.channel_names)}"


def _units_label(stats: DatasetStats) -> str:
    from ..plot import units_label

    return units_label(stats)


def _measured(stats: DatasetStats) -> list[tuple[str, str]]:
    """What was measured, as (label, text) pairs."""
    rows = [("stats file", display_path(stats.source) if stats.source else "(in memory)"),
            ("images measured", f"{stats.files:,}"),
            ("skipped", f"{len(stats.skipped)}" + (" (listed below)" if stats.skipped else "")),
            ("channels", ", ".join(stats.channel_names)),
            ("dtype", stats.dtype + (f" (decoded as {', '.join(stats.source_dtypes)})"
                                     if stats.source_dtypes != (stats.dtype,) else "")),
            ("value scale", f"{stats.value_scale:g}: the [0, 1] scale is raw / {stats.value_scale:g}"
             if stats.has_unit_scale else "none: these values have no [0, 1] scale" + (
                 " (physical units)" if "physical" in stats.measurement.units else "")),
            ("pixels per channel", f"{stats.channels[0].count:,}" if stats.channels else "0"),
            ("percentiles", stats.percentile_method)]
    if stats.significant_bits is not None:
        rows.append(("significant bits", f"{stats.significant_bits} of {stats.dtype}: {stats.significant_bits_meaning()}"))
    rows.append(("mask", stats.mask or "none: every pixel counts"))
    if stats.ignored:
        rows.append(("not images", f"{stats.ignored} file(s) ignored"))
    if stats.hidden:
        rows.append(("hidden", f"{stats.hidden} hidden file(s) or folder(s) skipped (names starting with '.')"))
    if stats.alpha != "none" or stats.palette_expanded:
        rows.append(("alpha", f"{stats.alpha}; palette images expanded: {'yes' if stats.palette_expanded else 'no'}"))
    if any(stats.nonfinite):
        rows.append(("non-finite values", f"{', '.join(map(str, stats.nonfinite))} left out (per channel)"))
    if stats.created_by:
        rows.append(("measured by", stats.created_by))
    return rows


def _cells(summary: Summary, keys) -> list[float]:
    return [summary.percentiles.get(key, math.nan) for key in keys]


def _raw_rows(stats: DatasetStats) -> list[dict]:
    keys = [percentile_key(q) for q in PERCENTILES]
    return [{"name": name, "count": s.count, "values": [s.mean, s.std, s.min, s.max], "percentiles": _cells(s, keys)}
            for name, s in stats.summaries()]


def _scaled_rows(stats: DatasetStats) -> list[dict]:
    scale = stats.value_scale
    return [{"name": name, "values": [v / scale for v in [s.mean, s.std, s.min, s.max, *_cells(s, SCALED_KEYS)]]}
            for name, s in stats.summaries()]


def _advice(stats: DatasetStats) -> list:
    from ..advice import advise

    return advise(stats)


def _spread(stats: DatasetStats) -> list[dict] | None:
    """Per channel: how many images, and the mean and std over images of their means and stds."""
    spread = stats.spread
    if spread is None or not spread.means.count.size or spread.means.count[0] < 1:
        return None

    def std(moments, c):
        return math.sqrt(moments.m2[c] / moments.count[c]) if moments.count[c] else math.nan

    return [{"name": name, "images": int(spread.means.count[c]), "mean_of_means": float(spread.means.mean[c]),
             "std_of_means": std(spread.means, c), "mean_of_stds": float(spread.stds.mean[c]),
             "std_of_stds": std(spread.stds, c)} for c, name in enumerate(stats.channel_names)]


def _comparison(stats: DatasetStats, mine, other: DatasetStats, markup, thresholds: dict) -> dict:
    """Overlays per channel (and pooled) and the drift numbers of :mod:`imagenorm.compare`."""
    from ..compare import compare_stats
    from . import charts

    unknown = sorted(set(thresholds) - {"max_wasserstein", "max_ks"})
    if unknown:
        raise OptionError(f"unknown option {unknown[0]!r}; the drift thresholds are max_wasserstein and max_ks")
    numbers = compare_stats(stats, other, **thresholds).to_dict()
    unit = numbers["scale"] == "[0, 1]"
    theirs = charts.histograms(other)
    overlays = []
    if mine is not None and theirs is not None:
        keys = [key for key, _ in stats.summaries()]
        xlabel = "value in the [0, 1] scale (raw / value scale)" if unit else _units_label(stats)
        for index, (key, a, b) in enumerate(zip(keys, mine, theirs)):
            if unit:
                a, b = a.scaled(stats.value_scale), b.scaled(other.value_scale)
            linear, log = charts.overlay_chart(a, b, xlabel, f"o{index}")
            overlays.append(Chart(key, key, markup(linear), markup(log)))
    rows = numbers["channels"] + ([numbers["pooled"]] if len(stats.channel_names) > 1 else [])
    shift_keys = [key for key in ("0.5", "50", "99.5") if rows and key in rows[0].get("percentile_shifts", {})]
    return {"reference": display_path(stats.source) if stats.source else "reference",
            "other": display_path(other.source) if other.source else "other",
            "overlays": overlays, "numbers": numbers, "rows": rows, "shift_keys": shift_keys,
            "unit": "[0, 1] scale" if unit else f"raw {stats.dtype} units"}


# --- filters: numbers as text ---------------------------------------------------------------
def _number(value: float | None) -> str:
    """Raw units: integers as integers, else 6 significant digits; a dash where there is none."""
    if value is None or isinstance(value, float) and math.isnan(value):
        return "–"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def _scaled(value: float | None) -> str:
    """The [0, 1] scale, as ``imagenorm show`` prints it."""
    return "–" if value is None or math.isnan(value) else f"{value:.4f}"


def _signed(value: float | None) -> str:
    return "–" if value is None or isinstance(value, float) and math.isnan(value) else f"{value:+.6g}"


def _exact(value: float | None) -> str:
    """The value as Python writes it (round-trips), for data-value attributes."""
    return "" if value is None else repr(float(value))
