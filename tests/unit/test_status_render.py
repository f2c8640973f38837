"""The status rendering by table: header line, rows, escaping, and lenient reading of `/status`."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console, RenderableType

from runscaler.console.status import ago, header, render_json, render_text, safe
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
    assert text.splitlines()[-1].split() == ["linux", "-", "-", "-", "-", "-", "-", "-", "-"]


def test_json_is_indented_and_ends_with_a_newline() -> None:
    assert render_json({"fleet": "acme-ci"}) == '{\n  "fleet": "acme-ci"\n}\n'
