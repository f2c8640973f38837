"""The live service's habits in the simulator's state machine: each on by default, each can be
turned off, each by a table of transitions with explicit times."""

from __future__ import annotations

import json
from typing import Any

import pytest

from runscaler.simulator import records as r
from runscaler.simulator.realism import IDEAL, MESSAGE_ID_BASE, OFF, Realism
from runscaler.simulator.records import ApiError
from runscaler.simulator.state import SimState

T0 = 1_000_000.0


def world(realism: Realism) -> tuple[SimState, str, int]:
    state = SimState(base_url="http://sim", realism=realism)
    tenant = state.tenant_for("acme")
    scale_set = state.create_scale_set(
        tenant, name="linux", runner_group_id=1, labels=["linux"], disable_update=True, now=T0
    )
    return state, tenant, scale_set.id


def drain(state: SimState, scale_set_id: int, *, now: float = T0) -> list[tuple[int, str]]:
    """(message id, event type) of everything queued now, acknowledged as a listener would."""
    session = state.active_session(scale_set_id)
    assert session is not None
    state.tick(now)
    seen = []
    last = 0
    while (message := state.next_message(session, last_message_id=last)) is not None:
        seen += [(message["messageId"], e["messageType"]) for e in json.loads(message["body"])]
        last = message["messageId"]
        state.delete_message(session, last)
    return seen


def kinds(seen: list[tuple[int, str]]) -> list[str]:
    return [kind for _, kind in seen]


def test_the_defaults_are_the_live_services_habits() -> None:
    realism = Realism()
    assert realism.per_session_message_ids and realism.ignore_label_updates
    assert realism.custom_labels
    assert min(realism.start_delay + realism.event_delay + realism.registration_linger) > 0


@pytest.mark.parametrize(
    "bad",
    [{"start_delay": (2.0, 1.0)}, {"event_delay": (-1.0, 1.0)}, {"scale": -1.0}],
)
def test_nonsense_settings_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Realism(**bad)


# -- message ids ---------------------------------------------------------------------------------


def test_message_ids_are_numbered_per_session_and_restart_near_1e8() -> None:
    state, tenant, scale_set_id = world(Realism(message_id_offsets=[500, 7], event_delay=OFF))
    first = state.create_session(tenant, scale_set_id, owner="a", now=T0)
    state.add_jobs(["linux"], count=1, now=T0)
    [(first_id, _)] = drain(state, scale_set_id)
    assert first_id == MESSAGE_ID_BASE + 501
    state.add_jobs(["linux"], count=1, now=T0)
    state.tick(T0)
    queued = state.next_message(first, last_message_id=first_id)
    assert queued is not None and queued["messageId"] == MESSAGE_ID_BASE + 502

    state.delete_session(tenant, scale_set_id, first.id)
    second = state.create_session(tenant, scale_set_id, owner="a", now=T0)
    # The message still queued is numbered anew in the new session, below the old cursor.
    again = state.next_message(second, last_message_id=0)
    assert again is not None and again["messageId"] == MESSAGE_ID_BASE + 8
    # A client that carries the old session's cursor over loses that message, and every later
    # one of the new session still has an id below its cursor (so it would skip them too).
    later = state.next_message(second, last_message_id=first_id)
    assert later is not None and later["messageId"] == MESSAGE_ID_BASE + 9 < first_id


def test_without_the_habit_ids_are_one_counter() -> None:
    state, tenant, scale_set_id = world(IDEAL)
    state.create_session(tenant, scale_set_id, owner="a", now=T0)
    state.add_jobs(["linux"], count=1, now=T0)
    assert [i for i, _ in drain(state, scale_set_id)] == [1]


# -- assignment and start are apart ---------------------------------------------------------------


def acquired_job(state: SimState, tenant: str, scale_set_id: int) -> tuple[int, r.Runner]:
    state.create_session(tenant, scale_set_id, owner="a", now=T0)
    [job] = state.add_jobs(["linux"], count=1, duration=5, now=T0)
    assert state.acquire_jobs(scale_set_id, [job], now=T0) == [job]
    runner = state.generate_jit_config(tenant, scale_set_id, name="r1", work_folder="", now=T0)
    return job, runner


def test_a_runner_gets_its_job_only_after_the_start_window() -> None:
    realism = Realism(start_delay=(1.0, 1.0), event_delay=OFF, registration_linger=OFF)
    state, tenant, scale_set_id = world(realism)
    job, runner = acquired_job(state, tenant, scale_set_id)
    assert state.take_job(runner, now=T0) is None  # handed over, not started
    assert state.next_deadline() == T0 + 1.0
    assert state.take_job(runner, now=T0 + 0.5) is None
    assert state.tick(T0 + 1.0) is True  # the waiting runner is woken
    started = state.take_job(runner, now=T0 + 1.0)
    assert started is not None and started.id == job and started.state == r.RUNNING
    assert "JobStarted" in kinds(drain(state, scale_set_id, now=T0 + 1.0))


