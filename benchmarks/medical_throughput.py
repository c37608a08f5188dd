"""Medical volumes: statistics against reading alone, foreground statistics against the float64
reference, and the two ways to get float percentiles (plus a quantile sketch for comparison).

Data (made on first run under benchmarks/data/, from scikit-image's Shepp-Logan phantom):
  - 300 DICOM CT slices of 512x512, int16 stored, RescaleIntercept -1024 (values in HU);
    the same again 12-bit unsigned (values in HU as int16), for the series comparison;
  - 4 NIfTI volumes of 256x256x96: int16 and float32.

    python benchmarks/medical_throughput.py            # everything
    python benchmarks/medical_throughput.py --series   # only a series against --dicom-slices
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import DATA, interleaved_best, machine  # noqa: E402

import imagenorm  # noqa: E402
from imagenorm.readers import read_image  # noqa: E402


def phantom_hu(rng: np.random.Generator, size: int, level: int) -> np.ndarray:
    """A CT-like slice in HU: air, soft tissue, bone-like rims, noise, varying along z."""
    import skimage.data
    from PIL import Image

    phantom = np.asarray(Image.fromarray((skimage.data.shepp_logan_phantom() * 255).astype(np.uint8)).resize((size, size)), np.float64) / 255
    scale = 0.8 + 0.4 * np.sin(level / 40)
    hu = -1000 + phantom * 1100 * scale + rng.normal(0, 12, phantom.shape)
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16)


def dicom_slices(count: int = 300, bits: int = 16) -> Path:
    """One series of ``count`` CT slices: 16-bit signed stored (values int32 after the
    intercept), or 12-bit unsigned (values int16, the histogram kernel's dtype)."""
    import pydicom

    root = DATA / ("ct_dicom" if bits == 16 else f"ct_dicom_{bits}bit")
    if len(list(root.glob("*.dcm"))) == count:
        return root
    root.mkdir(parents=True, exist_ok=True)
    template = pydicom.dcmread(Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm")
    if bits != 16:
        template.BitsStored, template.HighBit, template.PixelRepresentation = bits, bits - 1, 0
    rng = np.random.default_rng(0)
    for index in range(count):
        hu = phantom_hu(rng, 512, index)
        template.Rows, template.Columns = hu.shape
        template.RescaleIntercept, template.RescaleSlope = "-1024", "1"
        template.PixelData = (hu.astype(np.int32) + 1024).astype(np.int16 if bits == 16 else np.uint16).tobytes()
        template.InstanceNumber = index + 1
        template.ImagePositionPatient = [0, 0, float(index)]
        template.save_as(root / f"slice_{index:03d}.dcm")
    return root


def nifti_volumes(kind: str, count: int = 4) -> Path:
    import nibabel

    root = DATA / f"nifti_{kind}"
    if len(list(root.glob("*.nii"))) == count:
        return root
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for index in range(count):
        volume = np.stack([phantom_hu(rng, 256, 10 * index + z) for z in range(96)], axis=-1)
        data = volume if kind == "int16" else (volume.astype(np.float32) + rng.normal(0, 0.5, volume.shape).astype(np.float32))
        nibabel.save(nibabel.Nifti1Image(data, np.eye(4)), root / f"case_{index}.nii")
    return root


def read_all(root: Path) -> None:
    """Reading alone, with the same reader: every voxel decoded and touched once (NIfTI maps lazily)."""
    for path in sorted(root.iterdir()):
        read_image(path).pixels.max()


def foreground_reference(root: Path) -> dict:
    values = np.concatenate([read_image(p).pixels[read_image(p).pixels > -500] for p in sorted(root.iterdir())]).astype(np.float64)
    return {"mean": values.mean(), "std": values.std(), "p": np.percentile(values, [0.5, 50, 99.5])}


def series_against_slices(folders: dict[str, Path], rounds: int = 5) -> None:
    """``stats`` with the slices grouped as one series, against ``--dicom-slices`` (each file
    its own image), in interleaved rounds; the target is at most 1.3x."""
    contenders = {}
    for label, root in folders.items():
        contenders[f"{label}: series"] = lambda root=root: imagenorm.compute_stats(root)
        contenders[f"{label}: --dicom-slices"] = lambda root=root: imagenorm.compute_stats(root, dicom_series=False)
    rows = interleaved_best(contenders, rounds=rounds)
    for label in folders:
        (series, series_cpu), (slices, slices_cpu) = rows[f"{label}: series"], rows[f"{label}: --dicom-slices"]
        print(f"{label}: series {series:.3f} s (CPU {series_cpu:.3f} s), --dicom-slices {slices:.3f} s "
              f"(CPU {slices_cpu:.3f} s): series / slices = {series / slices:.2f}x wall, "
              f"{series_cpu / slices_cpu:.2f}x CPU (target: at most 1.30x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", action="store_true", help="only the series against --dicom-slices comparison")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of that comparison")
    args = parser.parse_args()
    dicom = dicom_slices()
    series = {"DICOM 300-slice series, 16-bit stored (int32 HU)": dicom,
              "DICOM 300-slice series, 12-bit stored (int16 HU)": dicom_slices(bits=12)}
    if args.series:
        print(f"# DICOM series against --dicom-slices; {machine()}; {date.today()}")
        series_against_slices(series, args.rounds)
        return
    int_volumes, float_volumes = nifti_volumes("int16"), nifti_volumes("float32")
    print(f"# medical throughput; {machine()}; {date.today()}")

    rows = interleaved_best({
        "DICOM 300 slices: read only": lambda: read_all(dicom),
        "DICOM 300 slices: imagenorm stats": lambda: imagenorm.compute_stats(dicom),
        "DICOM 300 slices: imagenorm stats, slices as images": lambda: imagenorm.compute_stats(dicom, dicom_series=False),
        "DICOM 300 slices: imagenorm stats, 2 workers, slices": lambda: imagenorm.compute_stats(dicom, dicom_series=False, workers=2),
        "NIfTI int16 4 volumes: read only": lambda: read_all(int_volumes),
        "NIfTI int16 4 volumes: imagenorm stats": lambda: imagenorm.compute_stats(int_volumes),
        "NIfTI float32: read only": lambda: read_all(float_volumes),
        "NIfTI float32: stats, exact percentiles (3 passes)": lambda: imagenorm.compute_stats(float_volumes),
        "NIfTI float32: stats, histogram percentiles (2 passes)": lambda: imagenorm.compute_stats(float_volumes, float_percentiles="histogram"),
    }, rounds=3)
    for name, (seconds, cpu) in rows.items():
        print(f"{name:58s} {seconds:7.3f} s")
    pairs = [("DICOM 300 slices", "imagenorm stats"), ("DICOM 300 slices", "imagenorm stats, slices as images"),
             ("NIfTI int16 4 volumes", "imagenorm stats")]
    for prefix, what in pairs:
        print(f"{prefix}, {what}: {rows[f'{prefix}: {what}'][0] / rows[f'{prefix}: read only'][0]:.2f}x the time of reading alone")
    series_against_slices(series, args.rounds)
    read_float = rows["NIfTI float32: read only"][0]
    print(f"float exact / read only = {rows['NIfTI float32: stats, exact percentiles (3 passes)'][0] / read_float:.2f}x; "
          f"histogram / read only = {rows['NIfTI float32: stats, histogram percentiles (2 passes)'][0] / read_float:.2f}x")

    ref = foreground_reference(dicom)
    fg = imagenorm.compute_stats(dicom, mask="threshold:>-500")
    print(f"foreground (HU > -500) vs float64 reference: mean rel. diff {abs(fg.pooled.mean - ref['mean']) / abs(ref['mean']):.1e}, "
          f"std rel. diff {abs(fg.pooled.std - ref['std']) / ref['std']:.1e}, percentiles 0.5/50/99.5 equal: "
          f"{[fg.pooled.percentiles[k] for k in ('0.5', '50', '99.5')] == list(ref['p'])}")

    values = np.concatenate([read_image(p).pixels.ravel() for p in sorted(float_volumes.iterdir())]).astype(np.float64)
    truth = np.percentile(values, [0.5, 50, 99.5])
    exact = imagenorm.compute_stats(float_volumes)
    histogram = imagenorm.compute_stats(float_volumes, float_percentiles="histogram")
    keys = ("0.5", "50", "99.5")
    print(f"float percentiles 0.5/50/99.5: exact max error {max(abs(exact.pooled.percentiles[k] - t) for k, t in zip(keys, truth)):.1e}; "
          f"histogram max error {max(abs(histogram.pooled.percentiles[k] - t) for k, t in zip(keys, truth)):.1e} "
          f"(bound {histogram.percentile_error[-1]:.1e})")
    try:
        from ddsketch import DDSketch
    except ImportError:
        print("ddsketch not installed: sketch comparison skipped")
        return
    sample = values[:: max(1, values.size // 1_000_000)]
    sketch = DDSketch(relative_accuracy=0.01)
    start = time.perf_counter()
    for value in sample:
        sketch.add(float(value))
    seconds = time.perf_counter() - start
    sample_truth = np.percentile(sample, [0.5, 50, 99.5])
    errors = [abs(sketch.get_quantile_value(q / 100) - t) for q, t in zip((0.5, 50, 99.5), sample_truth)]
    print(f"ddsketch (1% relative accuracy): {sample.size / seconds / 1e6:.2f} M values/s (per-value add in Python), "
          f"max error {max(errors):.1e} on a {sample.size:,}-value sample")


if __name__ == "__main__":
    main()
