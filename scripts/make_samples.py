"""Make the small sample dataset in ``samples/`` (run once; the output is committed).

Crops of public-domain and CC0 photographs that ship with scikit-image
(astronaut and rocket: NASA, public domain; coffee: Rachel Michetti, CC0;
chelsea: Stefan van der Walt, CC0; hubble_deep_field: NASA, public domain).

    python scripts/make_samples.py
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import skimage.data
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent / "samples"
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field")
SIZE = (96, 72)  # width, height


def crops(rng: np.random.Generator, count: int):
    """Random crops of the photos, resized to SIZE, as 8-bit RGB arrays."""
    for index in range(count):
        photo = getattr(skimage.data, PHOTOS[index % len(PHOTOS)])()
        height, width = photo.shape[:2]
        side = int(rng.integers(min(height, width) // 4, min(height, width) // 2))
        top, left = int(rng.integers(0, height - side)), int(rng.integers(0, width - side))
        crop = Image.fromarray(photo[top : top + side, left : left + side * 4 // 3])
        yield np.asarray(crop.resize(SIZE, Image.Resampling.BILINEAR))


def main() -> None:
    rng = np.random.default_rng(20261126)
    for folder in ("rgb8", "gray8", "gray16"):
        (ROOT / folder).mkdir(parents=True, exist_ok=True)
    for index, rgb in enumerate(crops(rng, 16)):
        extension = "jpg" if index % 4 == 3 else "png"
        Image.fromarray(rgb).save(ROOT / "rgb8" / f"photo_{index:02d}.{extension}", quality=92)
    for index, rgb in enumerate(crops(rng, 12)):
        Image.fromarray(rgb).convert("L").save(ROOT / "gray8" / f"photo_{index:02d}.png")
    for index, rgb in enumerate(crops(rng, 12)):
        # A 16-bit detector: gray level times a per-scanner gain, plus noise, clipped.
        gray = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.float64)
        gain = (40.0, 120.0, 250.0)[index % 3]
        values = gray * gain + rng.normal(0, 30, gray.shape) + 500
        image = np.clip(np.rint(values), 0, 65535).astype(np.uint16)
        cv2.imwrite(str(ROOT / "gray16" / f"scan_{index:02d}.png"), image)


if __name__ == "__main__":
    main()
