"""Foreground masks for statistics: nonzero voxels, a threshold, or a mask file per image (at the
image's relative path, or nnU-Net's: ``labelsTr/case.nii.gz`` for ``imagesTr/case_0000.nii.gz``).

A mask selects voxels, and every channel of a selected voxel counts (one spatial mask for
all channels), exactly like the rest: this is what CT normalization in the nnU-Net style
needs (foreground percentiles and foreground mean/std). ``nonzero``: a voxel where any channel
is nonzero. ``threshold:>V``: a voxel whose value in one reference channel passes, the first
channel unless ``@name`` (or ``@number``) names another.

Example:
    >>> import numpy as np
    >>> mask = MaskSpec.parse("threshold:>-500")
    >>> mask.select(np.array([[[-1000, -400], [0, 50]]]), "scan.nii").tolist()
    [[-400, 0, 50]]
"""

from __future__ import annotations

import dataclasses
import math
import operator
import os
import re
from dataclasses import dataclass

import numpy as np

from .errors import ImagenormError, ReadError, display_path
from .options import OptionError, ReadOptions, parse_mask

_OPERATORS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


@dataclass(frozen=True)
class MaskSpec:
    """Which voxels count: ``nonzero``, ``threshold:>V`` (also >=, <, <=), or files under ``folder``."""

    kind: str
    comparison: str = ">"
    value: float = 0.0
    channel: str | None = None  # the reference channel of a threshold (None: the first)
    folder: str | None = None
    root: str | None = None  # the source folder whose tree the mask folder mirrors

    @classmethod
    def parse(cls, text: str) -> "MaskSpec":
        """``"nonzero"`` or ``"threshold:>V[@channel]"`` (raises OptionError for anything else)."""
        return cls(*parse_mask(text))

    @classmethod
    def from_options(cls, options: ReadOptions, root: str | None) -> "MaskSpec | None":
        """The mask ``options`` ask for; a mask folder mirrors the tree under ``root``."""
        if options.mask is not None:
            return cls.parse(options.mask)
        if options.mask_dir is None:
            return None
        if root is None:
            raise OptionError("mask_dir needs image files (their relative paths name the masks)")
        if not os.path.isdir(options.mask_dir):
            raise ImagenormError(f"{display_path(options.mask_dir)}: no such mask folder")
        return cls.files(options.mask_dir, root)

    @classmethod
    def files(cls, folder: str, root: str) -> "MaskSpec":
        return cls("folder", folder=os.fspath(folder), root=os.fspath(root))

    def describe(self) -> str:
        if self.kind == "folder":
            return f"mask files under {display_path(self.folder)}"
        if self.kind == "nonzero":
            return "nonzero"
        return f"threshold:{self.comparison}{self.value:g}" + (f"@{self.channel}" if self.channel else "")

    def spatial(self, pixels: np.ndarray, path: str, channels: tuple[str, ...] = ()) -> np.ndarray:
        """The boolean mask over the spatial axes of channel-first ``pixels``."""
        if self.kind == "nonzero":
            return (pixels != 0).any(axis=0)
        if self.kind == "threshold":
            return _OPERATORS[self.comparison](pixels[self.reference(channels, path)], self.value)
        return self._from_file(pixels, path)

    def reference(self, channels: tuple[str, ...], path: str = "") -> int:
        """The index of the channel whose values a threshold compares (the first by default)."""
        if self.channel is None:
            return 0
        if self.channel in channels:
            return channels.index(self.channel)
        if self.channel.isdigit() and int(self.channel) < max(len(channels), 1):
            return int(self.channel)
        raise ReadError(path or "mask", f"the mask's channel {self.channel!r} is not among its channels {list(channels)}")

    def __call__(self, image, axis: int | None | str = "guess"):
        """The mask of an image tensor, keeping the channel axis ``axis`` as 1 (None: the image
        has no channel axis; by default guessed: 1 for a 4-D or 5-D batch, else 0), for the
        ``mask=`` of per-image transforms (mask files need a path and cannot be used here)."""
        if self.kind == "folder":
            raise OptionError("per-image normalization cannot use mask files; use mask='nonzero' or a threshold")
        if axis == "guess":
            axis = 1 if image.ndim in (4, 5) else 0
        if axis is None:  # one channel, no axis for it
            if self.kind == "threshold" and self.channel not in (None, "0"):
                raise OptionError(f"the mask's channel {self.channel!r} is not in an input without a channel axis")
            return image != 0 if self.kind == "nonzero" else _OPERATORS[self.comparison](image, self.value)
        if self.kind == "nonzero":
            return (image != 0).any(dim=axis, keepdim=True)
        reference = image.narrow(axis, self.reference(tuple(str(i) for i in range(image.shape[axis]))), 1)
        return _OPERATORS[self.comparison](reference, self.value)

    def select(self, pixels: np.ndarray, path: str, channels: tuple[str, ...] = ()) -> np.ndarray:
        """The voxels inside the mask, ``(C, N)``: every channel of each selected voxel."""
        return pixels[:, self.spatial(pixels, path, channels)]

    def mask_file(self, path: str) -> str:
        """The mask file of image ``path`` (mask files only): at its relative path under the mask
        folder, or nnU-Net's label name (see :func:`_nnunet_label`)."""
        relative = os.path.relpath(os.path.abspath(path), os.path.abspath(self.root))
        mask_path = os.path.join(self.folder, relative)
        if not os.path.exists(mask_path):
            mask_path = _nnunet_label(mask_path, path) or mask_path
        return mask_path

    def nnunet_channels(self, paths: list[str]) -> dict[str, list[str]]:
        """The nnU-Net cases whose channel files (``case_0000``, ``case_0001`` in ``imagesTr`` or
        ``imagesTs``) take their mask from one label file: several channels of one case measured as
        one channel. Case path -> its channel suffixes, for the cases with more than one."""
        channels: dict[str, set[str]] = {}
        for path in paths:
            folder, name = os.path.split(os.path.abspath(path))
            match = _CHANNEL_SUFFIX.match(name)
            if match is None or os.path.basename(folder) not in NNUNET_IMAGE_FOLDERS:
                continue
            relative = os.path.relpath(os.path.abspath(path), os.path.abspath(self.root))
            if not os.path.exists(os.path.join(self.folder, relative)) and _nnunet_label(os.path.join(self.folder, relative), path):
                channels.setdefault(os.path.join(folder, match["case"]), set()).add(match["channel"])
        return {case: sorted(found) for case, found in channels.items() if len(found) > 1}

    def by_index(self, channels: tuple[str, ...]) -> "MaskSpec":
        """The same mask with a threshold's channel named by its index in ``channels`` (a tensor
        has no channel names)."""
        if self.kind != "threshold" or self.channel is None or self.channel not in channels:
            return self
        return dataclasses.replace(self, channel=str(channels.index(self.channel)))

    def _from_file(self, pixels: np.ndarray, path: str) -> np.ndarray:
        from .readers import read_image

        mask_path = self.mask_file(path)
        if not os.path.exists(mask_path):
            raise ReadError(path, f"no mask file {display_path(mask_path)}")
        mask = read_image(mask_path).pixels
        if mask.shape[1:] != pixels.shape[1:] and not _pooled_volumes(path, pixels, mask):
            raise ReadError(path, f"its mask {display_path(mask_path)} has shape {mask.shape[1:]}, the image {pixels.shape[1:]}")
        if mask.shape[1:] != pixels.shape[1:]:  # one 3-D mask for every volume of a pooled 4-D NIfTI
            mask = np.tile(mask, (1, pixels.shape[1] // mask.shape[1]) + (1,) * (mask.ndim - 2))
        _check_same_space(path, mask_path)
        return (mask != 0).any(axis=0)


NNUNET_IMAGE_FOLDERS = ("imagesTr", "imagesTs")  # nnU-Net's; their labels lie in labelsTr / labelsTs
_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})(?P<extension>\.nii\.gz|\.nii|\.[^.]+)$")


