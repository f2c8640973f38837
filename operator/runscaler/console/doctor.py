"""`runscaler doctor` for people: one line per check, then the leftovers, then a summary.

Every check is `STATUS  SUBJECT  DETAIL` on one line, so `grep fail` finds the problems; lines
never wrap (logs and CI keep them whole). The leftovers are grouped by fleet with what
`--fix` would do, or did. Text from manifests, engines and GitHub is escaped for rich.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Console
from rich.markup import escape

from runscaler.doctoring.report import DoctorReport, Leftover, Outcome

_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red"}
_SUBJECT_WIDTH = 10
_KIND_WIDTH = 20


def check_lines(report: DoctorReport) -> list[str]:
    """The checks as plain text (what a log or a test sees)."""
    return [f"{c.status:<5} {c.subject:<{_SUBJECT_WIDTH}} {c.detail}" for c in report.checks]


def leftover_line(leftover: Leftover) -> str:
    return (
        f"  {leftover.kind:<{_KIND_WIDTH}} {leftover.name} on {leftover.where}: {leftover.reason}"
    )


def outcome_line(outcome: Outcome) -> str:
    leftover = outcome.leftover
    mark = "fixed" if outcome.removed else "kept "
    return f"  {mark} {leftover.kind:<{_KIND_WIDTH}} {leftover.name}: {outcome.detail}"


def summary_line(report: DoctorReport) -> str:
    parts = [f"{report.count('ok')} ok"]
    warnings, failed = report.count("warn"), report.count("fail")
    parts.append(f"{warnings} warning{'s' if warnings != 1 else ''}")
    parts.append(f"{failed} failed")
    found = len(report.leftovers)
    if report.fixing and found:
        fixed = sum(1 for o in report.outcomes if o.removed)
        parts.append(f"{fixed} of {found} leftover{'s' if found != 1 else ''} removed")
        if report.remaining:
            parts.append(f"{len(report.remaining)} remain")
    else:
        parts.append(f"{found} leftover{'s' if found != 1 else ''}")
    return "doctor: " + ", ".join(parts)


def report_lines(report: DoctorReport) -> list[str]:
    """Everything below the checks, as plain text."""
    lines: list[str] = []
    for fleet, found in _by_fleet(report.leftovers):
        lines += ["", f"leftovers of fleet {fleet} ({len(found)}):"]
        lines += [leftover_line(x) for x in found]
    if report.outcomes:
        lines += ["", "fixing:"]
        lines += [outcome_line(o) for o in report.outcomes]
    if report.leftovers and not report.fixing:
        lines += _fix_hints(report)
    if report.notes:
        lines += ["", *(f"note: {note}" for note in report.notes)]
    return lines


def _fix_hints(report: DoctorReport) -> list[str]:
    """The command that removes them; without a manifest it must name the fleet (a demo's,
    say, whose name nobody wrote down)."""
    if report.from_manifest:
        return ["run `runscaler doctor --fix` to remove them (a registered runner is kept)"]
    return [
        f"run `runscaler doctor --fix --fleet {fleet}` to remove them (a registered runner is kept)"
        for fleet, _ in _by_fleet(report.leftovers)
    ]


def _by_fleet(leftovers: Iterable[Leftover]) -> list[tuple[str, list[Leftover]]]:
    grouped: dict[str, list[Leftover]] = {}
    for leftover in leftovers:
        grouped.setdefault(leftover.fleet, []).append(leftover)
    return sorted(grouped.items())


def render_report(report: DoctorReport, console: Console | None = None) -> None:
    console = console or Console(soft_wrap=True, highlight=False, emoji=False)
    for check, line in zip(report.checks, check_lines(report), strict=True):
        status, rest = line[:5], line[5:]
        console.print(f"[{_STYLE[check.status]}]{escape(status)}[/]{escape(rest)}")
    for line in [*report_lines(report), "", summary_line(report)]:
        console.print(escape(line))
