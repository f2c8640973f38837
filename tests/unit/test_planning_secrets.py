"""Literal secrets never reach a plan, in any rendering; secret refs are shown as written."""

from __future__ import annotations

import json

import pytest

from runscaler.console.plans import render_json, render_markdown, render_text
from runscaler.planning import SENSITIVE, display_values, plan
from tests.unit.planfleets import URL, fleet, rich_pair, scale_set

LITERALS = ("ghp_oldliteraltoken", "ghp_newliteraltoken", "literal-old-value", "literal-new-value")


def renderings(before: object, after: object) -> list[str]:
    result = plan(before, after)  # type: ignore[arg-type]
    return [render_text(result), render_markdown(result), render_json(result)]


def test_no_rendering_of_the_rich_plan_contains_a_literal_secret() -> None:
    for text in renderings(*rich_pair()):
        for literal in LITERALS:
            assert literal not in text
        assert "(sensitive)" in text


def test_a_changed_literal_token_shows_only_that_it_changed() -> None:
    before = fleet(scale_set(github={"url": URL, "auth": {"token": "ghp_aaaaaaaaaaaa"}}))
    after = fleet(scale_set(github={"url": URL, "auth": {"token": "ghp_bbbbbbbbbbbb"}}))

    result = plan(before, after)

    assert "      ~ github.auth.token = (sensitive)  # reconnects this scale set only" in (
        render_text(result).splitlines()
    )
    assert result.changes[0].effects.credentials


def test_an_unchanged_literal_token_is_no_change() -> None:
    same = {"url": URL, "auth": {"token": "ghp_aaaaaaaaaaaa"}}

    assert not plan(fleet(scale_set(github=same)), fleet(scale_set(github=same))).has_changes


@pytest.mark.parametrize(
    ("old", "new", "line"),
    [
        ("env:OLD", "env:NEW", '~ github.auth.token = "env:OLD" -> "env:NEW"'),
        (
            "ghp_literal123",
            "file:/run/token",
            '~ github.auth.token = (sensitive) -> "file:/run/token"',
        ),
        (
            "file:token.txt",
            "ghp_literal123",
            '~ github.auth.token = "file:token.txt" -> (sensitive)',
        ),
    ],
)
def test_secret_refs_are_shown_as_written_and_literals_as_sensitive(
    old: str, new: str, line: str
) -> None:
    before = fleet(scale_set(github={"url": URL, "auth": {"token": old}}))
    after = fleet(scale_set(github={"url": URL, "auth": {"token": new}}))

    text = render_text(plan(before, after))

    assert line in text
    assert "ghp_literal123" not in text


def test_an_app_private_key_literal_is_sensitive_everywhere() -> None:
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----"
    app = {"clientId": "Iv1", "installationId": 3, "privateKey": pem}
    after = fleet(scale_set(github={"url": URL, "auth": {"app": app}}))

    result = plan(fleet(scale_set()), after)

    change = result.changes[0]
    assert {c.path: c.after for c in change.changes}["github.auth.app.privateKey"] is SENSITIVE
    for text in renderings(fleet(scale_set()), after) + renderings(None, after):
        assert "MIIEowIBAAKCAQEA" not in text


def test_docker_env_values_are_redacted_unless_they_are_refs() -> None:
    after = fleet(scale_set(docker={"env": {"TOKEN": "hunter2-secret", "FROM": "env:FROM_ENV"}}))

    text = render_text(plan(None, after))
    document = json.loads(render_json(plan(None, after)))

    assert "+ docker.env.TOKEN  = (sensitive)" in text
    assert '+ docker.env.FROM   = "env:FROM_ENV"' in text
    assert document["changes"][0]["after"]["docker"]["env"] == {
        "TOKEN": "(sensitive)",
        "FROM": "env:FROM_ENV",
    }


def test_a_removed_env_literal_stays_redacted() -> None:
    before = fleet(scale_set(docker={"env": {"TOKEN": "hunter2-secret"}}))

    text = render_text(plan(before, fleet(scale_set())))

    assert "- docker.env.TOKEN = (sensitive)" in text
    assert "hunter2" not in text


def test_a_proxy_url_with_credentials_is_sensitive() -> None:
    github = {"url": URL, "auth": {"token": "env:T"}, "proxy": "http://user:pa55word@proxy:3128"}

    values = display_values(fleet(scale_set(github=github)).scale_sets[0])

    assert values["github"]["proxy"] is SENSITIVE
    assert "pa55word" not in render_json(plan(None, fleet(scale_set(github=github))))


def test_json_before_and_after_redact_literals_on_both_sides() -> None:
    document = json.loads(render_json(plan(*rich_pair())))

    secrets = next(c for c in document["changes"] if c["name"] == "secrets")
    for side in ("before", "after"):
        assert secrets[side]["github"]["auth"]["token"] == "(sensitive)"
        assert secrets[side]["docker"]["env"]["API_KEY"] == "(sensitive)"
    assert secrets["before"]["docker"]["env"]["REGION"] == "(sensitive)"  # a literal too
    assert secrets["after"]["docker"]["env"]["REGION"] == "env:REGION"
