"""What `runscaler demo` shows: the fleet live while the jobs run, then a summary.

On a terminal the fleet is the `runscaler status` table, redrawn in place. Elsewhere (a pipe,
CI logs, a test) a plain line is printed whenever a count changes, so the output reads as a
log. The summary is plain lines on stdout either way, with stable prefixes a script can read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from runscaler.console.status import safe, table
from runscaler.engine.status import ScaleSetStatus

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.live import Live


# The live view redraws at once when a count changes, else this often (for the clock); a
# plain line is printed when a count changes, else this often (to show the demo is alive).
LIVE_INTERVAL = 0.5
LINE_INTERVAL = 5.0


@dataclass(frozen=True)
class JobCounts:
    """The demo's jobs by where they are: waiting for a runner, running, or done."""

    waiting: int = 0
    running: int = 0
    done: int = 0
    results: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class DemoProgress:
    elapsed: float
    phase: str  # what the demo waits for now: "warming up", "running jobs", …
    scale_sets: tuple[ScaleSetStatus, ...]
    jobs: JobCounts
    peak_runners: int


@dataclass(frozen=True)
class DemoSummary:
    results: Mapping[str, int]  # of finished jobs
    pickup: Sequence[float]  # seconds from a job queued to a runner starting it
    peak_runners: int
    peak_by_scale_set: Mapping[str, int]
    total: float
    unfinished: int = 0
    interrupted: bool = False

    @property
    def jobs(self) -> int:
        return sum(self.results.values())


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank percentile (`p` in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def runners(status: ScaleSetStatus) -> int:
    return status.idle + status.busy + status.starting


def _results(results: Mapping[str, int]) -> str:
    return ", ".join(f"{count} {result}" for result, count in sorted(results.items()))


def plain_counts(progress: DemoProgress) -> str:
    """`running jobs | linux: 4 busy, 0 idle, 1 starting | … | jobs: 3 waiting, …`"""
    parts = [progress.phase]
    for s in progress.scale_sets:
        parts.append(f"{s.name}: {s.busy} busy, {s.idle} idle, {s.starting} starting")
    jobs = progress.jobs
    parts.append(f"jobs: {jobs.waiting} waiting, {jobs.running} running, {jobs.done} done")
    return " | ".join(parts)


def plain_line(progress: DemoProgress) -> str:
    """The counts after the time since the demo started: `  12.3s  running jobs | …`."""
    return f"{progress.elapsed:6.1f}s  {plain_counts(progress)}"


def live_view(progress: DemoProgress) -> RenderableType:
    """A header line, the status table, and a line about the jobs."""
    from rich.console import Group
    from rich.text import Text

    head = Text.from_markup(
        f"[bold]runscaler demo[/] · {safe(progress.phase)} · {progress.elapsed:.1f} s"
    )
    jobs = progress.jobs
    done = f"{jobs.done} done"
    if jobs.results:
        done += f" ({safe(_results(jobs.results))})"
    foot = Text.from_markup(
        f"jobs: [cyan]{jobs.waiting}[/] waiting · [yellow]{jobs.running}[/] running · "
        f"[green]{done}[/] · peak runners {progress.peak_runners}"
    )
    grid = table([s.to_json() for s in progress.scale_sets])
    return Group(head, Text(""), grid, Text(""), foot)


def summary_lines(summary: DemoSummary) -> list[str]:
    title = "demo interrupted: what ran so far" if summary.interrupted else "demo summary"
    jobs = f"{summary.jobs}"
    if summary.results:
        jobs += f" ({_results(summary.results)})"
    if summary.unfinished:
        jobs += f", {summary.unfinished} not finished"
    if summary.pickup:
        p50, p95 = percentile(summary.pickup, 50), percentile(summary.pickup, 95)
        pickup = f"p50 {p50:.2f} s, p95 {p95:.2f} s (from queued to started on a runner)"
    else:
        pickup = "- (no job started)"
    peaks = ", ".join(f"{name} {count}" for name, count in summary.peak_by_scale_set.items())
    return [
        title,
        f"  jobs run:        {jobs}",
        f"  pickup latency:  {pickup}",
        f"  peak runners:    {summary.peak_runners}" + (f" ({peaks})" if peaks else ""),
        f"  total time:      {summary.total:.1f} s",
    ]


class ProgressDisplay:
    """Shows progress: a rich Live view on a terminal, else changed counts as plain lines."""

    def __init__(self, console: Console, *, stream: TextIO) -> None:
        self._console = console
        self._stream = stream
        self._live: Live | None = None
        self._last_line = ""
        self._drawn_at = 0.0
        self._gone = False

    @property
    def live(self) -> bool:
        return self._console.is_terminal

    def hang_up(self) -> None:
        """The terminal is gone (SIGHUP): write nothing more, a write would fail with EIO."""
        self._gone = True
        self._live = None

    def say(self, text: str) -> None:
        """A line above the live view (or in the log)."""
        if self._gone:
            return
        if self._live is not None:
            self._live.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self._stream, flush=True)

    def update(self, progress: DemoProgress) -> None:
        if self._gone:
            return
        counts = plain_counts(progress)
        changed, self._last_line = counts != self._last_line, counts
        due = progress.elapsed - self._drawn_at >= (LIVE_INTERVAL if self.live else LINE_INTERVAL)
        if not (changed or due):
            return
        self._drawn_at = progress.elapsed
        if not self.live:
            print(plain_line(progress), file=self._stream, flush=True)
            return
        if self._live is None:
            from rich.live import Live

            self._live = Live(
                live_view(progress), console=self._console, auto_refresh=False, transient=False
            )
            self._live.start()
        self._live.update(live_view(progress), refresh=True)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
