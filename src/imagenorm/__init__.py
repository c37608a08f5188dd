"""imagenorm: exact dataset statistics and correct, fast normalization for PyTorch.

Example:
    >>> import numpy as np, imagenorm
    >>> stats = imagenorm.compute_stats(np.array([[0, 255]], dtype=np.uint8))
    >>> stats.pooled.mean, stats.pooled.std
    (127.5, 127.5)
"""

__version__ = "0.1.0"

from .errors import EmptyDatasetError, ImagenormError, ReadError, StatsFileError  # noqa: E402
from .stats import PERCENTILES, DatasetStats, Summary, compute_stats  # noqa: E402
from . import functional  # noqa: E402
from .datasets import ImageFolderDataset, NormalizedDataset, normalize_dataset  # noqa: E402
from .transforms import AffineInverse, CTNormalize, DegenerateStatisticsError, MinMaxScale, PercentileScale, Standardize  # noqa: E402

__all__ = [
    "__version__",
    "compute_stats",
    "DatasetStats",
    "Summary",
    "PERCENTILES",
    "functional",
    "ImageFolderDataset",
    "NormalizedDataset",
    "normalize_dataset",
    "Standardize",
    "MinMaxScale",
    "PercentileScale",
    "CTNormalize",
    "AffineInverse",
    "DegenerateStatisticsError",
    "ImagenormError",
    "ReadError",
    "EmptyDatasetError",
    "StatsFileError",
]
