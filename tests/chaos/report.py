"""The chaos suite's report: a row per scenario and totals, then every loss spelled out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tests.chaos.accounting import Figures

COLUMNS = (
    ("enq", "enqueued"),
    ("done", "completed"),
    ("killed", "killed"),
    ("drained", "killed_by_drain"),
    ("unpicked", "never_picked_up"),
    ("stuck", "stuck"),
    ("dup", "duplicates"),
    ("tb", "tracebacks"),
    ("secrets", "secrets"),
    ("noconv", "unconverged"),
)


@dataclass
class SeedReport:
    seed: int
    scenarios: list[tuple[str, Figures]] = field(default_factory=list)
    containers_left: int = 0
    volumes_left: int = 0
    runner_starts: int = 0
    removed_within_3s: int = 0  # idle runners removed within 3 s of their start (churn)
    findings: list[str] = field(default_factory=list)  # crashes, hangs, leftovers, duplicates
    notes: list[str] = field(default_factory=list)  # printed, not losses

    def total(self) -> Figures:
        total = Figures()
        for _, figures in self.scenarios:
            for _, attr in COLUMNS:
                setattr(total, attr, getattr(total, attr) + getattr(figures, attr))
            total.details.extend(figures.details)
            total.peak_rss_mib = max(total.peak_rss_mib, figures.peak_rss_mib)
        converged = [f.converge for _, f in self.scenarios]
        total.converge = None if None in converged else max(converged, default=0.0)  # type: ignore[type-var]
        return total

    @property
    def losses(self) -> int:
        return self.total().losses + self.containers_left + self.volumes_left + len(self.findings)


def _row(label: str, figures: Figures) -> str:
    cells = [f"{getattr(figures, attr):>{max(len(head), 4)}}" for head, attr in COLUMNS]
    converge = "never" if figures.converge is None else f"{figures.converge:.1f}"
    return f"{label:<22} {' '.join(cells)} {converge:>8} {figures.peak_rss_mib:>7.1f}"


def header() -> str:
    heads = " ".join(f"{head:>{max(len(head), 4)}}" for head, _ in COLUMNS)
    return f"{'scenario':<22} {heads} {'conv(s)':>8} {'rss MiB':>7}"


def print_report(reports: Sequence[SeedReport], out: Callable[[str], None] = print) -> None:
    for report in reports:
        out(f"\n== seed {report.seed} ==")
        out(header())
        for name, figures in report.scenarios:
            out(_row(name, figures))
        out(_row("total", report.total()))
        out(
            f"containers left after the final shutdown: {report.containers_left}, "
            f"volumes left: {report.volumes_left}"
        )
        out(
            f"runner containers created: {report.runner_starts}, removed within 3 s without "
            f"a job: {report.removed_within_3s} (churn; reported, not a loss)"
        )
        for line in report.total().details + report.findings:
            out(f"  LOSS {line}")
        for line in report.notes:
            out(f"  note {line}")
        out(f"seed {report.seed}: {'OK' if report.losses == 0 else f'{report.losses} loss(es)'}")
    if len(reports) > 1:
        out("\n== all seeds ==")
        out(header())
        for report in reports:
            out(_row(f"seed {report.seed}", report.total()))
        bad = [r.seed for r in reports if r.losses]
        out(f"seeds with losses: {bad or 'none'}")
