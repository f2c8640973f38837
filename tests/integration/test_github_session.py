"""Message sessions against the simulator: long poll, ack, acquire, refresh, conflicts."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import pytest

from runscaler.github.client import ScaleSetClient
from runscaler.github.errors import (
    ScaleSetNotFoundError,
    SessionConflictError,
    TokenExpiredError,
)
from runscaler.github.models import JobAssigned, JobAvailable, RunnerScaleSet
from runscaler.simulator.realism import Realism
from runscaler.simulator.server import Simulator
from tests.integration.githubkit import (
    RecordingTransport,
    add_fault,
    control,
    fault_hits,
    make_client,
    simulator,
)
from tests.integration.simkit import QUICK

QUEUE = r"^/_broker/scalesets/message"
SESSIONS = r"/_apis/runtime/runnerscalesets/\d+/sessions/"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with simulator(poll_wait=0.2) as running:
        yield running


@pytest.fixture
def wire() -> RecordingTransport:
    return RecordingTransport()


@pytest.fixture
async def client(sim: Simulator, wire: RecordingTransport) -> AsyncIterator[ScaleSetClient]:
    async with make_client(sim, transport=wire) as scale_sets:
        yield scale_sets


@pytest.fixture
async def scale_set(client: ScaleSetClient) -> RunnerScaleSet:
    return await client.create_scale_set(RunnerScaleSet(name="linux", runner_group_id=1))


async def test_an_empty_poll_returns_none_after_the_wait(
    client: ScaleSetClient, scale_set: RunnerScaleSet, wire: RecordingTransport
) -> None:
    session = await client.create_session(scale_set.id, owner="host-a")
    try:
        assert (session.owner, session.scale_set_id) == ("host-a", scale_set.id)
        assert session.statistics.total_assigned_jobs == 0
        started = time.monotonic()
        assert await session.get_message(last_message_id=0, max_capacity=7) is None
        assert time.monotonic() - started >= 0.15
        (poll,) = wire.matching("GET", QUEUE)
        assert poll.query == ""  # no cursor yet, no api-version on the queue
        assert poll.headers["accept"] == "application/json; api-version=6.0-preview"
        assert poll.headers["x-scalesetmaxcapacity"] == "7"
    finally:
        await session.close()


async def test_a_job_is_offered_acquired_acknowledged_and_assigned(
    sim: Simulator, client: ScaleSetClient, scale_set: RunnerScaleSet, wire: RecordingTransport
) -> None:
    session = await client.create_session(scale_set.id, owner="host-a")
    try:
        sim.add_jobs(["linux"], count=2)
        first = await session.get_message(last_message_id=0, max_capacity=10)
        assert first is not None
        assert first.statistics.total_assigned_jobs == 2
        assert session.statistics == first.statistics
        available = [j for j in first.jobs if isinstance(j, JobAvailable)]
        assert len(available) == 2
        assert all(j.request_labels == ("linux",) for j in available)
        ids = [j.runner_request_id for j in available]
        # Not acknowledged: the same message comes again.
        again = await session.get_message(last_message_id=0, max_capacity=10)
        assert again is not None and again.message_id == first.message_id
        await session.delete_message(first.message_id)
        assert sorted(await session.acquire_jobs(ids)) == sorted(ids)
        assert await session.acquire_jobs([]) == []
        second = await session.get_message(last_message_id=first.message_id, max_capacity=10)
        assert second is not None and second.message_id > first.message_id
        assert sorted(j.runner_request_id for j in second.jobs if isinstance(j, JobAssigned)) == (
            sorted(ids)
        )
        polls = wire.matching("GET", QUEUE)
        assert polls[-1].query == f"lastMessageId={first.message_id}"
        (ack,) = wire.matching("DELETE", QUEUE)
        assert ack.path.endswith(f"/{first.message_id}")
        state = await control(sim, "GET", "/_sim/state")
        assert {j["state"] for j in state["jobs"]} == {"acquired"}
        assert state["sessions"][0]["maxCapacity"] == 10
    finally:
        await session.close()


async def test_an_expired_queue_token_refreshes_the_session_once(
    sim: Simulator, client: ScaleSetClient, scale_set: RunnerScaleSet, wire: RecordingTransport
) -> None:
    session = await client.create_session(scale_set.id, owner="host-a")
    try:
        # The simulator expires the admin token too: the refresh itself renews that first.
        await control(sim, "POST", "/_sim/expire-tokens")
        sim.add_jobs(["linux"])
        message = await session.get_message(last_message_id=0, max_capacity=1)
        assert message is not None
        assert [s.status for s in wire.matching("GET", QUEUE)] == [401, 200]
        assert [s.status for s in wire.matching("PATCH", SESSIONS)] == [401, 200]
        assert wire.count("POST", "runner-registration") == 2
        await control(sim, "POST", "/_sim/expire-tokens")
        await session.delete_message(message.message_id)
        assert [s.status for s in wire.matching("DELETE", QUEUE)] == [401, 204]
        assert wire.count("PATCH", SESSIONS, status=200) == 2
        await control(sim, "POST", "/_sim/expire-tokens")
        (job,) = message.jobs
        assert await session.acquire_jobs([job.runner_request_id]) == [job.runner_request_id]
        assert [s.status for s in wire.matching("POST", "acquirejobs")] == [401, 200]
        assert wire.count("PATCH", SESSIONS, status=200) == 3
    finally:
        await session.close()


async def test_a_second_queue_401_after_the_refresh_is_token_expired(
    sim: Simulator, client: ScaleSetClient, scale_set: RunnerScaleSet, wire: RecordingTransport
) -> None:
    session = await client.create_session(scale_set.id, owner="host-a")
    try:
        await add_fault(sim, method="GET", path=QUEUE, times=2, status=401)
        with pytest.raises(TokenExpiredError) as caught:
            await session.get_message(last_message_id=0, max_capacity=1)
        assert wire.count("GET", QUEUE) == 2
        assert wire.count("PATCH", SESSIONS) == 1
        assert caught.value.status == 401
        assert str(caught.value).startswith(f"cannot get a message for scale set {scale_set.id}")
        assert "refused again after a session refresh" in str(caught.value)
    finally:
        await session.close()


async def test_a_second_session_for_a_scale_set_is_a_conflict(
    sim: Simulator, client: ScaleSetClient, scale_set: RunnerScaleSet
) -> None:
    session = await client.create_session(scale_set.id, owner="host-a")
    try:
        with pytest.raises(SessionConflictError) as caught:
            await client.create_session(scale_set.id, owner="host-b")
        assert caught.value.status == 409
        assert "RunnerScaleSetSessionConflictException" in (caught.value.type_name or "")
    finally:
        await session.close()
    # Closed: the scale set is free again.
    other = await client.create_session(scale_set.id, owner="host-b")
    await other.close()


async def test_a_session_held_elsewhere_is_a_conflict_until_released(
    sim: Simulator, client: ScaleSetClient, scale_set: RunnerScaleSet
) -> None:
    await control(sim, "POST", "/_sim/hold-session", {"name": "linux"})
    with pytest.raises(SessionConflictError):
        await client.create_session(scale_set.id, owner="host-a")
    await control(sim, "POST", "/_sim/release-session", {"name": "linux"})
    session = await client.create_session(scale_set.id, owner="host-a")
    await session.close()


async def test_close_is_idempotent_and_a_stale_session_can_be_deleted_by_id(
    sim: Simulator, client: ScaleSetClient, scale_set: RunnerScaleSet, wire: RecordingTransport
) -> None:
    stale = await client.create_session(scale_set.id, owner="crashed-run")
    await client.delete_session(scale_set.id, stale.session_id)
    assert (await control(sim, "GET", "/_sim/state"))["sessions"] == []
    await client.delete_session(scale_set.id, stale.session_id)  # already gone: fine
    session = await client.create_session(scale_set.id, owner="host-a")
    await session.close()
    await session.close()
    assert session.closed
    assert wire.count("DELETE", SESSIONS) == 3


async def test_close_logs_rather_than_raises(
    sim: Simulator,
    client: ScaleSetClient,
    scale_set: RunnerScaleSet,
    caplog: pytest.LogCaptureFixture,
) -> None:
    session = await client.create_session(scale_set.id, owner="host-a")
    await add_fault(sim, method="DELETE", path=SESSIONS, times=-1, status=400)
    with caplog.at_level(logging.WARNING, logger="runscaler.github"):
        await session.close()
    assert f"could not close message session {session.session_id}" in caplog.text


async def test_a_scale_set_deleted_while_listening_is_not_found_on_the_next_poll(
    sim: Simulator, client: ScaleSetClient, scale_set: RunnerScaleSet
) -> None:
    session = await client.create_session(scale_set.id, owner="host-a")
    await control(sim, "POST", "/_sim/delete-scale-set", {"name": "linux"})
    with pytest.raises(ScaleSetNotFoundError) as caught:
        await session.get_message(last_message_id=0, max_capacity=1)
    assert caught.value.status == 404
    assert "the scale set was deleted on GitHub; create it again" in str(caught.value)
    await session.close()  # the session went with the scale set: closing is still quiet
    assert session.closed


async def test_the_cursor_belongs_to_one_session_and_a_new_session_starts_at_zero(
    wire: RecordingTransport,
) -> None:
    async with simulator(realism=Realism(scale=QUICK.scale, message_id_offsets=[900, 5])) as sim:
        async with make_client(sim, transport=wire) as other:
            created = await other.create_scale_set(RunnerScaleSet(name="ids", runner_group_id=1))
            first = await other.create_session(created.id, owner="host-a")
            sim.add_jobs(["ids"])
            message = await first.get_message(max_capacity=1)
            assert message is not None and message.message_id == 100_000_901
            assert not first.seen(message)
            first.mark_handled(message.message_id)
            assert first.seen(message) and first.last_message_id == 100_000_901
            await first.close()

            second = await other.create_session(created.id, owner="host-a")
            try:
                assert second.last_message_id == 0
                # The job is offered again in the new session, numbered from its own start.
                again = await second.get_message(max_capacity=1)
                assert again is not None and again.message_id == 100_000_006
                assert not second.seen(again)
                polls = wire.matching("GET", QUEUE)
                assert polls[-1].query == ""  # no cursor carried over
            finally:
                await second.close()


async def test_an_empty_200_from_the_long_poll_is_no_message(
    sim: Simulator, client: ScaleSetClient, scale_set: RunnerScaleSet
) -> None:
    # Seen from the live broker (ARC #4470, #4285): 200 OK with no body.
    fault = await add_fault(sim, method="GET", path=QUEUE, empty=True)
    session = await client.create_session(scale_set.id, owner="host-a")
    try:
        assert await session.get_message(max_capacity=1) is None
        assert await fault_hits(sim, fault) == 1
        sim.add_jobs(["linux"])
        message = await session.get_message(max_capacity=1)
        assert message is not None and len(message.jobs) == 1
    finally:
        await session.close()
