"""Normalization as pure tensor functions; the modules in :mod:`imagenorm.transforms` are their twins.

Every dataset-level method is an affine map per channel, ``y = x * scale[c] + shift[c]``
(optionally clipped), computed in one pass from the input's own dtype:

- :func:`standardize`: ``(x - mean) / std``
- :func:`min_max_scale`: ``[low, high] -> out_range``
- :func:`percentile_scale`: ``[p_low, p_high] -> out_range``, clipped by default

Units: statistics are in raw pixel units. Integer input of a dtype the statistics were
measured on is raw units; integer input of another dtype is refused where the statistics
name integer dtypes (``stats_dtype``), and read through the [0, 1] scale (raw / dtype max)
where they do not (float statistics, or numbers given by hand). Float (and bool) input is the
[0, 1] scale (raw / ``value_scale``) unless ``input_scale`` says it is raw / ``input_scale``.
Where the [0, 1] scale is only assumed (float input, no ``input_scale``, ``value_scale`` other
than 1), input that cannot be in it is refused (:func:`check_input_scale`): a float tensor in
HU or in 0-255 given to a transform of integer statistics would otherwise be read as
thousands of times too bright.

Accuracy does not depend on memory layout or device: every path computes in float64 where
a float32 ``x * scale + shift`` would cancel digits (see :mod:`imagenorm.fused`). Empty
tensors give empty outputs of the same shape.

Per-image statistics (``per_image=True``) are computed for each item of a batch (and each
channel, unless ``channel_wise=False``), optionally over a ``mask``: ``"nonzero"`` (a voxel
where any channel is nonzero, as ``--mask nonzero``), a boolean tensor broadcastable to the
input, or a callable returning one. Policies:

- a constant image (or channel, or an empty mask) has no spread: standardize maps it to 0,
  the range methods to ``out_range[0]``; ``eps`` sets a floor on std or range instead;
- NaN in the input stays NaN at its positions; per-image statistics use finite values only.

Shapes: ``(H, W)`` and ``(C, H, W)`` are one image and ``(B, C, H, W)`` a batch; with
``spatial_dims=3``, ``(D, H, W)``, ``(C, D, H, W)`` and ``(B, C, D, H, W)``; 5-D is always a
batch of volumes.

Example:
    >>> import torch
    >>> x = torch.tensor([[[0, 128, 255]]], dtype=torch.uint8)
    >>> standardize(x, mean=[127.5], std=[127.5], value_scale=255.0)  # raw 8-bit units
    tensor([[[-1.0000,  0.0039,  1.0000]]])
    >>> standardize(x, mean=[0.5], std=[0.5])  # [0, 1]-scale numbers, like torchvision's
    tensor([[[-1.0000,  0.0039,  1.0000]]])
    >>> min_max_scale(x.float() / 255, low=[0.0], high=[255.0], value_scale=255.0, out_range=(-1, 1))
    tensor([[[-1.0000,  0.0039,  1.0000]]])
"""

from __future__ import annotations

import math
from typing import Callable, Sequence, Union

import numpy as np
import torch

from . import fused
from .errors import ImagenormError, InputError
from .masks import MaskSpec
from .options import OptionError
from .stats.summary import linear_percentile_values

Mask = Union[str, torch.Tensor, Callable[[torch.Tensor], torch.Tensor], None]
Numbers = Union[Sequence[float], torch.Tensor, np.ndarray, float]

__all__ = [
    "standardize",
    "min_max_scale",
    "percentile_scale",
    "affine",
    "input_factor",
    "check_input_scale",
    "channel_axis",
    "image_statistics",
    "as_one_volume",
]


# --- layout ----------------------------------------------------------------------
def channel_axis(x: torch.Tensor, spatial_dims: int = 2) -> int | None:
    """The channel axis of ``x`` under the tensor conventions, or None when it has none.

    Raises:
        InputError: the shape fits none of the layouts.
        OptionError: ``spatial_dims`` is not 2 or 3.
    """
    if x.ndim == 5:
        return 1
    if spatial_dims not in (2, 3):
        raise OptionError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    extra = x.ndim - spatial_dims
    if extra not in (0, 1, 2):
        layouts = "(H, W), (C, H, W) or (B, C, H, W)" if spatial_dims == 2 else "(D, H, W), (C, D, H, W) or (B, C, D, H, W)"
        raise InputError(f"Expected a tensor of shape {layouts}, got {tuple(x.shape)}")
    return None if extra == 0 else extra - 1