def test_removing_a_runner_in_the_start_window_bounces_its_job() -> None:
    realism = Realism(start_delay=(1.0, 1.0), event_delay=OFF, registration_linger=OFF)
    state, tenant, scale_set_id = world(realism)
    job, runner = acquired_job(state, tenant, scale_set_id)
    assert state.take_job(runner, now=T0) is None
    drain(state, scale_set_id)
    state.remove_runner(tenant, runner.id, now=T0 + 0.5)  # not refused: it runs nothing yet
    assert runner.id not in state.runners
    assert kinds(drain(state, scale_set_id, now=T0 + 0.5)) == ["JobCompleted", "JobAssigned"]
    assert (state.jobs[job].state, state.jobs[job].redispatches) == (r.ACQUIRED, 1)
    other = state.generate_jit_config(tenant, scale_set_id, name="r2", work_folder="", now=T0)
    assert state.take_job(other, now=T0 + 0.6) is None  # the job is free for another runner
    assert state.jobs[job].reserved_for == other.id


def test_a_running_job_still_refuses_its_runners_removal() -> None:
    state, tenant, scale_set_id = world(Realism(start_delay=OFF, registration_linger=OFF))
    _, runner = acquired_job(state, tenant, scale_set_id)
    assert state.take_job(runner, now=T0) is not None
    with pytest.raises(ApiError) as refused:
        state.remove_runner(tenant, runner.id, now=T0)
    assert refused.value.exception == "JobStillRunningException"


# -- late job events ---------------------------------------------------------------------------


def test_job_started_and_completed_arrive_late_and_in_order() -> None:
    realism = Realism(start_delay=OFF, event_delay=(2.0, 2.0), registration_linger=OFF)
    state, tenant, scale_set_id = world(realism)
    job, runner = acquired_job(state, tenant, scale_set_id)
    assert kinds(drain(state, scale_set_id)) == ["JobAvailable", "JobAssigned"]  # not delayed
    state.take_job(runner, now=T0)
    assert state.report_result(runner, job, "succeeded", now=T0 + 0.5)
    assert drain(state, scale_set_id, now=T0 + 1.9) == []
    assert kinds(drain(state, scale_set_id, now=T0 + 2.0)) == ["JobStarted"]
    assert kinds(drain(state, scale_set_id, now=T0 + 2.5)) == ["JobCompleted"]


# -- registrations linger -------------------------------------------------------------------------


def test_a_finished_ephemeral_runner_stays_registered_a_while_but_takes_no_job() -> None:
    realism = Realism(start_delay=OFF, event_delay=OFF, registration_linger=(3.0, 3.0))
    state, tenant, scale_set_id = world(realism)
    job, runner = acquired_job(state, tenant, scale_set_id)
    state.take_job(runner, now=T0)
    assert state.report_result(runner, job, "succeeded", now=T0 + 1)
    assert state.find_runners(tenant, name="r1") == [runner]
    assert r.runner_wire(runner)["status"] == "offline"
    state.add_jobs(["linux"], count=1, now=T0 + 1)
    [second] = [j.id for j in state.jobs.values() if j.state == r.AVAILABLE]
    state.acquire_jobs(scale_set_id, [second], now=T0 + 1)
    assert state.take_job(runner, now=T0 + 1) is None
    assert state.tick(T0 + 4.0) is True
    assert state.find_runners(tenant, name="r1") == []


# -- labels ---------------------------------------------------------------------------------------


def test_a_label_update_is_answered_and_discarded() -> None:
    state, tenant, scale_set_id = world(Realism())
    updated = state.update_scale_set(tenant, scale_set_id, labels=["linux", "gpu"], now=T0)
    assert updated.labels == ["linux"]
    focused, tenant, other = world(Realism(ignore_label_updates=False))
    assert focused.update_scale_set(tenant, other, labels=["gpu"], now=T0).labels == ["gpu"]


def test_a_ghes_without_custom_labels_keeps_only_the_name() -> None:
    state = SimState(realism=Realism(custom_labels=False, ignore_label_updates=False))
    tenant = state.tenant_for("acme")
    created = state.create_scale_set(
        tenant,
        name="linux",
        runner_group_id=1,
        labels=["linux", "gpu"],
        disable_update=True,
        now=T0,
    )
    assert created.labels == ["linux"]
    assert state.update_scale_set(tenant, created.id, labels=["gpu"], now=T0).labels == ["linux"]
