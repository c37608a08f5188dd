"""Every option that enters the library, checked where it enters.

The allowed values of each choice are declared once, in :data:`CHOICES`; the command line
builds its choices from the same table. :class:`ReadOptions` holds every option that
changes which values are measured; the stats file records it, so that ``check``, ``apply``
and the datasets read the pixels exactly as they were measured.

Example:
    >>> ReadOptions(mask="nonzero").describe_changes()
    {'mask': 'nonzero'}
    >>> ReadOptions(alpha="kep")
    Traceback (most recent call last):
    ...
    imagenorm.options.OptionError: alpha='kep' is not one of 'drop', 'keep'
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, fields
from typing import Any, Mapping

from .errors import ImagenormError, display_path

#: Pillow's own decompression-bomb limit, used as our default ``max_pixels``.
DEFAULT_MAX_PIXELS = 89_478_485

#: The allowed values of every choice, by parameter name.
CHOICES: dict[str, tuple[str, ...]] = {
    "on_error": ("fail", "skip"),
    "nonfinite": ("fail", "ignore"),
    "alpha": ("drop", "keep"),
    "convert": ("gray", "rgb"),
    "dicom_values": ("modality", "stored"),
    "monochrome1": ("keep", "invert"),
    "nifti_4d": ("channels", "pooled"),
    "mixed_depth": ("fail", "scale"),
    "float_percentiles": ("exact", "histogram"),
    "method": ("zscore", "minmax", "percentile", "histogram"),
    "cache": ("auto", "memory", "none"),
    "output_format": ("npy", "nifti", "tiff"),
    "export_to": ("nnunet",),
}


class OptionError(ImagenormError, ValueError):
    """An option has a value outside its allowed ones, or an unknown name."""


class OptionConflictError(OptionError):
    """An option given explicitly differs from the one the statistics were measured with."""


def check_choice(name: str, value: Any, *, optional: bool = False) -> Any:
    """``value`` if it is one of ``CHOICES[name]`` (or None when ``optional``).

    Raises:
        OptionError: naming the parameter, the value and the allowed values.
    """
    if value is None and optional:
        return None
    allowed = CHOICES[name]
    if value not in allowed:
        raise OptionError(f"{name}={value!r} is not one of {', '.join(repr(v) for v in allowed)}")
    return value


_MASK = re.compile(r"threshold:(>=|<=|>|<)([-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)(?:@(\w+))?")


def parse_mask(text: str) -> tuple[str, str, float, str | None]:
    """``"nonzero"`` or ``"threshold:>-500"`` (also >=, <, <=; ``@channel`` names the channel
    whose values decide, by name or number; the first by default) as
    (kind, comparison, value, channel).

    Raises:
        OptionError: anything else.
    """
    if text == "nonzero":
        return "nonzero", ">", 0.0, None
    match = _MASK.fullmatch(str(text).replace(" ", "")) if isinstance(text, str) else None
    if not match:
        raise OptionError(f"mask={text!r} is not 'nonzero' or a threshold such as 'threshold:>-500' (>, >=, <, <=)")
    return "threshold", match.group(1), float(match.group(2)), match.group(3)


@dataclass(frozen=True)
class ReadOptions:
    """How pixels become the values that are measured and normalized.

    Args:
        max_pixels: images with more pixels are refused before decoding (None: no limit).
        alpha: ``"drop"`` or ``"keep"`` an alpha channel.
        convert: ``"gray"`` or ``"rgb"`` to bring every image to one channel layout.
        dicom_values: ``"modality"`` (rescale applied: CT in HU) or ``"stored"``.
        monochrome1: MONOCHROME1 DICOM images ``"keep"`` their values or are ``"invert"``-ed.
        nifti_4d: the 4th axis of NIfTI volumes as ``"channels"`` or ``"pooled"`` into one.
        dicom_series: the slices of one DICOM series (a folder, one SeriesInstanceUID) are
            one image (not with ``mask_dir``).
        nonfinite: ``"fail"`` treats NaN/Inf in float images as bad input; ``"ignore"``
            leaves them out of every statistic and counts them.
        mask: count only foreground voxels: ``"nonzero"`` or ``"threshold:>-500"``.
        mask_dir: count only voxels inside a mask file per image, at its relative path.
        mixed_depth: integer images of different bit depths in raw units are an error
            (``"fail"``), or every image is divided by its dtype's maximum (``"scale"``:
            statistics in the [0, 1] scale).
    """

    max_pixels: int | None = DEFAULT_MAX_PIXELS
    alpha: str = "drop"
    convert: str | None = None
    dicom_values: str = "modality"
    monochrome1: str = "keep"
    nifti_4d: str = "channels"
    dicom_series: bool = True
    nonfinite: str = "fail"
    mask: str | None = None
    mask_dir: str | None = None
    mixed_depth: str = "fail"

    def __post_init__(self) -> None:
        if self.max_pixels is not None and (isinstance(self.max_pixels, bool) or not isinstance(self.max_pixels, int)
                                            or self.max_pixels < 1):
            raise OptionError(f"max_pixels must be a positive integer or None, got {self.max_pixels!r}")
        for name in ("alpha", "dicom_values", "monochrome1", "nifti_4d", "nonfinite", "mixed_depth"):
            check_choice(name, getattr(self, name))
        check_choice("convert", self.convert, optional=True)
        if not isinstance(self.dicom_series, bool):
            raise OptionError(f"dicom_series must be True or False, got {self.dicom_series!r}")
        if self.mask is not None:
            kind, comparison, value, channel = parse_mask(self.mask)
            if kind == "threshold":  # one spelling per mask: "threshold: > -500.0" is "threshold:>-500"
                object.__setattr__(self, "mask", f"threshold:{comparison}{value:g}" + (f"@{channel}" if channel else ""))
        if self.mask_dir is not None:
            object.__setattr__(self, "mask_dir", os.path.abspath(os.fspath(self.mask_dir)))
            if self.mask is not None:
                raise OptionError("give mask or mask_dir, not both")

    @property
    def groups_series(self) -> bool:
        """Whether the slices of a DICOM series are read as one volume (not with mask files,
        which are per slice file)."""
        return self.dicom_series and self.mask_dir is None

    @classmethod
    def from_keywords(cls, **given: Any) -> "ReadOptions":
        """ReadOptions from keyword arguments, with an unknown name named (not a TypeError)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(given) - known)
        if unknown:
            raise OptionError(f"unknown option {unknown[0]!r}; read options are {', '.join(sorted(known))}")
        return cls(**given)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form the stats file records."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> "ReadOptions":
        """Rebuild from a stats file; missing keys take the defaults (older stats files)."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in document.items() if key in known})

    def describe_changes(self) -> dict[str, Any]:
        """The options that differ from the defaults."""
        default = ReadOptions()
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != getattr(default, f.name)}

    def with_given(self, source: str = "the statistics", *, recorded_as: str = "was measured with",
                   **given: Any) -> "ReadOptions":
        """These options (as recorded), with explicitly given ones that agree.

        ``None`` means "not given". A given value that differs from the recorded one is
        refused: reading otherwise than the statistics were measured gives wrong units. The
        one exception is ``mask_dir`` where a mask folder was recorded: another dataset
        (a test set) brings its own mask files of the same kind.

        Raises:
            OptionConflictError: naming the option and both values.
        """
        given = {key: value for key, value in given.items() if value is not None}
        wanted = ReadOptions.from_keywords(**{**self.to_dict(), **given})
        for key in given:
            recorded = getattr(self, key)
            if key == "mask_dir" and recorded is not None:
                continue
            if getattr(wanted, key) != recorded:
                raise OptionConflictError(
                    f"{key}={getattr(wanted, key)!r} was given, but {display_path(source)} {recorded_as} "
                    f"{key}={recorded!r}; omit it to read as measured"
                )
        return wanted