def as_one_volume(x: torch.Tensor) -> torch.Tensor:
    """A channel-first image of more than two spatial axes, ``(C, D, H, W)`` or a stack
    ``(C, T, Z, Y, X)``, as a batch of one volume ``(1, C, D', H, W)`` (its planes stacked): one
    image whatever a transform's ``spatial_dims``."""
    return x.reshape((1, x.shape[0], math.prod(x.shape[1:-2])) + tuple(x.shape[-2:]))


def _channels(x: torch.Tensor, axis: int | None) -> int:
    return 1 if axis is None else x.shape[axis]


def _broadcast_shape(x: torch.Tensor, axis: int | None) -> tuple[int, ...]:
    shape = [1] * x.ndim
    if axis is not None:
        shape[axis] = -1
    return tuple(shape)


# --- units -----------------------------------------------------------------------
#: ``stats_dtype`` of statistics in physical units: integer input of any dtype is raw values.
ANY_INTEGER = "integer"


def input_factor(
    dtype: torch.dtype, value_scale: float = 1.0, input_scale: float | None = None,
    stats_dtype: str | Sequence[str] | None = None,
) -> float:
    """The factor ``k`` with ``raw = x * k`` for input of ``dtype``.

    ``stats_dtype``: the dtype the statistics were measured on, or the integer dtypes whose
    values are their raw units (statistics of images promoted to a common type), or
    ``"integer"``: values in physical units (HU), raw in any integer dtype.

    Raises:
        InputDtypeError: integer input of another dtype than the statistics were measured on.
        InputError: input that holds no pixel values (complex).
    """
    if dtype.is_floating_point or dtype == torch.bool:  # bool: False/True are 0 and 1 of the [0, 1] scale
        return float(input_scale if input_scale is not None else value_scale)
    _check_dtype(dtype)
    name = _DTYPE_NAMES.get(dtype) or str(dtype).removeprefix("torch.")
    measured = (stats_dtype,) if isinstance(stats_dtype, str) else tuple(stats_dtype or ())
    if name in measured or ANY_INTEGER in measured:  # raw units
        return 1.0
    if any(d != ANY_INTEGER and np.dtype(d).kind in "ui" for d in measured):
        raise InputDtypeError(
            f"the statistics were measured on {' and '.join(measured)} pixels, but the input is {name}: "
            "convert it, or pass float input in the [0, 1] scale"
        )
    top = _INTEGER_MAX.get(dtype) or float(torch.iinfo(dtype).max)
    return float(value_scale) / top


class InputDtypeError(InputError):
    """Integer input of a dtype whose raw values are not the statistics' units."""


class DegenerateStatisticsError(ImagenormError, ValueError):
    """A zero std or range, or a non-finite statistic, where a transform needs a scale."""


def _check_dtype(dtype: torch.dtype) -> None:
    if dtype.is_complex:
        raise InputError(f"Expected a tensor of pixel values (integer, bool or float), got {dtype}")


#: Float input assumed to be in the [0, 1] scale must lie within +-1.5 (signed data reach -1).
UNIT_SCALE_LIMIT = 1.5


def check_input_scale(
    x: torch.Tensor, value_scale: float = 1.0, input_scale: float | None = None,
    stats_dtype: str | Sequence[str] | None = None,
) -> None:
    """Refuse float input that cannot be in the [0, 1] scale it is assumed to be in.

    Checked only where the scale is assumed: float input, no ``input_scale``, and statistics
    with ``value_scale`` other than 1 (integer statistics). The [0, 1] scale is raw /
    ``value_scale``: within [0, 1] for unsigned data and [-1, 1] for signed data, so a value
    beyond +-1.5 means the input is in other units (raw 0-255, HU, ...). The check reads a
    regular grid of the input (every k-th index on each axis: at most 32 x 32 positions per
    plane and 4 indices on each other axis), the same elements whatever the memory layout or
    device, so it costs nearly nothing (a few microseconds; one scalar crosses from a GPU);
    data in other units have nearly every value far outside, while a lone outlier between
    grid points is not looked for. Non-finite values are ignored. Skipped inside
    ``torch.compile``. Passing ``input_scale`` (``value_scale`` itself for the [0, 1] scale, 1
    for raw values) states the units and skips the check.

    Raises:
        InputError: naming the value reached, the assumed scale and ``input_scale=``.

    Example:
        >>> import torch
        >>> check_input_scale(torch.tensor([[0.0, 0.5, 1.0]]), value_scale=255.0)  # the [0, 1] scale
        >>> check_input_scale(torch.tensor([[0.0, 128.0, 255.0]]), value_scale=255.0)
        Traceback (most recent call last):
        ...
        imagenorm.errors.InputError: float input reaches 255; transforms with value_scale=255 take float input in the [0, 1] scale (raw / 255); pass input_scale=1 for raw values
    """
    if not x.dtype.is_floating_point or input_scale is not None or value_scale == 1.0 or x.numel() == 0:
        return
    if torch.compiler.is_compiling():
        return
    low, high = _grid_range(x.detach())
    reach = high if abs(high) >= abs(low) else low
    if abs(reach) <= UNIT_SCALE_LIMIT:
        return
    measured = (stats_dtype,) if isinstance(stats_dtype, str) else tuple(stats_dtype or ())
    built = (f"transforms built from {' and '.join(measured)} statistics" if measured
             else f"transforms with value_scale={value_scale:g}")
    raise InputError(
        f"float input reaches {reach:.6g}; {built} take float input in the [0, 1] scale "
        f"(raw / {value_scale:.10g}); pass input_scale=1 for raw values"
    )


