"""Literal secrets as `/-/fleet` serves them, and what the planner makes of the fingerprints."""

from __future__ import annotations

from typing import Any

import pytest

from runscaler.fingerprints import (
    fingerprint,
    fingerprint_fleet,
    fingerprint_fleet_dump,
    fleet_from_dump,
)
from runscaler.manifest.models import Fleet
from runscaler.planning import SENSITIVE, plan


def fleet(
    *, token: str = "ghp_literal0123456789", env: dict[str, str] | None = None, **docker: Any
) -> Fleet:
    return Fleet.model_validate(
        {
            "apiVersion": "runscaler/v1",
            "kind": "Fleet",
            "metadata": {"name": "acme-ci"},
            "scaleSets": [
                {
                    "name": "linux",
                    "github": {"url": "https://github.com/acme", "auth": {"token": token}},
                    "drainTimeout": "1h30m",
                    "docker": {"env": env or {}, **docker},
                }
            ],
        }
    )


def test_a_fingerprint_is_sensitive_and_16_hex_digits_of_sha256() -> None:
    # sha256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
    assert fingerprint("abc") == "sensitive:ba7816bf8f01cfea"


@pytest.mark.parametrize(
    ("value", "served"),
    [
        ("ghp_literal", fingerprint("ghp_literal")),
        ("env:GITHUB_TOKEN", "env:GITHUB_TOKEN"),
        ("file:/run/secrets/token", "file:/run/secrets/token"),
        ("sensitive:0000000000000000", fingerprint("sensitive:0000000000000000")),
    ],
)
def test_only_literals_are_fingerprinted(value: str, served: str) -> None:
    dump = fleet(token=value, env={"KEY": value}).model_dump(mode="json")

    out = fingerprint_fleet_dump(dump)["scaleSets"][0]

    assert out["github"]["auth"]["token"] == served
    assert out["docker"]["env"] == {"KEY": served}


def test_the_dump_given_is_not_changed() -> None:
    dump = fleet().model_dump(mode="json")

    fingerprint_fleet_dump(dump)

    assert dump["scaleSets"][0]["github"]["auth"]["token"] == "ghp_literal0123456789"


@pytest.mark.parametrize(
    ("proxy", "kept"),
    [
        ("http://127.0.0.1:3128", True),
        ("http://user:pass-word@127.0.0.1:3128/", False),
    ],
)
def test_a_proxy_keeps_its_host_but_not_its_credentials(proxy: str, kept: bool) -> None:
    dump = fleet().model_dump(mode="json")
    dump["scaleSets"][0]["github"]["proxy"] = proxy

    served = fingerprint_fleet_dump(dump)["scaleSets"][0]["github"]["proxy"]

    if kept:
        assert served == proxy
    else:
        assert served == f"http://{fingerprint(proxy)}@127.0.0.1:3128/"
        assert "pass-word" not in served


def test_a_dump_reads_back_as_the_same_fleet_sizes_and_durations_included() -> None:
    original = fleet(memory="4GiB", cpus=1.5, env={"A": "env:A"})

    assert fleet_from_dump(original.model_dump(mode="json")) == original


def test_an_unchanged_literal_secret_plans_as_no_change() -> None:
    live = fleet_from_dump(fingerprint_fleet_dump(fleet().model_dump(mode="json")))

    result = plan(live, fingerprint_fleet(fleet()))

    assert not result.has_changes


def test_a_rotated_literal_secret_plans_as_a_sensitive_change() -> None:
    live = fleet_from_dump(fingerprint_fleet_dump(fleet().model_dump(mode="json")))

    result = plan(live, fingerprint_fleet(fleet(token="ghp_rotated9876543210")))

    (change,) = result.changes
    assert change.action == "update"
    assert [(c.path, c.before, c.after) for c in change.changes] == [
        ("github.auth.token", SENSITIVE, SENSITIVE)
    ]
    assert change.effects.credentials
