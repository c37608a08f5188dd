"""z-score with precomputed dataset statistics (not the average of per-image stds).

Measure once, save the stats file, then normalize with it:

    python examples/zscore_precomputed.py [FOLDER]
"""

import os
import sys
import tempfile

import torch

import imagenorm

folder = sys.argv[1] if len(sys.argv) > 1 else "samples/rgb8"
stats_file = os.path.join(tempfile.mkdtemp(), "stats.json")
imagenorm.compute_stats(folder, workers=2).save(stats_file)  # once, e.g. over the training set

stats = imagenorm.DatasetStats.load(stats_file)
standardize = imagenorm.Standardize.from_stats(stats)
images = imagenorm.ImageFolderDataset(folder, labels=False)
normalized = torch.cat([standardize(images[i]).flatten(1) for i in range(len(images))], dim=1).double()

print(f"dataset mean {[round(m, 3) for m in stats.mean]}, std {[round(s, 3) for s in stats.std]} (raw units)")
print(f"normalized output: mean {normalized.mean():.6f}, std {normalized.std(correction=0):.6f}")
