"""Min-max scale a grayscale dataset to [0, 1] — what `Normalize(0, 1)` is often taken for.

torchvision's `Normalize(mean=0, std=1)` computes (x - 0) / 1: it changes nothing. Min-max
scaling needs the dataset's min and max, measured exactly:

    python examples/minmax_grayscale.py [FOLDER]
"""

import sys

import torch

import imagenorm

folder = sys.argv[1] if len(sys.argv) > 1 else "samples/gray16"
stats = imagenorm.compute_stats(folder)
scale = imagenorm.MinMaxScale.from_stats(stats)  # dataset min -> 0, max -> 1
images = imagenorm.ImageFolderDataset(folder, labels=False, transform=scale)

low = min(float(image.min()) for image in images)
high = max(float(image.max()) for image in images)
print(f"dataset raw range: {stats.pooled.min:g} .. {stats.pooled.max:g} ({stats.dtype})")
print(f"normalized output: min {low:.6f}, max {high:.6f}")

identity = torch.tensor([[[0.25, 0.75]]])
assert torch.equal((identity - 0) / 1, identity)  # the classic Normalize(0, 1): the identity
