"""The stats file: ``DatasetStats`` to and from versioned JSON, written atomically.

Schema ``imagenorm.stats/1`` (see DESIGN.md). Loading validates every field it uses
and names what is wrong; nothing in the file is ever executed. ``read_options`` records
how the pixels were read (files without it were read with the defaults of the time).
This module knows the format; :class:`~imagenorm.stats.result.DatasetStats` builds itself
from the fields that :func:`load` returns.
"""

from __future__ import annotations

import json
import math
import os
from datetime import datetime, timezone
from typing import Any

import numpy as np

from .atomic import atomic_write
from .errors import StatsFileError, display_path
from .options import OptionError, ReadOptions
from .stats.histogram import IntegerHistogram, histogram_moments
from .stats.landmarks import ImageLandmarks
from .stats.measurement import Measurement
from .stats.moments import FloatMoments, ImageSpread
from .stats.summary import PERCENTILES, Summary, percentile_key

SCHEMA = "imagenorm.stats/1"


def to_dict(stats) -> dict[str, Any]:
    """The JSON-ready form of a :class:`~imagenorm.stats.result.DatasetStats`."""
    channels = []
    for index, (name, summary) in enumerate(zip(stats.channel_names, stats.channels)):
        entry = {"name": name, **_summary_dict(summary), "nonfinite": stats.nonfinite[index]}
        if stats.exact:
            entry["histogram"] = _histogram_dict(stats.state, index)
        elif stats.float_histograms is not None:
            edges, counts = stats.float_histograms[index]
            entry["histogram"] = {"edges": edges, "counts": counts}
        channels.append(entry)
    document = {
        "schema": SCHEMA,
        "created_by": stats.created_by,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dtype": stats.dtype,
        "source_dtypes": list(stats.source_dtypes),
        "units": sorted(stats.measurement.units),
        "scaled_dtypes": sorted(stats.measurement.scaled),
        "voxels": stats.measurement.voxels,
        "spatial_dims": sorted(stats.measurement.spatial),
        "declared_maximum": stats.measurement.maximum,
        "value_scale": _number(stats.value_scale),
        "significant_bits": stats.significant_bits,
        "exact": stats.exact,
        "files": stats.files,
        "ignored_non_images": stats.ignored,
        "hidden_skipped": stats.hidden,
        "skipped": stats.skipped,
        "channel_names": list(stats.channel_names),
        "read_options": stats.read_options.to_dict(),
        "mask": stats.mask,
        "notes": stats.notes,
        "alpha": stats.alpha,
        "palette_expanded": stats.palette_expanded,
        "percentile_method": stats.percentile_method,
        "channels": channels,
        "pooled": {**_summary_dict(stats.pooled), "nonfinite": sum(stats.nonfinite)},
    }
    if stats.flagged is not None:
        document["flagged"] = stats.flagged
    if stats.spread is not None:
        document["between_images"] = _spread_dict(stats)
    if stats.landmarks is not None:
        document["landmarks"] = {**stats.landmarks.to_dict(), "standard": stats.landmarks.standard_table()}
    if stats.percentile_error is not None:
        document["percentile_max_error"] = {
            "channels": stats.percentile_error[:-1],
            "pooled": stats.percentile_error[-1],
        }
    return document


def _spread_dict(stats) -> dict[str, Any]:
    """Per channel: mean and std over images of the per-image means and stds."""
    means, stds = stats.spread.means, stats.spread.stds

    def spread_of(moments, channel: int) -> tuple[float, float]:
        count = max(int(moments.count[channel]), 1)
        return float(moments.mean[channel]), float(np.sqrt(moments.m2[channel] / count))

    channels = []
    for channel in range(len(stats.channel_names)):
        mean_of_means, std_of_means = spread_of(means, channel)
        mean_of_stds, std_of_stds = spread_of(stds, channel)
        channels.append({"mean_of_means": mean_of_means, "std_of_means": std_of_means,
                         "mean_of_stds": mean_of_stds, "std_of_stds": std_of_stds})
    return {"images": int(means.count[0]), "channels": channels}


