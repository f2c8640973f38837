"""Config URL → scope → API base, and Actions service URL joining (protocol.md §1.1, §1.4)."""

from __future__ import annotations

import pytest

from runscaler.github.urls import (
    FORCE_GHES_ENV,
    actions_url,
    api_base,
    registration_token_path,
    with_path_suffix,
    with_query,
)
from runscaler.manifest.values import parse_config_url


@pytest.mark.parametrize(
    ("config_url", "expected"),
    [
        ("https://github.com/org/repo", "https://api.github.com"),
        ("https://www.github.com/org", "https://api.github.com"),
        ("https://GitHub.com/org/", "https://api.github.com"),
        ("http://github.localhost/org/repo", "http://api.github.localhost"),
        ("https://github.ghe.com/org/repo", "https://api.github.ghe.com"),
        ("https://acme.ghe.com/enterprises/acme", "https://api.acme.ghe.com"),
        ("https://my-instance.com/org/repo", "https://my-instance.com/api/v3"),
        ("https://ghes.example:8443/org", "https://ghes.example:8443/api/v3"),
        ("http://127.0.0.1:8123/acme", "http://127.0.0.1:8123/api/v3"),
    ],
)
def test_api_base_follows_the_hosted_rule(config_url: str, expected: str) -> None:
    assert api_base(parse_config_url(config_url), environ={}) == expected


def test_force_ghes_makes_a_hosted_name_an_enterprise_server() -> None:
    config = parse_config_url("https://test.ghe.com/org/repo")
    assert api_base(config, environ={FORCE_GHES_ENV: ""}) == "https://test.ghe.com/api/v3"


@pytest.mark.parametrize(
    ("config_url", "path"),
    [
        ("https://github.com/acme", "/orgs/acme/actions/runners/registration-token"),
        ("https://github.com/acme/app", "/repos/acme/app/actions/runners/registration-token"),
        (
            "https://github.com/enterprises/big",
            "/enterprises/big/actions/runners/registration-token",
        ),
        (
            "https://github.com/Enterprises/big",
            "/enterprises/big/actions/runners/registration-token",
        ),
    ],
)
def test_registration_token_path_follows_the_scope(config_url: str, path: str) -> None:
    assert registration_token_path(parse_config_url(config_url)) == path


def test_actions_url_keeps_the_tenant_path_and_adds_the_api_version() -> None:
    url = actions_url("https://pipelines.example/tenant/123/", "my/path", {"name": "banana"})
    assert url == "https://pipelines.example/tenant/123/my/path?api-version=6.0-preview&name=banana"


def test_actions_url_sorts_the_query_and_keeps_a_trailing_slash() -> None:
    url = actions_url(
        "http://127.0.0.1:9/t",
        "_apis/runtime/runnergroups/",
        {"runnerGroupId": "1", "name": "a b"},
    )
    assert url == (
        "http://127.0.0.1:9/t/_apis/runtime/runnergroups/"
        "?api-version=6.0-preview&name=a+b&runnerGroupId=1"
    )


def test_actions_url_keeps_an_explicit_api_version() -> None:
    url = actions_url("https://h/t", "x", {"api-version": "7.0"})
    assert url == "https://h/t/x?api-version=7.0"


def test_actions_url_keeps_the_base_query() -> None:
    assert (
        actions_url("https://h/t?tenant=9", "x") == "https://h/t/x?api-version=6.0-preview&tenant=9"
    )


def test_queue_urls_get_the_cursor_and_the_message_id() -> None:
    queue = "https://broker.example/scalesets/message?sessionId=abc"
    assert with_query(queue, {"lastMessageId": "7"}) == (
        "https://broker.example/scalesets/message?sessionId=abc&lastMessageId=7"
    )
    assert with_path_suffix(queue, "42") == (
        "https://broker.example/scalesets/message/42?sessionId=abc"
    )
