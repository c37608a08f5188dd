"""Histogram landmarks (Nyúl & Udupa): each image's percentiles, and the standard scale learned from them.

Nyúl standardization maps every image piecewise-linearly from its own landmarks (a few
percentiles of its values) onto one standard scale, so that the same tissue lands at the same
value whatever the scanner. The defaults are TorchIO's (``HistogramStandardization``): the
cutoffs 1 and 99, the deciles 10..90 mapped, the quartiles 25 and 75 recorded but not mapped;
the standard scale is the mean over images of each image's landmarks mapped linearly so that
its cutoffs land on the output range (TorchIO: 0..100).

Landmarks are exact (numpy's linear percentile of the image's values in float64) and recorded
per image in item order, so statistics of parts merge by concatenation: no second pass.

Example:
    >>> import numpy as np
    >>> spec = LandmarkSpec()
    >>> spec.recorded
    (1.0, 10.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0, 70.0, 75.0, 80.0, 90.0, 99.0)
    >>> image = np.arange(101, dtype=np.uint8)
    >>> image_landmarks(image[None], spec)[0].tolist()[:3]
    [1.0, 10.0, 20.0]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ImagenormError, warn
from ..options import OptionError
from .summary import linear_percentile_values, percentile_values_from_counts, target_ranks

DECILES = tuple(float(q) for q in range(10, 100, 10))
QUARTILES = (25.0, 50.0, 75.0)  # TorchIO computes them too, and leaves 25 and 75 out of the mapping
TORCHIO_CUTOFF = (1.0, 99.0)
TORCHIO_RANGE = (0.0, 100.0)
_COUNTED_SPAN = 1 << 16  # integers spanning fewer values (or fewer than 4 per value) are counted, not sorted


class DegenerateLandmarksError(ImagenormError, ValueError):
    """No image has two distinct cutoff landmarks: there is no scale to learn."""


@dataclass(frozen=True)
class LandmarkSpec:
    """Which percentiles are landmarks: the two ``cutoff`` percentiles and the ``inner`` ones between.

    ``recorded`` adds the quartiles (as TorchIO does); ``mapped`` are the percentiles the
    piecewise-linear map goes through: the cutoffs and the inner ones.
    """

    cutoff: tuple[float, float] = TORCHIO_CUTOFF
    inner: tuple[float, ...] = DECILES

    def __post_init__(self) -> None:
        try:
            low, high = (float(q) for q in self.cutoff)
            inner = tuple(sorted({float(q) for q in self.inner}))
        except (TypeError, ValueError):
            raise OptionError(f"landmark percentiles must be numbers, got cutoff={self.cutoff!r}, "
                              f"inner={self.inner!r}") from None
        if not 0 <= low < high <= 100 or not all(math.isfinite(q) for q in (low, high)):
            raise OptionError(f"the landmark cutoff must satisfy 0 <= low < high <= 100, got ({low:g}, {high:g})")
        outside = [q for q in inner if not low < q < high]
        if outside:
            raise OptionError(f"landmark percentiles {outside} lie outside the cutoff ({low:g}, {high:g}); "
                              "give inner= percentiles between the cutoffs")
        object.__setattr__(self, "cutoff", (low, high))
        object.__setattr__(self, "inner", inner)

    @property
    def mapped(self) -> tuple[float, ...]:
        return (self.cutoff[0], *self.inner, self.cutoff[1])

    @property
    def recorded(self) -> tuple[float, ...]:
        low, high = self.cutoff
        return tuple(sorted({*self.mapped, *(q for q in QUARTILES if low < q < high)}))

    @property
    def mapped_index(self) -> np.ndarray:
        """Positions of ``mapped`` within ``recorded``."""
        return np.searchsorted(self.recorded, self.mapped)

    @property
    def is_torchio(self) -> bool:
        """TorchIO's landmarks (cutoff 1/99, deciles): the only ones its transform maps with."""
        return self == LandmarkSpec()

    def to_dict(self) -> dict[str, Any]:
        return {"cutoff": list(self.cutoff), "inner": list(self.inner), "recorded": list(self.recorded)}

    @classmethod
    def from_dict(cls, document: dict) -> "LandmarkSpec":
        return cls(tuple(document["cutoff"]), tuple(document["inner"]))


