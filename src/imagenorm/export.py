"""Statistics in another tool's format: nnU-Net v2's foreground intensity properties.

nnU-Net v2 (github.com/MIC-DKFZ/nnUNet), as read for this module:

- ``nnunetv2/experiment_planning/dataset_fingerprint/fingerprint_extractor.py``,
  ``DatasetFingerprintExtractor.run``: per channel ``i`` of ``dataset.json``'s ``channel_names``
  it builds ``{'mean', 'median', 'std', 'min', 'max', 'percentile_99_5', 'percentile_00_5'}``
  (in that order, each a Python ``float``) from foreground voxels (``segmentation > 0``, after
  ``crop_to_nonzero``) sampled with replacement: ``num_foreground_voxels_for_intensitystats =
  10e7`` in total, ``int(10e7 // number of cases)`` per case, ``np.random.RandomState(1234)``
  for every case; std is ``np.std`` (population), the percentiles ``np.percentile`` (linear).
  It stores them as ``fingerprint['foreground_intensity_properties_per_channel'][i]`` beside
  ``spacings``, ``shapes_after_crop`` and ``median_relative_size_after_cropping``, and
  writes ``dataset_fingerprint.json`` with batchgenerators' ``save_json`` (``indent=4``,
  ``sort_keys=True``: the file lists keys alphabetically, the int channel keys become "0", "1").
- ``nnunetv2/experiment_planning/experiment_planners/default_experiment_planner.py`` copies
  that block unchanged into the plans (``nnUNetPlans.json``) under the same key.
- ``nnunetv2/preprocessing/preprocessors/default_preprocessor.py``: ``_normalize`` gives
  channel ``c`` the properties ``foreground_intensity_properties_per_channel[str(c)]``.
- ``nnunetv2/preprocessing/normalization/default_normalization_schemes.py``: ``CTNormalization``
  clips to ``[percentile_00_5, percentile_99_5]``, subtracts ``mean`` and divides by
  ``max(std, 1e-8)``.

imagenorm's numbers are exact (all foreground voxels, no sampling), so they are what nnU-Net's
sampled estimate approximates (see ``benchmarks/nnunet_sampling.py``).
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Sequence

from .atomic import atomic_write
from .errors import ImagenormError, display_path, warn
from .options import check_choice
from .stats.summary import percentile_key

if TYPE_CHECKING:
    from .stats.result import DatasetStats

#: The fingerprint's (and the plans') key for the per-channel block.
NNUNET_KEY = "foreground_intensity_properties_per_channel"
#: nnU-Net v2's property names, in the order its fingerprint extractor builds them.
NNUNET_PROPERTIES = ("mean", "median", "std", "min", "max", "percentile_99_5", "percentile_00_5")
#: The percentile (numpy's ``q``) behind each percentile property.
_PERCENTILE_OF = {"median": 50.0, "percentile_99_5": 99.5, "percentile_00_5": 0.5}


def nnunet_intensity_properties(stats: "DatasetStats | Sequence[DatasetStats]") -> dict[str, dict[str, float]]:
    """nnU-Net v2's ``foreground_intensity_properties_per_channel`` from exact statistics.

    Channels are keyed ``"0"``, ``"1"``, ... in channel order; each holds ``mean``, ``median``,
    ``std`` (population), ``min``, ``max``, ``percentile_99_5`` and ``percentile_00_5`` as
    floats, over every voxel the statistics measured: measure the foreground (the voxels the
    label files mark, ``mask_dir=``) for nnU-Net's meaning. Several statistics (nnU-Net keeps
    each channel in its own file, ``case_0000``, ``case_0001``: one stats file each) give
    their channels one after the other, in the order given. Each :func:`nnunet_caveats` entry
    is issued as an :class:`~imagenorm.errors.ImagenormWarning`.

    Args:
        stats: the measured statistics (e.g. ``DatasetStats.load("stats.json")``), or a
            sequence of them in nnU-Net's channel order.

    Returns:
        ``{"0": {"mean": ..., ...}, ...}``: the value of the fingerprint's (and the plans')
        ``foreground_intensity_properties_per_channel``.

    Raises:
        ImagenormError: no statistics, a channel has no measured voxels, or the statistics
            have no percentiles (float statistics merged from parts).

    Example:
        >>> import numpy as np, imagenorm
        >>> ct = np.array([[[-1000, -1000, 40, 60], [-1000, 50, 70, 1000]]], dtype=np.int16)
        >>> stats = imagenorm.compute_stats(ct, mask="threshold:>-500")  # the body: above -500 HU
        >>> properties = nnunet_intensity_properties(stats)  # warns: a threshold is not nnU-Net's labels
        >>> {key: round(value, 2) for key, value in properties["0"].items()}  # doctest: +NORMALIZE_WHITESPACE
        {'mean': 244.0, 'median': 60.0, 'std': 378.13, 'min': 40.0, 'max': 1000.0,
         'percentile_99_5': 981.4, 'percentile_00_5': 40.2}
    """
    parts = list(stats) if isinstance(stats, (list, tuple)) else [stats]
    if not parts:
        raise ImagenormError("no statistics to export")
    for part in parts:
        where = _where(part)
        try:
            summaries = part.channels
        except ImagenormError as error:  # a state that counted nothing has no summary
            raise ImagenormError(f"{where}: {error} (no measured voxels: an empty mask?); nnU-Net's intensity "
                                 "properties need some") from None
        for summary in summaries:
            missing = [key for key, q in _PERCENTILE_OF.items() if percentile_key(q) not in summary.percentiles]
            if missing:
                raise ImagenormError(f"{where}: no percentiles for {', '.join(missing)} ({part.percentile_method})")
    for part in parts:
        for caveat in nnunet_caveats(part):
            warn(f"{_where(part)}: {caveat}" if part.source else caveat)
    summaries = [summary for part in parts for summary in part.channels]
    return {str(index): _properties(summary) for index, summary in enumerate(summaries)}


def _where(stats) -> str:
    return display_path(stats.source) if stats.source else "the statistics"


def _properties(summary) -> dict[str, float]:
    values = {"mean": summary.mean, "std": summary.std, "min": summary.min, "max": summary.max}
    values.update({key: summary.percentiles[percentile_key(q)] for key, q in _PERCENTILE_OF.items()})
    return {key: float(values[key]) for key in NNUNET_PROPERTIES}


def nnunet_caveats(stats: "DatasetStats") -> list[str]:
    """Why these statistics would mean something else than nnU-Net's properties, one sentence
    each (empty: they are what nnU-Net estimates, exactly).

    Said: no foreground mask (nnU-Net counts only labelled voxels); a threshold or nonzero mask
    in place of the label files; DICOM stored values instead of modality values (HU); values
    divided into the [0, 1] scale; non-finite values left out; percentiles of float data from
    a histogram (within one bin width, not exact).
    """
    caveats = []
    options = stats.read_options
    if options.mask is None and options.mask_dir is None:
        caveats.append("measured over every voxel (no mask= or mask_dir=): nnU-Net's properties cover only the "
                       "foreground, the voxels its label files mark > 0; measure with mask_dir=LABELS")
    elif options.mask is not None:
        caveats.append(f"measured with mask={options.mask!r}, not over the voxels nnU-Net's label files mark > 0 "
                       "(its foreground): the properties describe that region; mask_dir=LABELS gives nnU-Net's own")
    if options.dicom_values == "stored":
        caveats.append("measured with dicom_values='stored': raw stored values, not modality values (HU for CT) as "
                       "nnU-Net reads them (RescaleSlope and RescaleIntercept applied)")
    if stats.measurement.scaled:
        caveats.append(f"{' and '.join(sorted(stats.measurement.scaled))} values were divided into the [0, 1] scale "
                       "(mixed_depth='scale'); nnU-Net reads the stored values")
    left_out = sum(stats.nonfinite)
    if left_out:
        caveats.append(f"{left_out} non-finite values (NaN, Inf) were left out (nonfinite='ignore'); nnU-Net refuses "
                       "images with NaN")
    errors = stats.percentile_error
    if not stats.exact and errors is not None and any(errors[:-1]):
        caveats.append(f"the percentiles of these float values come from a histogram: median, percentile_00_5 and "
                       f"percentile_99_5 are within {max(errors[:-1]):.3g} of the exact ones (one bin width; mean, "
                       "std, min and max are exact); measure with float_percentiles='exact' for exact ones")
    return caveats


def export(stats: "DatasetStats | Sequence[DatasetStats]", to: str = "nnunet") -> dict[str, Any]:
    """The statistics (one, or one per channel file) as another tool's JSON object (``to``: one
    of ``CHOICES["export_to"]``).

    ``"nnunet"``: ``{"foreground_intensity_properties_per_channel": {"0": {...}, ...}}``, the
    block as nnU-Net v2's ``dataset_fingerprint.json`` and ``nnUNetPlans.json`` hold it at
    their top level (see :func:`nnunet_intensity_properties`), to merge into either.

    Raises:
        OptionError: ``to`` is not a known format.
        ImagenormError: as :func:`nnunet_intensity_properties`.
    """
    check_choice("export_to", to)
    return {NNUNET_KEY: nnunet_intensity_properties(stats)}


def export_json(document: dict[str, Any]) -> str:
    """``document`` as JSON text the way nnU-Net writes its files (``indent=4``), newline-ended."""
    return json.dumps(document, indent=4, allow_nan=False) + "\n"


def save_export(document: dict[str, Any], path: str | os.PathLike) -> None:
    """Write :func:`export_json` of ``document`` to ``path`` atomically (temporary file, then rename).

    Raises:
        OutputError: ``path`` cannot take a file (see :func:`imagenorm.atomic.check_target`).
    """
    text = export_json(document)
    with atomic_write(path) as file:
        file.write(text)
