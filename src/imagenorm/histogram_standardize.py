"""Nyúl & Udupa histogram standardization: each image mapped from its own landmarks onto a standard scale.

MR intensities have no unit: the same tissue lands at different values on different scanners,
and a z-score leaves the histograms misaligned. :class:`HistogramStandardize` finds each
image's landmarks (percentiles of its values inside an optional mask) and maps the image
piecewise-linearly so that they land on the standard landmarks learned from the training set
(``imagenorm stats --landmarks``, see :mod:`imagenorm.stats.landmarks`). Values beyond the
cutoffs extrapolate linearly from the end segments. It reproduces TorchIO's
``HistogramStandardization`` (same landmarks, same map, same policy for equal landmarks), and
reads and writes TorchIO's landmark files (:meth:`~HistogramStandardize.from_torchio`,
:meth:`~HistogramStandardize.to_torchio`).

Equal landmarks (e.g. background voxels filling the lowest percentiles of an unmasked image)
make a segment narrower than ``eps`` (raw units, TorchIO's 1e-5): it maps flat onto its lower
standard landmark, as in TorchIO, instead of dividing by zero. Mask the background to avoid it.

Example:
    >>> import torch
    >>> standard = [0, 10, 20, 25, 30, 40, 50, 60, 70, 75, 80, 90, 100]  # the 13 TorchIO landmarks
    >>> t = HistogramStandardize(standard)
    >>> y = t(torch.arange(1001, dtype=torch.int16).reshape(1, 1, -1))  # uniform 0..1000
    >>> [round(float(v), 3) for v in y[0, 0, [10, 500, 990]]]
    [0.0, 50.0, 100.0]
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import functional as F
from . import fused
from .atomic import atomic_write
from .errors import ImagenormError, InputError, display_path, warn
from .functional import DegenerateStatisticsError
from .masks import MaskSpec
from .options import OptionError
from .stats.landmarks import TORCHIO_RANGE, LandmarkSpec, exact_percentiles
from .stats.result import DatasetStats
from .stats.summary import linear_percentile_values, target_ranks
from .transforms import _Normalize, _stats_name, _with_units

__all__ = ["HistogramStandardize", "TORCHIO_EPSILON"]

TORCHIO_EPSILON = 1e-5  # TorchIO's: landmarks closer than this (raw units) are one landmark
_KERNEL_INPUTS = {getattr(torch, name) for name in fused.KERNEL_INPUTS}
_KERNEL_OUTPUTS = {getattr(torch, name) for name in fused.KERNEL_OUTPUTS}
_MASK_SPEC = "mask:"  # a MaskSpec in a state_dict: its text


class HistogramStandardize(_Normalize):
    """Map each image piecewise-linearly from its own landmarks onto the ``standard`` landmarks.

    Args:
        standard: the standard landmarks at ``spec.recorded`` percentiles: ``(R,)``, or
            ``(C, R)`` one row per channel; build it with :meth:`from_stats` or
            :meth:`from_torchio`.
        spec: the landmark percentiles (default TorchIO's: cutoffs 1 and 99, deciles mapped,
            quartiles recorded).
        channel_wise: each channel its own landmarks and row of ``standard`` (one channel:
            the same as pooled, TorchIO's way).
        mask: which voxels each image's landmarks come from: ``"nonzero"``, a boolean tensor, a
            callable, or None for every voxel; every voxel is mapped. ``forward(x, mask=...)``
            gives one per call (a segmentation of that image).
        eps: landmarks of an image closer than this (raw units) make a flat segment.
        value_scale, input_scale, stats_dtype: the units of float input (integer input is raw
            values); only ``eps`` and a threshold mask depend on them: the map itself is the
            same in any units.
        spatial_dims: 3 when 4-D input is one volume ``(C, D, H, W)``.
        dtype: the output dtype.
        needs_mask: every call must give its mask (landmarks learned inside mask files).

    Input: ``(H, W)``, ``(C, H, W)``, a batch ``(B, C, H, W)``, or volumes; each image of a
    batch has its own landmarks. Output: float, on the standard scale (TorchIO: 0..100 between
    the cutoffs); not differentiable (the landmarks are data).
    """

    def __init__(self, standard, spec: LandmarkSpec | None = None, *, channel_wise: bool = True, mask: F.Mask = None,
                 eps: float = TORCHIO_EPSILON, value_scale: float = 1.0, input_scale: float | None = None,
                 stats_dtype: str | tuple[str, ...] | None = None, spatial_dims: int = 2,
                 dtype: torch.dtype = torch.float32, needs_mask: bool = False) -> None:
        spec = LandmarkSpec() if spec is None else spec
        if not isinstance(spec, LandmarkSpec):
            raise OptionError(f"spec must be a LandmarkSpec, got {type(spec).__name__}")
        super().__init__(per_image=True, channel_wise=channel_wise, mask=mask, eps=eps, value_scale=value_scale,
                         input_scale=input_scale, stats_dtype=stats_dtype, spatial_dims=spatial_dims, dtype=dtype,
                         inplace=False)
        self.spec, self.needs_mask = spec, bool(needs_mask)
        self.register_buffer("standard", _standard_rows(standard, spec))
        if not channel_wise and self.standard.shape[0] != 1:
            raise OptionError(f"channel_wise=False needs one row of standard landmarks, got {self.standard.shape[0]}")

    # --- building ---------------------------------------------------------------------
    @classmethod
    def from_stats(cls, stats: DatasetStats, *, channel_wise: bool = True, out_range=TORCHIO_RANGE,
                   mask: F.Mask = None, **options) -> "HistogramStandardize":
        """The standard landmarks learned from the images' landmarks in ``stats`` (``imagenorm
        stats --landmarks``), onto ``out_range`` (TorchIO's 0..100 by default).

        Each image's landmarks come from the mask the statistics were measured with: a
        ``nonzero`` or threshold mask is taken over; with mask files, give each call its mask
        (``forward(x, mask=...)``).

        Raises:
            OptionError: ``stats`` has no landmarks.
            DegenerateLandmarksError: no image has two distinct cutoff landmarks.
        """
        landmarks = stats.landmarks
        if landmarks is None:
            raise OptionError(f"{_stats_name(stats)} has no landmarks; measure with 'imagenorm stats --landmarks' "
                              "(compute_stats(..., landmarks=True))")
        out_range = F.check_options(out_range=out_range)
        needs_mask = mask is None and stats.read_options.mask_dir is not None
        if mask is None and stats.read_options.mask is not None:
            mask = MaskSpec.parse(stats.read_options.mask)
        standard = landmarks.standard(channel_wise, out_range)
        return cls(standard, landmarks.spec, channel_wise=channel_wise, mask=mask, needs_mask=needs_mask,
                   **_with_units(stats, options))

    @classmethod
    def from_torchio(cls, landmarks: Any, *, key: str | None = None, **options) -> "HistogramStandardize":
        """From TorchIO's landmarks: an array of its 13 values, a ``.npy``/``.txt`` file that
        ``HistogramStandardization.train`` wrote, or a dict (or ``.pt``/``.pth`` file of one)
        of image name -> landmarks, from which ``key`` picks (needed for several names).

        Example:
            >>> t = HistogramStandardize.from_torchio([0, 10, 20, 25, 30, 40, 50, 60, 70, 75, 80, 90, 100])
            >>> t.standard.shape
            torch.Size([1, 13])
        """
        if "spec" in options:
            raise OptionError("TorchIO's landmarks have TorchIO's percentiles; from_torchio takes no spec=")
        return cls(_torchio_values(landmarks, key), LandmarkSpec(), **options)

    def to_torchio(self, path: str | os.PathLike | None = None, *, channel: int | None = None,
                   key: str = "image") -> np.ndarray:
        """TorchIO's landmarks (13 values) of ``channel`` (needed for several); with ``path``, also written there as
        ``.npy``, ``.txt`` (``HistogramStandardization.train``'s format) or ``.pt``/``.pth``
        (``{key: tensor}``, what ``HistogramStandardization(path)`` loads), atomically.

        Raises:
            OptionError: landmarks other than TorchIO's (its transform always maps with the
                cutoffs 1/99 and the deciles), or an unknown extension.
        """
        if not self.spec.is_torchio:
            raise OptionError(f"TorchIO maps with the cutoffs 1 and 99 and the deciles only; these landmarks are "
                              f"cutoff {self.spec.cutoff}, percentiles {list(self.spec.inner)}")
        rows = self.standard.shape[0]
        if channel is None and rows > 1:
            raise OptionError(f"these landmarks have {rows} channels and TorchIO's one scale: pick one with channel=, "
                              "or build the transform with channel_wise=False (TorchIO's pooled way)")
        channel = 0 if channel is None else channel
        if not 0 <= channel < rows:
            raise OptionError(f"channel must be in 0..{self.standard.shape[0] - 1}, got {channel}")
        values = self.standard[channel].detach().cpu().numpy().copy()
        if path is not None:
            _write_torchio(Path(path), values, key)
        return values

    # --- the map ----------------------------------------------------------------------
    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None, mask: F.Mask = None) -> torch.Tensor:
        """Standardize ``x`` (into ``out`` if given); ``mask``: this call's foreground (else the module's)."""
        if not isinstance(x, torch.Tensor):
            raise InputError(f"expected a tensor, got {type(x).__name__}")
        F._check_dtype(x.dtype)
        if mask is None and self.needs_mask:
            raise InputError("these landmarks were measured inside mask files: give each call its mask (mask=...)")
        axis = F.channel_axis(x, self.spatial_dims)
        items = _batch_of_images(x, axis)  # (B, C, *spatial) views, whatever the layout
        channels = items.shape[1]
        if self.channel_wise and self.standard.shape[0] != channels:
            hint = ("; 4-D input is a batch (B, C, H, W) unless spatial_dims=3 makes it one volume (C, D, H, W)"
                    if x.ndim == 4 and self.spatial_dims == 2 else "; pass channel_wise=False for one scale over all channels")
            raise InputError(f"the input has {channels} channel(s), the standard landmarks {self.standard.shape[0]}{hint}")
        factor = self._raw_factor(x.dtype)
        mask = mask if mask is not None else self.mask
        if isinstance(mask, MaskSpec) and mask.kind == "threshold":  # a threshold in raw units: the input's must be known
            F.check_input_scale(x, self.value_scale, self.input_scale, self.stats_dtype)
        selected = self._selected(mask, x, items, factor)
        result = F._output(x, out, self.dtype, inplace=False)
        standard = self.standard.detach().cpu().numpy()[:, self.spec.mapped_index]  # once per call: one device sync
        target = _batch_of_images(result, axis)
        for item in range(items.shape[0]):
            for group in range(channels if self.channel_wise else 1):
                pick = (item, group) if self.channel_wise else (item,)
                self._map(items[pick], None if selected is None else selected[pick],
                          standard[group if self.channel_wise else 0], factor, target[pick])
        if type(x) is not torch.Tensor and out is None:
            result = result.as_subclass(type(x))
        return result

    def _raw_factor(self, dtype: torch.dtype) -> float:
        """``raw = x * factor``: integer input is raw values, float input ``input_scale`` (or ``value_scale``) units."""
        if not dtype.is_floating_point:
            return 1.0
        return self.input_scale if self.input_scale is not None else self.value_scale

    @staticmethod
    def _selected(mask: F.Mask, x: torch.Tensor, items: torch.Tensor, factor: float) -> torch.Tensor | None:
        """The mask as a boolean ``items``-shaped tensor; a recorded threshold compares raw values."""
        if mask is None:
            return None
        if isinstance(mask, torch.Tensor):
            return F._resolve_mask(mask, x).reshape(items.shape)
        if isinstance(mask, MaskSpec) and mask.kind == "threshold" and factor != 1.0:
            mask = dataclasses.replace(mask, value=mask.value / factor)
        return F._resolve_mask(mask, items, 1)

    def _map(self, values: torch.Tensor, chosen: torch.Tensor | None, standard: np.ndarray, factor: float,
             target: torch.Tensor) -> None:
        """Map one image (or one channel of it) into ``target``: its landmarks, then the segments."""
        fast = _fused(values, target)
        if fast:
            source = values.detach().numpy()
            image = exact_percentiles(source if chosen is None else source[chosen.cpu().numpy()], self.spec.mapped)
        else:
            image = _torch_percentiles(values, chosen, self.spec.mapped)
        if not np.isfinite(image).all():
            raise DegenerateStatisticsError("an image has no finite value inside its mask: its landmarks are undefined")
        slopes, intercepts = segments(image, standard, self.eps / factor)
        if not slopes.any() and image[-1] > image[0]:
            warn(f"every landmark of an image lies closer than eps={self.eps:g} (raw units) to the next: it maps "
                 "onto a few flat steps; for data in small units, pass a smaller eps")
        if fast:
            fused.piecewise_linear(source.reshape(-1), target.numpy().reshape(-1), image[1:-1], slopes, intercepts,
                                   torch.get_num_threads())
            return
        device = values.device
        values = values.detach().to(torch.float64).contiguous()
        bins = torch.bucketize(values, torch.as_tensor(image[1:-1], device=device), right=True)
        mapped = torch.as_tensor(slopes, device=device)[bins].mul_(values)
        target.copy_(mapped.add_(torch.as_tensor(intercepts, device=device)[bins]))

    # --- state --------------------------------------------------------------------------
    def _state_options(self) -> dict:
        options = {**super()._state_options(), "spec": self.spec.to_dict(), "needs_mask": self.needs_mask}
        if isinstance(self.mask, MaskSpec):  # plain data: it travels as its text
            options["mask"] = _MASK_SPEC + self.mask.describe()
        return options

    def _restore_options(self, options: dict) -> None:
        mask = options["mask"]
        spec_mask = isinstance(mask, str) and mask.startswith(_MASK_SPEC)
        super()._restore_options({**options, "mask": None} if spec_mask else options)
        if spec_mask:
            self.mask = MaskSpec.parse(mask[len(_MASK_SPEC):])
        self.spec, self.needs_mask = LandmarkSpec.from_dict(options["spec"]), bool(options["needs_mask"])

    def extra_repr(self) -> str:
        spec = "TorchIO's landmarks" if self.spec.is_torchio else f"cutoff={self.spec.cutoff}, inner={self.spec.inner}"
        return f"{spec}, channel_wise={self.channel_wise}, eps={self.eps:g}"


def segments(image: np.ndarray, standard: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Slopes and intercepts of the segments from an image's mapped landmarks to the standard
    ones, as TorchIO computes them: a segment narrower than ``eps`` is flat (slope 0) at its
    lower standard landmark."""
    widths = np.diff(image)
    widths[widths < eps] = np.inf
    slopes = np.diff(standard) / widths
    return slopes, standard[:-1] - slopes * image[:-1]


