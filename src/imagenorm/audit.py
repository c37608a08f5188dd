"""Per-image audit: one row of statistics per image, and the images that stand out.

Scanner-to-scanner drift, a blank slice or a saturated detector show up here before
training does. Flags (per channel): a per-image mean or std with a robust z-score
(median and MAD over images) beyond ``ROBUST_Z``; a constant image; values beyond the
dataset's usual range (more than one 0.5-99.5 percentile span outside it); NaN or Inf.
"""

from __future__ import annotations

import csv
import math

import numpy as np

from .atomic import atomic_write

AUDIT_PERCENTILES = (0.5, 50.0, 99.5)
ROBUST_Z = 3.5
_STATS = ("count", "mean", "std", "min", "max") + tuple(f"p{q:g}" for q in AUDIT_PERCENTILES) + ("nonfinite",)


def image_row(name: str, shape: tuple, dtype: str, spacing, channels: tuple[str, ...], pixels: np.ndarray, nonfinite: np.ndarray) -> dict:
    """Statistics of one image (``pixels`` ``(C, N)``: the voxels that count) as a flat row."""
    row = {"path": name, "shape": "x".join(map(str, shape)), "dtype": dtype,
           "spacing": "" if spacing is None else "x".join(f"{v:g}" for v in spacing)}
    for index, (channel, values) in enumerate(zip(channels, pixels.reshape(pixels.shape[0], -1))):
        values = values.astype(np.float64, copy=False)
        values = values[np.isfinite(values)]
        if values.size:
            stats = [values.size, values.mean(), values.std(), values.min(), values.max(), *np.percentile(values, AUDIT_PERCENTILES)]
        else:
            stats = [0] + [math.nan] * 7
        row.update({f"{channel}_{key}": value for key, value in zip(_STATS, [*stats, int(nonfinite[index])])})
    return row


def flag_outliers(rows: list[dict], stats) -> list[dict]:
    """``[{"path", "reasons"}]`` for the images that stand out (see the module docstring)."""
    reasons: dict[str, list[str]] = {row["path"]: [] for row in rows}
    for channel, summary in zip(stats.channel_names, stats.channels):
        for key in ("mean", "std"):
            values = np.array([row[f"{channel}_{key}"] for row in rows], np.float64)
            median = np.nanmedian(values)
            spread = 1.4826 * np.nanmedian(np.abs(values - median))
            if spread > 0:
                for row, value in zip(rows, values):
                    z = (value - median) / spread
                    if abs(z) > ROBUST_Z:
                        reasons[row["path"]].append(f"{channel} {key} {value:.4g} (robust z {z:+.1f})")
        low, high = summary.percentiles.get("0.5"), summary.percentiles.get("99.5")
        span = (high - low) if low is not None and high is not None else None
        for row in rows:
            if row[f"{channel}_std"] == 0:
                reasons[row["path"]].append(f"{channel} constant ({row[f'{channel}_min']:g})")
            if span and (row[f"{channel}_min"] < low - span or row[f"{channel}_max"] > high + span):
                reasons[row["path"]].append(
                    f"{channel} values {row[f'{channel}_min']:g}..{row[f'{channel}_max']:g} beyond the usual {low:g}..{high:g}")
            if row[f"{channel}_nonfinite"]:
                reasons[row["path"]].append(f"{channel} has {row[f'{channel}_nonfinite']} NaN/Inf")
    return [{"path": path, "reasons": found} for path, found in reasons.items() if found]


def write_csv(rows: list[dict], path) -> None:
    """The audit rows as CSV, written atomically."""
    if not rows:
        return
    with atomic_write(path) as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
