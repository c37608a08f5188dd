"""Images that are already Python objects (tensors, numpy arrays, PIL images) as DecodedImages."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from ..errors import ReadError
from .base import DecodedImage, array_channels, bilevel, channel_first, channels_for
from .numpy_file import to_channel_first


def to_decoded(item: Any, name: str) -> DecodedImage:
    """Convert one dataset item to a DecodedImage, by the rules files follow.

    Bool samples become uint8 0 and 255 (:func:`~imagenorm.readers.bilevel`); a PIL image is
    read as a decoded file's frame is (palette expanded, CMYK and YCbCr refused).
    """
    if isinstance(item, (tuple, list)) and item:
        item = item[0]
    if "torch" in sys.modules:
        import torch

        if isinstance(item, torch.Tensor):
            if item.dtype.is_complex:
                raise ReadError(name, f"expected pixel values (integer, bool or float), got {item.dtype}")
            if item.dtype == torch.bfloat16:  # numpy has no bfloat16; every value is a float32 value
                item = item.float()
            array = item.detach().cpu().numpy()
            if array.ndim not in (2, 3, 4):
                raise ReadError(name, f"expected a tensor of shape (H, W), (C, H, W) or (C, D, H, W), got {tuple(item.shape)}")
            pixels = bilevel(array[None] if array.ndim == 2 else array)
            return DecodedImage(pixels=pixels, channels=array_channels(pixels.shape[0]))
    if "PIL" in sys.modules:
        from PIL import Image

        if isinstance(item, Image.Image):
            from ..readers.pillow import frame_array

            array, palette = frame_array(item, name)
            pixels = channel_first(array)
            return DecodedImage(pixels=pixels, channels=channels_for(pixels.shape[0]), palette=palette)
    if isinstance(item, np.ndarray):
        if item.dtype.kind not in "uifb":
            raise ReadError(name, f"unsupported array dtype {item.dtype}")
        pixels = bilevel(to_channel_first(item, name))
        return DecodedImage(pixels=pixels, channels=array_channels(pixels.shape[0]))
    raise ReadError(name, f"expected a tensor, numpy array or PIL image, got {type(item).__name__}")
