"""Normalization transforms: ``nn.Module`` twins of :mod:`imagenorm.functional`.

Each module validates and stores its parameters (as buffers, so ``.to(device)`` and
``state_dict`` carry them) and calls its function. Build them from measured statistics
with ``from_stats``; undo a dataset-level one with ``inverse()``.

Example:
    >>> import torch, imagenorm
    >>> stats = imagenorm.compute_stats(torch.arange(256, dtype=torch.uint8).reshape(1, 16, 16))
    >>> z = imagenorm.Standardize.from_stats(stats)
    >>> y = z(torch.tensor([[[0, 255]]], dtype=torch.uint8))
    >>> y
    tensor([[[-1.7253,  1.7253]]])
    >>> z.inverse()(y)  # back to raw units, up to float32 rounding
    tensor([[[-1.4147e-06,  2.5500e+02]]])
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import nn

from . import functional as F
from .errors import ImagenormError
from .options import OptionError
from .stats.result import DatasetStats
from .stats.summary import percentile_key

__all__ = ["Standardize", "MinMaxScale", "PercentileScale", "CTNormalize", "AffineInverse", "DegenerateStatisticsError"]


class DegenerateStatisticsError(ImagenormError, ValueError):
    """A zero std or range, or a non-finite statistic, where a transform needs a scale."""


def _stats_name(stats: DatasetStats) -> str:
    return stats.source or "the statistics"


def _pick(stats: DatasetStats, channel_wise: bool, read) -> tuple[np.ndarray, tuple[str, ...]]:
    """One value per channel (or one pooled value) read from the summaries."""
    if channel_wise:
        return np.array([read(s) for s in stats.channels], np.float64), stats.channel_names
    return np.array([read(stats.pooled)], np.float64), ("pooled",)


def _check_spread(values: np.ndarray, names, what: str, source: str, eps: float | None) -> None:
    """Raise for a non-finite statistic, or a zero spread when no eps is given."""
    for name, value in zip(names, values):
        if not math.isfinite(value):
            raise DegenerateStatisticsError(f"channel {name} of {source} has a non-finite {what} ({value})")
        if value <= 0 and eps is None:
            raise DegenerateStatisticsError(
                f"channel {name} of {source} has {what} {value:g}: every pixel has the same value; "
                "pass eps= to use a floor instead"
            )


class _Normalize(nn.Module):
    """Shared options: per-image statistics, masks, units, layout and output."""

    def __init__(
        self,
        *,
        per_image: bool,
        channel_wise: bool,
        mask: F.Mask,
        eps: float | None,
        value_scale: float,
        input_scale: float | None,
        stats_dtype: str | tuple[str, ...] | None,
        spatial_dims: int,
        dtype: torch.dtype,
        inplace: bool,
    ) -> None:
        super().__init__()
        if mask is not None and not per_image:
            raise OptionError("mask= selects the pixels of per-image statistics; pass per_image=True")
        if eps is not None and not eps > 0:
            raise OptionError(f"eps must be positive, got {eps}")
        if spatial_dims not in (2, 3):
            raise OptionError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if not dtype.is_floating_point:
            raise OptionError(f"dtype must be a float dtype, got {dtype}")
        self.per_image, self.channel_wise, self.mask, self.eps = per_image, channel_wise, mask, eps
        self.value_scale, self.input_scale, self.stats_dtype = float(value_scale), input_scale, stats_dtype
        self.spatial_dims, self.dtype, self.inplace = spatial_dims, dtype, inplace

    def _options(self) -> dict:
        return dict(
            per_image=self.per_image, channel_wise=self.channel_wise, mask=self.mask, eps=self.eps,
            value_scale=self.value_scale, input_scale=self.input_scale, stats_dtype=self.stats_dtype,
            spatial_dims=self.spatial_dims, dtype=self.dtype, inplace=self.inplace,
        )

    def _register(self, **values: Sequence[float] | None) -> None:
        for name, value in values.items():
            tensor = None if value is None else torch.as_tensor(np.asarray(value, np.float64).reshape(-1))
            self.register_buffer(name, tensor)

    def _affine_raw(self) -> tuple[np.ndarray, np.ndarray, tuple[float, float] | None]:
        """(scale, shift, clip) of the map from raw units; dataset-level transforms only."""
        raise NotImplementedError

    def _per_image(self, x: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
        """The transform with each image's own statistics."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Normalize ``x`` (into ``out`` if given); see the class docstring for shapes and units."""
        if self.per_image:
            return self._per_image(x, out)
        scale, shift, clip = self._cached_affine()
        factor = F.input_factor(x.dtype, self.value_scale, self.input_scale, self.stats_dtype)
        return F.affine(x, scale * factor if factor != 1.0 else scale, shift, clip=clip,
                        spatial_dims=self.spatial_dims, dtype=self.dtype, out=out, inplace=self.inplace)

    def _cached_affine(self):
        """``_affine_raw()``, recomputed only when a buffer changed (load_state_dict, .to(), in-place edits)."""
        key = tuple((id(b), b._version) for b in self._buffers.values() if b is not None)
        if getattr(self, "_affine_key", None) != key:
            self._affine_cache, self._affine_key = self._affine_raw(), key
        return self._affine_cache

    def inverse(self, scaled: bool = False) -> "AffineInverse":
        """The transform back from normalized values: to raw units, or with ``scaled=True``
        to the units of float input (raw / ``input_scale``, by default the [0, 1] scale).

        Exact up to clipping and float rounding. Per-image transforms have no inverse.
        """
        if self.per_image:
            raise OptionError("a per-image transform has no inverse: each image had its own statistics")
        scale, shift, _ = self._affine_raw()
        divisor = (self.input_scale if self.input_scale is not None else self.value_scale) if scaled else 1.0
        return AffineInverse(1.0 / scale / divisor, -shift / scale / divisor, spatial_dims=self.spatial_dims, dtype=self.dtype)

    def extra_repr(self) -> str:
        options = [f"per_image={self.per_image}", f"channel_wise={self.channel_wise}"]
        if self.mask is not None:
            options.append(f"mask={self.mask if isinstance(self.mask, str) else type(self.mask).__name__}")
        if self.eps is not None:
            options.append(f"eps={self.eps}")
        return ", ".join(options)


