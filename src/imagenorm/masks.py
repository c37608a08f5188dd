"""Foreground masks for statistics: nonzero voxels, a threshold, or a mask file per image.

Statistics then count only the voxels inside the mask (the same spatial mask for every
channel), exactly like the rest: this is what CT normalization in the nnU-Net style needs
(foreground percentiles and foreground mean/std).

Example:
    >>> import numpy as np
    >>> mask = MaskSpec.parse("threshold:>-500")
    >>> mask.select(np.array([[[-1000, -400], [0, 50]]]), "scan.nii").tolist()
    [[-400, 0, 50]]
"""

from __future__ import annotations

import operator
import os
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
    folder: str | None = None
    root: str | None = None  # the source folder whose tree the mask folder mirrors

    @classmethod
    def parse(cls, text: str) -> "MaskSpec":
        """``"nonzero"`` or ``"threshold:>V"`` (raises OptionError for anything else)."""
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
        return "nonzero" if self.kind == "nonzero" else f"threshold:{self.comparison}{self.value:g}"

    def spatial(self, pixels: np.ndarray, path: str) -> np.ndarray:
        """The boolean mask over the spatial axes of channel-first ``pixels``."""
        if self.kind == "nonzero":
            return (pixels != 0).any(axis=0)
        if self.kind == "threshold":
            return _OPERATORS[self.comparison](pixels, self.value).any(axis=0)
        return self._from_file(pixels, path)

    def __call__(self, image):
        """The mask of one channel-first image tensor ``(C, ...)`` as ``(1, ...)`` (for the
        ``mask=`` of per-image transforms; mask files need a path and cannot be used here)."""
        if self.kind == "folder":
            raise OptionError("per-image normalization cannot use mask files; use mask='nonzero' or a threshold")
        inside = image != 0 if self.kind == "nonzero" else _OPERATORS[self.comparison](image, self.value)
        return inside.any(dim=0, keepdim=True)

    def select(self, pixels: np.ndarray, path: str) -> np.ndarray:
        """The voxels inside the mask, ``(C, N)``."""
        return pixels[:, self.spatial(pixels, path)]

    def _from_file(self, pixels: np.ndarray, path: str) -> np.ndarray:
        from .readers import read_image

        relative = os.path.relpath(os.path.abspath(path), os.path.abspath(self.root))
        mask_path = os.path.join(self.folder, relative)
        if not os.path.exists(mask_path):
            raise ReadError(path, f"no mask file {display_path(mask_path)}")
        mask = read_image(mask_path).pixels
        if mask.shape[1:] != pixels.shape[1:]:
            raise ReadError(path, f"its mask {display_path(mask_path)} has shape {mask.shape[1:]}, the image {pixels.shape[1:]}")
        return (mask != 0).any(axis=0)
