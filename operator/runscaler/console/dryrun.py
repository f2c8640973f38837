"""Rendering of `runscaler run --dry-run`: a table on stdout, one line per failure on stderr.

The checks run in order (credentials, runner group, the scale set on GitHub, the backend) and
stop at the first that fails, so a failure is shown in the column of the check that failed and
the checks after it as not run: a reader sees at a glance which step broke for which scale set.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from runscaler.engine.dryrun import DryRunResult

COLUMNS = ("scale set", "url", "credentials", "runner group", "scale set on GitHub", "backend")
FAILED = "[bold red]FAILED[/]"
NOT_RUN = "[dim]not checked[/]"


def _checks(result: DryRunResult) -> list[str]:
    scale_set = result.scale_set
    if scale_set and result.labels:
        scale_set = f"{scale_set}; labels differ (see below)"
    found = [result.credentials, result.runner_group, scale_set, result.backend]
    cells: list[str] = []
    failed = False
    for value in found:
        if value:
            cells.append(escape(value))
        elif not result.ok and not failed:
            cells.append(FAILED)
            failed = True
        else:
            cells.append(NOT_RUN if failed else "-")
    return cells


def dry_run_table(results: Sequence[DryRunResult]) -> Table:
    table = Table(title="runscaler run --dry-run: nothing was created")
    for column in COLUMNS:
        table.add_column(column, overflow="fold")
    for result in results:
        table.add_row(escape(result.name), escape(result.url), *_checks(result))
    return table


def render_dry_run(results: Sequence[DryRunResult]) -> None:
    console = Console(soft_wrap=False)
    if not console.is_terminal:
        console = Console(soft_wrap=False, width=200)  # logs and CI: do not fold cells
    console.print(dry_run_table(results))
    for result in results:
        if not result.ok:
            print(f"{result.name} ({result.url}): {result.problem}", file=sys.stderr)
        if result.labels:
            print(f"{result.name} ({result.url}): warning: {result.labels}", file=sys.stderr)
