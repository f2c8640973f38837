"""Faults on demand over real loopback HTTP: status and Retry-After, delay, BOM, dropped
connections, counted uses; the control API is never faulted."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from runscaler.simulator.faults import parse_fault
from runscaler.simulator.server import Simulator, serve_simulator
from tests.integration.simkit import connect, sim_options

TOKEN_PATH = "/api/v3/orgs/acme/actions/runners/registration-token"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with serve_simulator(sim_options(poll_wait=0.2)) as simulator:
        yield simulator


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


async def fault(http: httpx.AsyncClient, sim: Simulator, **spec: Any) -> int:
    response = await http.post(f"{sim.url}/_sim/faults", json=spec)
    assert response.status_code == 200, response.text
    return int(response.json()["id"])


async def registration(http: httpx.AsyncClient, sim: Simulator) -> httpx.Response:
    return await http.post(f"{sim.url}{TOKEN_PATH}", headers={"Authorization": "Bearer t"})


async def test_a_status_fault_answers_n_times_then_the_real_answer(
    http: httpx.AsyncClient, sim: Simulator
) -> None:
    await fault(http, sim, method="POST", path="registration-token$", times=2, status=503)
    statuses = [(await registration(http, sim)).status_code for _ in range(3)]
    assert statuses == [503, 503, 201]


async def test_a_429_fault_carries_retry_after(http: httpx.AsyncClient, sim: Simulator) -> None:
    await fault(http, sim, path="registration-token", status=429, retryAfter=1)
    response = await registration(http, sim)
    assert (response.status_code, response.headers["Retry-After"]) == (429, "1")
    assert "VssServiceException" in response.json()["typeName"]


async def test_a_fault_only_matches_its_method(http: httpx.AsyncClient, sim: Simulator) -> None:
    await fault(http, sim, method="GET", path="registration-token", status=500)
    assert (await registration(http, sim)).status_code == 201


async def test_a_delay_fault_slows_the_real_answer(http: httpx.AsyncClient, sim: Simulator) -> None:
    await fault(http, sim, path="registration-token", delay=0.4)
    started = time.monotonic()
    response = await registration(http, sim)
    assert response.status_code == 201
    assert time.monotonic() - started >= 0.4


async def test_a_bom_fault_puts_a_bom_before_every_body(
    http: httpx.AsyncClient, sim: Simulator
) -> None:
    await fault(http, sim, path=".*", bom=True, times=-1)
    service = await connect(http, sim)  # the bootstrap itself reads BOM bodies
    created = await http.post(
        f"{service.url}_apis/runtime/runnerscalesets",
        params={"api-version": "6.0-preview"},
        headers={"Authorization": f"Bearer {service.admin}"},
        json={"name": "linux"},
    )
    assert created.content.startswith(b"\xef\xbb\xbf{")
    assert json.loads(created.content[3:])["name"] == "linux"
    deleted = await http.delete(
        f"{service.url}_apis/runtime/runnerscalesets/{json.loads(created.content[3:])['id']}",
        params={"api-version": "6.0-preview"},
        headers={"Authorization": f"Bearer {service.admin}"},
    )
    assert deleted.status_code == 204 and deleted.content == b""  # no body, no BOM


async def test_a_bom_fault_composes_with_a_status_fault(
    http: httpx.AsyncClient, sim: Simulator
) -> None:
    await fault(http, sim, path=".*", bom=True, times=-1)
    await fault(http, sim, path="registration-token", status=500)
    failed = await registration(http, sim)
    assert failed.status_code == 500 and failed.content.startswith(b"\xef\xbb\xbf")


async def test_a_drop_fault_closes_the_connection_without_an_answer(
    http: httpx.AsyncClient, sim: Simulator
) -> None:
    await fault(http, sim, path="registration-token", drop=True)
    with pytest.raises(httpx.RemoteProtocolError):
        await registration(http, sim)
    assert (await registration(http, sim)).status_code == 201


async def test_faults_are_listed_with_their_uses_and_cleared(
    http: httpx.AsyncClient, sim: Simulator
) -> None:
    fault_id = await fault(http, sim, path=".*", status=503, times=-1)
    await registration(http, sim)
    # The control API is never faulted, so a test can always look and clean up.
    listed = await http.get(f"{sim.url}/_sim/faults")
    assert listed.status_code == 200
    [entry] = listed.json()["faults"]
    assert (entry["id"], entry["hits"], entry["remaining"]) == (fault_id, 1, -1)
    assert (await http.delete(f"{sim.url}/_sim/faults")).status_code == 204
    assert (await registration(http, sim)).status_code == 201


async def test_a_malformed_fault_is_refused_with_the_reason(
    http: httpx.AsyncClient, sim: Simulator
) -> None:
    response = await http.post(f"{sim.url}/_sim/faults", json={"path": "x", "status": 700})
    assert (response.status_code, response.json()) == (
        400,
        {"error": "status must be an HTTP status code"},
    )


async def test_an_empty_fault_answers_200_with_no_body(
    http: httpx.AsyncClient, sim: Simulator
) -> None:
    await fault(http, sim, method="POST", path="registration-token$", empty=True)
    response = await registration(http, sim)
    assert (response.status_code, response.content) == (200, b"")
    assert (await registration(http, sim)).status_code == 201


async def test_an_after_fault_applies_the_request_and_loses_its_answer(
    http: httpx.AsyncClient, sim: Simulator
) -> None:
    service = await connect(http, sim)
    await fault(http, sim, method="POST", path="runnerscalesets$", status=503, after=True)
    lost = await service.request(
        "POST",
        "_apis/runtime/runnerscalesets",
        json={"name": "applied", "runnerGroupId": 1, "labels": [], "RunnerSetting": {}},
    )
    assert lost.status_code == 503
    assert [s["name"] for s in sim.state.snapshot()["scaleSets"]] == ["applied"]
    dropped = await fault(http, sim, method="POST", path="runnerscalesets$", drop=True, after=True)
    assert dropped > 0
    with pytest.raises(httpx.RemoteProtocolError):
        await service.request(
            "POST",
            "_apis/runtime/runnerscalesets",
            json={"name": "also", "runnerGroupId": 1, "labels": [], "RunnerSetting": {}},
        )
    assert len(sim.state.snapshot()["scaleSets"]) == 2


async def test_a_redirect_fault_points_at_the_same_url(
    http: httpx.AsyncClient, sim: Simulator
) -> None:
    await fault(http, sim, method="POST", path="registration-token$", status=307)
    response = await registration(http, sim)
    assert response.status_code == 307
    assert response.headers["Location"] == f"{sim.url}{TOKEN_PATH}"


def test_after_needs_the_answer_that_replaces_the_real_one() -> None:
    with pytest.raises(ValueError, match="after needs status or drop"):
        parse_fault({"path": "x", "after": True, "bom": True}, fault_id=1)
