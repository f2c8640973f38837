"""The dry run's table: each failure in the column of the check that failed."""

from __future__ import annotations

import io

from rich.console import Console

from runscaler.console.dryrun import dry_run_table
from runscaler.engine.dryrun import DryRunResult

URL = "https://github.com/acme"


def rows(*results: DryRunResult) -> dict[str, list[str]]:
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(dry_run_table(results))
    table: dict[str, list[str]] = {}
    for line in out.getvalue().splitlines():
        cells = [c.strip() for c in line.strip("│┃").split("│")]
        if len(cells) == 6 and cells[0] not in ("", "scale set"):
            table[cells[0]] = cells[2:]
    return table


def test_each_failure_shows_in_the_column_of_the_check_that_failed() -> None:
    table = rows(
        DryRunResult("good", URL, ok=True, credentials="ok", runner_group="default (id 1)",
                     scale_set="would be created", backend="Docker 28 at unix://"),
        DryRunResult("token", URL, ok=False, problem="HTTP 401"),
        DryRunResult("group", URL, ok=False, credentials="ok", problem="no group"),
        DryRunResult("engine", URL, ok=False, credentials="ok", runner_group="default (id 1)",
                     scale_set="exists (id 4)", problem="engine down"),
    )  # fmt: skip

    assert table == {
        "good": ["ok", "default (id 1)", "would be created", "Docker 28 at unix://"],
        "token": ["FAILED", "not checked", "not checked", "not checked"],
        "group": ["ok", "FAILED", "not checked", "not checked"],
        "engine": ["ok", "default (id 1)", "exists (id 4)", "FAILED"],
    }


def test_markup_in_a_result_is_shown_literally() -> None:
    table = rows(DryRunResult("[red]x", URL, ok=True, credentials="ok [b]", backend="b"))

    assert table["[red]x"][0] == "ok [b]"
