"""Nyúl landmark training and standardization: imagenorm against TorchIO, same files, one run.

Data (made on first run under benchmarks/data/mri_nifti/): 24 int16 NIfTI volumes of
160x160x96 (.nii.gz), resampled from dipy's real T1 volume (aniso_vox) with a gain, offset
and noise per volume, as from several scanners.

Training: TorchIO's ``HistogramStandardization.train`` (one process, SimpleITK reading,
``np.percentile`` per image) against ``imagenorm.compute_stats(..., landmarks=True)`` with 1
and 2 worker processes (which also measures every other statistic). The learned landmarks
are checked equal (1e-6 relative) before timing. Mapping: TorchIO's transform against
``HistogramStandardize`` on the same in-memory volumes (outputs checked equal first).

    python benchmarks/histogram_landmarks.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import DATA, interleaved_best, machine  # noqa: E402

import imagenorm  # noqa: E402
from imagenorm.histogram_standardize import HistogramStandardize  # noqa: E402

SHAPE = (160, 160, 96)


def volumes(count: int = 24) -> list[str]:
    """``count`` int16 .nii.gz volumes resampled from dipy's real T1 (made once, then reused)."""
    import nibabel as nib
    from scipy.ndimage import zoom

    root = DATA / "mri_nifti"
    paths = [str(root / f"case_{index:03d}.nii.gz") for index in range(count)]
    if all(os.path.exists(p) for p in paths):
        return paths
    import dipy.data

    source = nib.load(Path(dipy.data.__file__).parent / "files" / "aniso_vox.nii.gz")
    t1 = np.asarray(source.dataobj, np.float64)
    base = zoom(t1, [s / t for s, t in zip(SHAPE, t1.shape)], order=1)
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for path in paths:
        gain, offset = rng.uniform(0.6, 1.8), rng.uniform(-50, 200)
        data = base * gain + offset * (base > 20) + rng.normal(0, 8, SHAPE)
        nib.save(nib.Nifti1Image(np.clip(np.rint(data), -32768, 32767).astype(np.int16), source.affine), path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import torch
    import torchio as tio

    warnings.simplefilter("ignore")  # TorchIO's tqdm and SimpleITK notes
    paths = volumes()
    folder = os.path.dirname(paths[0])
    reference = tio.HistogramStandardization.train(paths, progress=False)
    for workers in (0, 2):
        found = HistogramStandardize.from_stats(imagenorm.compute_stats(folder, landmarks=True, workers=workers))
        np.testing.assert_allclose(found.standard[0].numpy(), reference, rtol=1e-6, atol=1e-9)
    print(f"{machine()}; {date.today()}; {len(paths)} int16 volumes of {'x'.join(map(str, SHAPE))} (.nii.gz)")
    print("landmarks equal TorchIO's (1e-6 relative) with 1 and 2 workers")

    timings = interleaved_best({
        "torchio train": lambda: tio.HistogramStandardization.train(paths, progress=False),
        "imagenorm 1 worker": lambda: imagenorm.compute_stats(folder, landmarks=True),
        "imagenorm 2 workers": lambda: imagenorm.compute_stats(folder, landmarks=True, workers=2),
    }, rounds=args.rounds, warm_up=False)
    base = timings["torchio train"][0]
    print(f"{'training':24s} {'wall s':>8s} {'cpu s':>8s} {'speed-up':>9s}")
    for name, (wall, cpu) in timings.items():
        print(f"{name:24s} {wall:8.2f} {cpu:8.2f} {base / wall:8.2f}x")

    transform = HistogramStandardize(reference)
    loaded = [torch.from_numpy(np.ascontiguousarray(imagenorm.read_image(p).pixels)) for p in paths[:8]]
    torchio_transform = tio.HistogramStandardization({"mri": reference})
    subjects = [tio.Subject(mri=tio.ScalarImage(tensor=x)) for x in loaded]
    for x, subject in zip(loaded, subjects):
        expected = torchio_transform(subject).mri.data.numpy()
        np.testing.assert_allclose(transform(x[None])[0].numpy(), expected, rtol=1e-5, atol=1e-3)
    mapping = interleaved_best({
        "torchio transform": lambda: [torchio_transform(s) for s in subjects],
        "imagenorm HistogramStandardize": lambda: [transform(x[None]) for x in loaded],
    }, rounds=args.rounds)
    base = mapping["torchio transform"][0]
    print(f"{'mapping 8 volumes':32s} {'wall s':>8s} {'cpu s':>8s} {'speed-up':>9s}")
    for name, (wall, cpu) in mapping.items():
        print(f"{name:32s} {wall:8.3f} {cpu:8.3f} {base / wall:8.2f}x")


if __name__ == "__main__":
    main()
