"""The plan's renderings against golden files, and the text layout rules they rely on.

Regenerate the golden files deliberately with `RUNSCALER_UPDATE_GOLDEN=1 pytest
tests/unit/test_plan_render.py`, then review the diff like any other change.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from runscaler.console.plans import (
    NO_CHANGES,
    render_json,
    render_markdown,
    render_text,
    render_value,
)
from runscaler.planning import SENSITIVE, Plan, plan
from tests.unit.planfleets import fleet, rich_pair, scale_set

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("RUNSCALER_UPDATE_GOLDEN") == "1"

RENDERERS: dict[str, Callable[[Plan], str]] = {
    "txt": render_text,
    "md": render_markdown,
    "json": render_json,
}


def plans() -> dict[str, Plan]:
    unchanged = fleet(scale_set("linux"), scale_set("mac", backend="tart"))
    return {"rich": plan(*rich_pair()), "no-changes": plan(unchanged, unchanged)}


@pytest.mark.parametrize("suffix", sorted(RENDERERS))
@pytest.mark.parametrize("name", ["rich", "no-changes"])
def test_rendering_matches_the_golden_file(name: str, suffix: str) -> None:
    rendered = RENDERERS[suffix](plans()[name])
    golden = GOLDEN / f"plan-{name}.{suffix}"
    if UPDATE:
        golden.write_text(rendered, encoding="utf-8")
    assert rendered == golden.read_text(encoding="utf-8")


SPEC_EXAMPLE = """\
runscaler will perform the following actions:

  # scale set "linux-x64" (https://github.com/acme) will be created
  + scale set "linux-x64"
      + maxRunners = 20
      + labels     = ["self-hosted", "linux"]

  # scale set "linux-arm" (https://github.com/acme) will be updated in-place
  ~ scale set "linux-arm"
      ~ maxRunners   = 10 -> 4                 # surplus idle runners removed; busy runners finish
      ~ docker.image = "a:1" -> "a:2"          # rolling: idle runners replaced; busy runners finish

  # scale set "old" (https://github.com/acme) will be drained and deleted
  - scale set "old"                            # busy runners get up to 6h to finish

Plan: 1 to add, 1 to change, 1 to destroy.
"""


def spec_plan() -> Plan:
    before = fleet(scale_set("linux-arm", maxRunners=10, docker={"image": "a:1"}), scale_set("old"))
    after = fleet(
        scale_set("linux-x64", maxRunners=20, labels=["self-hosted", "linux"]),
        scale_set("linux-arm", maxRunners=4, docker={"image": "a:2"}),
    )
    return plan(before, after)


def test_the_layout_is_exactly_manifest_md_s_example() -> None:
    result = spec_plan()
    create = result.changes[0]
    by_path = {c.path: c for c in create.changes}
    # The example leaves out the create's credentials and lists maxRunners first.
    shown = replace(create, changes=(by_path["maxRunners"], by_path["labels"]))

    assert render_text(replace(result, changes=(shown, *result.changes[1:]))) == SPEC_EXAMPLE


def test_a_create_also_lists_its_credentials_and_notes_stay_in_one_column() -> None:
    text = render_text(spec_plan())

    assert text.splitlines()[4:7] == [
        '      + github.auth.token = "env:GITHUB_TOKEN"',
        '      + labels            = ["self-hosted", "linux"]',
        "      + maxRunners        = 20",
    ]
    lines = text.splitlines()
    notes = [line.index("  # ") for line in lines if line.startswith(("      ~", "  -"))]
    labels = lines[5]  # the longest line: the notes' column is two spaces past it
    assert notes == [len(labels)] * 3


def test_no_changes_is_one_line() -> None:
    same = fleet(scale_set())

    assert render_text(plan(same, same)) == NO_CHANGES + "\n"


def test_an_empty_fleet_against_nothing_has_no_changes() -> None:
    assert render_text(plan(None, fleet())) == NO_CHANGES + "\n"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("a:1", '"a:1"'),
        (["self-hosted", "linux"], '["self-hosted", "linux"]'),
        (10, "10"),
        (2.5, "2.5"),
        (None, "null"),
        (True, "true"),
        ("6h", '"6h"'),
        (SENSITIVE, "(sensitive)"),
        ("\x1b[31mred\x1b[0m", '"\\u001b[31mred\\u001b[0m"'),
        ("csi\x9bJ", '"csi\\u009bJ"'),
        ("bidi\u202eevil", '"bidi\\u202eevil"'),
        ("caf\u00e9", '"caf\u00e9"'),
    ],
)
def test_values_render_json_like_with_control_characters_escaped(value: object, text: str) -> None:
    assert render_value(value) == text


def test_a_hostile_label_cannot_reach_the_terminal_raw() -> None:
    after = fleet(scale_set(labels=["ok\x1b]0;pwned\x07"]))

    text = render_text(plan(None, after))

    assert "\x1b" not in text and "\x07" not in text
    assert '["ok\\u001b]0;pwned\\u0007"]' in text


def test_a_very_long_line_keeps_its_note_beside_it_without_moving_the_others() -> None:
    long_image = "registry.example.com/" + "x" * 80 + ":1"
    after = fleet(scale_set(maxRunners=2, docker={"image": long_image}))

    lines = render_text(plan(fleet(scale_set()), after)).splitlines()

    resize = next(line for line in lines if "maxRunners" in line)
    image = next(line for line in lines if "docker.image" in line)
    assert resize.index("#") < 60
    assert image.endswith(
        f'-> "{long_image}"  # rolling: idle runners replaced; busy runners finish'
    )


def test_markdown_fences_the_text_plan_under_a_summary_heading() -> None:
    result = plan(*rich_pair())

    markdown = render_markdown(result)

    heading, blank, *body = markdown.splitlines()
    assert heading == "### runscaler plan for fleet `acme-ci`: 1 to add, 3 to change, 1 to destroy"
    assert blank == ""
    assert body[0] == "```text" and body[-1] == "```"
    assert "\n".join(body[1:-1]) + "\n" == render_text(result)


def test_markdown_uses_a_longer_fence_when_a_value_contains_backticks() -> None:
    result = plan(None, fleet(scale_set(labels=["a```b"])))

    markdown = render_markdown(result)

    assert "\n````text\n" in markdown and markdown.endswith("\n````\n")


def test_json_has_the_documented_shape() -> None:
    document = json.loads(render_json(plan(*rich_pair())))

    assert document["format_version"] == "1"
    assert document["summary"] == {"add": 1, "change": 3, "destroy": 1}
    arm = next(c for c in document["changes"] if c["name"] == "linux-arm")
    assert arm["actions"] == ["update"]
    assert arm["url"] == "https://github.com/acme"
    assert arm["changed"] == ["maxRunners", "docker.image", "docker.memory"]
    assert arm["before"]["maxRunners"] == 10 and arm["after"]["maxRunners"] == 4
    assert arm["after"]["docker"]["memory"] == "4GiB"
    assert arm["notes"] == [
        "surplus idle runners removed; busy runners finish",
        "rolling: idle runners replaced; busy runners finish",
    ]
    assert [c["actions"] for c in document["changes"]] == [
        ["create"],
        ["update"],
        ["update"],
        ["update"],
        ["delete"],
        ["no-op"],
    ]
