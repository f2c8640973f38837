"""What `runscaler demo` prints: its plain progress lines and its summary."""

from __future__ import annotations

import io

from rich.console import Console

from runscaler.console.demo import (
    DemoProgress,
    DemoSummary,
    JobCounts,
    ProgressDisplay,
    percentile,
    plain_line,
    summary_lines,
)
from runscaler.engine.status import ScaleSetStatus


def status(name: str, *, idle: int = 0, busy: int = 0, starting: int = 0) -> ScaleSetStatus:
    return ScaleSetStatus(
        name=name,
        url="http://127.0.0.1:1/demo-org",
        key="0" * 12,
        state="listening",
        desired=idle + busy + starting,
        idle=idle,
        busy=busy,
        starting=starting,
        assigned_jobs=busy,
        running_jobs=busy,
        registered_runners=idle + busy,
        min_runners=0,
        max_runners=4,
        organization="demo-org",
        repository="",
        enterprise="",
    )


def progress(elapsed: float, *, busy: int) -> DemoProgress:
    return DemoProgress(
        elapsed=elapsed,
        phase="running jobs",
        scale_sets=(status("linux", busy=busy, starting=1), status("linux-big", idle=1)),
        jobs=JobCounts(waiting=2, running=busy, done=3, results={"succeeded": 3}),
        peak_runners=busy + 2,
    )


def test_percentile_is_the_nearest_rank() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(values, 50) == 3.0
    assert percentile(values, 95) == 5.0
    assert percentile(values, 0) == 1.0
    assert percentile([7.0], 95) == 7.0


def test_a_plain_line_shows_the_time_and_every_count() -> None:
    assert plain_line(progress(12.34, busy=2)) == (
        "  12.3s  running jobs | linux: 2 busy, 0 idle, 1 starting"
        " | linux-big: 0 busy, 1 idle, 0 starting | jobs: 2 waiting, 2 running, 3 done"
    )


def test_without_a_terminal_a_line_is_printed_when_a_count_changes_or_every_5_s() -> None:
    out = io.StringIO()
    display = ProgressDisplay(Console(file=out), stream=out)
    for elapsed, busy in ((1.0, 2), (1.1, 2), (1.2, 3), (6.1, 3), (6.3, 3), (11.0, 3), (11.5, 3)):
        display.update(progress(elapsed, busy=busy))
    lines = out.getvalue().splitlines()
    assert [line.split("|")[0].strip() for line in lines] == [
        "1.0s  running jobs",
        "1.2s  running jobs",
        "6.3s  running jobs",
        "11.5s  running jobs",
    ]
    assert [line.split("|")[1] for line in lines] == [
        " linux: 2 busy, 0 idle, 1 starting ",
        " linux: 3 busy, 0 idle, 1 starting ",
        " linux: 3 busy, 0 idle, 1 starting ",
        " linux: 3 busy, 0 idle, 1 starting ",
    ]


def test_the_summary_names_results_latency_peaks_and_time() -> None:
    summary = DemoSummary(
        results={"succeeded": 11, "failed": 1},
        pickup=[0.2, 0.4, 1.0, 3.0],
        peak_runners=6,
        peak_by_scale_set={"linux": 4, "linux-big": 2},
        total=31.84,
    )
    assert summary_lines(summary) == [
        "demo summary",
        "  jobs run:        12 (1 failed, 11 succeeded)",
        "  pickup latency:  p50 0.40 s, p95 3.00 s (from queued to started on a runner)",
        "  peak runners:    6 (linux 4, linux-big 2)",
        "  total time:      31.8 s",
    ]


def test_an_interrupted_summary_counts_the_jobs_that_did_not_finish() -> None:
    summary = DemoSummary(
        results={},
        pickup=[],
        peak_runners=0,
        peak_by_scale_set={},
        total=2.0,
        unfinished=3,
        interrupted=True,
    )
    assert summary_lines(summary)[:3] == [
        "demo interrupted: what ran so far",
        "  jobs run:        0, 3 not finished",
        "  pickup latency:  - (no job started)",
    ]
