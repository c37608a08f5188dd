"""DatasetStats: the measured statistics of a dataset, mergeable and saveable."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from .. import statsfile
from ..errors import ImagenormError
from ..options import ReadOptions
from .float_percentiles import FLOAT_BINS, FloatHistogram
from .landmarks import ImageLandmarks
from .measurement import Measurement
from .moments import ImageSpread
from .state import State, common_dtype
from .summary import Summary


def value_scale_of(dtype: str) -> float:
    """The dtype's maximum for integers (255, 65535, ...), 1 for floats."""
    kind = np.dtype(dtype)
    return float(np.iinfo(kind).max) if kind.kind in "ui" else 1.0


def describe_mask(options: ReadOptions) -> str | None:
    """The foreground mask the statistics were restricted to, in words (None: all voxels)."""
    if options.mask_dir is not None:
        return f"mask files under {options.mask_dir}"
    return options.mask


@dataclass
class DatasetStats:
    """Per-channel and pooled statistics of a dataset, in raw pixel units.

    Integer data keep their exact histograms, so two DatasetStats of disjoint parts merge
    exactly; float data keep float64 moments. ``read_options`` records how the pixels were
    read, so that everything downstream reads them the same way.

    Example:
        >>> import numpy as np, imagenorm
        >>> stats = imagenorm.compute_stats(np.arange(12, dtype=np.uint8).reshape(3, 2, 2))
        >>> stats.channel_names, [round(s.mean, 2) for s in stats.channels]
        (('red', 'green', 'blue'), [1.5, 5.5, 9.5])
        >>> stats.value_scale
        255.0
    """

    dtype: str
    channel_names: tuple[str, ...]
    measurement: Measurement
    read_options: ReadOptions = field(default_factory=ReadOptions)  # how the pixels were read
    ignored: int = 0  # files passed over as not images
    hidden: int = 0  # hidden files and folders (names starting with '.') skipped unread
    alpha: str = "none"
    float_percentiles: list[dict[str, float]] | None = None  # per channel, then pooled
    percentile_error: list[float] | None = None
    float_histograms: list[tuple[list[float], list[int]]] | None = None  # per channel (edges, counts), 256 bins
    created_by: str = ""
    flagged: list[dict] | None = None  # images that stand out (per-image audit)
    audit_rows: list[dict] | None = field(default=None, repr=False, compare=False)  # not saved
    source: str | None = field(default=None, compare=False)  # the stats file it was loaded from
    read_options_recorded: bool = field(default=True, compare=False)  # False: a file from before the record

    # --- the measurement -------------------------------------------------------
    @property
    def state(self) -> State:
        return self.measurement.state

    @property
    def files(self) -> int:
        return self.measurement.files

    @property
    def spread(self) -> ImageSpread | None:
        """How images differ (moments of the per-image means and stds)."""
        return self.measurement.spread

    @property
    def landmarks(self) -> ImageLandmarks | None:
        """Each image's histogram landmarks, when measured with ``landmarks=True`` (``--landmarks``)."""
        return self.measurement.landmarks

    @property
    def skipped(self) -> list[dict[str, str]]:
        return [{"path": name, "reason": reason} for _, name, reason in sorted(self.measurement.skipped)]

    @property
    def palette_expanded(self) -> bool:
        return self.measurement.palette

    @property
    def notes(self) -> list[str]:
        """What readers decided (e.g. a MONOCHROME1 policy) and what was promoted."""
        notes = set(self.measurement.notes)
        scaled = self.measurement.scaled
        if scaled:
            notes.add(f"{' and '.join(sorted(scaled))} images measured in the [0, 1] scale (each divided by its dtype's maximum)")
        if len(self.source_dtypes) > 1 and len(set(self.source_dtypes) - scaled) > 1:
            notes.add(f"{' and '.join(sorted(set(self.source_dtypes) - scaled))} images measured together as {self.dtype}")
        return sorted(notes)

    @property
    def source_dtypes(self) -> tuple[str, ...]:
        """The dtypes the images were decoded in (more than one where promoted or scaled)."""
        return tuple(sorted(self.measurement.dtypes)) or (self.dtype,)

    @property
    def raw_input_dtypes(self) -> tuple[str, ...]:
        """Integer dtypes whose values are raw units of these statistics (transforms take them as
        is): ``("integer",)``, any integer type, for values in physical units (HU in int16 or
        int32 alike), else
        the measured ones that were not scaled to [0, 1]."""
        if "physical" in self.measurement.units:
            return ("integer",)  # imagenorm.functional.ANY_INTEGER
        return tuple(name for name in self.source_dtypes
                     if np.dtype(name).kind in "ui" and name not in self.measurement.scaled)

    @property
    def significant_bits(self) -> int | None:
        """Significant bits the files declared (PNG sBIT, DICOM BitsStored), when fewer than the dtype's."""
        kind = np.dtype(self.dtype)
        bits = self.measurement.bits
        if self.value_scale != value_scale_of(self.dtype):  # a declared maximum already gives the scale
            return None
        return bits if kind.kind in "ui" and 0 < bits < kind.itemsize * 8 else None

    @property
    def mask(self) -> str | None:
        return describe_mask(self.read_options)

    # --- derived numbers -------------------------------------------------------
    @property
    def exact(self) -> bool:
        """True for integer data: every number comes from exact histograms."""
        return self.state.exact

    @property
    def value_scale(self) -> float:
        """raw / value_scale is the [0, 1] scale: the maximum every file declared (a Netpbm
        maxval such as 4095 or 1000), else the dtype's maximum (255, 65535), 1 for floats."""
        declared = self.measurement.maximum
        if declared and declared > 0 and not self.measurement.scaled and np.dtype(self.dtype).kind in "ui":
            return float(declared)
        return value_scale_of(self.dtype)

    @cached_property
    def channels(self) -> list[Summary]:
        return [self._summary(c) for c in range(len(self.channel_names))]

    @cached_property
    def pooled(self) -> Summary:
        return self._summary(None)

    def _summary(self, channel: int | None) -> Summary:
        if self.exact:
            return self.state.summary(channel)
        row = len(self.channel_names) if channel is None else channel
        return self.state.summary(channel, None if self.float_percentiles is None else self.float_percentiles[row])

    def summaries(self) -> list[tuple[str, Summary]]:
        """(name, Summary) of each channel, then of all pooled where there is more than one."""
        rows = list(zip(self.channel_names, self.channels))
        return rows + [("pooled", self.pooled)] if len(rows) > 1 else rows

    def significant_bits_meaning(self) -> str | None:
        """What the declared significant bits mean for these values (None: none declared): kept
        in the low bits (DICOM BitsStored), or scaled up to the container's range (the PNG sBIT
        rule), decided from the measured maximum, and both numbers said."""
        if self.significant_bits is None:
            return None
        bits, full, reach = self.significant_bits, 2 ** self.significant_bits - 1, self.pooled.max
        declared = f"the files declare {bits} significant bits in {self.dtype} containers and the values reach {reach:g}"
        if reach <= full:
            return (f"{declared}: in the [0, 1] scale (raw / {self.value_scale:g}) they reach only "
                    f"{reach / self.value_scale:.4g}; divide by {full} for a full [0, 1] range")
        return (f"{declared}: they are scaled up to the container's range (as PNG's sBIT rule says), so the "
                f"[0, 1] scale (raw / {self.value_scale:g}) already spans them")

    @property
    def mean(self) -> tuple[float, ...]:
        return tuple(s.mean for s in self.channels)

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(s.std for s in self.channels)

    @property
    def nonfinite(self) -> list[int]:
        """Non-finite values left out, per channel (always 0 for integer data)."""
        if self.exact:
            return [0] * len(self.channel_names)
        return [int(v) for v in self.state.nonfinite]

    @property
    def percentile_method(self) -> str:
        if self.exact:
            return "exact: numpy.percentile (linear) over every pixel, from exact histograms"
        if self.float_percentiles is None:
            return ("unavailable: these statistics are float64 moments (float data, or integers too spread for "
                    "exact bins), whose percentiles do not merge; recompute over the whole dataset")
        if self.percentile_error is not None and not any(self.percentile_error):
            return ("exact: numpy.percentile (linear) over every finite value; a histogram of "
                    f"{FLOAT_BINS} bins brackets the target ranks, a third pass collects the values inside them")
        return f"histogram of {FLOAT_BINS} bins between min and max (second pass); error at most one bin width"

    @property
    def spatial_dims(self) -> int:
        """3 when every image was a volume ``(C, D, H, W)``, else 2: what transforms built from
        these statistics take a 4-D tensor for (one volume, or a batch of pictures)."""
        return 3 if self.measurement.spatial == {3} else 2

    @property
    def has_unit_scale(self) -> bool:
        """Whether raw / ``value_scale`` is a meaningful [0, 1] scale: 8- and 16-bit integers
        (as torchvision's ``ToDtype(scale=True)``) and floats; never values in physical units
        (DICOM modality values such as HU, NIfTI values), whatever their dtype."""
        kind = np.dtype(self.dtype)
        if "physical" in self.measurement.units:  # HU and other physical values: their units are the scale
            return False
        return kind.kind == "f" or kind.kind in "ui" and kind.itemsize <= 2

    def normalize_line(self, digits: int = 6) -> str:
        """A paste-ready torchvision ``Normalize`` in the [0, 1] scale, ``digits`` significant digits.

        Raises:
            ImagenormError: the data have no [0, 1] scale (e.g. int32 HU after a DICOM rescale).
        """
        if not self.has_unit_scale:
            what = "physical units (DICOM modality values such as HU, NIfTI values)" if "physical" in \
                self.measurement.units else "e.g. HU after a DICOM rescale"
            raise ImagenormError(f"{self.dtype} values ({what}) have no [0, 1] scale; "
                                 "normalize with imagenorm's transforms, which take raw values")
        scale = self.value_scale
        # a mean far larger than its std needs more digits: its rounding must stay below 1e-digits std
        mean = ", ".join(f"{m / scale:.{digits + max(0, math.floor(math.log10(abs(m) / s))) if m and s else digits}g}"
                         for m, s in zip(self.mean, self.std))
        std = ", ".join(f"{s / scale:.{digits}g}" for s in self.std)
        return f"transforms.Normalize(mean=[{mean}], std=[{std}])"

    # --- merging ---------------------------------------------------------------
    def merge(self, other: "DatasetStats") -> "DatasetStats":
        """Statistics of both datasets together (exact for integer data).

        Raises:
            ImagenormError: the two were measured with other channels or read options (the
                values would not share units), naming the difference.
        """
        if self.channel_names != other.channel_names:
            raise ImagenormError(f"cannot merge statistics of channels {list(self.channel_names)} "
                                 f"with {list(other.channel_names)}")
        if _defining(self.read_options) != _defining(other.read_options):
            mine, theirs = self.read_options.to_dict(), other.read_options.to_dict()
            key = next(k for k in mine if mine[k] != theirs[k])
            raise ImagenormError(f"cannot merge statistics measured with {key}={mine[key]!r} "
                                 f"and with {key}={theirs[key]!r}")
        why = self.measurement.joins(other.measurement, self.read_options.mixed_depth == "scale")
        if why is not None:
            raise ImagenormError(f"cannot merge statistics of {self.dtype} and {other.dtype} values: {why}")
        measurement = self.measurement.merge(other.measurement)
        dtype = measurement.state.dtype if measurement.state.exact else common_dtype(self.dtype, other.dtype)
        return DatasetStats(
            dtype=dtype,
            channel_names=self.channel_names,
            measurement=measurement,
            read_options=self.read_options,
            ignored=self.ignored + other.ignored,
            hidden=self.hidden + other.hidden,
            alpha=_merged_alpha(self.alpha, other.alpha),
            created_by=self.created_by,
        )

    def compare(self, other: "DatasetStats", *, max_wasserstein: float | None = None, max_ks: float | None = None):
        """How ``other`` (a test set, a new scanner) differs from these statistics: mean shift,
        std ratio, Wasserstein-1, KS and PSI per channel and pooled, exact for integer data;
        drift above the thresholds ``max_wasserstein=``, ``max_ks=`` (see
        :func:`imagenorm.compare.compare_stats`, which checks them and holds their defaults)."""
        from ..compare import compare_stats

        given = {"max_wasserstein": max_wasserstein, "max_ks": max_ks}
        return compare_stats(self, other, **{name: value for name, value in given.items() if value is not None})

    def all_reduce(self, group=None) -> "DatasetStats":
        """The statistics of every rank's data together, on every rank (like torchmetrics' ``sync``).

        For statistics each rank measured of its own part (e.g. in a user's DDP loop).
        Integer data merge exactly; float percentiles need all data and are dropped.
        """
        from . import distributed

        distributed.process_group(group)
        return distributed.gather_merge(self, group)

    def reading(self, **given: Any) -> ReadOptions:
        """How to read images to normalize them with these statistics: as they were measured.

        Given options (None: not given) may repeat the recorded ones, never change them. A
        stats file from before the record says what it can (alpha, mask, MONOCHROME1 policy);
        given options then complete it without conflict.

        Raises:
            OptionConflictError: a given option differs from the recorded one, naming both.
        """
        if not self.read_options_recorded:
            return ReadOptions.from_keywords(**{**self.read_options.to_dict(),
                                                **{key: value for key, value in given.items() if value is not None}})
        return self.read_options.with_given(self.source or "the statistics", **given)

    def replace(self, **changes: Any) -> "DatasetStats":
        """A copy with ``changes`` (derived numbers recomputed)."""
        return dataclasses.replace(self, **changes)

    # --- files -----------------------------------------------------------------
    def save(self, path) -> None:
        """Write the stats file atomically (temporary file, then rename)."""
        statsfile.save(self.to_dict(), path)

    @classmethod
    def load(cls, path) -> "DatasetStats":
        """Read and validate a stats file (JSON; nothing is executed)."""
        return cls(**statsfile.load(path))

    @classmethod
    def from_dict(cls, document: Any) -> "DatasetStats":
        """Rebuild from the stats file's JSON form, validating it."""
        return cls(**statsfile.from_dict(document))

    def to_dict(self) -> dict[str, Any]:
        """The stats file's JSON form."""
        return statsfile.to_dict(self)


def _defining(options: ReadOptions) -> ReadOptions:
    """The options that define the values: each part may bring its own mask folder."""
    return dataclasses.replace(options, mask_dir=None if options.mask_dir is None else "mask files")


def _merged_alpha(a: str, b: str) -> str:
    for record in ("kept", "dropped where present"):
        if record in (a, b):
            return record
    return a


def float_percentiles_from(histogram: FloatHistogram) -> tuple[list[dict[str, float]], list[float]]:
    rows = range(histogram.low.size)
    return [histogram.percentiles(r) for r in rows], [histogram.bin_width(r) for r in rows]


def coarse_histograms(histogram: FloatHistogram, bins: int = 256) -> list[tuple[list[float], list[int]]]:
    """Per channel (not pooled): ``bins`` equal bins between min and max, for plots."""
    result = []
    for row in range(histogram.low.size - 1):
        counts = histogram.counts[row].reshape(bins, -1).sum(axis=1)
        edges = np.linspace(histogram.low[row], histogram.high[row], bins + 1)
        result.append((edges.tolist(), counts.tolist()))
    return result
