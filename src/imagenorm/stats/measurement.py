"""The measurement record: what a worker, a checkpoint or a rank hands on, with one merge.

:class:`~imagenorm.stats.result.DatasetStats` holds one of these as its data, so merging two
datasets' statistics and combining two workers' chunks are the same operation.
"""

from __future__ import annotations

import json
import operator
from dataclasses import dataclass, field, fields
from typing import Any, Callable

import numpy as np

from ..errors import warn
from .landmarks import ImageLandmarks
from .moments import FloatMoments, ImageSpread
from .state import State


def merged_maximum(a: int | None, b: int | None) -> int | None:
    """Declared maxima of two parts: None is no image yet, 0 none declared, -1 disagreement."""
    if a is None or b is None:
        return b if a is None else a
    return a if a == b else -1


def _merged_spread(a: ImageSpread | None, b: ImageSpread | None) -> ImageSpread | None:
    return None if a is None or b is None else a.merge(b)


def _merged_landmarks(a: ImageLandmarks | None, b: ImageLandmarks | None) -> ImageLandmarks | None:
    if a is None or b is None:
        if a is not None or b is not None:
            warn("only one part has histogram landmarks (stats --landmarks): the merged statistics have none")
        return None
    return a.merge(b)


#: The reductions a field may declare: every merge (workers, ranks, resumed checkpoints,
#: merged stats files) combines each field with its own, in item order.
REDUCTIONS: dict[str, Callable[[Any, Any], Any]] = {
    "state": lambda a, b: a.merge(b),
    "spread": _merged_spread,
    "landmarks": _merged_landmarks,
    "sum": operator.add,
    "concatenate": operator.add,
    "any": operator.or_,
    "max": max,
    "union": operator.or_,
    "maximum": merged_maximum,
}


def reduced(reduction: str, **options) -> Any:
    """A dataclass field that declares its reduction."""
    return field(metadata={"reduction": reduction}, **options)


@dataclass
class Measurement:
    """Statistics of some items: their state, how many, and which were skipped and why.

    Each field declares its reduction (see :data:`REDUCTIONS`); :meth:`merge` applies them.
    """

    state: State = reduced("state")
    spread: ImageSpread | None = reduced("spread", default=None)  # per-image means and stds (first pass only)
    files: int = reduced("sum", default=0)
    skipped: list[tuple[int, str, str]] = reduced("concatenate", default_factory=list)  # (index, name, reason)
    palette: bool = reduced("any", default=False)  # any palette image expanded
    bits: int = reduced("max", default=0)  # the most significant bits any image declared or used
    notes: frozenset[str] = reduced("union", default=frozenset())  # what readers decided (e.g. MONOCHROME1 policy)
    rows: list[dict] = reduced("concatenate", default_factory=list)  # per-image audit rows, in item order
    dtypes: frozenset[str] = reduced("union", default=frozenset())  # the dtypes the images were decoded in
    units: frozenset[str] = reduced("union", default=frozenset())  # what values meant: "physical", "float", "raw"
    scaled: frozenset[str] = reduced("union", default=frozenset())  # integer dtypes divided by their maximum
    voxels: int = reduced("sum", default=0)  # every decoded value, inside a mask or not
    spatial: frozenset[int] = reduced("union", default=frozenset())  # spatial dimensions (2: pictures, 3: volumes)
    maximum: int | None = reduced("maximum", default=None)  # declared maximum (0: none declared, -1: they differ)
    landmarks: ImageLandmarks | None = reduced("landmarks", default=None)  # per-image histogram landmarks (first pass)

    def merge(self, other: "Measurement") -> "Measurement":
        """Both parts together: each field by its declared reduction."""
        return Measurement(**{f.name: REDUCTIONS[f.metadata["reduction"]](getattr(self, f.name), getattr(other, f.name))
                              for f in fields(self)})

    def joins(self, other: "Measurement", scale: bool) -> str | None:
        """Why the two cannot be measured together (None: they can); see :func:`joinable`."""
        if self.units and other.units:
            maxima = frozenset({merged_maximum(self.maximum, other.maximum)})
            return joinable(self.units | other.units, (self.dtypes - self.scaled) | (other.dtypes - other.scaled), scale,
                            maxima)
        return None

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Named arrays (one of them JSON text): how a checkpoint stores the record."""
        state_meta, arrays = self.state.to_arrays()
        arrays = {f"state.{key}": value for key, value in arrays.items()}
        if self.spread is not None:
            for part in ("means", "stds"):
                _, spread_arrays = getattr(self.spread, part).to_arrays()
                arrays.update({f"spread_{part}.{key}": value for key, value in spread_arrays.items()})
        meta = {f.name: _to_json(getattr(self, f.name)) for f in fields(self) if f.name not in _OBJECTS}
        meta["state"] = state_meta
        if self.landmarks is not None:
            meta["landmarks"] = self.landmarks.to_dict(values=False)
            arrays["landmarks.values"] = self.landmarks.values
            arrays["landmarks.indices"] = np.asarray(self.landmarks.indices, np.int64)
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> tuple["Measurement", dict[str, Any]]:
        """The record that ``to_arrays`` stored, and its JSON part."""
        meta = json.loads(np.asarray(arrays["meta"]).tobytes().decode("utf-8"))
        spread = None
        if any(key.startswith("spread_means.") for key in arrays):
            spread = ImageSpread(*(FloatMoments.from_arrays({"kind": FloatMoments.kind}, _part(arrays, f"spread_{part}."))
                                   for part in ("means", "stds")))
        plain = {f.name: _from_json(meta[f.name], f.metadata["reduction"]) for f in fields(cls) if f.name not in _OBJECTS}
        landmarks = None
        if meta.get("landmarks") is not None:
            landmarks = ImageLandmarks.from_dict(meta["landmarks"], arrays["landmarks.values"],
                                                 arrays["landmarks.indices"].tolist())
        return cls(state=State.from_arrays(meta["state"], _part(arrays, "state.")), spread=spread, landmarks=landmarks,
                   **plain), meta


_OBJECTS = ("state", "spread", "landmarks")  # stored by their own methods, not as plain JSON


def _to_json(value: Any) -> Any:
    return sorted(value) if isinstance(value, frozenset) else value


def _from_json(value: Any, reduction: str) -> Any:
    if reduction == "union":
        return frozenset(value)
    if reduction == "concatenate" and value and isinstance(value[0], list):
        return [tuple(item) for item in value]  # skipped entries
    return value


def joinable(units: frozenset[str], dtypes: frozenset[str], scale: bool,
             maxima: frozenset[int | None] = frozenset()) -> str | None:
    """Why values of these ``units`` and (unscaled) ``dtypes`` do not share units, or None.

    Physical units (HU, NIfTI values) and floats promote to a common type; raw integer values
    of one dtype and one declared maximum (``maxima``, -1 where parts disagree, see
    :func:`merged_maximum`) share units; raw values of several dtypes or maxima, or raw values
    with floats, only in the [0, 1] scale (``scale``); raw values never with physical ones.
    """
    if "raw" not in units:
        return None
    if "physical" in units:
        return "values in physical units (DICOM modality values, NIfTI) and raw pixel values do not share units"
    if scale:
        return None
    if "float" in units:
        return "raw integer values and float values do not share units"
    if len({name for name in dtypes if np.dtype(name).kind in "ui"}) > 1:
        return "raw values of different bit depths do not share units"
    if -1 in maxima or len(maxima - {None}) > 1:
        return "raw values of different declared maxima (Netpbm maxval) do not share units"
    return None


def _part(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {key[len(prefix):]: value for key, value in arrays.items() if key.startswith(prefix)}
