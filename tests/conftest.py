"""Shared helpers: image writers and the float64 numpy reference."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from imagenorm.stats.summary import PERCENTILES, percentile_key


def reference(pixels: list[np.ndarray]) -> dict:
    """Float64 numpy statistics over all pixels of channel-first arrays: per channel and pooled."""
    channels = pixels[0].shape[0]
    per_channel = [np.concatenate([p[c].ravel() for p in pixels]).astype(np.float64) for c in range(channels)]
    pooled = np.concatenate(per_channel)

    def describe(values: np.ndarray) -> dict:
        return {
            "count": values.size,
            "mean": values.mean(),
            "std": values.std(),
            "min": values.min(),
            "max": values.max(),
            "percentiles": {percentile_key(q): np.percentile(values, q) for q in PERCENTILES},
        }

    return {"channels": [describe(v) for v in per_channel], "pooled": describe(pooled)}


def assert_matches_reference(stats, ref: dict, exact_percentiles: bool = True, rtol: float = 1e-12) -> None:
    summaries = list(stats.channels) + [stats.pooled]
    expected = ref["channels"] + [ref["pooled"]]
    assert len(stats.channels) == len(ref["channels"])
    for got, want in zip(summaries, expected):
        assert got.count == want["count"]
        assert got.mean == pytest.approx(want["mean"], rel=rtol, abs=1e-300)
        assert got.std == pytest.approx(want["std"], rel=rtol, abs=1e-300)
        assert got.min == want["min"]
        assert got.max == want["max"]
        if exact_percentiles:
            assert got.percentiles == want["percentiles"]


def random_image(rng: np.random.Generator, dtype, shape) -> np.ndarray:
    """Random pixels spanning a realistic part of the dtype's range."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.normal(100.0, 25.0, shape).astype(dtype)
    info = np.iinfo(dtype)
    low = max(info.min, -3000)
    high = min(info.max, 4095) if dtype.itemsize > 1 else info.max
    return rng.integers(low, high, shape, endpoint=True).astype(dtype)


def write_png(path: Path, pixels_hwc: np.ndarray) -> None:
    """PNG of any bit depth; OpenCV writes 16-bit colour (given RGB, stored correctly)."""
    if pixels_hwc.ndim == 3 and pixels_hwc.shape[-1] in (3, 4):
        order = [2, 1, 0, 3][: pixels_hwc.shape[-1]]
        assert cv2.imwrite(str(path), np.ascontiguousarray(pixels_hwc[..., order]))
    else:
        assert cv2.imwrite(str(path), pixels_hwc)


def write_tiff(path: Path, pixels: np.ndarray, **kwargs) -> None:
    tifffile.imwrite(str(path), pixels, **kwargs)


def write_pillow(path: Path, pixels_hwc: np.ndarray, **kwargs) -> None:
    Image.fromarray(pixels_hwc).save(str(path), **kwargs)


def channel_first(hwc: np.ndarray) -> np.ndarray:
    return hwc[None] if hwc.ndim == 2 else np.moveaxis(hwc, -1, 0)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