def _numbers(buffer: torch.Tensor | None) -> np.ndarray | None:
    return None if buffer is None else buffer.detach().cpu().double().numpy()


class Standardize(_Normalize):
    """z-score: ``(x - mean) / std`` per channel (or pooled), with dataset or per-image statistics.

    Args:
        mean, std: dataset statistics in raw units (one per channel, or one for all);
            omit them with ``per_image=True``.
        per_image: use each image's own mean and std (per item of a batch).
        channel_wise: per channel (default) or one value for all channels.
        mask: per-image statistics only over ``"nonzero"`` pixels, a boolean tensor, or a
            callable's result; every pixel is still mapped.
        eps: a floor for std (without it a zero std is an error at construction, and a
            constant image maps to 0 per image).
        value_scale: raw / value_scale is the [0, 1] scale (255 for 8-bit statistics).
        input_scale: float input is raw / input_scale (default: value_scale).
        spatial_dims: 3 for volumes, so that 4-D input is (C, D, H, W).
        dtype: output float dtype. inplace: overwrite float input of that dtype.

    Shape:
        (H, W), (C, H, W), (B, C, H, W); with spatial_dims=3 (C, D, H, W); (B, C, D, H, W).
        The output has the input's shape, device and memory format.

    Example:
        >>> import torch
        >>> t = Standardize(mean=[0.5], std=[0.25])
        >>> t(torch.tensor([[0.25, 0.75]]))
        tensor([[-1.,  1.]])
    """

    def __init__(
        self,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        *,
        per_image: bool = False,
        channel_wise: bool = True,
        mask: F.Mask = None,
        eps: float | None = None,
        value_scale: float = 1.0,
        input_scale: float | None = None,
        stats_dtype: str | tuple[str, ...] | None = None,
        spatial_dims: int = 2,
        dtype: torch.dtype = torch.float32,
        inplace: bool = False,
    ) -> None:
        super().__init__(per_image=per_image, channel_wise=channel_wise, mask=mask, eps=eps, value_scale=value_scale,
                         input_scale=input_scale, stats_dtype=stats_dtype, spatial_dims=spatial_dims, dtype=dtype,
                         inplace=inplace)
        if per_image != (mean is None and std is None):
            raise OptionError("give mean and std, or per_image=True, not both")
        if not per_image:
            std_values = np.asarray(std, np.float64).reshape(-1)
            _check_spread(std_values, [str(i) for i in range(std_values.size)], "std", "the given std", eps)
        self._register(mean=mean, std=std)

    @classmethod
    def from_stats(cls, stats: DatasetStats, *, channel_wise: bool = True, eps: float | None = None, **options) -> "Standardize":
        """Dataset mean and std from ``stats`` (per channel, or pooled with ``channel_wise=False``).

        Raises:
            DegenerateStatisticsError: a zero std (without ``eps``) or a non-finite statistic,
                naming the channel and the stats file.
        """
        mean, names = _pick(stats, channel_wise, lambda s: s.mean)
        std, _ = _pick(stats, channel_wise, lambda s: s.std)
        _check_spread(mean, names, "mean", _stats_name(stats), eps=1.0)
        _check_spread(std, names, "std", _stats_name(stats), eps)
        return cls(mean, std, channel_wise=channel_wise, eps=eps, value_scale=stats.value_scale,
                   stats_dtype=stats.raw_input_dtypes or stats.dtype, **options)

    def _per_image(self, x: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
        return F.standardize(x, out=out, **self._options())

    def _affine_raw(self):
        std = _numbers(self.std)
        if self.eps is not None:
            std = np.maximum(std, self.eps)
        return 1.0 / std, -_numbers(self.mean) / std, None


class MinMaxScale(_Normalize):
    """Map ``[low, high]`` (dataset min and max, or each image's) linearly to ``out_range``.

    Not ``Normalize(0, 1)``, which is the identity. Options as :class:`Standardize`, plus
    ``out_range`` (default (0, 1); (-1, 1) for tanh-style inputs) and ``clip`` (clamp values
    of new data that fall outside the dataset range).

    Example:
        >>> import torch
        >>> MinMaxScale(low=[10.0], high=[20.0], value_scale=255.0, out_range=(-1, 1))(torch.tensor([[10, 15, 20]], dtype=torch.uint8))
        tensor([[-1.,  0.,  1.]])
    """

    def __init__(
        self,
        low: Sequence[float] | None = None,
        high: Sequence[float] | None = None,
        *,
        out_range: tuple[float, float] = (0.0, 1.0),
        clip: bool = False,
        per_image: bool = False,
        channel_wise: bool = True,
        mask: F.Mask = None,
        eps: float | None = None,
        value_scale: float = 1.0,
        input_scale: float | None = None,
        stats_dtype: str | tuple[str, ...] | None = None,
        spatial_dims: int = 2,
        dtype: torch.dtype = torch.float32,
        inplace: bool = False,
    ) -> None:
        super().__init__(per_image=per_image, channel_wise=channel_wise, mask=mask, eps=eps, value_scale=value_scale,
                         input_scale=input_scale, stats_dtype=stats_dtype, spatial_dims=spatial_dims, dtype=dtype,
                         inplace=inplace)
        if per_image != (low is None and high is None):
            raise OptionError("give low and high, or per_image=True, not both")
        out_range = tuple(float(v) for v in out_range)
        if len(out_range) != 2 or out_range[0] == out_range[1]:
            raise OptionError(f"out_range must be two different numbers, got {out_range}")
        if not per_image:
            width = np.asarray(high, np.float64).reshape(-1) - np.asarray(low, np.float64).reshape(-1)
            _check_spread(width, [str(i) for i in range(width.size)], "range (high - low)", "the given range", eps)
        self.out_range, self.clip = out_range, clip
        self._register(low=low, high=high)

    @classmethod
    def from_stats(cls, stats: DatasetStats, *, channel_wise: bool = True, eps: float | None = None, **options) -> "MinMaxScale":
        """Dataset min and max from ``stats``.

        Raises:
            DegenerateStatisticsError: max equals min (without ``eps``), naming the channel.
        """
        low, names = _pick(stats, channel_wise, lambda s: s.min)
        high, _ = _pick(stats, channel_wise, lambda s: s.max)
        _check_spread(high - low, names, "range (max - min)", _stats_name(stats), eps)
        return cls(low, high, channel_wise=channel_wise, eps=eps, value_scale=stats.value_scale,
                   stats_dtype=stats.raw_input_dtypes or stats.dtype, **options)

    def _per_image(self, x: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
        return F.min_max_scale(x, out_range=self.out_range, clip=self.clip, out=out, **self._options())

    def _affine_raw(self):
        scale, shift = F._range_map(_numbers(self.low), _numbers(self.high), self.out_range, self.eps)
        return scale, shift, (min(self.out_range), max(self.out_range)) if self.clip else None

    def extra_repr(self) -> str:
        return f"out_range={self.out_range}, clip={self.clip}, " + super().extra_repr()


class PercentileScale(MinMaxScale):
    """Robust scaling: map two percentiles of the data to ``out_range`` and clip.

    Outliers (metal in CT, hot pixels, saturated detectors) no longer set the scale.
    ``percentiles`` are the two percentiles (0-100) mapped to ``out_range``; ``values`` their
    values per channel (raw units), which ``from_stats`` reads from the stats file (0.5, 1, 5,
    25, 50, 75, 95, 99, 99.5); with ``per_image=True`` they are computed per image (numpy's
    linear method).

    Example:
        >>> import torch
        >>> x = torch.cat([torch.arange(100.0), torch.tensor([1e6])]).reshape(1, 1, -1)
        >>> y = PercentileScale(percentiles=(1, 99), per_image=True)(x)
        >>> round(float(y.min()), 3), round(float(y.max()), 3), round(float(y[0, 0, 50]), 3)
        (0.0, 1.0, 0.5)
    """

    def __init__(self, percentiles: tuple[float, float] = (0.5, 99.5), *, values: tuple | None = None,
                 clip: bool = True, per_image: bool = False, **options) -> None:
        low, high = _percentile_pair(percentiles)
        if per_image == (values is not None):
            raise OptionError("give the dataset's percentile values (see from_stats), or per_image=True")
        value_low, value_high = values if values is not None else (None, None)
        super().__init__(value_low, value_high, clip=clip, per_image=per_image, **options)
        self.q = (float(low), float(high))

    @classmethod
    def from_stats(cls, stats: DatasetStats, *, percentiles: tuple[float, float] = (0.5, 99.5),
                   channel_wise: bool = True, eps: float | None = None, **options) -> "PercentileScale":
        """The values of the two ``percentiles`` of the dataset from ``stats``.

        Raises:
            ValueError: the stats file does not hold that percentile.
            DegenerateStatisticsError: the two percentiles are equal (without ``eps``).
        """
        low, high = _percentile_pair(percentiles)
        keys = [percentile_key(low), percentile_key(high)]
        summary = stats.pooled
        missing = [k for k in keys if k not in summary.percentiles]
        if missing:
            raise OptionError(f"{_stats_name(stats)} has no percentile {missing[0]}; it has {sorted(summary.percentiles, key=float)}")
        p_low, names = _pick(stats, channel_wise, lambda s: s.percentiles[keys[0]])
        p_high, _ = _pick(stats, channel_wise, lambda s: s.percentiles[keys[1]])
        _check_spread(p_high - p_low, names, f"percentile range (p{keys[1]} - p{keys[0]})", _stats_name(stats), eps)
        return cls((low, high), values=(p_low, p_high), channel_wise=channel_wise, eps=eps,
                   value_scale=stats.value_scale, stats_dtype=stats.raw_input_dtypes or stats.dtype, **options)

    def _per_image(self, x: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
        return F.percentile_scale(x, q=self.q, out_range=self.out_range, clip=self.clip, out=out, **self._options())

    def extra_repr(self) -> str:
        return f"q={self.q}, " + super().extra_repr()


class CTNormalize(Standardize):
    """nnU-Net-style CT normalization: clip to foreground percentiles, then z-score with the
    foreground mean and std — in one pass.

    ``(clip(x, p_low, p_high) - mean) / std``. Since std > 0 this equals clipping the
    standardized values to ``(p - mean) / std``, which the one-pass kernel does. Build it from
    statistics measured over the foreground (``compute_stats(..., mask=...)``). One channel
    (or pooled statistics), as for CT.

    Example:
        >>> import torch
        >>> t = CTNormalize(mean=[0.0], std=[100.0], clip_range=(-1000.0, 1000.0), value_scale=32767.0)  # raw HU
        >>> t(torch.tensor([[-3000, 0, 100, 3000]], dtype=torch.int16))
        tensor([[-10.,   0.,   1.,  10.]])
    """

    def __init__(self, mean, std, *, clip_range: tuple[float, float], **options) -> None:
        super().__init__(mean, std, **options)
        if len(np.asarray(mean).reshape(-1)) != 1:
            raise OptionError("CTNormalize takes one channel (or pooled statistics)")
        low, high = (float(v) for v in clip_range)
        if not low < high:
            raise OptionError(f"clip_range must be (low, high) with low < high, got {clip_range}")
        self.clip_range = (low, high)

    @classmethod
    def from_stats(cls, stats: DatasetStats, *, percentiles: tuple[float, float] = (0.5, 99.5),
                   eps: float | None = None, **options) -> "CTNormalize":
        """Foreground ``percentiles`` (clip range), mean and std from ``stats`` (pooled over channels)."""
        summary = stats.pooled
        keys = tuple(percentile_key(q) for q in _percentile_pair(percentiles))
        missing = [k for k in keys if k not in summary.percentiles]
        if missing:
            raise OptionError(f"{_stats_name(stats)} has no percentile {missing[0]}")
        _check_spread(np.array([summary.std]), ("pooled",), "std", _stats_name(stats), eps)
        if stats.mask is None:
            import warnings

            warnings.warn(f"{_stats_name(stats)} was measured over all voxels, not a foreground mask", stacklevel=2)
        return cls([summary.mean], [summary.std], clip_range=(summary.percentiles[keys[0]], summary.percentiles[keys[1]]),
                   channel_wise=False, eps=eps, value_scale=stats.value_scale, stats_dtype=stats.raw_input_dtypes or stats.dtype, **options)

    def _affine_raw(self):
        scale, shift, _ = super()._affine_raw()
        bounds = tuple(float(v * scale[0] + shift[0]) for v in self.clip_range)
        return scale, shift, bounds

    def extra_repr(self) -> str:
        return f"clip_range={self.clip_range}, " + super().extra_repr()


def _percentile_pair(percentiles) -> tuple[float, float]:
    """``(low, high)`` percentiles with ``0 <= low < high <= 100``."""
    try:
        low, high = (float(q) for q in percentiles)
    except (TypeError, ValueError):
        raise OptionError(f"percentiles must be two numbers (low, high), got {percentiles!r}") from None
    if low > high:
        raise OptionError(f"percentiles are reversed: ({low:g}, {high:g}); give (low, high)")
    if not 0 <= low < high <= 100:
        raise OptionError(f"percentiles must satisfy 0 <= low < high <= 100, got ({low:g}, {high:g})")
    return low, high


class AffineInverse(nn.Module):
    """``y * scale + shift`` per channel: the inverse of a dataset-level transform (see ``inverse()``)."""

    def __init__(self, scale, shift, *, spatial_dims: int = 2, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.register_buffer("scale", torch.as_tensor(np.asarray(scale, np.float64).reshape(-1)))
        self.register_buffer("shift", torch.as_tensor(np.asarray(shift, np.float64).reshape(-1)))
        self.spatial_dims, self.dtype = spatial_dims, dtype

    def forward(self, y: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Map normalized ``y`` back (into ``out`` if given)."""
        return F.affine(y, _numbers(self.scale), _numbers(self.shift), spatial_dims=self.spatial_dims, dtype=self.dtype, out=out)