def _summary_dict(summary: Summary) -> dict[str, Any]:
    return {
        "count": summary.count,
        "mean": summary.mean,
        "std": summary.std,
        "min": _number(summary.min),
        "max": _number(summary.max),
        "percentiles": {key: _number(value) for key, value in summary.percentiles.items()},
    }


def _number(value: float) -> int | float:
    """Integral values as JSON integers (255, not 255.0)."""
    return int(value) if float(value).is_integer() else float(value)


def _histogram_dict(state: IntegerHistogram, channel: int) -> dict[str, Any]:
    """Counts from the channel's min to its max (zeros outside are left out)."""
    counts = state.counts[channel]
    present = np.flatnonzero(counts)
    first, last = int(present[0]), int(present[-1])
    return {"first_value": first + state.offset, "counts": counts[first : last + 1].tolist()}


def save(document: dict[str, Any], path: str | os.PathLike) -> None:
    """Write the stats file ``document`` to ``path`` atomically: a failed write leaves the old file intact."""
    text = json.dumps(document, indent=1, allow_nan=False) + "\n"
    with atomic_write(path) as file:
        file.write(text)


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a stats file: the fields of a DatasetStats.

    Raises:
        StatsFileError: missing, not JSON, another schema, or a field is wrong.
    """
    name = display_path(path)
    try:
        with open(path, encoding="utf-8") as file:
            document = json.load(file)
    except FileNotFoundError:
        raise StatsFileError(f"{name}: no such stats file") from None
    except IsADirectoryError:
        raise StatsFileError(f"{name}: is a folder, not a stats file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise StatsFileError(f"{name}: not a valid JSON stats file ({error})") from None
    try:
        fields = from_dict(document)
    except StatsFileError as error:
        raise StatsFileError(f"{name}: {error}") from None
    return {**fields, "source": name}


def from_dict(document: Any) -> dict[str, Any]:
    """The fields of a DatasetStats from the JSON form, validated."""
    if not isinstance(document, dict):
        raise StatsFileError("expected a JSON object")
    if document.get("schema") != SCHEMA:
        raise StatsFileError(f"schema is {document.get('schema')!r}, expected {SCHEMA!r}")
    dtype = _field(document, "dtype", str)
    try:
        np.dtype(dtype)
    except TypeError:
        raise StatsFileError(f"dtype {dtype!r} is not a numpy dtype") from None
    names = tuple(_field(document, "channel_names", list))
    channels = _field(document, "channels", list)
    if len(channels) != len(names) or not channels:
        raise StatsFileError(f"'channels' has {len(channels)} entries for {len(names)} channel names")
    for index, entry in enumerate(channels):
        _check_summary(entry, f"channels[{index}]")
    _check_summary(_field(document, "pooled", dict), "pooled")
    if np.dtype(dtype).kind in "ui" and document.get("exact", True):
        state = IntegerHistogram.empty(dtype, len(names))
        for index, entry in enumerate(channels):
            _fill_histogram(state, index, _field(entry, "histogram", dict, f"channels[{index}]"))
            _check_agrees(entry, state, index, f"channels[{index}]")
        float_percentiles = float_histograms = None
    else:
        state = _moments_from(channels)
        float_percentiles = [dict(c["percentiles"]) for c in channels] + [dict(document["pooled"]["percentiles"])]
        if not any(float_percentiles):  # merged float statistics: no percentiles to keep
            float_percentiles = None
        float_histograms = _float_histograms(channels)
    errors = document.get("percentile_max_error")
    kind = np.dtype(dtype)
    bits = document.get("significant_bits") or (kind.itemsize * 8 if kind.kind in "ui" else 0)
    skipped = _field(document, "skipped", list)
    measurement = Measurement(
        state=state,
        spread=_spread_from(document.get("between_images"), len(names)),
        files=_field(document, "files", int),
        skipped=[(-1, str(entry.get("path", "")), str(entry.get("reason", ""))) for entry in skipped if isinstance(entry, dict)],
        palette=bool(document.get("palette_expanded", False)),
        bits=int(bits),
        notes=frozenset(document.get("notes", [])),
        dtypes=frozenset(document.get("source_dtypes", [dtype])),
        units=frozenset(document.get("units", ["float" if kind.kind == "f" else "raw"])),
        scaled=frozenset(document.get("scaled_dtypes", [])),
        voxels=int(document.get("voxels", 0)),
        spatial=frozenset(document.get("spatial_dims", [])),
        maximum=document.get("declared_maximum"),
        landmarks=_landmarks_from(document.get("landmarks"), len(names)),
    )
    return dict(
        dtype=dtype,
        channel_names=names,
        measurement=measurement,
        read_options=_read_options(document),
        read_options_recorded="read_options" in document,
        ignored=int(document.get("ignored_non_images", 0)),
        hidden=int(document.get("hidden_skipped", 0)),
        alpha=str(document.get("alpha", "none")),
        float_percentiles=float_percentiles,
        percentile_error=None if errors is None else [*errors["channels"], errors["pooled"]],
        float_histograms=float_histograms,
        created_by=str(document.get("created_by", "")),
        flagged=document.get("flagged"),
    )


def _read_options(document: dict) -> ReadOptions:
    """The recorded read options; an older file without them was read with the defaults
    (and its mask, if any, is known from its description)."""
    recorded = document.get("read_options")
    if recorded is None:  # infer what the older fields say
        mask, notes = document.get("mask"), document.get("notes", [])
        recorded = {"mask": mask} if isinstance(mask, str) and not mask.startswith("mask files under ") else {}
        if document.get("alpha") == "kept":
            recorded["alpha"] = "keep"
        if isinstance(notes, list) and "MONOCHROME1 inverted" in notes:
            recorded["monochrome1"] = "invert"
    if not isinstance(recorded, dict):
        raise StatsFileError("field 'read_options' should be an object")
    try:
        return ReadOptions.from_dict(recorded)
    except OptionError as error:
        raise StatsFileError(f"read_options: {error}") from None


def _field(mapping: dict, key: str, kind: type | tuple[type, ...], where: str = ""):
    label = f"{where}.{key}" if where else key
    if key not in mapping:
        raise StatsFileError(f"missing field '{label}'")
    value = mapping[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        expected = " or ".join(k.__name__ for k in kinds)
        raise StatsFileError(f"field '{label}' should be {expected}, got {type(value).__name__}")
    return value


def _check_summary(entry: Any, where: str) -> None:
    if not isinstance(entry, dict):
        raise StatsFileError(f"'{where}' should be an object")
    _field(entry, "count", int, where)
    for key in ("mean", "std", "min", "max"):
        _field(entry, key, (int, float), where)
    percentiles = _field(entry, "percentiles", dict, where)
    missing = [percentile_key(q) for q in PERCENTILES if percentile_key(q) not in percentiles]
    if missing and percentiles:
        raise StatsFileError(f"'{where}.percentiles' lacks {missing}")
    _check_values(entry, where)


def _check_values(entry: dict, where: str) -> None:
    """Numbers that no measurement gives: NaN, a negative count or std, min above max."""
    for key in ("mean", "std", "min", "max"):
        if not math.isfinite(entry[key]):
            raise StatsFileError(f"'{where}.{key}' is {entry[key]}, not a finite number")
    if entry["count"] < 0 or entry["std"] < 0:
        raise StatsFileError(f"'{where}' has a negative {'count' if entry['count'] < 0 else 'std'}")
    slack = 1e-9 * (abs(entry["min"]) + abs(entry["max"]))  # a float mean may round just past a bound
    if entry["min"] > entry["max"] or not entry["min"] - slack <= entry["mean"] <= entry["max"] + slack:
        raise StatsFileError(f"'{where}' has min {entry['min']}, mean {entry['mean']} and max {entry['max']}, "
                             "which no data have")
    for key, value in entry["percentiles"].items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise StatsFileError(f"'{where}.percentiles.{key}' is {value!r}, not a finite number")


def _check_agrees(entry: dict, state: IntegerHistogram, channel: int, where: str) -> None:
    """The stated numbers of integer data must be those of their histogram (checked with float64
    sums, so that loading does not compute the exact summaries twice; E[x²] - E[x]² leaves the
    std about 1e-6 relative at worst, far below any tampering worth finding)."""
    counts = state.counts[channel : channel + 1]
    present = np.flatnonzero(counts[0])
    mean, std = histogram_moments(counts, state.values)
    counted = {"count": int(counts.sum()), "mean": float(mean[0]), "std": float(std[0]),
               "min": float(present[0] + state.offset) if present.size else math.nan,
               "max": float(present[-1] + state.offset) if present.size else math.nan}
    for key, tolerance in (("count", 0.0), ("min", 0.0), ("max", 0.0), ("mean", 1e-9), ("std", 1e-5)):
        if not math.isclose(entry[key], counted[key], rel_tol=tolerance, abs_tol=1e-9):
            raise StatsFileError(f"'{where}.{key}' is {entry[key]}, but its histogram gives {counted[key]:.10g}")


def _fill_histogram(state: IntegerHistogram, channel: int, histogram: dict) -> None:
    first = _field(histogram, "first_value", int, f"channels[{channel}].histogram")
    counts = np.asarray(_field(histogram, "counts", list, f"channels[{channel}].histogram"), dtype=np.int64)
    if (counts < 0).any():
        raise StatsFileError(f"channels[{channel}].histogram has negative counts")
    info = np.iinfo(np.dtype(state.dtype))
    if first < info.min or first + counts.size - 1 > info.max:
        raise StatsFileError(f"channels[{channel}].histogram does not fit dtype {state.dtype}")
    part = np.zeros((state.counts.shape[0], counts.size), np.int64)
    part[channel] = counts
    state._add(IntegerHistogram(state.dtype, part, first))


def _spread_from(entry: Any, channels: int) -> ImageSpread | None:
    """Rebuild the between-image moments (optional in the file)."""
    if entry is None:
        return None
    rows = _field(entry, "channels", list, "between_images")
    if len(rows) != channels:
        raise StatsFileError(f"'between_images.channels' has {len(rows)} entries for {channels} channels")
    images = _field(entry, "images", int, "between_images")
    as_moments = lambda mean, std: _moments_from([{"count": images, "mean": r[mean], "std": r[std], "min": np.nan, "max": np.nan} for r in rows])
    return ImageSpread(as_moments("mean_of_means", "std_of_means"), as_moments("mean_of_stds", "std_of_stds"))


def _landmarks_from(entry: Any, channels: int) -> ImageLandmarks | None:
    """Each image's histogram landmarks (optional in the file), checked."""
    if entry is None:
        return None
    if not isinstance(entry, dict):
        raise StatsFileError("field 'landmarks' should be an object")
    try:
        landmarks = ImageLandmarks.from_dict(entry)
    except OptionError as error:
        raise StatsFileError(f"landmarks: {error}") from None
    except (KeyError, TypeError, ValueError) as error:
        raise StatsFileError(f"landmarks: malformed ({error or 'a field is missing'})") from None
    if landmarks.channels != channels:
        raise StatsFileError(f"'landmarks' has {landmarks.channels} channels, the statistics {channels}")
    if (np.diff(landmarks.values, axis=-1) < 0).any() or np.isinf(landmarks.values).any():
        raise StatsFileError("'landmarks' has an image whose landmarks decrease, which no data give")
    return landmarks


def _float_histograms(channels: list[dict]) -> list | None:
    """The optional (edges, counts) plot histograms of float data."""
    if not all("histogram" in c for c in channels):
        return None
    result = []
    for index, entry in enumerate(channels):
        histogram = _field(entry, "histogram", dict, f"channels[{index}]")
        edges = _field(histogram, "edges", list, f"channels[{index}].histogram")
        counts = _field(histogram, "counts", list, f"channels[{index}].histogram")
        if len(edges) != len(counts) + 1:
            raise StatsFileError(f"channels[{index}].histogram needs one more edge than counts")
        result.append((edges, counts))
    return result


def _moments_from(channels: list[dict]) -> FloatMoments:
    count = np.array([c["count"] for c in channels], np.int64)
    std = np.array([c["std"] for c in channels], np.float64)
    return FloatMoments(
        count=count,
        mean=np.array([c["mean"] for c in channels], np.float64),
        m2=std * std * count,
        minimum=np.array([c["min"] for c in channels], np.float64),
        maximum=np.array([c["max"] for c in channels], np.float64),
        nonfinite=np.array([c.get("nonfinite", 0) for c in channels], np.int64),
    )