def exact_percentiles(values: np.ndarray, qs) -> np.ndarray:
    """``numpy.percentile(values.astype(float64), qs)`` (linear) over the finite ``values``; NaN when none.

    Integers of a span not much wider than their count are counted (one pass), others
    partially sorted in their own dtype (no float64 copy).
    """
    values = values.reshape(-1)
    if values.dtype.kind == "f":
        finite = np.isfinite(values)
        if not finite.all():
            values = values[finite]
    if values.size == 0:
        return np.full(len(qs), np.nan)
    if values.dtype.kind in "uib" and values.dtype.itemsize < 8:
        values = values.view(np.uint8) if values.dtype.kind == "b" else values
        low, high = int(values.min()), int(values.max())
        if high - low < max(_COUNTED_SPAN, 4 * values.size):
            counts = np.bincount(values.astype(np.intp) - low if low else values, minlength=1)
            return np.array(percentile_values_from_counts(np.arange(low, high + 1), counts, qs))
    ranks = target_ranks(values.size, qs)
    ordered = np.partition(values, ranks)
    return np.array(linear_percentile_values(values.size, lambda rank: float(ordered[rank]), qs))


def image_landmarks(pixels: np.ndarray, spec: LandmarkSpec, pooled: bool = False) -> np.ndarray:
    """The recorded landmarks of one image ``(C, ...)``: ``(C, R)``, or with ``pooled`` ``(C + 1, R)``
    whose last row pools every channel (for several channels)."""
    qs = spec.recorded
    rows = [exact_percentiles(channel, qs) for channel in pixels.reshape(pixels.shape[0], -1)]
    if pooled and pixels.shape[0] > 1:
        rows.append(exact_percentiles(pixels, qs))
    return np.stack(rows)


def learn_standard(landmarks: np.ndarray, spec: LandmarkSpec, out_range=TORCHIO_RANGE) -> tuple[np.ndarray, np.ndarray]:
    """The standard scale ``(R,)`` from the images' landmarks ``(N, R)`` as TorchIO's training
    computes it, and which images it used ``(N,)``.

    Each image's landmarks are mapped linearly so that its cutoffs land on ``out_range``; the
    standard landmarks are their mean. Images whose cutoffs are equal (constant inside the
    mask) or missing (no voxel) have no such map and are left out (TorchIO would divide by zero).

    Raises:
        DegenerateLandmarksError: no image has two distinct cutoffs.
    """
    s1, s2 = (float(v) for v in out_range)
    usable = np.isfinite(landmarks).all(axis=1) & (landmarks[:, -1] > landmarks[:, 0])
    if not usable.any():
        raise DegenerateLandmarksError(
            f"no image has distinct percentiles {spec.cutoff[0]:g} and {spec.cutoff[1]:g} (each is constant "
            "inside its mask, or has no voxel there): there is no standard scale to learn")
    used = landmarks[usable]
    slopes = (s2 - s1) / (used[:, -1] - used[:, 0])
    intercept = np.mean(s1 - slopes * used[:, 0])
    return slopes.dot(used) / len(used) + intercept, usable


