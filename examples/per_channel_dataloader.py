"""Per-channel z-score on the fly with a Dataset and DataLoader workers.

The classic `transforms.Lambda(lambda x: (x - x.mean()) / x.std())` uses one mean and std
for all channels of each image: it is neither per channel nor the dataset's. Here each
channel gets the dataset's own mean and std, applied in the DataLoader workers. Images may
have different sizes (`collate_fn=list` keeps each as it is):

    python examples/per_channel_dataloader.py [FOLDER]
"""

import sys

import torch

import imagenorm

if __name__ == "__main__":
    folder = sys.argv[1] if len(sys.argv) > 1 else "samples/rgb8"
    stats = imagenorm.compute_stats(folder)
    per_channel = imagenorm.Standardize.from_stats(stats)  # channel_wise=True is the default
    dataset = imagenorm.normalize_dataset(
        imagenorm.ImageFolderDataset(folder, labels=False, stats=stats), per_channel, cache="none"
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=list)
    total = torch.zeros(len(stats.channel_names), dtype=torch.float64)
    squares, count = total.clone(), 0
    for batch in loader:
        for image in batch:  # (C, H, W), any size
            values = image.double().flatten(1)
            total += values.sum(1)
            squares += (values * values).sum(1)
            count += values.shape[1]
    mean = total / count
    std = (squares / count - mean * mean).sqrt()
    for name, m, s in zip(stats.channel_names, mean, std):
        print(f"{name}: mean {m:.6f}, std {s:.6f}")
