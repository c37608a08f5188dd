"""Statistics of tensors already on a device (e.g. batches a GPU pipeline decoded or augmented).

The pixels never leave their device: histograms (8/16-bit integers) are counted with
``torch.bincount`` there and float moments reduced there in float64; only per-channel
counts and moments cross to the host when :meth:`StatsAccumulator.compute` is called.

Example:
    >>> import torch
    >>> accumulator = StatsAccumulator()
    >>> accumulator.update(torch.tensor([[[[0, 10], [20, 30]]]], dtype=torch.uint8))  # (B, C, H, W)
    >>> accumulator.compute().pooled.mean
    15.0
"""

from __future__ import annotations

import numpy as np
import torch

from .result import DatasetStats
from ..errors import ImagenormError, InputError
from ..options import ReadOptions, check_choice
from ..readers.base import array_channels
from .histogram import IntegerHistogram
from .measurement import Measurement
from .moments import FloatMoments, ImageSpread

_COUNTED = {torch.uint8: "uint8", torch.int8: "int8", torch.uint16: "uint16", torch.int16: "int16"}
_LAYOUTS = {4: "(B, C, H, W)", 5: "(B, C, D, H, W)"}


class StatsAccumulator:
    """Accumulate exact statistics of ``(B, C, H, W)``/``(B, C, D, H, W)`` batches on their device.

    Layouts: a batch of images ``(B, C, H, W)`` or of volumes ``(B, C, D, H, W)``; the first
    axis indexes images, the second channels. The first batch fixes the layout, the channel
    count and the dtype; every later batch must match, or an error names both. One image
    ``(C, H, W)`` is not a batch (it would be read as C images of H channels): it is refused,
    and ``image[None]`` makes it a batch of one; likewise one volume ``(C, D, H, W)`` needs
    ``volume[None]``, since 4-D is a batch of images. As for files, batches of another channel
    count are refused unless ``convert`` brings every batch to one layout: ``"gray"`` turns
    3-channel (RGB) batches into luma (ITU-R 601-2, rounded as Pillow's ``convert("L")``),
    ``"rgb"`` repeats 1-channel batches three times. An empty batch (B = 0) adds nothing;
    images without pixels are refused. bfloat16 batches are measured as float32 (each of
    their values is one exactly) and recorded so.

    Args:
        convert: None (channels as they come), ``"gray"`` or ``"rgb"``.

    Raises:
        OptionError: ``convert`` is not one of those.
    """

    def __init__(self, *, convert: str | None = None) -> None:
        self.convert = check_choice("convert", convert, optional=True)
        self.layout: tuple[int, int] | None = None  # (ndim, channels) of every batch, fixed by the first
        self.dtype: str | None = None
        self.counts: torch.Tensor | None = None  # (C, bins) int64 on the batches' device
        self.moments: FloatMoments | None = None
        self.images = 0
        self.voxels = 0  # every value added (all channels)
        self.spread: ImageSpread | None = None  # per-image means and stds, merged like the rest

    def update(self, batch: torch.Tensor) -> None:
        """Add a batch ``(B, C, H, W)`` or ``(B, C, D, H, W)`` (see the class docstring).

        Raises:
            InputError: another layout, channel count or dtype than the first batch; a single
                image; a tensor that holds no pixel values (complex); images without pixels.
        """
        batch = self._checked(batch)
        if batch.shape[0] == 0:
            return
        flat = batch.detach().reshape(batch.shape[0], batch.shape[1], -1)
        means, stds = self._count(flat) if batch.dtype in _COUNTED else self._moments(flat)
        batch_spread = ImageSpread.of_images(means, stds, flat.shape[1])
        self.spread = batch_spread if self.spread is None else self.spread.merge(batch_spread)
        self.images += batch.shape[0]
        self.voxels += batch.numel()

    def _checked(self, batch: torch.Tensor) -> torch.Tensor:
        """The batch converted as asked, once its layout, channels and dtype fit the first batch's."""
        if not isinstance(batch, torch.Tensor):
            raise InputError(f"Expected a tensor batch (B, C, H, W) or (B, C, D, H, W), got {type(batch).__name__}")
        if batch.ndim == 3:
            raise InputError(f"Expected a batch (B, C, H, W) or (B, C, D, H, W), got {tuple(batch.shape)}: "
                             "one image (C, H, W) is not a batch; add a batch axis (image[None])")
        if batch.ndim not in _LAYOUTS:
            raise InputError(f"Expected a batch (B, C, H, W) or (B, C, D, H, W), got {tuple(batch.shape)}")
        if batch.dtype.is_complex:
            raise InputError(f"Expected a batch of pixel values (integer, bool or float), got {batch.dtype}")
        if batch.dtype == torch.bool:  # one rule for bool everywhere: uint8 0 and 255
            batch = batch.to(torch.uint8) * 255
        batch = self._converted(batch)
        name = _COUNTED.get(batch.dtype) or str(batch.dtype).removeprefix("torch.")
        if batch.dtype == torch.bfloat16:
            name = "float32"  # every bfloat16 value is a float32 value
        layout = (batch.ndim, batch.shape[1])
        if self.layout is not None and layout != self.layout:
            before, now = self.layout, layout
            if before[0] != now[0]:
                raise InputError(f"a batch {_LAYOUTS[now[0]]} of shape {tuple(batch.shape)} after batches {_LAYOUTS[before[0]]}")
            raise InputError(f"a batch of {now[1]} channel(s) (shape {tuple(batch.shape)}) after batches of {before[1]}; "
                             "pass convert='gray' or convert='rgb' to bring every batch to one layout")
        if self.dtype is not None and name != self.dtype:
            raise InputError(f"a batch of {name} after batches of {self.dtype}")
        if batch.shape[0] and batch[0].numel() == 0:
            raise InputError(f"a batch of images without pixels: shape {tuple(batch.shape)}")
        self.layout, self.dtype = layout, name
        return batch

    def _converted(self, batch: torch.Tensor) -> torch.Tensor:
        """``convert="gray"``: RGB to luma; ``convert="rgb"``: gray repeated (the rules of files)."""
        if self.convert == "gray" and batch.shape[1] == 3:
            return _luminance(batch)
        if self.convert == "rgb" and batch.shape[1] == 1:
            return batch.expand(-1, 3, *batch.shape[2:])
        return batch

    def _count(self, flat: torch.Tensor) -> tuple[list, list]:
        """Histogram each image on its device; returns the images' per-channel means and stds."""
        bins, offset = 1 << torch.iinfo(flat.dtype).bits, torch.iinfo(flat.dtype).min
        if self.counts is None:
            self.counts = torch.zeros((flat.shape[1], bins), dtype=torch.int64, device=flat.device)
        values = torch.arange(bins, device=flat.device, dtype=torch.float64) + offset
        means, stds = [], []
        for image in flat:
            shifted = image.to(torch.int32) - offset  # non-negative bin indices
            per_channel = torch.stack([torch.bincount(row, minlength=bins) for row in shifted])
            self.counts += per_channel
            total = per_channel.sum(1).clamp(min=1).double()
            mean = per_channel.double() @ values / total
            variance = (per_channel.double() @ (values * values) / total - mean * mean).clamp(min=0)
            means.append(mean.cpu().numpy())
            stds.append(variance.sqrt().cpu().numpy())
        return means, stds

    def _moments(self, flat: torch.Tensor) -> tuple[list, list]:
        """float64 moments of each image on its device; returns the images' means and stds."""
        if self.moments is None:
            self.moments = FloatMoments.empty(flat.shape[1])
        means, stds = [], []
        for image in flat.to(torch.float64):
            finite = torch.isfinite(image)
            count = finite.sum(1)
            zeros = torch.zeros((), dtype=torch.float64, device=image.device)
            mean = torch.where(finite, image, zeros).sum(1) / count.clamp(min=1)
            m2 = torch.where(finite, (image - mean[:, None]) ** 2, zeros).sum(1)
            inf = torch.tensor(float("inf"), dtype=torch.float64, device=image.device)
            part = FloatMoments(
                count=count.cpu().numpy().astype(np.int64),
                mean=mean.cpu().numpy(),
                m2=m2.cpu().numpy(),
                minimum=torch.where(finite, image, inf).amin(1).cpu().numpy(),
                maximum=torch.where(finite, image, -inf).amax(1).cpu().numpy(),
                nonfinite=(~finite).sum(1).cpu().numpy().astype(np.int64),
            )
            self.moments = self.moments.merge(part)
            with np.errstate(invalid="ignore", divide="ignore"):
                means.append(part.mean)
                stds.append(np.sqrt(part.m2 / part.count))
        return means, stds

    def all_reduce(self, group=None) -> None:
        """Sum the histograms over all ranks in place (on the device); moments are merged exactly."""
        import torch.distributed as dist

        from . import distributed

        layouts = distributed.gather((self.layout, self.dtype, self.counts is not None), group)
        if any(entry != layouts[0] for entry in layouts):
            raise InputError("the ranks added batches of different layouts, dtypes, or none at all: "
                             + "; ".join(f"rank {rank}: {entry[:2]}" for rank, entry in enumerate(layouts)))
        if self.counts is not None:
            try:
                dist.all_reduce(self.counts, op=dist.ReduceOp.SUM, group=group)
            except RuntimeError as error:
                raise ImagenormError(f"a rank failed or timed out while summing histograms: {error}") from None
        if self.moments is not None:
            self.moments = distributed.gather_merge(self.moments, group)
        if self.spread is not None:
            self.spread = distributed.gather_merge(self.spread, group)
        self.images = sum(distributed.gather(self.images, group))
        self.voxels = sum(distributed.gather(self.voxels, group))

    def compute(self) -> DatasetStats:
        """The statistics of everything added (one small transfer to the host)."""
        if self.counts is None and self.moments is None:
            raise InputError("no image was added (no batch, or only empty ones)")
        if self.counts is not None:
            state = IntegerHistogram(self.dtype, self.counts.cpu().numpy())
        else:
            state = self.moments
        units = "float" if np.dtype(self.dtype).kind == "f" else "raw"
        measurement = Measurement(state, self.spread, files=self.images, dtypes=frozenset({self.dtype}),
                                  units=frozenset({units}), voxels=self.voxels, spatial=frozenset({self.layout[0] - 2}))
        return DatasetStats(dtype=self.dtype, channel_names=array_channels(state.channels), measurement=measurement,
                            read_options=ReadOptions(convert=self.convert), created_by="imagenorm StatsAccumulator")


def _luminance(rgb: torch.Tensor) -> torch.Tensor:
    """ITU-R 601-2 luma ``(B, 1, ...)`` of ``(B, 3, ...)`` in the input dtype, as :func:`imagenorm.readers.base.luminance`."""
    if rgb.dtype.is_floating_point:
        return 0.299 * rgb[:, 0:1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:3]
    r, g, b = (rgb[:, i : i + 1].to(torch.int64) for i in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).to(rgb.dtype)
