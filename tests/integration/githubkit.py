"""What the GitHub client's integration tests share: the simulator, a client, a request log.

`RecordingTransport` is the real httpx transport over loopback that also notes each request
(method, path, query, headers), so tests can count attempts and refreshes exactly and collect
every credential that went over the wire.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from runscaler.github.auth import CredentialsSource, TokenCredentials
from runscaler.github.client import ScaleSetClient
from runscaler.github.retrying import RetryPolicy
from runscaler.simulator.server import Simulator, SimulatorOptions, serve_simulator
from tests.integration.simkit import QUICK

FAST = RetryPolicy(attempts=5, wait_min=0.01, wait_max=0.05)
TOKEN = "ghp_integration-test-token-0123456789"


@dataclass
class Sent:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    status: int = 0  # 0 until answered (or when the connection failed)
    body: bytes = b""


class RecordingTransport(httpx.AsyncHTTPTransport):
    """Real HTTP, plus a log of every request sent."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[Sent] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        sent = Sent(
            method=request.method,
            path=request.url.path,
            query=request.url.query.decode(),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=await request.aread(),
        )
        self.sent.append(sent)
        response = await super().handle_async_request(request)
        sent.status = response.status_code
        return response

    def matching(self, method: str, path: str, *, status: int | None = None) -> list[Sent]:
        """Requests with this method whose path matches the regex `path` (searched), and
        that got `status` when given."""
        pattern = re.compile(path)
        return [
            s
            for s in self.sent
            if s.method == method
            and pattern.search(s.path)
            and (status is None or s.status == status)
        ]

    def count(self, method: str, path: str, *, status: int | None = None) -> int:
        return len(self.matching(method, path, status=status))

    def credentials_seen(self) -> set[str]:
        """Every token sent in an Authorization header."""
        seen = set()
        for sent in self.sent:
            value = sent.headers.get("authorization", "")
            if " " in value:
                seen.add(value.split(" ", 1)[1])
        return seen


@asynccontextmanager
async def simulator(**options: Any) -> AsyncIterator[Simulator]:
    settings: dict[str, Any] = {"poll_wait": 0.2, "redispatch_interval": 60.0, "realism": QUICK}
    settings.update(options)
    async with serve_simulator(SimulatorOptions(**settings)) as sim:
        yield sim


def make_client(
    sim: Simulator,
    *,
    credentials: CredentialsSource | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    retry: RetryPolicy = FAST,
    org: str = "acme",
    timeout: float = 30.0,
) -> ScaleSetClient:
    return ScaleSetClient(
        config_url=sim.config_url(org),
        credentials=credentials or (lambda: TokenCredentials(TOKEN)),
        retry=retry,
        timeout=timeout,
        transport=transport,
    )


async def control(sim: Simulator, method: str, path: str, body: Any = None) -> Any:
    """Call the simulator's control API (`/_sim/...`) and return its JSON answer."""
    async with httpx.AsyncClient(base_url=sim.url) as http:
        response = await http.request(method, path, json=body)
    response.raise_for_status()
    return response.json() if response.content else None


async def add_fault(sim: Simulator, **fault: Any) -> int:
    return int((await control(sim, "POST", "/_sim/faults", fault))["id"])


async def fault_hits(sim: Simulator, fault_id: int) -> int:
    faults = (await control(sim, "GET", "/_sim/faults"))["faults"]
    return int(next(f["hits"] for f in faults if f["id"] == fault_id))


async def take_job_as_runner(sim: Simulator, encoded_jit_config: str) -> dict[str, str]:
    """Do what the stand-in runner does first: present its credential and take a job."""
    files = json.loads(base64.b64decode(encoded_jit_config))
    runner = json.loads(base64.b64decode(files[".runner"]))
    credentials = json.loads(base64.b64decode(files[".credentials"]))
    async with httpx.AsyncClient() as http:
        response = await http.get(
            f"{runner['ServerUrlV2'].rstrip('/')}/runners/{runner['AgentId']}/job",
            params={"wait": "5"},
            headers={"Authorization": f"Bearer {credentials['Data']['clientId']}"},
        )
    response.raise_for_status()
    return dict(line.split("=", 1) for line in response.text.splitlines() if "=" in line)
