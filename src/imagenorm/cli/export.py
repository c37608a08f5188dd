"""``imagenorm export``: a stats file in another tool's format (nnU-Net v2's intensity properties)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape

from .app import app, choices, fail, out, reports_errors

ExportTo = choices("export_to")

HELP = (
    "Print the statistics in another tool's format.\n\n"
    "--to nnunet: nnU-Net v2's foreground intensity properties, {\"foreground_intensity_properties_per_channel\": "
    "{\"0\": {\"mean\", \"median\", \"std\", \"min\", \"max\", \"percentile_99_5\", \"percentile_00_5\"}, \"1\": ...}}, "
    "the top-level block of nnU-Net's dataset_fingerprint.json and nnUNetPlans.json: merge it into either in place "
    "of nnU-Net's sampled estimate (CTNormalization clips to the percentiles, then subtracts the mean and divides "
    "by the std). The numbers are exact over every measured voxel, so measure the foreground: "
    "'imagenorm stats \"imagesTr/*_0000.nii.gz\" --mask-dir labelsTr' (nnU-Net's labelsTr/case.nii.gz is the "
    "mask of imagesTr/case_0000.nii.gz). "
    "nnU-Net keeps each channel in its own file (case_0000, case_0001): measure each apart and give the stats "
    "files in channel order; they become channels \"0\", \"1\", ...\n\n"
    "A yellow warning says where they would mean something else: no foreground mask, a threshold instead of the "
    "label files, DICOM stored values, approximate float percentiles."
)


@app.command(help=HELP)
@reports_errors
def export(
    stats_files: List[Path] = typer.Argument(..., help="Stats files written by 'imagenorm stats', measured over the "
                                                       "foreground (--mask-dir); one per channel file in nnU-Net's "
                                                       "channel order, or one for all channels."),
    to: ExportTo = typer.Option(..., "--to", help="nnunet: nnU-Net v2's foreground_intensity_properties_per_channel."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the JSON here (atomically) instead of "
                                                                       "printing it."),
) -> None:
    """Print the statistics in another tool's format (the command's help is :data:`HELP`)."""
    from ..export import export as export_stats, export_json, save_export
    from ..stats import DatasetStats

    if output is not None and output.exists():
        for stats_file in stats_files:
            if stats_file.exists() and os.path.samefile(output, stats_file):
                fail(f"{output}: would overwrite the stats file it exports; give another file name", 2)
    document = export_stats([DatasetStats.load(path) for path in stats_files], to.value)
    if output is None:
        print(export_json(document), end="")
        return
    save_export(document, output)
    out.print(f"wrote {escape(str(output))}", soft_wrap=True)
