"""Fleets for the planner's tests, written as a manifest would write them (camelCase)."""

from __future__ import annotations

import copy
from typing import Any

from runscaler.manifest.models import Fleet

URL = "https://github.com/acme"


def scale_set(name: str = "linux", **fields: Any) -> dict[str, Any]:
    """A scale set document; `github` defaults to acme with an env: token."""
    document: dict[str, Any] = {
        "name": name,
        "github": {"url": URL, "auth": {"token": "env:GITHUB_TOKEN"}},
    }
    document.update(copy.deepcopy(fields))
    return document


def fleet(*scale_sets: dict[str, Any], name: str = "acme-ci") -> Fleet:
    return Fleet.model_validate(
        {
            "apiVersion": "runscaler/v1",
            "kind": "Fleet",
            "metadata": {"name": name},
            "scaleSets": list(scale_sets),
        }
    )


def rich_pair() -> tuple[Fleet, Fleet]:
    """Before and after with every kind of change, for golden renderings."""
    before = fleet(
        scale_set("linux-arm", maxRunners=10, docker={"image": "a:1"}),
        scale_set("old"),
        scale_set("steady", labels=["self-hosted"]),
        scale_set(
            "secrets",
            github={"url": URL, "auth": {"token": "ghp_oldliteraltoken"}},
            docker={"env": {"API_KEY": "literal-old-value", "REGION": "eu"}},
        ),
        scale_set("mac", backend="tart", tart={"poolSize": 1}, drainTimeout="1h"),
    )
    after = fleet(
        scale_set("linux-x64", maxRunners=20, labels=["self-hosted", "linux"]),
        scale_set("linux-arm", maxRunners=4, docker={"image": "a:2", "memory": "4g"}),
        scale_set("steady", labels=["self-hosted"]),
        scale_set(
            "secrets",
            github={"url": URL, "auth": {"token": "ghp_newliteraltoken"}},
            docker={"env": {"API_KEY": "literal-new-value", "REGION": "env:REGION"}},
        ),
        scale_set(
            "mac",
            backend="tart",
            tart={"poolSize": 1},
            docker={"image": "never-used:1"},
            suspended=True,
            drainTimeout="1h",
        ),
    )
    return before, after
