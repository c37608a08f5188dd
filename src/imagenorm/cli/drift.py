"""``imagenorm compare``: exact drift between two stats files."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from ..compare import MAX_KS, MAX_WASSERSTEIN, Comparison
from .app import app, out, reports_errors


@app.command()
@reports_errors
def compare(
    reference: Path = typer.Argument(..., help="The reference stats file (e.g. the training set)."),
    other: Path = typer.Argument(..., help="The stats file to compare with it (a test set, a new scanner)."),
    as_json: bool = typer.Option(False, "--json", help="Print the numbers as JSON (for CI pipelines)."),
    max_wasserstein: float = typer.Option(MAX_WASSERSTEIN, "--max-wasserstein", min=0.0, help="Drift above this Wasserstein-1 distance, in reference stds."),
    max_ks: float = typer.Option(MAX_KS, "--max-ks", min=0.0, max=1.0, help="Drift above this Kolmogorov-Smirnov statistic."),
) -> None:
    """Compare two datasets' pixel distributions exactly; exit 1 when OTHER drifts from REFERENCE."""
    from ..stats import DatasetStats

    comparison = DatasetStats.load(reference).compare(DatasetStats.load(other), max_wasserstein=max_wasserstein,
                                                      max_ks=max_ks)
    if as_json:
        print(json.dumps(comparison.to_dict(), indent=2, allow_nan=False))
    else:
        print_comparison(comparison, str(reference), str(other))
    if comparison.drift:
        raise typer.Exit(1)


def _number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def print_comparison(comparison: Comparison, reference: str, other: str) -> None:
    units = "raw units" if comparison.scale == "raw" else "the [0, 1] scale"
    table = Table(title=f"{escape(other)} against {escape(reference)} ({units})", box=box.SIMPLE_HEAD, title_justify="left")
    values = "(raw)" if comparison.scale == "raw" else "([0, 1])"
    for column in ("channel", "mean shift", "(ref stds)", "std ratio", "wasserstein", values, "ks", "psi", "drift"):
        table.add_column(column, justify="left" if column == "channel" else "right")
    for drift in [*comparison.channels, comparison.pooled]:
        table.add_row(drift.name, _number(drift.mean_shift), _number(drift.mean_shift_std), _number(drift.std_ratio),
                      _number(drift.wasserstein), _number(drift.wasserstein_raw), _number(drift.ks), _number(drift.psi),
                      "[red]DRIFT[/red]" if drift.drift else "ok")
    out.print(table)
    errors = [d for d in comparison.channels if d.wasserstein_raw_error or d.ks_error]
    if errors:
        out.print(f"float histograms: wasserstein within ±{max(d.wasserstein_raw_error for d in errors):.3g} {values}, "
                  f"ks within ±{max(d.ks_error for d in errors):.3g}", soft_wrap=True)
    for note in comparison.notes:
        out.print(escape(f"note: {note}"), soft_wrap=True)
    thresholds = f"wasserstein > {comparison.max_wasserstein:g} reference stds or ks > {comparison.max_ks:g}"
    if comparison.drift:
        out.print(f"[red]drift[/red] in {', '.join(comparison.drifting)} ({thresholds})", soft_wrap=True)
    else:
        out.print(f"no drift ({thresholds} in no channel)", soft_wrap=True)
