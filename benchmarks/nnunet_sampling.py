"""nnU-Net v2's sampled foreground intensity properties against imagenorm's exact ones, on real CT.

nnU-Net v2's fingerprint extractor (MIC-DKFZ/nnUNet,
nnunetv2/experiment_planning/dataset_fingerprint/fingerprint_extractor.py) estimates the
``foreground_intensity_properties_per_channel`` that ``CTNormalization`` uses from a sample:
``num_foreground_voxels_for_intensitystats = 10e7`` voxels in total, ``int(10e7 // cases)`` per
case, drawn with replacement (``rs.choice(foreground, n, replace=True)``) by
``np.random.RandomState(1234)``, the same seed for every case, from the float32 voxels where the
label is > 0 after ``crop_to_nonzero``; then ``np.mean``, ``np.std``, ``np.min``, ``np.max`` and
``np.percentile(samples, (0.5, 50.0, 99.5))`` over all cases' samples together. This script
re-implements those steps (nnU-Net is not installed here) and compares them with
``imagenorm export --to nnunet``'s exact numbers (every foreground voxel, float64).

Data: pydicom's bundled real CT slices (offline): ``CT_small.dcm`` (128x128) and
``693_J2KI.dcm`` (512x512, JPEG 2000), in HU; foreground: the body, HU > -500 (the label a
threshold would give; in nnU-Net it is the label files' voxels > 0).

1. One slice as each case of a dataset of 100 or 1000 cases (10e7 // cases samples per case),
   over five seeds (nnU-Net's 1234 and four more): the sampling error alone. Identical cases
   drawn with one seed draw identical samples, so this is the error of ONE draw of
   10e7 // cases voxels (an upper bound: distinct cases draw independently, ~sqrt(cases) less).
2. A dataset of the two slices, 50 cases each: nnU-Net takes as many samples from every case,
   whatever its foreground size, so its estimate weights cases equally; the exact numbers
   weight every voxel equally (the block's meaning: all foreground voxels).

    .venv/bin/python benchmarks/nnunet_sampling.py
"""

from __future__ import annotations

import os
import sys
import time
import warnings

import numpy as np

import imagenorm
from imagenorm.export import NNUNET_PROPERTIES, nnunet_intensity_properties
from imagenorm.readers import read_image

NNUNET_TOTAL = 10e7  # num_foreground_voxels_for_intensitystats
NNUNET_SEED = 1234  # collect_foreground_intensities' default, used for every case
SEEDS = (NNUNET_SEED, 0, 1, 2, 3)
MASK = "threshold:>-500"
THRESHOLD = -500


def ct_file(name: str) -> str:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)  # bundled with pydicom: no download
    if path is None or not os.path.exists(path):
        sys.exit(f"{name}: not among pydicom's bundled test files")
    return path


def nonzero_box(mask: np.ndarray) -> tuple[slice, ...]:
    """The bounding box of ``mask`` (acvl_utils' get_bbox_from_mask), one slice per axis."""
    box = []
    for axis in range(mask.ndim):
        present = np.flatnonzero(mask.any(axis=tuple(other for other in range(mask.ndim) if other != axis)))
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    return tuple(box)


def nnunet_case_samples(image: np.ndarray, segmentation: np.ndarray, samples: int, seed: int) -> list[np.ndarray]:
    """One case as nnU-Net's analyze_case + collect_foreground_intensities sample it: float32
    ``(C, Z, Y, X)`` data and ``(1, Z, Y, X)`` labels, cropped to the nonzero bounding box, then
    ``samples`` voxels per channel drawn with replacement where the label is > 0."""
    box = nonzero_box((image != 0).any(axis=0))  # create_nonzero_mask; filling holes keeps the box
    image, segmentation = image[(slice(None), *box)], segmentation[(slice(None), *box)]
    random = np.random.RandomState(seed)
    foreground = segmentation[0] > 0
    drawn = []
    for channel in range(len(image)):
        voxels = image[channel][foreground]
        drawn.append(random.choice(voxels, samples, replace=True) if voxels.size else np.zeros(0, image.dtype))
    return drawn