def _grid_range(x: torch.Tensor) -> tuple[float, float]:
    """(min, max) of the finite values on a regular grid of ``x`` (0, 0 when there are none):
    every k-th index per axis, at most 32 on the last two axes and 4 on the others."""
    grid = tuple(slice(None, None, max(1, -(-size // (32 if axis >= x.ndim - 2 else 4)))) for axis, size in enumerate(x.shape))
    if x.device.type == "cpu" and x.dtype != torch.bfloat16:  # numpy: a few microseconds on the CPU
        values = np.ascontiguousarray(x.numpy()[grid])
        low, high = float(values.min()), float(values.max())
        if not (math.isfinite(low) and math.isfinite(high)):
            values = values[np.isfinite(values)]
            low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        return low, high
    values = x[grid]
    low, high = torch.stack(torch.aminmax(values)).tolist()  # one transfer from the device
    if not (math.isfinite(low) and math.isfinite(high)):
        values = values[torch.isfinite(values)]
        low, high = torch.stack(torch.aminmax(values)).tolist() if values.numel() else (0.0, 0.0)
    return low, high


_INTEGERS = (torch.uint8, torch.int8, torch.uint16, torch.int16, torch.int32, torch.int64, torch.uint32)
_DTYPE_NAMES = {dtype: str(dtype).removeprefix("torch.") for dtype in _INTEGERS}
_INTEGER_MAX = {dtype: float(torch.iinfo(dtype).max) for dtype in _INTEGERS}
_KERNEL_INPUTS = {getattr(torch, name) for name in fused.KERNEL_INPUTS}
_KERNEL_OUTPUTS = {getattr(torch, name) for name in fused.KERNEL_OUTPUTS}


def _as_float64(values: Numbers | None, name: str) -> np.ndarray:
    """One float64 number per channel (or one for all).

    Raises:
        OptionError: missing, not numbers, or not one-dimensional.
    """
    if values is None:
        raise OptionError(f"{name} is missing: give one number per channel (or one for all), or per_image=True")
    try:
        array = np.atleast_1d(np.asarray(
            values.detach().cpu().double() if isinstance(values, torch.Tensor) else values, dtype=np.float64))
    except (TypeError, ValueError):
        raise OptionError(f"{name} must be numbers, one per channel, got {values!r}") from None
    if array.ndim != 1 or array.size == 0:
        raise OptionError(f"{name} must be one number per channel, got shape {array.shape}")
    return array


def channel_parameters(first: Numbers | None, second: Numbers | None, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """Two per-channel parameters (mean and std, low and high) as float64, of one length (or one of them 1).

    Raises:
        OptionError: either is missing or not numbers, or their lengths differ.
    """
    a, b = _as_float64(first, names[0]), _as_float64(second, names[1])
    if a.size != b.size and 1 not in (a.size, b.size):
        raise OptionError(f"{names[0]} has {a.size} values and {names[1]} {b.size}: give one per channel (or one for all)")
    return a, b


def check_finite(values: np.ndarray, names, what: str, source: str) -> None:
    """Raise for a non-finite statistic, naming the channel."""
    for name, value in zip(names, values):
        if not math.isfinite(value):
            raise DegenerateStatisticsError(f"channel {name} of {source} has a non-finite {what} ({value})")


def check_spread(values: np.ndarray, names, what: str, source: str, eps: float | None) -> None:
    """Raise for a non-finite spread (std or range), or a zero one when no eps is given."""
    check_finite(values, names, what, source)
    for name, value in zip(names, values):
        if value <= 0 and eps is None:
            raise DegenerateStatisticsError(
                f"channel {name} of {source} has {what} {value:g}: every pixel has the same value; "
                "pass eps= to use a floor instead"
            )


def channel_labels(values: np.ndarray) -> list[str]:
    """Channel labels 0, 1, ... for errors about numbers given by hand."""
    return [str(i) for i in range(values.size)]


# --- the affine pass -------------------------------------------------------------
def affine(
    x: torch.Tensor,
    scale: Numbers,
    shift: Numbers,
    *,
    clip: tuple[float, float] | None = None,
    spatial_dims: int = 2,
    dtype: torch.dtype = torch.float32,
    out: torch.Tensor | None = None,
    inplace: bool = False,
) -> torch.Tensor:
    """``x * scale[c] + shift[c]`` (then clipped to ``clip``) in one pass, as ``dtype``.

    ``scale`` and ``shift`` hold one value per channel, or one for all; or, for per-image
    parameters, a ``(B, C)`` array for a batch. The input is never modified unless
    ``inplace=True`` (float input of ``dtype`` only); ``out`` receives the result.

    Arithmetic is float64 where float32 would cancel digits (:func:`arithmetic_dtype`), on the
    compiled CPU kernel and on the torch path alike, so that the result does not depend on
    the input's strides or device.

    Shape:
        Input and output: ``(*, C, H, W)`` or as :func:`channel_axis` describes; the output
        keeps the input's shape, device and memory format. An empty input gives an empty output.
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise OptionError(f"the output dtype must be a float dtype, got {dtype}")
    _check_dtype(x.dtype)
    axis = channel_axis(x, spatial_dims)
    channels = _channels(x, axis)
    scale = np.asarray(scale, np.float64)
    shift = np.asarray(shift, np.float64)
    per_item = scale.ndim == 2
    if not per_item and scale.size not in (1, channels):
        raise InputError(f"Expected {scale.size} channel(s), got a tensor of shape {tuple(x.shape)} with {channels}")
    if x.numel() == 0:
        result = _output(x, out, dtype, inplace)
        return result.as_subclass(type(x)) if type(x) is not torch.Tensor and out is None and not inplace else result
    fast = _fused_path(x, dtype, axis, per_item)
    if out is None and not inplace and not fast:
        result = _torch_affine(x, axis, scale, shift, clip, dtype).to(dtype)  # autograd, GPU, compile
    else:
        result = _output(x, out, dtype, inplace)
        if not (fast and _run_fused(x, result, axis, scale, shift, clip, channels)):
            result.copy_(_torch_affine(x, axis, scale, shift, clip, dtype))
    if type(x) is not torch.Tensor and out is None and not inplace:
        result = result.as_subclass(type(x))  # e.g. torchvision's tv_tensors.Image stays one
    return result


def _output(x: torch.Tensor, out: torch.Tensor | None, dtype: torch.dtype, inplace: bool) -> torch.Tensor:
    if inplace:
        if x.dtype != dtype:
            raise InputError(f"inplace=True needs float input of the output dtype {dtype}, got {x.dtype}")
        return x
    if out is None:
        return torch.empty_like(x, dtype=dtype)
    if out.shape != x.shape or out.dtype != dtype or out.device != x.device:
        raise InputError(
            f"out must have shape {tuple(x.shape)}, dtype {dtype} and device {x.device}; "
            f"got {tuple(out.shape)}, {out.dtype}, {out.device}"
        )
    return out


def _fused_path(x: torch.Tensor, dtype: torch.dtype, axis: int | None, per_item: bool) -> bool:
    """Whether the compiled CPU kernel applies (else torch operations do the work)."""
    if x.device.type != "cpu" or torch.compiler.is_compiling():
        return False
    if x.requires_grad and torch.is_grad_enabled():
        return False
    return x.dtype in _KERNEL_INPUTS and dtype in _KERNEL_OUTPUTS and (axis is not None or not per_item)


def _run_fused(x, result, axis, scale, shift, clip, channels) -> bool:
    """Run the kernel on numpy views; False if the memory layout does not suit it."""
    source = (x.detach() if x.requires_grad else x).numpy()
    target = result.numpy()
    if scale.ndim == 1 and scale.size == 1 and channels > 1:
        scale, shift = np.repeat(scale, channels), np.repeat(shift, channels)
    if x.is_contiguous() and result.is_contiguous():
        plane = x.numel() if axis is None else math.prod(x.shape[axis + 1 :])
        if scale.ndim == 2:  # per item of a batch: one parameter per plane
            scale, shift = scale.reshape(-1), shift.reshape(-1)
        threads = torch.get_num_threads()
        fused.affine_planes(source.reshape(-1, plane), target.reshape(-1, plane), scale, shift, clip, threads)
        return True
    if axis is not None and scale.ndim == 1 and _channels_last(x) and _channels_last(result):
        order = (*range(axis), *range(axis + 1, x.ndim), axis)
        pixels_in = source.transpose(order).reshape(-1, channels)
        pixels_out = target.transpose(order).reshape(-1, channels)
        fused.affine_interleaved(pixels_in, pixels_out, scale, shift, clip, torch.get_num_threads())
        return True
    return False


def _channels_last(t: torch.Tensor) -> bool:
    if t.ndim == 4:
        return t.is_contiguous(memory_format=torch.channels_last)
    if t.ndim == 5:
        return t.is_contiguous(memory_format=torch.channels_last_3d)
    return False


def arithmetic_dtype(shift: np.ndarray, dtype: torch.dtype, device: torch.device | None = None) -> torch.dtype:
    """float32 where :func:`imagenorm.fused.float32_is_exact_enough` allows it (every ``|shift| <= 8``)
    and the output is no wider, else float64: the rule of the compiled kernel, for every path.

    Apple's MPS has no float64; there float32 is all there is.
    """
    if dtype == torch.float64:
        return torch.float64
    if device is not None and device.type == "mps":
        return torch.float32
    return torch.float32 if fused.float32_is_exact_enough(np.asarray(shift).reshape(-1), np.dtype(np.float32)) else torch.float64


def _torch_affine(x, axis, scale, shift, clip, dtype) -> torch.Tensor:
    """The same map with torch operations (any device, any strides, autograd, torch.compile)."""
    compute = arithmetic_dtype(shift, dtype, x.device)
    if scale.ndim == 2:  # (B, C): broadcast over the batch and channel axes
        shape = [1] * x.ndim
        shape[0], shape[axis] = scale.shape[0], scale.shape[1]
    else:
        shape = _broadcast_shape(x, axis) if scale.size > 1 else (1,) * x.ndim
    scale_t = torch.as_tensor(np.array(scale), dtype=compute, device=x.device).reshape(shape)  # a copy: views may be read-only
    shift_t = torch.as_tensor(np.array(shift), dtype=compute, device=x.device).reshape(shape)
    mapped = torch.addcmul(shift_t, x.to(compute), scale_t)
    if clip is not None:
        mapped = mapped.clamp(min(clip), max(clip))
    return mapped


# --- per-image statistics --------------------------------------------------------
def image_statistics(
    x: torch.Tensor,
    kind: str,
    *,
    channel_wise: bool = True,
    mask: Mask = None,
    spatial_dims: int = 2,
    q: tuple[float, float] = (0.5, 99.5),
) -> tuple[np.ndarray, np.ndarray]:
    """Per item (and channel) ``(mean, std)``, ``(min, max)`` or percentiles ``q``, as ``(B, C)`` float64.

    Only finite values inside ``mask`` count. An item with none (or no pixels) gives NaN.
    """
    _check_dtype(x.dtype)
    axis = channel_axis(x, spatial_dims)
    values, valid = _flat_items(x, axis, channel_wise, _resolve_mask(mask, x, axis))
    if kind == "moments":
        count = valid.sum(-1)
        zeros = torch.zeros((), dtype=torch.float64, device=x.device)
        total = torch.where(valid, values, zeros).sum(-1)
        mean = total / count
        centered = torch.where(valid, values - mean[..., None], zeros)
        std = torch.sqrt((centered * centered).sum(-1) / count)
        return mean.cpu().numpy(), std.cpu().numpy()
    if kind == "range":
        if values.shape[-1] == 0:  # no pixels: amin/amax have nothing to reduce
            empty = np.full(values.shape[:2], np.nan)
            return empty, empty.copy()
        infinity = torch.tensor(math.inf, dtype=torch.float64, device=x.device)
        low = torch.where(valid, values, infinity).amin(-1)
        high = torch.where(valid, values, -infinity).amax(-1)
        low[low == math.inf] = math.nan
        high[high == -math.inf] = math.nan
        return low.cpu().numpy(), high.cpu().numpy()
    if kind == "percentiles":
        return _percentiles(values, valid, q)
    raise OptionError(f"unknown statistics kind {kind!r}")


def _resolve_mask(mask: Mask, x: torch.Tensor, axis: int | None | str = "guess") -> torch.Tensor | None:
    """The boolean mask of ``x`` (broadcast to its shape); a recorded mask (a MaskSpec) is told
    the channel axis ``axis``, which a volume ``(C, D, H, W)`` does not show by its shape."""
    if mask is None:
        return None
    if isinstance(mask, str):
        if mask != "nonzero":
            raise OptionError(f"mask must be 'nonzero', a boolean tensor or a callable, got {mask!r}")
        mask = MaskSpec("nonzero")  # one meaning everywhere: a voxel where any channel is nonzero
    resolved = mask(x, axis) if isinstance(mask, MaskSpec) and axis != "guess" else mask(x) if callable(mask) else mask
    if not isinstance(resolved, torch.Tensor) or resolved.dtype != torch.bool:
        raise InputError("the mask must be a boolean tensor (or a callable returning one)")
    try:
        return torch.broadcast_to(resolved.to(x.device), x.shape)
    except RuntimeError:
        raise InputError(f"a mask of shape {tuple(resolved.shape)} does not fit an input of shape {tuple(x.shape)}") from None


def _flat_items(x: torch.Tensor, axis: int | None, channel_wise: bool, mask: torch.Tensor | None):
    """float64 values and validity, shaped (B, C, N) (C=1 when pooled over channels)."""
    batched = x.ndim == 5 or (axis == 1)
    items = x.shape[0] if batched else 1
    groups = _channels(x, axis) if channel_wise else 1
    per_group = math.prod(x.shape[1 if batched else 0 :]) // groups if groups else 0  # explicit: -1 fails on empty tensors
    values = x.to(torch.float64).reshape(items, groups, per_group)
    valid = torch.isfinite(values) if x.dtype.is_floating_point else torch.ones_like(values, dtype=torch.bool)
    if mask is not None:
        valid &= mask.reshape(items, groups, per_group)
    return values, valid


def _percentiles(values: torch.Tensor, valid: torch.Tensor, q: tuple[float, float]):
    """numpy.percentile's linear definition over the valid values of each (item, channel)."""
    items, groups = values.shape[:2]
    low = np.full((items, groups), np.nan)
    high = np.full((items, groups), np.nan)
    for item in range(items):
        for group in range(groups):
            chosen = values[item, group][valid[item, group]]
            if chosen.numel():
                ordered = torch.sort(chosen).values
                low[item, group], high[item, group] = linear_percentile_values(
                    ordered.numel(), lambda rank: float(ordered[rank]), q)
    return low, high


# --- options, checked where they enter ---------------------------------------------
def check_options(
    *, eps: float | None = None, value_scale: float = 1.0, input_scale: float | None = None,
    out_range: tuple[float, float] | None = None, mask: Mask = None, per_image: bool = True,
) -> tuple[float, float] | None:
    """Validate the options every method shares; returns ``out_range`` as two floats.

    Raises:
        OptionError: naming the parameter and the value.
    """
    if eps is not None and not _positive(eps):
        raise OptionError(f"eps must be a positive number, got {eps!r}")
    if not _positive(value_scale):
        raise OptionError(f"value_scale must be a positive number, got {value_scale!r}")
    if input_scale is not None and not _positive(input_scale):
        raise OptionError(f"input_scale must be a positive number, got {input_scale!r}")
    if mask is not None:
        if not per_image:
            raise OptionError("mask= selects the pixels of per-image statistics; pass per_image=True")
        if isinstance(mask, str) and mask != "nonzero":
            raise OptionError(f"mask must be 'nonzero', a boolean tensor or a callable, got {mask!r}")
        if isinstance(mask, torch.Tensor) and mask.dtype != torch.bool:
            raise OptionError(f"a mask tensor must be boolean, got {mask.dtype}")
        if not isinstance(mask, (str, torch.Tensor)) and not callable(mask):
            raise OptionError(f"mask must be 'nonzero', a boolean tensor or a callable, got {type(mask).__name__}")
    if out_range is None:
        return None
    try:
        a, b = (float(v) for v in out_range)
    except (TypeError, ValueError):
        raise OptionError(f"out_range must be two numbers, got {out_range!r}") from None
    if not (math.isfinite(a) and math.isfinite(b)) or a == b:
        raise OptionError(f"out_range must be two different finite numbers, got {out_range!r}")
    return a, b


def _one_source(per_image: bool, first, second, names: tuple[str, str]) -> None:
    """Dataset parameters or per-image statistics, never both (given ones would be ignored)."""
    if per_image and (first is not None or second is not None):
        raise OptionError(f"give {names[0]} and {names[1]}, or per_image=True, not both")


def _positive(value) -> bool:
    try:
        return bool(math.isfinite(float(value)) and float(value) > 0)
    except (TypeError, ValueError):
        return False


def percentile_pair(percentiles) -> tuple[float, float]:
    """``(low, high)`` percentiles with ``0 <= low < high <= 100``.

    Raises:
        OptionError: not two numbers, reversed, or out of [0, 100].
    """
    try:
        low, high = (float(q) for q in percentiles)
    except (TypeError, ValueError):
        raise OptionError(f"percentiles must be two numbers (low, high), got {percentiles!r}") from None
    if low > high:
        raise OptionError(f"percentiles are reversed: ({low:g}, {high:g}); give (low, high)")
    if not 0 <= low < high <= 100:
        raise OptionError(f"percentiles must satisfy 0 <= low < high <= 100, got ({low:g}, {high:g})")
    return low, high


# --- the three methods -----------------------------------------------------------
def _range_map(low: np.ndarray, high: np.ndarray, out_range, eps: float | None, factor: float = 1.0):
    """scale, shift mapping ``[low, high]`` (raw units) to ``out_range`` for input ``x * factor``."""
    a, b = (float(v) for v in out_range)
    width = high - low
    if eps is not None:
        width = np.maximum(width, eps)
    with np.errstate(divide="ignore", invalid="ignore"):
        unit = np.where(width > 0, (b - a) / width, 0.0)  # no spread: everything to out_range[0]
    unit = np.nan_to_num(unit, nan=0.0)
    return unit * factor, a - np.nan_to_num(low, nan=0.0) * unit


def standardize(
    x: torch.Tensor,
    mean: Numbers | None = None,
    std: Numbers | None = None,
    *,
    per_image: bool = False,
    channel_wise: bool = True,
    mask: Mask = None,
    eps: float | None = None,
    value_scale: float = 1.0,
    input_scale: float | None = None,
    stats_dtype: str | None = None,
    spatial_dims: int = 2,
    dtype: torch.dtype = torch.float32,
    out: torch.Tensor | None = None,
    inplace: bool = False,
) -> torch.Tensor:
    """``(x - mean) / std`` per channel, with dataset statistics or each image's own.

    See :class:`imagenorm.Standardize`. ``mean`` and ``std`` are in raw units (raw /
    ``value_scale`` is the [0, 1] scale); ``eps`` is a floor for std.
    """
    check_options(eps=eps, value_scale=value_scale, input_scale=input_scale, mask=mask, per_image=per_image)
    _one_source(per_image, mean, std, ("mean", "std"))
    if per_image:
        mean, std = image_statistics(x, "moments", channel_wise=channel_wise, mask=mask, spatial_dims=spatial_dims)
        if eps is not None:
            std = np.maximum(std, eps)
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(std > 0, 1.0 / std, 0.0)
        scale = np.nan_to_num(scale, nan=0.0)
        shift = -np.nan_to_num(mean, nan=0.0) * scale
        return affine(x, _items(scale, x, spatial_dims), _items(shift, x, spatial_dims), spatial_dims=spatial_dims, dtype=dtype, out=out, inplace=inplace)
    mean, std = channel_parameters(mean, std, ("mean", "std"))
    check_finite(mean, channel_labels(mean), "mean", "the given mean")
    check_spread(std, channel_labels(std), "std", "the given std", eps)
    if eps is not None:
        std = np.maximum(std, eps)
    factor = input_factor(x.dtype, value_scale, input_scale, stats_dtype)
    check_input_scale(x, value_scale, input_scale, stats_dtype)
    return affine(x, factor / std, -mean / std, spatial_dims=spatial_dims, dtype=dtype, out=out, inplace=inplace)


def min_max_scale(
    x: torch.Tensor,
    low: Numbers | None = None,
    high: Numbers | None = None,
    *,
    out_range: tuple[float, float] = (0.0, 1.0),
    clip: bool = False,
    per_image: bool = False,
    channel_wise: bool = True,
    mask: Mask = None,
    eps: float | None = None,
    value_scale: float = 1.0,
    input_scale: float | None = None,
    stats_dtype: str | None = None,
    spatial_dims: int = 2,
    dtype: torch.dtype = torch.float32,
    out: torch.Tensor | None = None,
    inplace: bool = False,
) -> torch.Tensor:
    """Map ``[low, high]`` (dataset or per-image min and max) linearly to ``out_range``.

    See :class:`imagenorm.MinMaxScale`.
    """
    out_range = check_options(eps=eps, value_scale=value_scale, input_scale=input_scale, out_range=out_range,
                              mask=mask, per_image=per_image)
    _one_source(per_image, low, high, ("low", "high"))
    if per_image:
        low, high = image_statistics(x, "range", channel_wise=channel_wise, mask=mask, spatial_dims=spatial_dims)
    return _scale_range(x, low, high, per_image, out_range, clip, eps, value_scale, input_scale, stats_dtype,
                        spatial_dims, dtype, out, inplace)


def percentile_scale(
    x: torch.Tensor,
    low: Numbers | None = None,
    high: Numbers | None = None,
    *,
    q: tuple[float, float] = (0.5, 99.5),
    out_range: tuple[float, float] = (0.0, 1.0),
    clip: bool = True,
    per_image: bool = False,
    channel_wise: bool = True,
    mask: Mask = None,
    eps: float | None = None,
    value_scale: float = 1.0,
    input_scale: float | None = None,
    stats_dtype: str | None = None,
    spatial_dims: int = 2,
    dtype: torch.dtype = torch.float32,
    out: torch.Tensor | None = None,
    inplace: bool = False,
) -> torch.Tensor:
    """Map the ``q`` percentiles (dataset values ``low``/``high``, or each image's) to ``out_range``, clipped.

    See :class:`imagenorm.PercentileScale`.
    """
    q = percentile_pair(q)
    out_range = check_options(eps=eps, value_scale=value_scale, input_scale=input_scale, out_range=out_range,
                              mask=mask, per_image=per_image)
    _one_source(per_image, low, high, ("low", "high"))
    if per_image:
        low, high = image_statistics(x, "percentiles", channel_wise=channel_wise, mask=mask, spatial_dims=spatial_dims, q=q)
    return _scale_range(x, low, high, per_image, out_range, clip, eps, value_scale, input_scale, stats_dtype,
                        spatial_dims, dtype, out, inplace)


def _scale_range(x, low, high, per_image, out_range, clip, eps, value_scale, input_scale, stats_dtype,
                 spatial_dims, dtype, out, inplace) -> torch.Tensor:
    """Map ``[low, high]`` to ``out_range``: dataset values (per channel) or per-image ``(B, C)`` ones."""
    if per_image:
        scale, shift = _range_map(low, high, out_range, eps)
        scale, shift = _items(scale, x, spatial_dims), _items(shift, x, spatial_dims)
    else:
        low, high = channel_parameters(low, high, ("low", "high"))
        check_spread(high - low, channel_labels(high - low), "range (high - low)", "the given range", eps)
        factor = input_factor(x.dtype, value_scale, input_scale, stats_dtype)
        check_input_scale(x, value_scale, input_scale, stats_dtype)
        scale, shift = _range_map(low, high, out_range, eps, factor)
    bounds = (min(out_range), max(out_range)) if clip else None
    return affine(x, scale, shift, clip=bounds, spatial_dims=spatial_dims, dtype=dtype, out=out, inplace=inplace)


def _items(values: np.ndarray, x: torch.Tensor, spatial_dims: int) -> np.ndarray:
    """Per-image parameters ``(B, C or 1)`` as ``affine`` takes them."""
    axis = channel_axis(x, spatial_dims)
    channels = _channels(x, axis)
    values = np.broadcast_to(values, (values.shape[0], channels)) if values.shape[1] == 1 else values
    if values.shape[0] == 1 and not (x.ndim == 5 or axis == 1):
        return np.ascontiguousarray(values[0])  # an unbatched image: per-channel parameters
    return np.ascontiguousarray(values)
