"""Literal secrets replaced by fingerprints, so a fleet can be compared without being revealed.

The running operator serves its applied fleet at `/-/fleet` for `runscaler plan`. A literal
secret in it (a token, a private key, a `docker.env` value written in the manifest) must never
leave the process, yet the plan must still tell an unchanged literal from a rotated one. Both
sides therefore replace every literal secret with `sensitive:` + the first 16 hex digits of its
sha256: equal secrets give equal fingerprints, and the planner shows a changed one as
`(sensitive)` like any other literal. Secret refs (`env:NAME`, `file:PATH`) are not secrets and
stay as written.

Both functions work on the fleet's JSON dump (`Fleet.model_dump(mode="json")`, camelCase), the
shape `/-/fleet` carries. `fleet_from_dump` turns such a dump back into a `Fleet`.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from runscaler.manifest.models import Fleet
from runscaler.manifest.values import format_size, is_literal_secret

PREFIX = "sensitive:"


def fingerprint(value: str) -> str:
    """`sensitive:` + the first 16 hex digits of the value's sha256."""
    return PREFIX + hashlib.sha256(value.encode()).hexdigest()[:16]


def _literal(value: Any) -> Any:
    if isinstance(value, str) and is_literal_secret(value):
        return fingerprint(value)
    return value


def _proxy(value: Any) -> Any:
    """A proxy URL with credentials in it keeps its host; the credentials become a fingerprint."""
    if not isinstance(value, str):
        return value
    parts = urlsplit(value)
    if "@" not in parts.netloc:
        return value
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{fingerprint(value)}@{host}"))


def _replace(data: dict[str, Any], path: tuple[str, ...], change: Callable[[Any], Any]) -> None:
    node: Any = data
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, dict) and path[-1] in node:
        node[path[-1]] = change(node[path[-1]])


def fingerprint_scale_set(data: dict[str, Any]) -> dict[str, Any]:
    """A dumped scale set with its literal secrets fingerprinted (a new dict)."""
    out = copy.deepcopy(data)
    _replace(out, ("github", "auth", "token"), _literal)
    _replace(out, ("github", "auth", "app", "privateKey"), _literal)
    _replace(out, ("github", "proxy"), _proxy)
    docker = out.get("docker")
    if isinstance(docker, dict) and isinstance(docker.get("env"), dict):
        docker["env"] = {name: _literal(value) for name, value in docker["env"].items()}
    return out


def fingerprint_fleet_dump(data: dict[str, Any]) -> dict[str, Any]:
    """A dumped fleet with every scale set's literal secrets fingerprinted (a new dict)."""
    out = {k: copy.deepcopy(v) for k, v in data.items() if k != "scaleSets"}
    scale_sets = data.get("scaleSets")
    if isinstance(scale_sets, list):
        out["scaleSets"] = [
            fingerprint_scale_set(s) if isinstance(s, dict) else s for s in scale_sets
        ]
    return out


def fleet_from_dump(data: dict[str, Any]) -> Fleet:
    """The `Fleet` a JSON dump describes (raises pydantic's `ValidationError` if it cannot)."""
    if not isinstance(data, dict):
        raise TypeError(f"a fleet is a JSON object, not {type(data).__name__}")
    loaded = copy.deepcopy(data)
    for scale_set in loaded.get("scaleSets") or ():
        docker = scale_set.get("docker") if isinstance(scale_set, dict) else None
        if not isinstance(docker, dict):
            continue
        memory = docker.get("memory")
        if isinstance(memory, int) and not isinstance(memory, bool):
            # Dumped in bytes, but a bare integer in a manifest means MiB.
            docker["memory"] = format_size(memory)
    return Fleet.model_validate(loaded)


def fingerprint_fleet(fleet: Fleet) -> Fleet:
    """The fleet with its literal secrets fingerprinted, as `/-/fleet` would serve it."""
    return fleet_from_dump(fingerprint_fleet_dump(fleet.model_dump(mode="json")))
