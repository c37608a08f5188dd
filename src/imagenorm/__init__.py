"""imagenorm: exact dataset statistics and correct, fast normalization for PyTorch.

Measuring (``compute_stats``, ``DatasetStats``) needs no torch; the transforms and datasets
import it on first use, and ``compute_stats`` and the readers are imported when first used,
so ``imagenorm stats`` starts quickly and ``show``/``compare``/``report`` quicker still.

Example:
    >>> import numpy as np, imagenorm
    >>> stats = imagenorm.compute_stats(np.array([[0, 255]], dtype=np.uint8))
    >>> stats.pooled.mean, stats.pooled.std
    (127.5, 127.5)
"""

import importlib

from .errors import EmptyDatasetError, ImagenormError, ReadError, StatsFileError
from .options import OptionConflictError, OptionError, ReadOptions
from .stats import PERCENTILES, DatasetStats, Summary
from .version import __version__

# Public names imported on first access (they need torch, or the readers), and their module.
_LAZY = {
    "compute_stats": "stats",
    "read_image": "readers",
    "decode_image": "readers",
    "functional": None,
    "ImageFolderDataset": "datasets",
    "NormalizedDataset": "datasets",
    "normalize_dataset": "datasets",
    "Standardize": "transforms",
    "MinMaxScale": "transforms",
    "PercentileScale": "transforms",
    "CTNormalize": "transforms",
    "AffineInverse": "transforms",
    "DegenerateStatisticsError": "transforms",
    "HistogramStandardize": "histogram_standardize",
    "LandmarkSpec": "stats.landmarks",
    "DegenerateLandmarksError": "stats.landmarks",
    "StatsAccumulator": "stats.tensors",
    "MethodOptions": "methods",
    "check_normalization": "check",
    "apply_normalization": "apply",
    "ContainerDataset": "container_datasets",
    "ShardStreamDataset": "container_datasets",
    "wds_decoder": "container_datasets",
    "hf_transform": "container_datasets",
}

__all__ = ["__version__", "DatasetStats", "ReadOptions", "Summary", "PERCENTILES", *_LAZY,
           "ImagenormError", "ReadError", "EmptyDatasetError", "StatsFileError", "OptionError", "OptionConflictError"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'imagenorm' has no attribute {name!r}")
    module = importlib.import_module(f".{_LAZY[name] or name}", __name__)
    value = module if _LAZY[name] is None else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
