"""A small stand-in for the running operator, served by the real HTTP server over loopback.

`FakeOperator` has exactly what `runscaler.server.OperatorView` asks for, with the answers set
by the test. `served_in_thread` runs the real `serve_http` on its own event loop in a thread,
so synchronous code (the CLI's commands, which use a blocking httpx client) can talk to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from runscaler.engine.status import FailureStatus, FleetStatus, ReloadStatus, ScaleSetStatus
from runscaler.server import serve_http

TOKEN = "ghp_literalTokenValue0123456789abcdef"
PRIVATE_KEY = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEliteralKeyBody0123456789\n-----END RSA PRIVATE KEY-----\n"
)
ENV_SECRET = "s3cret-env-literal-value"


@dataclass(frozen=True)
class Outcome:
    result: str
    generation: int
    error: str | None = None


def scale_set_status(name: str = "linux", **changes: Any) -> ScaleSetStatus:
    values: dict[str, Any] = {
        "name": name,
        "url": "https://github.com/acme",
        "key": "0123456789ab",
        "state": "listening",
        "desired": 3,
        "idle": 1,
        "busy": 2,
        "starting": 0,
        "assigned_jobs": 2,
        "running_jobs": 2,
        "registered_runners": 3,
        "min_runners": 1,
        "max_runners": 10,
        "organization": "acme",
        "repository": "",
        "enterprise": "",
    }
    values.update(changes)
    return ScaleSetStatus(**values)


def fleet_status(*scale_sets: ScaleSetStatus, **changes: Any) -> FleetStatus:
    values: dict[str, Any] = {
        "fleet": "acme-ci",
        "generation": 3,
        "manifest_path": "/srv/fleet/fleet.yaml",
        "manifest_sha256": "ab" * 32,
        "manifest_revision": "0123456789abcdef0123456789abcdef01234567",
        "reload": ReloadStatus(ok=True, at=1_700_000_000.0, error=None, success_at=1_700_000_000.0),
        "ready": True,
        "scale_sets": scale_sets or (scale_set_status(),),
        "reloads": {"success": 3, "failure": 1},
    }
    values.update(changes)
    return FleetStatus(**values)


def failure(reason: str = "exited_early") -> FailureStatus:
    return FailureStatus(reason, "runner exited with 1", 1, ("line one",), 1_700_000_000.0)


def applied_fleet() -> dict[str, Any]:
    """A fleet dump (`Fleet.model_dump(mode="json")`) with a literal of every secret kind."""
    return {
        "apiVersion": "runscaler/v1",
        "kind": "Fleet",
        "metadata": {"name": "acme-ci"},
        "scaleSets": [
            {
                "name": "linux",
                "github": {
                    "url": "https://github.com/acme",
                    "auth": {"token": TOKEN, "app": None},
                    "caBundle": None,
                    "proxy": None,
                },
                "maxRunners": 10,
                "docker": {"env": {"API_KEY": ENV_SECRET, "FROM_ENV": "env:API_KEY"}},
            },
            {
                "name": "app",
                "github": {
                    "url": "https://github.com/acme/web",
                    "auth": {
                        "token": None,
                        "app": {
                            "clientId": "Iv1.abc",
                            "installationId": 7,
                            "privateKey": PRIVATE_KEY,
                        },
                    },
                    "proxy": "http://user:proxy-password-1@127.0.0.1:3128",
                },
            },
        ],
    }


@dataclass
class FakeOperator:
    """`OperatorView` with canned answers; records the reloads it was asked for."""

    status: FleetStatus = field(default_factory=fleet_status)
    ready: bool = True
    outcome: Outcome = Outcome("applied", 4)
    fleet: dict[str, Any] | None = field(default_factory=applied_fleet)
    reloads: list[bool] = field(default_factory=list)
    not_serving: dict[str, str] = field(default_factory=dict)

    def snapshot(self) -> FleetStatus:
        return self.status

    def readiness(self) -> dict[str, str]:
        return dict(self.not_serving)

    async def reload(self, *, force: bool = True) -> Outcome:
        self.reloads.append(force)
        return self.outcome

    def applied_fleet(self) -> dict[str, Any] | None:
        return self.fleet


@contextlib.contextmanager
def served_in_thread(
    view: FakeOperator, registry: CollectorRegistry | None = None
) -> Iterator[str]:
    """The real server for `view` on 127.0.0.1 (a free port), in a thread; yields its URL."""
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        stop = asyncio.Event()
        box["stop"] = (asyncio.get_running_loop(), stop)
        async with serve_http(
            view, listen="127.0.0.1:0", registry=registry or CollectorRegistry()
        ) as url:
            box["url"] = url
            ready.set()
            await stop.wait()

    def run() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:  # surfaced to the test below
            box["error"] = exc
        finally:
            ready.set()

    thread = threading.Thread(target=run, name="fake-operator", daemon=True)
    thread.start()
    ready.wait(timeout=10)
    try:
        if "error" in box:
            raise box["error"]
        yield box["url"]
    finally:
        if "stop" in box:
            loop, stop = box["stop"]
            loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        assert not thread.is_alive(), "the fake operator's server did not stop"


def closed_port_url() -> str:
    """A loopback URL nothing listens on (the port was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"