def _standard_rows(standard: Any, spec: LandmarkSpec) -> torch.Tensor:
    """``standard`` as a float64 ``(G, R)`` tensor, checked: R recorded landmarks, finite, increasing."""
    try:
        values = np.array(standard.detach().cpu() if isinstance(standard, torch.Tensor) else standard, np.float64)
    except (TypeError, ValueError):
        raise OptionError(f"standard landmarks must be numbers, got {type(standard).__name__}") from None
    values = values.reshape(1, -1) if values.ndim == 1 else values
    count = len(spec.recorded)
    if values.ndim != 2 or values.shape[1] != count:
        raise OptionError(f"standard landmarks must have {count} values per row (at percentiles "
                          f"{list(spec.recorded)}), got shape {values.shape}")
    steps = np.diff(values, axis=1)
    if not np.isfinite(values).all() or not ((steps >= 0).all(axis=1) | (steps <= 0).all(axis=1)).all():
        raise OptionError("standard landmarks must be finite and increasing (or decreasing, for a reversed range)")
    return torch.as_tensor(values)


def _batch_of_images(x: torch.Tensor, axis: int | None) -> torch.Tensor:
    """``x`` as a view ``(B, C, *spatial)``: a batch of images with a channel axis."""
    if axis is None:
        return x[None, None]
    return x if x.ndim == 5 or axis == 1 else x[None]