def _nnunet_label(mask_path: str, image_path: str) -> str | None:
    """nnU-Net's layout: image ``imagesTr/case_0000.nii.gz`` has its label at ``labelsTr/case.nii.gz``
    (no channel suffix); that path where it exists, for images in nnU-Net's ``imagesTr``/``imagesTs`` only."""
    if os.path.basename(os.path.dirname(os.path.abspath(image_path))) not in NNUNET_IMAGE_FOLDERS:
        return None
    folder, name = os.path.split(mask_path)
    match = _CHANNEL_SUFFIX.match(name)
    if match is None:
        return None
    label = os.path.join(folder, match["case"] + match["extension"])
    return label if os.path.exists(label) else None


def _pooled_volumes(path: str, pixels: np.ndarray, mask: np.ndarray) -> bool:
    """Whether ``pixels`` are the volumes of a 4-D NIfTI pooled into one (``nifti_4d="pooled"``:
    volume after volume along the first axis) and ``mask`` is a 3-D mask of one volume (a mask
    file of several volumes reads as several channels)."""
    if not path.lower().endswith((".nii", ".nii.gz")) or pixels.ndim != 4 or mask.ndim != 4 or mask.shape[0] != 1:
        return False
    if pixels.shape[2:] != mask.shape[2:] or pixels.shape[1] % mask.shape[1] or pixels.shape[1] == mask.shape[1]:
        return False
    import nibabel

    try:
        shape = nibabel.load(path).shape
    except Exception:
        return False
    return len(shape) > 3 and tuple(shape[:3]) == tuple(mask.shape[1:]) and math.prod(shape[3:]) > 1


def _check_same_space(path: str, mask_path: str) -> None:
    """A NIfTI image and its NIfTI mask must lie in the same space (affine), not only share a shape:
    a flipped or shifted label would select other tissue."""
    if not all(p.lower().endswith((".nii", ".nii.gz")) for p in (path, mask_path)):
        return
    import nibabel

    try:
        image, mask = nibabel.load(path).affine, nibabel.load(mask_path).affine
    except Exception:  # unreadable headers were named by the readers already
        return
    if not np.allclose(image, mask, rtol=1e-4, atol=1e-3):
        raise ReadError(path, f"its mask {display_path(mask_path)} has the same shape but another affine (it lies "
                              "elsewhere in space, e.g. flipped); resample it onto the image")