def nnunet_properties(cases: list[list[np.ndarray]]) -> dict[str, float]:
    """run(): every case's samples of channel 0 together, then nnU-Net's formulas."""
    samples = np.array([np.concatenate([case[0] for case in cases])])[0]  # float32, as nnU-Net's np.array
    low, median, high = np.percentile(samples, np.array((0.5, 50.0, 99.5)))
    return {"mean": float(np.mean(samples)), "median": float(median), "std": float(np.std(samples)),
            "min": float(np.min(samples)), "max": float(np.max(samples)),
            "percentile_99_5": float(high), "percentile_00_5": float(low)}


def as_nnunet_reads(path: str) -> tuple[np.ndarray, np.ndarray]:
    """The slice in HU as float32 ``(1, 1, Y, X)`` (SimpleITKIO's 2-D layout) and its body label."""
    hu = read_image(path).pixels[0]  # modality values: HU
    image = hu.astype(np.float32)[None, None]
    return image, (image[:1] > THRESHOLD).astype(np.float32)


def exact(paths_and_copies: list[tuple[str, int]]) -> dict[str, float]:
    """imagenorm's exact properties of a dataset holding each file ``copies`` times."""
    total = None
    for path, copies in paths_and_copies:
        stats = imagenorm.compute_stats(path, mask=MASK)
        for _ in range(copies):
            total = stats if total is None else total.merge(stats)
    with warnings.catch_warnings():  # the threshold is not nnU-Net's label files: known here
        warnings.simplefilter("ignore")
        return nnunet_intensity_properties(total)["0"]


def row(label: str, key: str, truth: dict, estimates: list[dict]) -> str:
    differences = [abs(e[key] - truth[key]) for e in estimates]
    nnunet = estimates[0][key] - truth[key]
    return (f"{label:<35} {key:<16} {truth[key]:>10.3f} {nnunet:>+10.3f} {max(differences):>10.3f} "
            f"{max(differences) / truth['std']:>9.2e}")


def main() -> None:
    started = time.perf_counter()
    header = (f"{'dataset':<35} {'key':<16} {'exact':>10} {'seed 1234':>10} {'max |d|':>10} {'/ std':>9}\n"
              + "-" * 95)
    print("imagenorm exact vs nnU-Net v2 sampled foreground intensity properties (HU; body: HU > -500)")
    print("seed 1234: nnU-Net's estimate minus the exact value; max |d|: largest |difference| over seeds "
          f"{', '.join(map(str, SEEDS))}; / std: that over the exact foreground std\n")
    print(header)
    files = {name: ct_file(name) for name in ("CT_small.dcm", "693_J2KI.dcm")}
    slices = {name: as_nnunet_reads(path) for name, path in files.items()}
    for name, path in files.items():
        truth = exact([(path, 1)])
        image, label = slices[name]
        for cases in (100, 1000):
            per_case = int(NNUNET_TOTAL // cases)
            # every case is this slice and nnU-Net seeds every case alike: all cases draw the same
            # samples, so one case's draw stands for all of them
            estimates = [nnunet_properties([nnunet_case_samples(image, label, per_case, seed)]) for seed in SEEDS]
            for key in NNUNET_PROPERTIES:
                print(row(f"{name} x{cases} ({per_case:,}/case)", key, truth, estimates))
        print()
    # two slices, 50 cases each: equal samples per case against equal weight per voxel
    cases, per_case = 100, int(NNUNET_TOTAL // 100)
    truth = exact([(path, 50) for path in files.values()])
    estimates = []
    for seed in SEEDS:
        drawn = {name: nnunet_case_samples(*slices[name], per_case, seed) for name in files}
        estimates.append(nnunet_properties([drawn[name] for name in files for _ in range(50)]))
    sizes = ", ".join(f"{int((slices[n][1] > 0).sum()):,}" for n in files)
    for key in NNUNET_PROPERTIES:
        print(row("both x50 (1,000,000/case)", key, truth, estimates))
    print(f"\nforeground voxels per slice: {sizes}; nnU-Net draws {per_case:,} from each case, so the small slice "
          "weighs as much as the large one")
    print(f"{time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
