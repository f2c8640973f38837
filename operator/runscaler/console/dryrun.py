"""Rendering of `runscaler run --dry-run`: a table on stdout, one line per failure on stderr."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from runscaler.engine.dryrun import DryRunResult


def render_dry_run(results: Sequence[DryRunResult]) -> None:
    table = Table(title="runscaler run --dry-run: nothing was created")
    for column in (
        "scale set",
        "url",
        "credentials",
        "runner group",
        "scale set on GitHub",
        "backend",
    ):
        table.add_column(column, overflow="fold")
    for result in results:
        table.add_row(
            escape(result.name),
            escape(result.url),
            escape(result.credentials or "-"),
            escape(result.runner_group or "-"),
            escape(result.scale_set or "-"),
            escape(result.backend or ("FAILED" if not result.ok else "-")),
        )
    console = Console(soft_wrap=False)
    if not console.is_terminal:
        console = Console(soft_wrap=False, width=200)  # logs and CI: do not fold cells
    console.print(table)
    for result in results:
        if not result.ok:
            print(f"{result.name} ({result.url}): {result.problem}", file=sys.stderr)
