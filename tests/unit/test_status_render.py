"""The status rendering by table: header line, rows, escaping, and lenient reading of `/status`."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console, RenderableType

from runscaler.console.status import ago, header, render_json, render_text, safe
from runscaler.engine.status import ReloadStatus
from tests.fakeoperator import fleet_status, scale_set_status


def shown(renderable: RenderableType, width: int = 160) -> str:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(renderable)
    return out.getvalue()


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "just now"), (-5, "just now"), (1, "1s ago"), (59, "59s ago"), (60, "1m ago"),
     (3599, "59m ago"), (3600, "1h ago"), (86399, "23h ago"), (86400 * 3, "3d ago")],
)  # fmt: skip
def test_ago(seconds: float, text: str) -> None:
    assert ago(1000.0, 1000.0 + seconds) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("plain", "plain"),
        ("[bold]x[/bold]", "[bold]x[/bold]"),
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        ("two\nlines\r", "two\\nlines\\r"),
    ],
)
def test_user_strings_are_shown_literally(value: str, text: str) -> None:
    assert shown(safe(value)).rstrip("\n") == text


def test_the_header_says_fleet_generation_revision_and_reload_age() -> None:
    data = fleet_status().to_json()

    text = shown(header(data, now=1_700_000_042.0)).rstrip("\n")

    assert text == ("fleet acme-ci · generation 3 · revision 0123456789ab · last reload ok 42s ago")


def test_the_header_leaves_out_a_revision_outside_git() -> None:
    data = fleet_status(manifest_revision=None).to_json()

    assert "revision" not in shown(header(data, now=1_700_000_000.0))


def test_an_empty_fleet_says_so() -> None:
    data = fleet_status(scale_sets=()).to_json()

    assert shown(render_text(data, now=0.0)).splitlines()[-1] == "no scale sets"


def test_scale_sets_of_one_name_on_two_urls_show_their_urls() -> None:
    data = fleet_status(
        scale_set_status("linux", url="https://github.com/acme"),
        scale_set_status("linux", url="https://github.com/other"),
    ).to_json()

    text = shown(render_text(data, now=0.0))

    assert "linux (https://github.com/acme)" in text
    assert "linux (https://github.com/other)" in text


def test_missing_fields_from_another_version_show_as_dashes() -> None:
    data: dict[str, Any] = {"fleet": "acme-ci", "scaleSets": [{"name": "linux"}]}

    text = shown(render_text(data, now=0.0))

    assert text.splitlines()[0] == "fleet acme-ci · generation - · last reload -"
    assert text.splitlines()[-1].split() == ["linux", "-", "-", "-", "-", "-", "-", "-"]


def test_json_is_indented_and_ends_with_a_newline() -> None:
    assert render_json({"fleet": "acme-ci"}) == '{\n  "fleet": "acme-ci"\n}\n'


def _no_word_is_broken(text: str, words: list[str]) -> None:
    flat = " ".join(text.split())
    for word in words:
        assert word in flat, f"{word!r} was broken across lines in:\n{text}"


def test_status_fits_80_columns_without_breaking_words() -> None:
    error = "cannot start runners: image ghcr.io/acme/runner:2 missing and pull failed: denied"
    data = fleet_status(
        scale_set_status("linux-x64"),
        scale_set_status("mac-arm", state="degraded", last_error=error),
        reload=ReloadStatus(
            ok=False, at=1_700_000_000.0, error="fleet.yaml:12:5: maxRunners: must be >= 1"
        ),
    ).to_json()

    text = shown(render_text(data, now=1_700_000_042.0, edited=True), width=80)

    assert max(len(line) for line in text.splitlines()) <= 80
    assert all(line == line.rstrip() for line in text.splitlines())
    _no_word_is_broken(
        text,
        [
            "42s ago",
            "(+ uncommitted edits)",
            "listening",
            "degraded",
            "ASSIGNED",
            "RUNNING",
            *error.split(),
        ],
    )
    lines = text.splitlines()
    assert lines[0] == "fleet acme-ci · generation 3 · revision 0123456789ab (+ uncommitted edits)"
    assert lines[1] == "last reload rejected 42s ago:"
    assert lines[2] == "fleet.yaml:12:5: maxRunners: must be >= 1"
    assert lines[-3] == "last errors:"
    assert lines[-2].startswith("  mac-arm: cannot start runners")
    assert lines[-1].startswith("  ")  # the error's second line keeps its indent


def test_a_narrow_terminal_wraps_the_header_between_parts() -> None:
    text = shown(header(fleet_status().to_json(), now=1_700_000_042.0), width=40)

    assert text.splitlines() == [
        "fleet acme-ci · generation 3",
        "revision 0123456789ab",
        "last reload ok 42s ago",
    ]


def _runner(name: str, **changes: Any) -> dict[str, Any]:
    runner: dict[str, Any] = {
        "name": name,
        "state": "idle",
        "since": 1_700_000_000.0,
        "jobId": None,
        "templateHash": "0123456789abcdef",
        "exitCode": None,
        "reason": None,
        "node": None,
    }
    runner.update(changes)
    return runner


def test_runners_are_listed_per_scale_set_when_the_operator_sends_them() -> None:
    data = fleet_status(scale_set_status("linux"), scale_set_status("big")).to_json()
    data["scaleSets"][0]["runners"] = [
        _runner("linux-a", state="busy", since=1_700_000_000.0 - 300, jobId="4711"),
        _runner("linux-b", state="failed", exitCode=1, reason="exited_early: exited 1", node="b"),
    ]
    del data["scaleSets"][1]["runners"]  # as from an operator that sends none for it

    text = shown(render_text(data, now=1_700_000_042.0, with_runners=True), width=80)

    lines = text.splitlines()
    at = lines.index("linux: 2 runners")
    assert lines[at + 2].split() == ["linux-a", "busy", "5m", "4711", "01234567", "-", "-"]
    assert lines[at + 3].split() == ["linux-b", "failed", "42s", "-", "01234567", "1", "b"]
    assert lines[at + 4] == "    linux-b: exited_early: exited 1"
    assert "big:" not in text  # an operator that sends no runners for it: nothing shown


def test_runners_from_an_older_operator_show_nothing() -> None:
    data = fleet_status().to_json()
    for item in data["scaleSets"]:
        del item["runners"]  # older operators send no runner list

    with_flag = shown(render_text(data, now=0.0, with_runners=True))

    assert with_flag == shown(render_text(data, now=0.0))
