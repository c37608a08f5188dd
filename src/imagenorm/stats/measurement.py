"""The measurement record: what a worker, a checkpoint or a rank hands on, with one merge.

:class:`~imagenorm.stats.result.DatasetStats` holds one of these as its data, so merging two
datasets' statistics and combining two workers' chunks are the same operation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .moments import FloatMoments, ImageSpread
from .state import State


@dataclass
class Measurement:
    """Statistics of some items: their state, how many, and which were skipped and why."""

    state: State
    spread: ImageSpread | None = None  # per-image means and stds (first pass only)
    files: int = 0
    skipped: list[tuple[int, str, str]] = field(default_factory=list)  # (index, name, reason)
    palette: bool = False  # any palette image expanded
    bits: int = 0  # the most significant bits any image declared or used
    notes: frozenset[str] = frozenset()  # what readers decided (e.g. MONOCHROME1 policy)
    rows: list[dict] = field(default_factory=list)  # per-image audit rows, in item order
    dtypes: frozenset[str] = frozenset()  # the dtypes the images were decoded in
    units: frozenset[str] = frozenset()  # what the values meant: "physical", "float", "raw"
    scaled: frozenset[str] = frozenset()  # integer dtypes divided by their maximum (mixed_depth="scale")
    voxels: int = 0  # every decoded value, inside a mask or not (what a normalized copy holds)
    spatial: frozenset[int] = frozenset()  # the images' spatial dimensions (2: pictures, 3: volumes)
    maximum: int | None = None  # declared maximum of every image (0: none declared, -1: they differ)

    def merge(self, other: "Measurement") -> "Measurement":
        """Both parts together (reductions: state merge, sums, union, concatenation in order)."""
        spread = None if self.spread is None or other.spread is None else self.spread.merge(other.spread)
        return Measurement(
            state=self.state.merge(other.state),
            spread=spread,
            files=self.files + other.files,
            skipped=self.skipped + other.skipped,
            palette=self.palette or other.palette,
            bits=max(self.bits, other.bits),
            notes=self.notes | other.notes,
            rows=self.rows + other.rows,
            dtypes=self.dtypes | other.dtypes,
            units=self.units | other.units,
            scaled=self.scaled | other.scaled,
            voxels=self.voxels + other.voxels,
            spatial=self.spatial | other.spatial,
            maximum=merged_maximum(self.maximum, other.maximum),
        )

    def joins(self, other: "Measurement", scale: bool) -> str | None:
        """Why the two cannot be measured together (None: they can); see :func:`joinable`."""
        if self.units and other.units:
            return joinable(self.units | other.units, (self.dtypes - self.scaled) | (other.dtypes - other.scaled), scale)
        return None

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Named arrays (one of them JSON text): how a checkpoint stores the record."""
        state_meta, arrays = self.state.to_arrays()
        arrays = {f"state.{key}": value for key, value in arrays.items()}
        if self.spread is not None:
            for part in ("means", "stds"):
                _, spread_arrays = getattr(self.spread, part).to_arrays()
                arrays.update({f"spread_{part}.{key}": value for key, value in spread_arrays.items()})
        meta = {"state": state_meta, "files": self.files, "skipped": self.skipped, "palette": self.palette,
                "bits": self.bits, "notes": sorted(self.notes), "rows": self.rows, "dtypes": sorted(self.dtypes),
                "units": sorted(self.units), "scaled": sorted(self.scaled),
                "voxels": self.voxels, "spatial": sorted(self.spatial),
                "maximum": self.maximum}
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
        measurement = cls(state=State.from_arrays(meta["state"], _part(arrays, "state.")), spread=spread,
                          files=meta["files"], skipped=[tuple(s) for s in meta["skipped"]], palette=meta["palette"],
                          bits=meta["bits"], notes=frozenset(meta["notes"]), rows=meta["rows"],
                          dtypes=frozenset(meta["dtypes"]), units=frozenset(meta["units"]),
                          scaled=frozenset(meta["scaled"]), voxels=meta["voxels"],
                          spatial=frozenset(meta["spatial"]), maximum=meta["maximum"])
        return measurement, meta


def merged_maximum(a: int | None, b: int | None) -> int | None:
    """Declared maxima of two parts: None is no image yet, 0 none declared, -1 disagreement."""
    if a is None or b is None:
        return b if a is None else a
    return a if a == b else -1


def joinable(units: frozenset[str], dtypes: frozenset[str], scale: bool) -> str | None:
    """Why values of these ``units`` and (unscaled) ``dtypes`` do not share units, or None.

    Physical units (HU, NIfTI values) and floats promote to a common type; raw integer values
    of one dtype share units; raw values of several dtypes, or raw values with floats, only in
    the [0, 1] scale (``scale``); raw values never with physical ones.
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
    return None


def _part(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {key[len(prefix):]: value for key, value in arrays.items() if key.startswith(prefix)}
