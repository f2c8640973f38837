"""Speak to the simulator over real loopback HTTP as the scale set clients do (with httpx).

Deliberately independent of `runscaler.github`: these tests pin the simulator's wire protocol
(protocol.md), so they spell every request out.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import httpx

from runscaler.simulator.realism import Realism
from runscaler.simulator.server import Simulator, SimulatorOptions

# The live service's habits, every one on but 20 times shorter, so the suite stays fast.
QUICK = Realism(scale=0.05)


def sim_options(**options: Any) -> SimulatorOptions:
    """Simulator options for a test: the given ones, and QUICK habits unless `realism` is given."""
    options.setdefault("realism", QUICK)
    return SimulatorOptions(**options)


API_VERSION = {"api-version": "6.0-preview"}


def exception_type(response: httpx.Response) -> str:
    return str(response.json()["typeName"])


@dataclass
class QueueSession:
    """An open message session: the A7 answer plus the calls made with its token."""

    service: Service
    body: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.body["sessionId"])

    @property
    def token(self) -> str:
        return str(self.body["messageQueueAccessToken"])

    @property
    def scale_set_id(self) -> int:
        return int(self.body["runnerScaleSet"]["id"])

    async def poll(self, *, last: int = 0, capacity: int | None = 10) -> httpx.Response:
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Accept": "application/json; api-version=6.0-preview",
        }
        if capacity is not None:
            headers["X-ScaleSetMaxCapacity"] = str(capacity)
        params = {"lastMessageId": str(last)} if last > 0 else None
        return await self.service.http.get(
            self.body["messageQueueUrl"], params=params, headers=headers
        )

    async def delete(self, message_id: int) -> httpx.Response:
        return await self.service.http.delete(
            f"{self.body['messageQueueUrl']}/{message_id}",
            headers={"Authorization": f"Bearer {self.token}"},
        )

    async def acquire(self, ids: list[int]) -> httpx.Response:
        return await self.service.request(
            "POST",
            f"_apis/runtime/runnerscalesets/{self.scale_set_id}/acquirejobs",
            json=ids,
            token=self.token,
        )

    async def refresh(self) -> httpx.Response:
        response = await self.service.request(
            "PATCH", f"_apis/runtime/runnerscalesets/{self.scale_set_id}/sessions/{self.id}"
        )
        if response.status_code == 200:
            self.body = response.json()
        return response

    async def next_jobs(self, *, last: int = 0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Poll for one message, delete it, and return it with its decoded job messages."""
        response = await self.poll(last=last)
        assert response.status_code == 200, (response.status_code, response.text)
        message = response.json()
        assert (await self.delete(message["messageId"])).status_code == 204
        return message, json.loads(message["body"])


@dataclass
class Service:
    """The Actions service of one tenant, reached with the admin token from G3."""

    http: httpx.AsyncClient
    url: str
    admin: str

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        token: str | None = None,
    ) -> httpx.Response:
        return await self.http.request(
            method,
            self.url + path,
            params={**API_VERSION, **(params or {})},
            json=json,
            headers={"Authorization": f"Bearer {token or self.admin}"},
        )

    async def create_scale_set(self, name: str, labels: list[str] | None = None) -> dict[str, Any]:
        body = {
            "name": name,
            "runnerGroupId": 1,
            "labels": [{"type": "System", "name": label} for label in labels or [name]],
            "RunnerSetting": {"disableUpdate": True},
            "createdOn": "0001-01-01T00:00:00Z",
        }
        response = await self.request("POST", "_apis/runtime/runnerscalesets", json=body)
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def open_session(self, scale_set_id: int, *, owner: str = "test") -> QueueSession:
        response = await self.request(
            "POST",
            f"_apis/runtime/runnerscalesets/{scale_set_id}/sessions",
            json={"sessionId": "00000000-0000-0000-0000-000000000000", "ownerName": owner},
        )
        assert response.status_code == 200, response.text
        return QueueSession(self, response.json())

    async def jit_config(self, scale_set_id: int, name: str) -> dict[str, Any]:
        response = await self.request(
            "POST",
            f"_apis/runtime/runnerscalesets/{scale_set_id}/generatejitconfig",
            json={"name": name, "workFolder": ""},
        )
        assert response.status_code == 200, response.text
        return dict(response.json())


async def connect(
    http: httpx.AsyncClient, sim: Simulator, *, scope: str = "acme", token: str = "ghp_test"
) -> Service:
    """G1 then G3: the tenant's Actions service URL and an admin token."""
    path = f"enterprises/{scope[12:]}" if scope.startswith("enterprises/") else None
    if path is None:
        path = f"repos/{scope}" if "/" in scope else f"orgs/{scope}"
    registration = await http.post(
        f"{sim.url}/api/v3/{path}/actions/runners/registration-token",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert registration.status_code == 201, registration.text
    admin = await http.post(
        f"{sim.url}/api/v3/actions/runner-registration",
        headers={"Authorization": f"RemoteAuth {registration.json()['token']}"},
        json={"url": f"{sim.url}/{scope}", "runner_event": "register"},
    )
    assert admin.status_code == 200, admin.text
    return Service(http, admin.json()["url"], admin.json()["token"])


def runner_credentials(encoded: str) -> tuple[int, str, str]:
    """(runner id, broker URL, clientId) from an encodedJITConfig."""
    files = json.loads(base64.b64decode(encoded))
    runner = json.loads(base64.b64decode(files[".runner"]))
    credentials = json.loads(base64.b64decode(files[".credentials"]))
    return runner["AgentId"], runner["ServerUrlV2"], credentials["Data"]["clientId"]


def lines(response: httpx.Response) -> dict[str, str]:
    """A broker answer (`key=value` lines) as a dict."""
    assert response.status_code == 200, response.text
    return dict(line.split("=", 1) for line in response.text.splitlines() if "=" in line)