def _fused(values: torch.Tensor, target: torch.Tensor) -> bool:
    """The numpy/compiled path: CPU tensors of the kernel's input and output dtypes, contiguous."""
    return (values.device.type == "cpu" and values.dtype in _KERNEL_INPUTS and target.dtype in _KERNEL_OUTPUTS
            and values.is_contiguous() and target.is_contiguous() and not torch.compiler.is_compiling())


def _torch_percentiles(values: torch.Tensor, chosen: torch.Tensor | None, qs) -> np.ndarray:
    """numpy's linear percentiles of the finite (and chosen) values, sorted by torch on their device."""
    flat = values.detach().reshape(-1)
    keep = torch.isfinite(flat) if flat.is_floating_point() else torch.ones_like(flat, dtype=torch.bool)
    if chosen is not None:
        keep &= chosen.reshape(-1)
    ordered = torch.sort(flat[keep]).values
    total = ordered.numel()
    if total == 0:
        return np.full(len(qs), np.nan)
    ranks = target_ranks(total, qs)
    picked = dict(zip(ranks, ordered[torch.as_tensor(ranks, device=ordered.device)].double().cpu().tolist()))
    return np.array(linear_percentile_values(total, picked.__getitem__, qs))


# --- TorchIO's landmark files ---------------------------------------------------------------
def _torchio_values(landmarks: Any, key: str | None) -> np.ndarray:
    """The 13 landmark values of TorchIO's formats (see ``from_torchio``)."""
    if isinstance(landmarks, (str, os.PathLike)):
        landmarks = _read_torchio(Path(landmarks))
    if isinstance(landmarks, dict):
        if key is None and len(landmarks) != 1:
            raise OptionError(f"the landmarks hold several images {sorted(landmarks)}; pick one with key=")
        if key is not None and key not in landmarks:
            raise OptionError(f"no landmarks named {key!r}; there are {sorted(landmarks)}")
        landmarks = landmarks[key] if key is not None else next(iter(landmarks.values()))
        if isinstance(landmarks, (str, os.PathLike)):
            landmarks = _read_torchio(Path(landmarks))
    values = np.asarray(landmarks.detach().cpu() if isinstance(landmarks, torch.Tensor) else landmarks, np.float64)
    if values.shape != (13,):
        raise OptionError(f"TorchIO's landmarks are 13 values (percentiles 1, 10, 20, 25, ..., 90, 99), got shape {values.shape}")
    return values


