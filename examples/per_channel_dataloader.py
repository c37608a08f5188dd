"""Per-channel z-score on the fly with a Dataset and DataLoader workers.

The classic `transforms.Lambda(lambda x: (x - x.mean()) / x.std())` uses one mean and std
for all channels of each image: it is neither per channel nor the dataset's. Here each
channel gets the dataset's own mean and std, applied in the DataLoader workers:

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
        imagenorm.ImageFolderDataset(folder, labels=False), per_channel, cache="none"
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=2)
    batches = torch.cat([batch.double() for batch in loader])  # (N, C, H, W)
    values = batches.transpose(0, 1).flatten(1)  # per channel, every loaded pixel
    for name, mean, std in zip(stats.channel_names, values.mean(1), values.std(1, correction=0)):
        print(f"{name}: mean {mean:.6f}, std {std:.6f}")
