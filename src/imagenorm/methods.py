"""Normalization methods by name (what ``check`` and ``apply`` run), and the one way both
read and normalize an item: as the statistics were measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import ImagenormError, ReadError
from .masks import MaskSpec
from .options import CHOICES, OptionError, ReadOptions, check_choice
from .readers import DecodedImage
from .stats.items import ItemSource
from .stats.result import DatasetStats
from .functional import as_one_volume
from .histogram_standardize import HistogramStandardize
from .stats.landmarks import TORCHIO_RANGE
from .transforms import MinMaxScale, PercentileScale, Standardize

METHODS = CHOICES["method"]


@dataclass(frozen=True)
class MethodOptions:
    """A normalization method and its options, as recorded in manifests.

    Args:
        method: ``"zscore"``, ``"minmax"``, ``"percentile"`` or ``"histogram"`` (Nyúl
            standardization onto the landmarks learned with ``--landmarks``).
        per_image: each image's own statistics instead of the dataset's.
        pooled: one value for all channels instead of one per channel.
        out_range: the output range of the range methods (default [0, 1]) and of the
            standard scale of ``"histogram"`` (default TorchIO's [0, 100]).
        percentiles: the lower and upper percentile of ``"percentile"`` (e.g. (0.5, 99.5)).
    """

    method: str = "zscore"
    per_image: bool = False
    pooled: bool = False
    out_range: tuple[float, float] | None = None
    percentiles: tuple[float, float] = (0.5, 99.5)

    def __post_init__(self) -> None:
        check_choice("method", self.method)
        if self.method == "histogram" and self.per_image:
            raise OptionError("method 'histogram' maps each image by its own landmarks already; "
                              "drop per_image=True")
        if self.out_range is None:
            object.__setattr__(self, "out_range", TORCHIO_RANGE if self.method == "histogram" else (0.0, 1.0))
        object.__setattr__(self, "out_range", _pair(self.out_range, "out_range"))
        object.__setattr__(self, "percentiles", _pair(self.percentiles, "percentiles"))

    def describe(self) -> str:
        scope = "per image" if self.per_image else "dataset"
        channels = "pooled" if self.pooled else "per channel"
        if self.method == "zscore":
            return f"z-score ({scope}, {channels})"
        if self.method == "histogram":
            return f"histogram standardization onto [{self.out_range[0]:g}, {self.out_range[1]:g}] ({channels})"
        low, high = self.percentiles
        what = "min-max" if self.method == "minmax" else f"percentiles {low:g}-{high:g}, clipped,"
        return f"{what} to [{self.out_range[0]:g}, {self.out_range[1]:g}] ({scope}, {channels})"


def _pair(values: Any, name: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in values)
    except (TypeError, ValueError):
        raise OptionError(f"{name} must be two numbers, got {values!r}") from None
    return low, high


def build_transform(stats: DatasetStats | None, options: MethodOptions, mask=None) -> nn.Module:
    """The transform for ``options``; dataset-level methods take their numbers from ``stats``.

    ``mask`` (per image and histogram only): the foreground each image's own statistics or
    landmarks come from (mask files: given to each call, see :func:`normalize_pixels`).
    """
    channel_wise = not options.pooled
    if stats is not None and isinstance(mask, MaskSpec):
        mask = mask.by_index(stats.channel_names)
    if options.method == "histogram":
        if stats is None:
            raise OptionError("method 'histogram' needs a stats file measured with landmarks (imagenorm stats --landmarks)")
        return HistogramStandardize.from_stats(stats, channel_wise=channel_wise, out_range=options.out_range,
                                               mask=None if getattr(mask, "kind", None) == "folder" else mask)
    if options.per_image and getattr(mask, "kind", None) == "folder":
        raise OptionError("per-image normalization cannot use mask files; use mask='nonzero' or a threshold")
    if options.per_image:
        if options.method == "zscore":
            return Standardize(per_image=True, channel_wise=channel_wise, mask=mask)
        if options.method == "minmax":
            return MinMaxScale(per_image=True, channel_wise=channel_wise, out_range=options.out_range, mask=mask)
        return PercentileScale(percentiles=options.percentiles, per_image=True, channel_wise=channel_wise,
                               out_range=options.out_range, mask=mask)
    if stats is None:
        raise OptionError(f"method {options.method!r} over the dataset needs its statistics (or per_image=True)")
    if options.method == "zscore":
        return Standardize.from_stats(stats, channel_wise=channel_wise)
    if options.method == "minmax":
        return MinMaxScale.from_stats(stats, channel_wise=channel_wise, out_range=options.out_range)
    return PercentileScale.from_stats(stats, percentiles=options.percentiles, channel_wise=channel_wise,
                                      out_range=options.out_range)


def read_options_for(stats: DatasetStats | None, read_options: ReadOptions | None = None, **given: Any) -> ReadOptions:
    """How to read images to normalize them with ``stats``: as they were measured.

    ``read_options`` or keywords (None: not given) may repeat recorded options, never change them.

    Raises:
        OptionConflictError: a given option differs from the recorded one, naming both.
    """
    if read_options is not None:
        given = {**read_options.describe_changes(), **{k: v for k, v in given.items() if v is not None}}
    if stats is None:
        return ReadOptions.from_keywords(**{k: v for k, v in given.items() if v is not None})
    return stats.reading(**given)


def normalize_pixels(transform: nn.Module, pixels: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """``transform`` applied to one decoded image ``(C, *spatial)``, as float32 ``(C, *spatial)``;
    ``mask`` (spatial, boolean): this image's foreground, for a transform that takes one per call.

    A volume ``(C, D, H, W)`` is one image, not a batch: it goes in as a batch of one volume
    ``(1, C, D, H, W)``, whose channel axis every transform knows, whatever its ``spatial_dims``;
    an image of more axes (a time-lapse stack ``(C, T, Z, Y, X)``) goes in as one volume of all
    its planes.
    """
    if not (pixels.flags.writeable and pixels.flags.c_contiguous):
        pixels = np.array(pixels, order="C")
    image = torch.from_numpy(pixels)
    given = {} if mask is None else {"mask": torch.from_numpy(np.ascontiguousarray(mask))[None]}
    if pixels.ndim >= 4:  # a volume, or a stack of more axes (C, T, Z, Y, X): one volume of all its planes
        given = {key: as_one_volume(value) for key, value in given.items()}
        return transform(as_one_volume(image), **given)[0].numpy().reshape(pixels.shape)
    return transform(image, **given).numpy()


def item_mask(transform: nn.Module, mask, pixels: np.ndarray, path: str, channels: tuple[str, ...]) -> np.ndarray | None:
    """The spatial mask of one image that ``transform`` needs per call (mask files), else None."""
    if mask is None or not getattr(transform, "needs_mask", False):
        return None
    return mask.spatial(pixels, path, channels)


@dataclass
class NormalizedItems(ItemSource):
    """The items of ``items`` read with ``options`` and normalized by ``transform``; with a
    ``mask``, only the voxels inside it (decided on the values as read) are handed on."""

    items: ItemSource
    transform: nn.Module
    options: ReadOptions
    mask: Any = None  # MaskSpec

    def __len__(self) -> int:
        return len(self.items)

    def name(self, index: int) -> str:
        return self.items.name(index)

    def path(self, index: int) -> str | None:
        return self.items.path(index)

    def files(self, index: int) -> list[str]:
        return self.items.files(index)

    def units(self) -> list[tuple[int, int]] | None:
        return self.items.units()

    def read_whole(self, index: int) -> bool:
        return self.items.read_whole(index)

    def probe(self, index: int, options: ReadOptions) -> DecodedImage:
        """The layout of item ``index`` after normalization, from the inner items' cheap probe
        (a series' first slice; nothing is normalized twice)."""
        image = self.items.probe(index, self.options)
        dtype = str(getattr(self.transform, "dtype", torch.float32)).removeprefix("torch.")
        return DecodedImage(pixels=np.empty((image.pixels.shape[0], 0), dtype), channels=image.channels)

    def load(self, index: int, options: ReadOptions) -> DecodedImage:
        image = self.items.load(index, self.options)
        foreground = None if self.mask is None else self.mask.spatial(image.pixels, self.path(index) or "", image.channels)
        try:
            given = foreground if getattr(self.transform, "needs_mask", False) else None
            normalized = normalize_pixels(self.transform, image.pixels, given)
        except ImagenormError as error:
            raise ReadError(self.name(index), str(error)) from None
        if foreground is not None:
            normalized = normalized[:, foreground]
        return DecodedImage(pixels=normalized, channels=image.channels)
