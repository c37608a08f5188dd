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
import re
from dataclasses import dataclass

import numpy as np

from .errors import ReadError, display_path

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
        if text == "nonzero":
            return cls("nonzero")
        match = re.fullmatch(r"threshold:(>=|<=|>|<)(-?[0-9.eE+-]+)", text.replace(" ", ""))
        if not match:
            raise ValueError(f"cannot read the mask {text!r}; write nonzero or e.g. threshold:>-500")
        return cls("threshold", match.group(1), float(match.group(2)))

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
