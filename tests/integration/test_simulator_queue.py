"""The message queue and the job model over real loopback HTTP: long polls, redelivery, the
cursor, acquiring, re-dispatch, expiring tokens and sessions, GitHub-side deletion."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from runscaler.simulator.realism import Realism
from runscaler.simulator.server import Simulator, serve_simulator
from tests.integration.simkit import (
    QUICK,
    QueueSession,
    Service,
    connect,
    exception_type,
    lines,
    runner_credentials,
    sim_options,
)
from tests.waiting import eventually

POLL_WAIT = 0.3


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with serve_simulator(sim_options(poll_wait=POLL_WAIT)) as simulator:
        yield simulator


@pytest.fixture
async def service(http: httpx.AsyncClient, sim: Simulator) -> Service:
    return await connect(http, sim)


@pytest.fixture
async def session(service: Service) -> QueueSession:
    scale_set = await service.create_scale_set("linux", ["linux", "x64"])
    return await service.open_session(scale_set["id"], owner="test-host")


async def enqueue(http: httpx.AsyncClient, sim: Simulator, **spec: Any) -> list[int]:
    response = await http.post(f"{sim.url}/_sim/jobs", json=spec)
    assert response.status_code == 200, response.text
    return list(response.json()["ids"])


def types(jobs: list[dict[str, Any]]) -> list[str]:
    return [job["messageType"] for job in jobs]


# -- the long poll ---------------------------------------------------------------------------------


async def test_an_empty_queue_answers_202_after_the_poll_wait(session: QueueSession) -> None:
    started = time.monotonic()
    response = await session.poll()
    elapsed = time.monotonic() - started
    assert response.status_code == 202 and response.content == b""
    assert POLL_WAIT <= elapsed < POLL_WAIT + 1.5


async def test_a_queued_message_answers_at_once_with_statistics(
    http: httpx.AsyncClient, sim: Simulator, session: QueueSession
) -> None:
    [job] = await enqueue(http, sim, labels=["linux"], count=1, duration=1)
    started = time.monotonic()
    response = await session.poll()
    assert time.monotonic() - started < POLL_WAIT
    assert response.status_code == 200
    message = response.json()
    assert set(message) == {"messageId", "messageType", "body", "statistics"}
    assert message["messageType"] == "RunnerScaleSetJobMessages"
    assert isinstance(message["body"], str)
    [available] = json.loads(message["body"])
    assert available["messageType"] == "JobAvailable"
    assert available["runnerRequestId"] == job
    assert "/acquirejobs" in available["acquireJobUrl"]
    assert message["statistics"] == {
        "totalAvailableJobs": 1,
        "totalAcquiredJobs": 0,
        "totalAssignedJobs": 1,
        "totalRunningJobs": 0,
        "totalRegisteredRunners": 0,
        "totalBusyRunners": 0,
        "totalIdleRunners": 0,
    }


async def test_a_waiting_poll_is_answered_as_soon_as_a_job_arrives(http: httpx.AsyncClient) -> None:
    async with serve_simulator(sim_options(poll_wait=10)) as sim:
        service = await connect(http, sim)
        session = await service.open_session((await service.create_scale_set("linux"))["id"])
        waiting = asyncio.create_task(session.poll())
        await eventually(lambda: sim.state.snapshot()["sessions"][0]["polls"] == 1)
        started = time.monotonic()
        sim.add_jobs(["linux"])
        answered = await waiting
        assert answered.status_code == 200
        assert json.loads(answered.json()["body"])[0]["messageType"] == "JobAvailable"
        assert time.monotonic() - started < 5  # well before the 10 s poll wait


async def test_messages_are_redelivered_until_deleted_and_the_cursor_skips_them(
    http: httpx.AsyncClient, sim: Simulator, session: QueueSession
) -> None:
    await enqueue(http, sim, labels=["linux"])
    first = (await session.poll()).json()
    again = (await session.poll()).json()
    assert again["messageId"] == first["messageId"] and again["body"] == first["body"]
    skipped = await session.poll(last=first["messageId"])
    assert skipped.status_code == 202
    await enqueue(http, sim, labels=["linux"])
    second = (await session.poll(last=first["messageId"])).json()
    assert second["messageId"] > first["messageId"]
    deleted = await session.delete(second["messageId"])
    assert deleted.status_code == 204 and deleted.content == b""
    assert (await session.delete(second["messageId"])).status_code == 204
    assert (await session.poll(last=second["messageId"])).status_code == 202


async def test_a_message_holds_at_most_fifty_jobs(
    http: httpx.AsyncClient, sim: Simulator, session: QueueSession
) -> None:
    await enqueue(http, sim, labels=["linux"], count=60)
    message, jobs = await session.next_jobs()
    assert len(jobs) == 50 and message["statistics"]["totalAssignedJobs"] == 60
    _, rest = await session.next_jobs(last=message["messageId"])
    assert len(rest) == 10


async def test_polls_the_capacity_header_and_the_user_agent_are_recorded(
    http: httpx.AsyncClient, sim: Simulator, session: QueueSession
) -> None:
    await session.poll(capacity=7)
    await session.poll(capacity=None)  # absent: the last value stands
    state = (await http.get(f"{sim.url}/_sim/state")).json()
    [recorded] = state["sessions"]
    assert recorded["owner"] == "test-host"
    assert (recorded["maxCapacity"], recorded["polls"]) == (7, 2)
    assert recorded["userAgent"].startswith("python-httpx/")
    bad = await session.poll(capacity=-1)
    assert bad.status_code == 400


async def test_stopping_the_simulator_ends_waiting_long_polls_at_once(
    http: httpx.AsyncClient,
) -> None:
    async with serve_simulator(sim_options(poll_wait=30)) as sim:
        service = await connect(http, sim)
        session = await service.open_session((await service.create_scale_set("linux"))["id"])
        waiting = asyncio.create_task(session.poll())
        await eventually(lambda: sim.state.snapshot()["sessions"][0]["polls"] == 1)
        started = time.monotonic()
    assert (await waiting).status_code == 202
    assert time.monotonic() - started < 5


# -- acquiring, re-dispatch, tokens ---------------------------------------------------------------


async def test_acquiring_assigns_the_job_to_the_scale_set(
    http: httpx.AsyncClient, sim: Simulator, session: QueueSession
) -> None:
    [job] = await enqueue(http, sim, labels=["linux"])
    message, _ = await session.next_jobs()
    acquired = await session.acquire([job, 999])
    assert acquired.status_code == 200 and acquired.json() == {"count": 1, "value": [job]}
    next_message, jobs = await session.next_jobs(last=message["messageId"])
    assert types(jobs) == ["JobAssigned"]
    assert next_message["statistics"]["totalAcquiredJobs"] == 1
    assert sim.state.jobs[job].state == "acquired"


async def test_acquirejobs_takes_the_queue_token_not_the_admin_token(
    http: httpx.AsyncClient, sim: Simulator, session: QueueSession, service: Service
) -> None:
    [job] = await enqueue(http, sim, labels=["linux"])
    with_admin = await service.request(
        "POST", f"_apis/runtime/runnerscalesets/{session.scale_set_id}/acquirejobs", json=[job]
    )
    assert with_admin.status_code == 401


async def test_an_expired_queue_token_answers_401_until_the_session_is_refreshed(
    http: httpx.AsyncClient,
) -> None:
    async with serve_simulator(
        sim_options(poll_wait=POLL_WAIT, message_queue_token_ttl=0.4)
    ) as sim:
        service = await connect(http, sim)
        session = await service.open_session((await service.create_scale_set("linux"))["id"])
        [job] = sim.add_jobs(["linux"])
        message = (await session.poll()).json()

        async def expired() -> bool:
            return (await session.poll()).status_code == 401

        await eventually(expired, timeout=5, message="the queue token to expire")
        assert (await session.delete(message["messageId"])).status_code == 401
        assert (await session.acquire([job])).status_code == 401
        assert (await session.refresh()).status_code == 200
        assert (await session.poll()).status_code == 200
        assert (await session.acquire([job])).json()["value"] == [job]


async def test_expire_tokens_expires_queue_tokens_now(
    http: httpx.AsyncClient, sim: Simulator, session: QueueSession
) -> None:
    await http.post(f"{sim.url}/_sim/expire-tokens")
    assert (await session.poll()).status_code == 401


async def test_an_acquired_job_nobody_takes_is_cancelled_and_assigned_again(
    http: httpx.AsyncClient,
) -> None:
    async with serve_simulator(sim_options(poll_wait=POLL_WAIT, redispatch_interval=0.3)) as sim:
        service = await connect(http, sim)
        session = await service.open_session((await service.create_scale_set("linux"))["id"])
        [job] = sim.add_jobs(["linux"])
        message, _ = await session.next_jobs()
        await session.acquire([job])
        seen: list[tuple[str, str | None]] = []
        last = message["messageId"]
        while ("JobAssigned", None) not in seen[1:]:
            polled = await session.poll(last=last)
            if polled.status_code == 202:
                continue  # the bounce's JobCompleted comes late (a habit of the live service)
            message, jobs = await session.next_jobs(last=last)
            last = message["messageId"]
            seen += [(j["messageType"], j.get("result")) for j in jobs]
        assert seen[:3] == [
            ("JobAssigned", None),
            ("JobCompleted", "canceled"),
            ("JobAssigned", None),
        ]
        assert message["statistics"]["totalAssignedJobs"] == 1
        assert sim.state.jobs[job].redispatches >= 1


async def test_a_runner_of_the_scale_set_takes_an_acquired_job_and_cannot_be_removed(
    http: httpx.AsyncClient, sim: Simulator, session: QueueSession, service: Service
) -> None:
    [job] = await enqueue(http, sim, labels=["linux"], duration=30)
    await session.next_jobs()
    await session.acquire([job])
    jit = await service.jit_config(session.scale_set_id, "linux-1")
    runner_id, broker, client_id = runner_credentials(jit["encodedJITConfig"])
    assert broker == f"{sim.url}/_broker/"
    auth = {"Authorization": f"Bearer {client_id}"}
    denied = await http.get(f"{broker}runners/{runner_id}/job?wait=0")
    assert lines(denied) == {"state": "denied"}
    taken = lines(await http.get(f"{broker}runners/{runner_id}/job?wait=1", headers=auth))
    assert taken == {"state": "assigned", "job": str(job), "duration": "30.0", "name": "linux-1"}
    busy = await service.request("DELETE", f"_apis/distributedtask/pools/0/agents/{runner_id}")
    assert busy.status_code == 400 and "JobStillRunningException" in exception_type(busy)
    progress = await http.get(f"{broker}runners/{runner_id}/jobs/{job}?wait=0", headers=auth)
    assert lines(progress) == {"state": "running"}


# -- sessions that end, scale sets deleted on GitHub's side ----------------------------------------


async def test_a_session_nobody_polls_expires(http: httpx.AsyncClient) -> None:
    async with serve_simulator(sim_options(poll_wait=0.1, session_timeout=0.2)) as sim:
        service = await connect(http, sim)
        sid = (await service.create_scale_set("linux"))["id"]
        abandoned = await service.open_session(sid, owner="crashed")
        await eventually(lambda: not sim.state.sessions, timeout=5, message="session expiry")
        assert (await abandoned.poll()).status_code == 401
        assert (await service.open_session(sid, owner="restarted")).body["ownerName"] == "restarted"


async def test_a_held_session_conflicts_until_released(
    http: httpx.AsyncClient, sim: Simulator, service: Service
) -> None:
    sid = (await service.create_scale_set("linux"))["id"]
    held = await http.post(f"{sim.url}/_sim/hold-session", json={"name": "linux"})
    assert held.status_code == 200
    path = f"_apis/runtime/runnerscalesets/{sid}/sessions"
    assert (await service.request("POST", path, json={"ownerName": "op"})).status_code == 409
    released = await http.post(f"{sim.url}/_sim/release-session", json={"name": "linux"})
    assert released.json() == {"released": True}
    assert (await service.request("POST", path, json={"ownerName": "op"})).status_code == 200
    unknown = await http.post(f"{sim.url}/_sim/hold-session", json={"name": "nope"})
    assert (unknown.status_code, unknown.json()) == (404, {"error": "no scale set named nope"})


async def test_a_scale_set_deleted_on_githubs_side_is_gone_and_its_jobs_wait_again(
    http: httpx.AsyncClient, sim: Simulator, service: Service, session: QueueSession
) -> None:
    [job] = await enqueue(http, sim, labels=["linux"])
    await session.next_jobs()
    await session.acquire([job])
    await service.jit_config(session.scale_set_id, "linux-1")
    deleted = await http.post(f"{sim.url}/_sim/delete-scale-set", json={"name": "linux"})
    assert deleted.json() == {"id": session.scale_set_id}
    state = (await http.get(f"{sim.url}/_sim/state")).json()
    assert state["scaleSets"] == [] and state["sessions"] == [] and state["runners"] == []
    assert state["deletedScaleSets"] == [{"id": session.scale_set_id, "name": "linux"}]
    assert [j["state"] for j in state["jobs"]] == ["queued"]
    sets = f"_apis/runtime/runnerscalesets/{session.scale_set_id}"
    for response in (
        await service.request("GET", sets),
        await service.request("POST", f"{sets}/sessions", json={"ownerName": "op"}),
        await session.poll(),
    ):
        assert response.status_code == 404
        assert "RunnerScaleSetNotFoundException" in exception_type(response)
    replacement = await service.create_scale_set("linux-again", ["linux"])
    assert sim.state.jobs[job].scale_set_id == replacement["id"]


# -- the control API -----------------------------------------------------------------------------


async def test_the_state_has_the_documented_shape(
    http: httpx.AsyncClient, sim: Simulator, service: Service, session: QueueSession
) -> None:
    await enqueue(http, sim, labels=["linux"], duration=1)
    await enqueue(http, sim, labels=["mac"])
    await service.jit_config(session.scale_set_id, "linux-1")
    state = (await http.get(f"{sim.url}/_sim/state")).json()
    assert set(state) == {"scaleSets", "sessions", "runners", "jobs", "deletedScaleSets"}
    [scale_set] = state["scaleSets"]
    assert {"id", "name", "labels", "runnerGroupId", "statistics"} <= set(scale_set)
    assert scale_set["labels"] == ["linux", "x64"]
    assert len(scale_set["statistics"]) == 7
    [recorded] = state["sessions"]
    assert {"id", "scaleSetId", "owner", "maxCapacity", "polls"} <= set(recorded)
    [runner] = state["runners"]
    assert {"id", "name", "scaleSetId", "job"} <= set(runner) and runner["job"] is None
    linux, mac = state["jobs"]
    assert {
        "id",
        "labels",
        "state",
        "scaleSetId",
        "runner",
        "result",
        "queuedAt",
        "startedAt",
        "finishedAt",
    } <= set(linux)
    assert (linux["state"], linux["scaleSetId"]) == ("available", scale_set["id"])
    assert (mac["state"], mac["scaleSetId"], mac["startedAt"]) == ("queued", None, None)
    assert linux["queuedAt"].endswith("Z")


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"count": 1}, "labels must be a non-empty list of strings"),
        ({"labels": []}, "labels must be a non-empty list of strings"),
        ({"labels": ["x"], "count": 0}, "count must be an integer from 1 to 10000"),
        ({"labels": ["x"], "duration": -1}, "duration must be a number of seconds >= 0"),
        ({"labels": ["x"], "result": ""}, "result must be a non-empty string"),
        (
            {"labels": ["x"], "result": "Succeeded"},
            "result must be a word in lower case, like succeeded or failed",
        ),
    ],
)
async def test_bad_job_requests_are_refused_with_the_reason(
    http: httpx.AsyncClient, sim: Simulator, body: dict[str, Any], error: str
) -> None:
    response = await http.post(f"{sim.url}/_sim/jobs", json=body)
    assert (response.status_code, response.json()) == (400, {"error": error})


async def test_the_simulator_describes_itself(http: httpx.AsyncClient, sim: Simulator) -> None:
    response = await http.get(f"{sim.url}/")
    assert response.status_code == 200
    assert f"github.url: {sim.url}/ORG" in response.text
    assert "POST /_sim/jobs" in response.text


async def test_a_runner_that_reported_stays_registered_a_while_then_goes(
    http: httpx.AsyncClient,
) -> None:
    realism = Realism(scale=QUICK.scale, registration_linger=(20.0, 20.0))  # 1 s, scaled
    async with serve_simulator(sim_options(poll_wait=POLL_WAIT, realism=realism)) as sim:
        service = await connect(http, sim)
        session = await service.open_session((await service.create_scale_set("linux"))["id"])
        [job] = sim.add_jobs(["linux"])
        await session.next_jobs()
        await session.acquire([job])
        jit = await service.jit_config(session.scale_set_id, "linux-1")
        runner_id, broker, client_id = runner_credentials(jit["encodedJITConfig"])
        auth = {"Authorization": f"Bearer {client_id}"}
        taken = lines(await http.get(f"{broker}runners/{runner_id}/job?wait=5", headers=auth))
        assert taken["state"] == "assigned"
        reported = await http.post(
            f"{broker}runners/{runner_id}/jobs/{job}/result",
            content="result=succeeded",
            headers=auth,
        )
        assert lines(reported) == {"state": "completed"}

        async def registered() -> list[dict[str, Any]]:
            found = await service.request(
                "GET", "_apis/distributedtask/pools/0/agents", params={"agentName": "linux-1"}
            )
            return list(found.json()["value"])

        [lingering] = await registered()  # the job is done, the registration is not gone yet
        assert (lingering["id"], lingering["status"], lingering["busy"]) == (
            runner_id,
            "offline",
            False,
        )
        again = lines(await http.get(f"{broker}runners/{runner_id}/job?wait=0", headers=auth))
        assert again == {"state": "waiting"}  # an ephemeral runner never gets a second job

        async def gone() -> bool:
            return await registered() == []

        await eventually(gone, message="the registration removed")
