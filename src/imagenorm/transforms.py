"""Normalization transforms: ``nn.Module`` twins of :mod:`imagenorm.functional`.

Each module validates and stores its parameters (as buffers, so ``.to(device)`` and
``state_dict`` carry them) and calls its function. Build them from measured statistics
with ``from_stats``; undo a dataset-level one with ``inverse()``.

``state_dict()`` carries everything that changes the output: the statistics as buffers, and
the units (``value_scale``, ``input_scale``, ``stats_dtype``) and options (``per_image``,
``channel_wise``, ``eps``, ``out_range``, ``clip``, percentiles, ``clip_range``, layout and
output dtype) as extra state. ``load_state_dict`` restores them all, so that a transform
built by hand and loaded gives the saved transform's output; a state of another transform
class, or one without the extra state (``strict=True``), is refused. A mask given as a
tensor or a callable cannot travel in a state: the loading transform must have one of the
same kind.

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

from typing import Sequence

import numpy as np
import torch
from torch import nn

from . import functional as F
from .functional import DegenerateStatisticsError
from .options import OptionError
from .stats.result import DatasetStats
from .stats.summary import percentile_key

__all__ = ["Standardize", "MinMaxScale", "PercentileScale", "CTNormalize", "AffineInverse", "DegenerateStatisticsError"]

#: The version of the extra state a transform's ``state_dict`` carries.
_STATE_FORMAT = 1
_MASK_KINDS = {"<tensor>": "a boolean tensor", "<callable>": "a callable"}


def _stats_name(stats: DatasetStats) -> str:
    return stats.source or "the statistics"


def _with_units(stats: DatasetStats, options: dict) -> dict:
    """``options`` plus the units and layout of ``stats``: the units the caller may not
    override; without a [0, 1] scale (int32 HU) float input is raw values unless
    ``input_scale=`` says otherwise; statistics of volumes take 4-D input as one volume."""
    if {"low", "high"} & set(options):
        raise OptionError("from_stats reads low and high from the statistics; for PercentileScale and CTNormalize "
                          "give percentiles=(low, high), e.g. percentiles=(0.5, 99.5)")
    given = sorted({"value_scale", "stats_dtype"} & set(options))
    if given:
        raise OptionError(f"{given[0]}= comes from the statistics in from_stats; "
                          "pass input_scale= to say the units of float input")
    defaults = {"spatial_dims": stats.spatial_dims}
    if not stats.has_unit_scale:
        defaults["input_scale"] = 1.0
    return {**defaults, **options, "value_scale": stats.value_scale,
            "stats_dtype": stats.raw_input_dtypes or stats.dtype}


def _pick(stats: DatasetStats, channel_wise: bool, read) -> tuple[np.ndarray, tuple[str, ...]]:
    """One value per channel (or one pooled value) read from the summaries."""
    if channel_wise:
        return np.array([read(s) for s in stats.channels], np.float64), stats.channel_names
    return np.array([read(stats.pooled)], np.float64), ("pooled",)


class _OptionsInState(nn.Module):
    """Options that change the output travel in ``state_dict`` as extra state, next to the buffers."""

    def _state_options(self) -> dict:
        """The options as plain values (numbers, strings, lists), loadable with ``weights_only=True``."""
        raise NotImplementedError

    def _restore_options(self, options: dict) -> None:
        """Validate and set the options of ``_state_options()``."""
        raise NotImplementedError

    def get_extra_state(self) -> dict:
        return {"transform": type(self).__name__, "format": _STATE_FORMAT, **self._state_options()}

    def set_extra_state(self, state) -> None:
        if not isinstance(state, dict) or state.get("format") != _STATE_FORMAT:
            raise OptionError(f"not the state of an imagenorm transform of this version (format {_STATE_FORMAT})")
        if state.get("transform") != type(self).__name__:
            raise OptionError(f"the state_dict is that of a {state.get('transform')}, not of a {type(self).__name__}")
        try:
            self._restore_options({k: v for k, v in state.items() if k not in ("transform", "format")})
        except (KeyError, TypeError, AttributeError) as error:
            raise OptionError(f"the state of this {type(self).__name__} is malformed ({type(error).__name__}: {error})") from None
        self._affine_key = None  # options changed: recompute the map

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """As ``nn.Module.load_state_dict``; a state without the options is refused when ``strict``.

        Raises:
            OptionError: the state is another transform's, or (``strict``) says nothing of the units.
        """
        if strict and "_extra_state" not in state_dict:
            raise OptionError(
                f"the state_dict has no _extra_state, so it does not say the units and options of this "
                f"{type(self).__name__} (saved by an older imagenorm?); build the transform with them and "
                "load with strict=False to take only its statistics"
            )
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        """The state defines the transform: its options first, then buffers of the state's shapes.
        (Inside a larger model, a state without the options is torch's missing key ``_extra_state``.)"""
        extra = state_dict.get(prefix + "_extra_state")
        if extra is not None:
            self.set_extra_state(extra)
        for name, buffer in list(self._buffers.items()):
            saved = state_dict.get(prefix + name)
            if saved is None:
                if extra is not None:
                    self._buffers[name] = None  # e.g. a per-image transform has no statistics
            elif buffer is None or buffer.shape != saved.shape:
                device = buffer.device if buffer is not None else saved.device
                self._buffers[name] = torch.empty(saved.shape, dtype=torch.float64, device=device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _layout_and_output(spatial_dims, dtype) -> tuple[int, torch.dtype]:
    """``spatial_dims`` (2 or 3) and a float output ``dtype``, checked."""
    if spatial_dims not in (2, 3):
        raise OptionError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise OptionError(f"dtype must be a float torch dtype, got {dtype!r}")
    return int(spatial_dims), dtype


def _mask_state(mask: F.Mask) -> str | None:
    """None, ``"nonzero"``, or the kind of a mask that cannot travel in a state."""
    if mask is None or isinstance(mask, str):
        return mask
    return "<tensor>" if isinstance(mask, torch.Tensor) else "<callable>"


def _dtype_named(name: str) -> torch.dtype:
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype):
        raise OptionError(f"{name!r} is not a torch dtype")
    return dtype


class _Normalize(_OptionsInState):
    """Shared options: per-image statistics, masks, units, layout and output."""

    _scale_checked = False  # float input on a device checked once (see forward)

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
        self._set_options(per_image=per_image, channel_wise=channel_wise, mask=mask, eps=eps, value_scale=value_scale,
                          input_scale=input_scale, stats_dtype=stats_dtype, spatial_dims=spatial_dims, dtype=dtype)
        self.inplace = bool(inplace)

    def _set_options(self, *, per_image, channel_wise, mask, eps, value_scale, input_scale, stats_dtype,
                     spatial_dims, dtype) -> None:
        """Validate every shared option where it enters (construction, or a loaded state)."""
        F.check_options(eps=eps, value_scale=value_scale, input_scale=input_scale, mask=mask, per_image=per_image)
        spatial_dims, dtype = _layout_and_output(spatial_dims, dtype)
        if not (stats_dtype is None or isinstance(stats_dtype, str)):
            stats_dtype = tuple(str(name) for name in stats_dtype)
        self.per_image, self.channel_wise, self.mask = bool(per_image), bool(channel_wise), mask
        self.eps = None if eps is None else float(eps)
        self.value_scale = float(value_scale)
        self.input_scale = None if input_scale is None else float(input_scale)
        self.stats_dtype, self.spatial_dims, self.dtype = stats_dtype, spatial_dims, dtype

    def _state_options(self) -> dict:
        stats_dtype = self.stats_dtype if self.stats_dtype is None or isinstance(self.stats_dtype, str) else list(self.stats_dtype)
        return dict(per_image=self.per_image, channel_wise=self.channel_wise, mask=_mask_state(self.mask), eps=self.eps,
                    value_scale=self.value_scale, input_scale=self.input_scale, stats_dtype=stats_dtype,
                    spatial_dims=self.spatial_dims, dtype=_dtype_name(self.dtype))

    def _restore_options(self, options: dict) -> None:
        mask = options["mask"]
        if mask in _MASK_KINDS:  # a tensor or callable does not travel: this transform must hold one
            if _mask_state(self.mask) != mask:
                raise OptionError(f"the state was saved with {_MASK_KINDS[mask]} as mask, which a state_dict cannot "
                                  f"carry; build this {type(self).__name__} with mask= set to it, then load")
            mask = self.mask
        self._set_options(per_image=options["per_image"], channel_wise=options["channel_wise"], mask=mask,
                          eps=options["eps"], value_scale=options["value_scale"], input_scale=options["input_scale"],
                          stats_dtype=options["stats_dtype"], spatial_dims=options["spatial_dims"],
                          dtype=_dtype_named(options["dtype"]))

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
        if x.device.type == "cpu" or not self._scale_checked:  # on a GPU the check waits for it: first call only
            F.check_input_scale(x, self.value_scale, self.input_scale, self.stats_dtype)
            if x.device.type != "cpu" and not torch.compiler.is_compiling():
                self._scale_checked = True
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
        input_scale: float input is raw / input_scale (default: value_scale, the [0, 1]
            scale; float input beyond +-1.5 there is refused, see
            :func:`imagenorm.functional.check_input_scale`; 1 takes float input as raw).
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
            mean, std = F.channel_parameters(mean, std, ("mean", "std"))
            F.check_finite(mean, F.channel_labels(mean), "mean", "the given mean")
            F.check_spread(std, F.channel_labels(std), "std", "the given std", eps)
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
        F.check_finite(mean, names, "mean", _stats_name(stats))
        F.check_spread(std, names, "std", _stats_name(stats), eps)
        return cls(mean, std, channel_wise=channel_wise, eps=eps, **_with_units(stats, options))

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
        if not per_image:
            low, high = F.channel_parameters(low, high, ("low", "high"))
            F.check_spread(high - low, F.channel_labels(high - low), "range (high - low)", "the given range", eps)
        self.out_range, self.clip = F.check_options(out_range=out_range), bool(clip)
        self._register(low=low, high=high)

    @classmethod
    def from_stats(cls, stats: DatasetStats, *, channel_wise: bool = True, eps: float | None = None, **options) -> "MinMaxScale":
        """Dataset min and max from ``stats``.

        Raises:
            DegenerateStatisticsError: max equals min (without ``eps``), naming the channel.
        """
        low, names = _pick(stats, channel_wise, lambda s: s.min)
        high, _ = _pick(stats, channel_wise, lambda s: s.max)
        F.check_spread(high - low, names, "range (max - min)", _stats_name(stats), eps)
        return cls(low, high, channel_wise=channel_wise, eps=eps, **_with_units(stats, options))

    def _per_image(self, x: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
        return F.min_max_scale(x, out_range=self.out_range, clip=self.clip, out=out, **self._options())

    def _affine_raw(self):
        scale, shift = F._range_map(_numbers(self.low), _numbers(self.high), self.out_range, self.eps)
        return scale, shift, (min(self.out_range), max(self.out_range)) if self.clip else None

    def _state_options(self) -> dict:
        return {**super()._state_options(), "out_range": list(self.out_range), "clip": self.clip}

    def _restore_options(self, options: dict) -> None:
        super()._restore_options(options)
        self.out_range, self.clip = F.check_options(out_range=options["out_range"]), bool(options["clip"])

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
        low, high = F.percentile_pair(percentiles)
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
            OptionError: the stats file does not hold that percentile.
            DegenerateStatisticsError: the two percentiles are equal (without ``eps``).
        """
        low, high = F.percentile_pair(percentiles)
        keys = [percentile_key(low), percentile_key(high)]
        summary = stats.pooled
        missing = [k for k in keys if k not in summary.percentiles]
        if missing:
            raise OptionError(f"{_stats_name(stats)} has no percentile {missing[0]}; it has {sorted(summary.percentiles, key=float)}")
        p_low, names = _pick(stats, channel_wise, lambda s: s.percentiles[keys[0]])
        p_high, _ = _pick(stats, channel_wise, lambda s: s.percentiles[keys[1]])
        F.check_spread(p_high - p_low, names, f"percentile range (p{keys[1]} - p{keys[0]})", _stats_name(stats), eps)
        return cls((low, high), values=(p_low, p_high), channel_wise=channel_wise, eps=eps, **_with_units(stats, options))

    def _per_image(self, x: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
        return F.percentile_scale(x, q=self.q, out_range=self.out_range, clip=self.clip, out=out, **self._options())

    def _state_options(self) -> dict:
        return {**super()._state_options(), "q": list(self.q)}

    def _restore_options(self, options: dict) -> None:
        super()._restore_options(options)
        self.q = F.percentile_pair(options["q"])

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
        if options.get("per_image"):
            raise OptionError("CTNormalize takes the dataset's foreground statistics, not per_image=True")
        super().__init__(mean, std, **options)
        if self.mean.numel() != 1 or self.std.numel() != 1:
            raise OptionError("CTNormalize takes one channel (or pooled statistics)")
        self.clip_range = _clip_range(clip_range)

    @classmethod
    def from_stats(cls, stats: DatasetStats, *, percentiles: tuple[float, float] = (0.5, 99.5),
                   eps: float | None = None, **options) -> "CTNormalize":
        """Foreground ``percentiles`` (clip range), mean and std from ``stats`` (pooled over channels)."""
        if "channel_wise" in options:
            raise OptionError("CTNormalize takes the pooled statistics (one channel); channel_wise= does not apply")
        summary = stats.pooled
        keys = tuple(percentile_key(q) for q in F.percentile_pair(percentiles))
        missing = [k for k in keys if k not in summary.percentiles]
        if missing:
            raise OptionError(f"{_stats_name(stats)} has no percentile {missing[0]}")
        F.check_spread(np.array([summary.std]), ("pooled",), "std", _stats_name(stats), eps)
        if stats.mask is None:
            import warnings

            warnings.warn(f"{_stats_name(stats)} was measured over all voxels, not a foreground mask", stacklevel=2)
        return cls([summary.mean], [summary.std], clip_range=(summary.percentiles[keys[0]], summary.percentiles[keys[1]]),
                   channel_wise=False, eps=eps, **_with_units(stats, options))

    def _affine_raw(self):
        scale, shift, _ = super()._affine_raw()
        bounds = tuple(float(v * scale[0] + shift[0]) for v in self.clip_range)
        return scale, shift, bounds

    def _state_options(self) -> dict:
        return {**super()._state_options(), "clip_range": list(self.clip_range)}

    def _restore_options(self, options: dict) -> None:
        super()._restore_options(options)
        self.clip_range = _clip_range(options["clip_range"])

    def extra_repr(self) -> str:
        return f"clip_range={self.clip_range}, " + super().extra_repr()


def _clip_range(clip_range) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in clip_range)
    except (TypeError, ValueError):
        raise OptionError(f"clip_range must be two numbers (low, high), got {clip_range!r}") from None
    if not low < high:
        raise OptionError(f"clip_range must be (low, high) with low < high, got {clip_range!r}")
    return low, high


class AffineInverse(_OptionsInState):
    """``y * scale + shift`` per channel: the inverse of a dataset-level transform (see ``inverse()``)."""

    def __init__(self, scale, shift, *, spatial_dims: int = 2, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        scale, shift = F.channel_parameters(scale, shift, ("scale", "shift"))
        self.register_buffer("scale", torch.as_tensor(scale))
        self.register_buffer("shift", torch.as_tensor(shift))
        self._set_options(spatial_dims=spatial_dims, dtype=dtype)

    def _set_options(self, *, spatial_dims: int, dtype: torch.dtype) -> None:
        self.spatial_dims, self.dtype = _layout_and_output(spatial_dims, dtype)

    def _state_options(self) -> dict:
        return {"spatial_dims": self.spatial_dims, "dtype": _dtype_name(self.dtype)}

    def _restore_options(self, options: dict) -> None:
        self._set_options(spatial_dims=options["spatial_dims"], dtype=_dtype_named(options["dtype"]))

    def forward(self, y: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Map normalized ``y`` back (into ``out`` if given)."""
        return F.affine(y, _numbers(self.scale), _numbers(self.shift), spatial_dims=self.spatial_dims, dtype=self.dtype, out=out)
