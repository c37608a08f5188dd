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
from ..errors import InputError
from ..readers.base import array_channels
from .histogram import IntegerHistogram
from .measurement import Measurement
from .moments import FloatMoments, ImageSpread

_COUNTED = {torch.uint8: "uint8", torch.int8: "int8", torch.uint16: "uint16", torch.int16: "int16"}


class StatsAccumulator:
    """Accumulate exact statistics of ``(B, C, H, W)``/``(B, C, D, H, W)`` batches on their device."""

    def __init__(self) -> None:
        self.dtype: str | None = None
        self.counts: torch.Tensor | None = None  # (C, bins) int64 on the batches' device
        self.moments: FloatMoments | None = None
        self.images = 0
        self.spread: ImageSpread | None = None  # per-image means and stds, merged like the rest

    def update(self, batch: torch.Tensor) -> None:
        """Add a batch (its first axis indexes images, its second channels)."""
        if batch.ndim < 3:
            raise InputError(f"Expected a batch of shape (B, C, ...), got {tuple(batch.shape)}")
        name = _COUNTED.get(batch.dtype) or str(batch.dtype).removeprefix("torch.")
        if self.dtype is not None and name != self.dtype:
            raise InputError(f"a batch of {name} after batches of {self.dtype}")
        self.dtype = name
        flat = batch.detach().reshape(batch.shape[0], batch.shape[1], -1)
        means, stds = self._count(flat) if batch.dtype in _COUNTED else self._moments(flat)
        batch_spread = ImageSpread.of_images(means, stds, flat.shape[1])
        self.spread = batch_spread if self.spread is None else self.spread.merge(batch_spread)
        self.images += batch.shape[0]

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

        if self.counts is not None:
            dist.all_reduce(self.counts, op=dist.ReduceOp.SUM, group=group)
        if self.moments is not None:
            self.moments = distributed.gather_merge(self.moments, group)
        if self.spread is not None:
            self.spread = distributed.gather_merge(self.spread, group)
        self.images = sum(distributed.gather(self.images, group))

    def compute(self) -> DatasetStats:
        """The statistics of everything added (one small transfer to the host)."""
        if self.dtype is None:
            raise InputError("no batch was added")
        if self.counts is not None:
            state = IntegerHistogram(self.dtype, self.counts.cpu().numpy())
        else:
            state = self.moments
        measurement = Measurement(state, self.spread, files=self.images, dtypes=frozenset({self.dtype}),
                                  units=frozenset({"float" if self.moments is not None else "raw"}))
        return DatasetStats(dtype=self.dtype, channel_names=array_channels(state.channels), measurement=measurement,
                            created_by="imagenorm StatsAccumulator")