class ImageLandmarks:
    """Every measured image's landmarks, in item order: ``values`` ``(N, G, R)`` float64, G the
    channels (and a pooled row after them for several channels), R ``spec.recorded``; NaN for an
    image without voxels. ``names`` and ``indices`` (item indices, to order parts) go with them.

    Parts are kept as blocks and joined once when read, so merging many chunks stays linear.
    """

    def __init__(self, spec: LandmarkSpec, channels: int, values: np.ndarray | None = None,
                 names: list[str] | None = None, indices: list[int] | None = None) -> None:
        self.spec, self.channels = spec, int(channels)
        groups = self.channels + 1 if self.channels > 1 else 1
        empty = np.empty((0, groups, len(spec.recorded)))
        self._values = [empty if values is None else np.asarray(values, np.float64)]
        self._names = [list(names or [])]
        self._indices = [list(indices or [])]

    @classmethod
    def empty(cls, spec: LandmarkSpec, channels: int) -> "ImageLandmarks":
        return cls(spec, channels)

    def add(self, index: int, name: str, pixels: np.ndarray) -> None:
        """Record the landmarks of the image ``pixels`` (the values that count, ``(C, ...)``)."""
        self._values.append(image_landmarks(pixels, self.spec, pooled=True)[None])
        self._names.append([name])
        self._indices.append([index])

    def merge(self, other: "ImageLandmarks") -> "ImageLandmarks":
        """Both parts, this one first (the blocks are shared, not copied)."""
        if other.spec != self.spec or other.channels != self.channels:
            raise OptionError(f"landmarks at percentiles {list(other.spec.recorded)} cannot merge with landmarks at "
                              f"{list(self.spec.recorded)}")
        merged = ImageLandmarks(self.spec, self.channels)
        merged._values = self._values + other._values
        merged._names, merged._indices = self._names + other._names, self._indices + other._indices
        return merged

    @property
    def values(self) -> np.ndarray:
        if len(self._values) > 1:
            self._values = [np.concatenate(self._values)]
        return self._values[0]

    @property
    def names(self) -> list[str]:
        if len(self._names) > 1:
            self._names = [[name for block in self._names for name in block]]
        return self._names[0]

    @property
    def indices(self) -> list[int]:
        if len(self._indices) > 1:
            self._indices = [[index for block in self._indices for index in block]]
        return self._indices[0]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ImageLandmarks):
            return NotImplemented
        return (self.spec, self.channels, self.names) == (other.spec, other.channels, other.names) and np.array_equal(
            self.values, other.values, equal_nan=True)

    def __repr__(self) -> str:
        return f"ImageLandmarks({len(self.names)} images, percentiles {list(self.spec.recorded)})"

    def in_item_order(self) -> "ImageLandmarks":
        order = np.argsort(np.asarray(self.indices, dtype=np.int64), kind="stable")
        return ImageLandmarks(self.spec, self.channels, self.values[order], [self.names[i] for i in order],
                              [self.indices[i] for i in order])

    def group(self, channel: int | None) -> np.ndarray:
        """``(N, R)``: the landmarks of one channel, or pooled over all (``None``)."""
        return self.values[:, -1 if channel is None else channel]

    def standard(self, channel_wise: bool = True, out_range=TORCHIO_RANGE, quiet: bool = False) -> np.ndarray:
        """The standard scale ``(G, R)``: per channel, or ``(1, R)`` pooled; a warning names the
        images left out (see :func:`learn_standard`) unless ``quiet``.

        Raises:
            DegenerateLandmarksError: a channel where no image has two distinct cutoffs.
        """
        rows, left = [], set()
        for group in range(self.channels) if channel_wise else [None]:
            standard, usable = learn_standard(self.group(group), self.spec, out_range)
            rows.append(standard)
            left.update(np.flatnonzero(~usable).tolist())
        if left and not quiet:
            names = [self.names[i] for i in sorted(left)]
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            warn(f"{len(names)} image(s) left out of the standard landmarks (constant inside the mask, or no voxel "
                 f"there): {shown}")
        return np.stack(rows)

    def standard_table(self) -> dict[str, Any] | None:
        """The standard scale on TorchIO's output range, per channel and pooled (JSON form), or
        None where none can be learned; silent (what the stats file shows)."""
        try:
            channels = self.standard(True, quiet=True)
            pooled = self.standard(False, quiet=True)[0] if self.channels > 1 else channels[0]
        except DegenerateLandmarksError:
            return None
        return {"range": list(TORCHIO_RANGE), "channels": _json_rows(channels), "pooled": _json_rows(pooled[None])[0]}

    def to_dict(self, values: bool = True) -> dict[str, Any]:
        """JSON form: the spec and every image's name and (with ``values``) landmarks, NaN as null."""
        images = [{"name": name} for name in self.names]
        if values:
            for image, row in zip(images, self.values):
                image["landmarks"] = _json_rows(row)
        return {**self.spec.to_dict(), "channels": self.channels, "images": images}

    @classmethod
    def from_dict(cls, document: dict, values: np.ndarray | None = None,
                  indices: list[int] | None = None) -> "ImageLandmarks":
        """The landmarks of :meth:`to_dict` (``values`` given apart, as a checkpoint stores them)."""
        spec = LandmarkSpec.from_dict(document)
        channels = int(document["channels"])
        images = document["images"]
        if values is None:
            values = np.array([[[np.nan if v is None else float(v) for v in row] for row in image["landmarks"]]
                               for image in images], np.float64)
        groups = channels + 1 if channels > 1 else 1
        values = np.asarray(values, np.float64).reshape((len(images), groups, len(spec.recorded)))
        return cls(spec, channels, values, [str(image["name"]) for image in images],
                   list(range(len(images))) if indices is None else list(indices))


def _json_rows(rows: np.ndarray) -> list[list[float | None]]:
    return [[float(v) if math.isfinite(v) else None for v in row] for row in rows]
