"""Float64 moments merged with Chan et al.'s parallel formula: the state of float data,
and of how much images differ from each other."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from ..errors import ImagenormError
from . import kernels
from .state import State
from .summary import Summary


@dataclass(eq=False)
class FloatMoments(State):
    """Per-channel count, mean, M2, min, max (float64) and non-finite count.

    Reductions: count and non-finite count sum, mean and M2 by Chan's merge, min and max.

    Example:
        >>> import numpy as np
        >>> a, b = FloatMoments.empty(1), FloatMoments.empty(1)
        >>> image_moments = a.update(np.array([[1.0, 2.0]])), b.update(np.array([[3.0, 4.0]]))
        >>> merged = a.merge(b)
        >>> float(merged.mean[0]), float(merged.m2[0] / merged.count[0])
        (2.5, 1.25)
    """

    kind = "moments"

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray
    nonfinite: np.ndarray

    @classmethod
    def empty(cls, channels: int) -> "FloatMoments":
        zeros = np.zeros(channels, np.float64)
        return cls(
            count=np.zeros(channels, np.int64),
            mean=zeros.copy(),
            m2=zeros.copy(),
            minimum=np.full(channels, np.inf),
            maximum=np.full(channels, -np.inf),
            nonfinite=np.zeros(channels, np.int64),
        )

    @property
    def channels(self) -> int:
        return self.count.size

    def update(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Add channel-first ``pixels``; non-finite values are counted, not used.

        Returns the image's per-channel mean and std (NaN for a channel with no finite value).
        """
        moments = kernels.float_moments(pixels)  # compiled passes, no temporaries
        batch = FloatMoments(
            count=moments[:, 0].astype(np.int64),
            mean=moments[:, 1].copy(),
            m2=moments[:, 2].copy(),
            minimum=moments[:, 3].copy(),
            maximum=moments[:, 4].copy(),
            nonfinite=moments[:, 5].astype(np.int64),
        )
        merged = self.merge(batch)
        self.__dict__.update(merged.__dict__)
        with np.errstate(invalid="ignore", divide="ignore"):
            empty = batch.count == 0
            return np.where(empty, np.nan, batch.mean), np.where(empty, np.nan, np.sqrt(batch.m2 / batch.count))

    def as_moments(self) -> "FloatMoments":
        return self

    def merge(self, other: State) -> "FloatMoments":
        """Chan et al.'s parallel combination of two states."""
        other = other.as_moments()
        count = self.count + other.count
        safe = np.maximum(count, 1)
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / safe)
        m2 = self.m2 + other.m2 + delta * delta * (self.count * other.count / safe)
        return FloatMoments(
            count=count,
            mean=np.where(count > 0, mean, 0.0),
            m2=np.where(count > 0, m2, 0.0),
            minimum=np.minimum(self.minimum, other.minimum),
            maximum=np.maximum(self.maximum, other.maximum),
            nonfinite=self.nonfinite + other.nonfinite,
        )

    def pooled(self) -> "FloatMoments":
        """All channels merged into one."""
        result = FloatMoments.empty(1)
        for channel in range(self.channels):
            result = result.merge(self.select(channel))
        return result

    def select(self, channel: int) -> "FloatMoments":
        pick = slice(channel, channel + 1)
        return FloatMoments(*(getattr(self, f.name)[pick] for f in fields(self)))

    def summary(self, channel: int | None, percentiles: dict[str, float] | None = None) -> Summary:
        """Statistics of one channel, or of all pooled, with percentiles found by the later passes."""
        moments = self.pooled() if channel is None else self.select(channel)
        return summarize_moments(moments, {} if percentiles is None else dict(percentiles))

    def to_arrays(self):
        return {"kind": self.kind}, {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def _from_arrays(cls, meta, arrays):
        return cls(*(np.asarray(arrays[f.name]) for f in fields(cls)))


def summarize_moments(moments: FloatMoments, percentiles: dict[str, float]) -> Summary:
    """Summary of one-channel float state (a channel, or all pooled) with given percentiles."""
    n = int(moments.count[0])
    if n == 0:
        raise ImagenormError("no finite pixel was counted")
    return Summary(
        count=n,
        mean=float(moments.mean[0]),
        std=math.sqrt(float(moments.m2[0]) / n),
        min=float(moments.minimum[0]),
        max=float(moments.maximum[0]),
        percentiles=percentiles,
    )


@dataclass
class ImageSpread:
    """How much images differ: per channel, moments of the per-image means and stds.

    Reduction: Chan's merge of both (each image counts once, whatever its size).
    """

    means: FloatMoments
    stds: FloatMoments

    @classmethod
    def empty(cls, channels: int) -> "ImageSpread":
        return cls(FloatMoments.empty(channels), FloatMoments.empty(channels))

    @classmethod
    def of_images(cls, means: list[np.ndarray], stds: list[np.ndarray], channels: int) -> "ImageSpread":
        """The spread of images given by their per-channel means and stds."""
        spread = cls.empty(channels)
        if means:
            spread.means.update(np.stack(means, axis=1))
            spread.stds.update(np.stack(stds, axis=1))
        return spread

    def merge(self, other: "ImageSpread") -> "ImageSpread":
        return ImageSpread(self.means.merge(other.means), self.stds.merge(other.stds))
