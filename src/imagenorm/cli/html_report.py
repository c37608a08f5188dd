"""``imagenorm report``: one self-contained HTML page of a stats file."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from ..compare import MAX_KS, MAX_WASSERSTEIN
from .app import app, out, reports_errors


@app.command("report")
@reports_errors
def html_report(
    stats_file: Path = typer.Argument(..., help="A stats file written by 'imagenorm stats'."),
    output: Path = typer.Option(..., "--output", "-o", help="The HTML page to write (one file; it opens offline)."),
    audit: Optional[Path] = typer.Option(None, "--audit", help="The audit CSV of 'imagenorm stats --audit': flagged images with thumbnails."),
    compare: Optional[Path] = typer.Option(None, "--compare", help="Another stats file: its histograms overlaid, and the drift numbers."),
    max_wasserstein: float = typer.Option(MAX_WASSERSTEIN, "--max-wasserstein", min=0.0, help="With --compare: drift above this Wasserstein-1 distance, in reference stds."),
    max_ks: float = typer.Option(MAX_KS, "--max-ks", min=0.0, max=1.0, help="With --compare: drift above this Kolmogorov-Smirnov statistic."),
) -> None:
    """Write one self-contained HTML report: histograms, statistics, advice, flagged images, drift."""
    from ..report import write_report
    from ..stats import DatasetStats

    write_report(DatasetStats.load(stats_file), output, audit=audit,
                 compare=None if compare is None else DatasetStats.load(compare), max_wasserstein=max_wasserstein,
                 max_ks=max_ks)
    out.print(f"wrote {escape(str(output))}", soft_wrap=True)
