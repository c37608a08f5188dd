"""The report's audit part: the per-image audit CSV read back, and thumbnails of flagged images."""

from __future__ import annotations

import base64
import csv
import io
import math
import os
from dataclasses import dataclass

import numpy as np

from ..audit import flag_outliers
from ..errors import ImagenormError, display_path, first_line
from ..stats.result import DatasetStats

THUMBNAIL_SIZE = 96  # pixels, the longer side
MAX_THUMBNAILS = 50
MAX_THUMBNAIL_BYTES = 1_000_000  # all thumbnails together, as PNG
MAX_ROWS = 500  # flagged images listed; the CSV holds the rest
_TEXT_COLUMNS = ("path", "shape", "dtype", "spacing")


@dataclass(frozen=True)
class FlaggedImage:
    path: str
    reasons: list[str]
    means: list[float] | None  # per channel, from the audit CSV
    stds: list[float] | None
    thumbnail: str | None  # a data: URI (PNG)
    why_none: str | None  # why there is no thumbnail


@dataclass(frozen=True)
class AuditPart:
    images: int | None  # rows of the audit CSV (None: no CSV given)
    flagged: list[FlaggedImage]
    more: int  # flagged images not listed (beyond MAX_ROWS)
    thumbnails: int
    thumbnail_bytes: int
    capped: bool  # some thumbnails left out for the caps


def read_audit(path: str | os.PathLike, stats: DatasetStats) -> list[dict]:
    """The rows of an audit CSV written by ``imagenorm stats --audit``, numbers as floats.

    Raises:
        ImagenormError: the file cannot be read, or lacks the columns of these statistics' channels.
    """
    name = display_path(path)
    try:
        with open(path, newline="", encoding="utf-8") as file:
            reader = csv.DictReader(file)
            rows = list(reader)
            columns = reader.fieldnames or []
    except OSError as error:
        raise ImagenormError(f"{name}: {error.strerror or error}") from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise ImagenormError(f"{name}: not an audit CSV ({error})") from None
    needed = ["path"] + [f"{channel}_{key}" for channel in stats.channel_names for key in ("mean", "std", "min", "max")]
    missing = [column for column in needed if column not in columns]
    if missing:
        raise ImagenormError(f"{name}: not the audit of these statistics (no column {missing[0]}; "
                             f"channels {', '.join(stats.channel_names)})")
    if any(None in row or None in row.values() for row in rows):  # a row of more or fewer fields than the header
        raise ImagenormError(f"{name}: not an audit CSV (a row has more or fewer fields than the header)")
    if len(rows) != stats.files:
        raise ImagenormError(f"{name}: {len(rows)} image row(s), but the statistics measured {stats.files} images: "
                             "the audit of another run?")
    return [{key: value if key in _TEXT_COLUMNS else _number(value) for key, value in row.items()} for row in rows]


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def audit_part(stats: DatasetStats, audit: str | os.PathLike | None) -> AuditPart | None:
    """The flagged images (the stats file's record, else flagged from the CSV), with their
    per-image numbers and thumbnails where an audit CSV is given and the files can be read."""
    if audit is None:
        if stats.flagged is None:
            return None
        listed = [FlaggedImage(e["path"], list(e["reasons"]), None, None, None, None) for e in stats.flagged[:MAX_ROWS]]
        return AuditPart(None, listed, max(0, len(stats.flagged) - MAX_ROWS), 0, 0, False)
    rows = read_audit(audit, stats)
    flagged = stats.flagged if stats.flagged is not None else flag_outliers(rows, stats)
    by_path = {row["path"]: row for row in rows}
    folder = os.path.dirname(os.path.abspath(os.fspath(audit)))
    listed, count, size, capped = [], 0, 0, False
    for entry in flagged[:MAX_ROWS]:
        row = by_path.get(entry["path"])
        means = stds = None
        if row is not None:
            means = [row[f"{c}_mean"] for c in stats.channel_names]
            stds = [row[f"{c}_std"] for c in stats.channel_names]
        uri, why = None, None
        if count >= MAX_THUMBNAILS or size >= MAX_THUMBNAIL_BYTES:
            why, capped = f"thumbnails capped at {MAX_THUMBNAILS} images / {MAX_THUMBNAIL_BYTES // 1000} KB", True
        else:
            uri, why = _thumbnail_of(entry["path"], folder, stats)
            if uri is not None and size + len(uri) > MAX_THUMBNAIL_BYTES:
                uri, why, capped = None, f"thumbnails capped at {MAX_THUMBNAIL_BYTES // 1000} KB", True
            elif uri is not None:
                count, size = count + 1, size + len(uri)
        listed.append(FlaggedImage(entry["path"], list(entry["reasons"]), means, stds, uri, why))
    return AuditPart(len(rows), listed, max(0, len(flagged) - MAX_ROWS), count, size, capped)


def _thumbnail_of(path: str, folder: str, stats: DatasetStats) -> tuple[str | None, str | None]:
    found = path if os.path.isfile(path) else os.path.join(folder, path)
    if not os.path.isfile(found):
        return None, "not a file on this machine"
    try:
        return thumbnail(found, stats), None
    except ImagenormError as error:
        return None, first_line(error)
    except (OSError, ValueError, MemoryError) as error:
        return None, f"unreadable ({error.__class__.__name__.lower()})"


def thumbnail(path: str | os.PathLike, stats: DatasetStats, size: int = THUMBNAIL_SIZE) -> str:
    """An 8-bit PNG of ``path`` at most ``size`` pixels on its longer side, as a data: URI.

    Read as the statistics were measured; each channel's dataset 0.5-99.5 percentiles (else
    min-max) map to black-white, so an image that stands out looks it. A volume shows its
    middle slice; three or more channels show the first three as RGB, else the first as gray.

    Raises:
        ReadError: the file cannot be decoded.
    """
    from PIL import Image

    from ..readers import read_image

    image = read_image(path, stats.read_options)
    pixels = image.pixels
    if image.units == "raw" and pixels.dtype.kind in "ui" and stats.measurement.scaled:  # measured in the [0, 1] scale
        pixels = pixels / float(image.maximum or np.iinfo(pixels.dtype).max)
    if pixels.ndim == 2:
        pixels = pixels[None]
    while pixels.ndim > 3:  # a volume: its middle slice
        pixels = pixels[:, pixels.shape[1] // 2]
    step = max(1, max(pixels.shape[1:]) // (4 * size))  # stride before any arithmetic on a large image
    shown = [0, 1, 2] if pixels.shape[0] >= 3 else [0]
    planes = []
    for channel in shown:
        summary = stats.channels[min(channel, len(stats.channels) - 1)]
        low = summary.percentiles.get("0.5", summary.min)
        high = summary.percentiles.get("99.5", summary.max)
        if not high > low:
            low, high = summary.min, summary.max if summary.max > summary.min else summary.min + 1
        plane = (pixels[channel, ::step, ::step].astype(np.float32) - low) / (high - low)
        planes.append(np.nan_to_num(np.clip(plane, 0, 1), nan=0.0) * 255 + 0.5)
    array = np.stack(planes, axis=-1).astype(np.uint8) if len(planes) == 3 else planes[0].astype(np.uint8)
    image = Image.fromarray(array)
    image.thumbnail((size, size), Image.Resampling.BOX)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
