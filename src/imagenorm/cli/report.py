"""Terminal output of the CLI: statistics tables and the progress bar (rich)."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..stats import PERCENTILES, DatasetStats
from ..stats.summary import SCALED_PERCENTILES, percentile_key


@contextlib.contextmanager
def progress_bar(console: Console, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """Yield an ``advance(n)`` callback; a bar is drawn only on a terminal."""
    if not enabled or not console.is_terminal:
        yield lambda done: None
        return
    columns = (TextColumn("measuring"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("measuring", total=None)
        yield lambda done: progress.advance(task, done)


def _format(value: float, scale: float = 1.0) -> str:
    if scale != 1.0:
        return f"{value / scale:.4f}"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def _table(title: str, columns: list[str]) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for name in columns:
        table.add_column(name, justify="left" if name == "channel" else "right", no_wrap=True)
    return table


def moments_table(stats: DatasetStats) -> Table:
    """count, mean, std, min, max per channel (and pooled), raw units."""
    table = _table(f"raw units, {stats.dtype}", ["channel", "count", "mean", "std", "min", "max"])
    for name, s in stats.summaries():
        table.add_row(name, f"{s.count:,}", *(_format(v) for v in (s.mean, s.std, s.min, s.max)))
    return table


def percentiles_table(stats: DatasetStats) -> Table:
    """The stats file's percentiles per channel (and pooled), raw units."""
    table = _table("percentiles, raw units", ["channel"] + [f"p{percentile_key(q)}" for q in PERCENTILES])
    for name, s in stats.summaries():
        table.add_row(name, *(_format(s.percentiles.get(percentile_key(q), float("nan"))) for q in PERCENTILES))
    return table




def scaled_table(stats: DatasetStats) -> Table:
    """Mean, std, range and key percentiles in the [0, 1] scale torchvision users expect."""
    scale = stats.value_scale
    columns = ["channel", "mean", "std", "min", "max"] + [f"p{percentile_key(q)}" for q in SCALED_PERCENTILES]
    table = _table(f"[0, 1] scale (raw / {scale:g})", columns)
    for name, s in stats.summaries():
        values = [s.mean, s.std, s.min, s.max] + [s.percentiles.get(percentile_key(q), float("nan")) for q in SCALED_PERCENTILES]
        table.add_row(name, *(_format(v, scale) for v in values))
    return table


def print_stats(console: Console, stats: DatasetStats) -> None:
    """The tables, the torchvision line and the summary of what was measured."""
    console.print(moments_table(stats))
    if stats.pooled.percentiles:
        console.print(percentiles_table(stats))
    else:
        console.print(f"percentiles: {stats.percentile_method}", soft_wrap=True)
    if stats.has_unit_scale:
        if stats.value_scale != 1.0:
            console.print(scaled_table(stats))
        console.print(escape(stats.normalize_line()), soft_wrap=True)
    else:
        console.print(f"no [0, 1] scale for {stats.dtype} values (e.g. HU after a DICOM rescale): normalize with imagenorm's transforms", soft_wrap=True)
    for line in summary_lines(stats):
        console.print(escape(line), soft_wrap=True)


def landmarks_line(stats: DatasetStats) -> str:
    """The histogram landmarks recorded: how many images, which percentiles, the standard scale."""
    marks = stats.landmarks
    table = marks.standard_table()
    which = "TorchIO's" if marks.spec.is_torchio else f"cutoff {marks.spec.cutoff[0]:g}/{marks.spec.cutoff[1]:g}"
    line = f"histogram landmarks ({which}, percentiles {', '.join(f'{q:g}' for q in marks.spec.recorded)}) of {len(marks.names)} image(s)"
    if table is None:
        return line + "; no standard scale: every image is constant inside its mask"
    rows = [("", table["pooled"])] if marks.channels == 1 else list(zip(stats.channel_names, table["channels"]))
    scale = "; ".join(f"{name + ' ' if name else ''}{', '.join(f'{v:.4g}' for v in row)}" for name, row in rows)
    return line + f"; standard scale (0..100): {scale}; normalize with --method histogram"


def summary_lines(stats: DatasetStats) -> list[str]:
    lines = [f"{stats.files} image(s) measured, {stats.dtype}, channels: {', '.join(stats.channel_names)}"]
    if stats.significant_bits is not None:
        lines.append(stats.significant_bits_meaning())
    if stats.mask:
        lines.append(f"statistics over the foreground only: {stats.mask}")
    lines += [f"note: {note}" for note in stats.notes]
    if stats.flagged:
        lines.append(f"{len(stats.flagged)} image(s) flagged by the per-image audit:")
        lines += [f"  {entry['path']}: {'; '.join(entry['reasons'])}" for entry in stats.flagged]
    elif stats.flagged is not None:
        lines.append("per-image audit: no image stands out")
    if stats.landmarks is not None:
        lines.append(landmarks_line(stats))
    if stats.ignored:
        lines.append(f"{stats.ignored} file(s) that are not images were ignored")
    if stats.hidden:
        lines.append(f"{stats.hidden} hidden file(s) or folder(s) skipped (names starting with '.')")
    if stats.alpha == "kept" or stats.palette_expanded:
        lines.append(f"alpha: {stats.alpha}; palette images expanded: {'yes' if stats.palette_expanded else 'no'}")
    if any(stats.nonfinite):
        lines.append(f"non-finite values left out: {', '.join(map(str, stats.nonfinite))} (per channel)")
    if not stats.exact and stats.pooled.percentiles:
        lines.append(f"percentiles: {stats.percentile_method}")
    if stats.skipped:
        lines.append(f"{len(stats.skipped)} image(s) skipped (a DICOM series is one image):")
        lines += [f"  {entry['path']}: {entry['reason']}" for entry in stats.skipped]
    return lines


def print_advice(console: Console, stats: DatasetStats) -> None:
    """The recommendations of :func:`imagenorm.advice.advise`, one line each."""
    from ..advice import advise

    console.print("advice:")
    for advice in advise(stats):
        console.print(escape(f"  {advice}"), soft_wrap=True)


def print_check(console: Console, report) -> None:
    """Per channel what came out of the normalization, the promise and pass/FAIL."""
    table = _table(f"check: {report.method}", ["channel", "mean", "std", "min", "max", "promised", "result"])
    for channel in report.channels:
        s = channel.summary
        verdict = "[green]pass[/green]" if channel.passed else "[red]FAIL[/red]"
        table.add_row(channel.name, *(f"{v:.6g}" for v in (s.mean, s.std, s.min, s.max)), channel.promise, verdict)
    console.print(table)
    for channel in report.channels:
        if channel.detail:
            console.print(escape(channel.detail), soft_wrap=True)
    console.print(f"{report.files} image(s) checked; {'passed' if report.passed else 'FAILED'}", soft_wrap=True)
    for entry in report.skipped:
        console.print(escape(f"  skipped {entry['path']}: {entry['reason']}"), soft_wrap=True)