def _read_torchio(path: Path) -> Any:
    """A TorchIO landmarks file: ``.npy``, ``.txt`` (``name v1 v2 ...``) or ``.pt``/``.pth`` (a dict)."""
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".txt", ".pt", ".pth"):
        raise OptionError(f"{display_path(path)}: TorchIO landmarks are .npy, .txt, .pt or .pth files")
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".txt":
            return np.array([float(word) for word in path.read_text(encoding="utf-8").split()[1:]])
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_PlainData)
    except FileNotFoundError:
        raise ImagenormError(f"{display_path(path)}: no such landmarks file") from None
    except (OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise ImagenormError(f"{display_path(path)}: not a TorchIO landmarks file ({error})") from None


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickles tensors, numpy arrays and dicts of them, and nothing that could run code
    (torch's own allowlist is left alone: it is the calling program's)."""

    _ALLOWED = {("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
                ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str):
        module = {"numpy.core.multiarray": "numpy._core.multiarray"}.get(module, module)  # pickled under numpy 1
        if (module, name) in self._ALLOWED or (module == "numpy.dtypes" and name.endswith("DType")) or (
                module == "torch" and name.endswith("Storage")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it holds {module}.{name}, not plain landmark values")


class _PlainData:
    """The ``pickle_module`` torch.load uses: :class:`_PlainDataUnpickler`."""

    Unpickler = _PlainDataUnpickler
    __name__ = "imagenorm-plain-data"

    @staticmethod
    def load(file, **options):
        return _PlainDataUnpickler(file, **options).load()


def _write_torchio(path: Path, values: np.ndarray, key: str) -> None:
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".txt", ".pt", ".pth"):
        raise OptionError(f"{display_path(path)}: TorchIO landmarks are written as .npy, .txt, .pt or .pth")
    with atomic_write(path, "w" if suffix == ".txt" else "wb") as file:
        if suffix == ".npy":
            np.save(file, values, allow_pickle=False)
        elif suffix == ".txt":
            file.write(f"{key} {' '.join(map(str, values))}")
        else:
            torch.save({key: torch.as_tensor(values)}, file)

