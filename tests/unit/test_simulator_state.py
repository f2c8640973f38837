"""The simulator's state machine, by tables: jobs, statistics, sessions, the queue, the clock."""

from __future__ import annotations

import json
from typing import Any

import pytest

from runscaler.simulator.realism import IDEAL, Realism
from runscaler.simulator.records import ApiError, type_name
from runscaler.simulator.state import SimState

T0 = 1_000_000.0


def make_state(realism: Realism = IDEAL, **timings: float) -> tuple[SimState, str]:
    """A state without the live service's habits: each rule on its own (they have tests too)."""
    state = SimState(base_url="http://sim", realism=realism, **timings)
    return state, state.tenant_for("acme")


def add_set(state: SimState, tenant: str, name: str, labels: list[str] | None = None) -> int:
    return state.create_scale_set(
        tenant,
        name=name,
        runner_group_id=1,
        labels=labels or [],
        disable_update=True,
        now=T0,
    ).id


def drain(state: SimState, scale_set_id: int) -> list[dict[str, Any]]:
    """Every job message queued for the scale set, acknowledging as a listener would."""
    session = state.active_session(scale_set_id) or state.create_session(
        state.scale_sets[scale_set_id].tenant, scale_set_id, owner="t", now=T0
    )
    events: list[dict[str, Any]] = []
    last = 0
    while (message := state.next_message(session, last_message_id=last)) is not None:
        events.extend(json.loads(message["body"]))
        last = message["messageId"]
        state.delete_message(session, last)
    return events


def kinds(events: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(e["messageType"], e["runnerRequestId"]) for e in events]


# -- matching ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("job_labels", "expected"),
    [
        (["linux"], "first"),  # both match: the first created wins
        (["LINUX", "x64"], "first"),  # labels compare case-insensitively
        (["gpu"], "second"),
        (["second"], "second"),  # the name counts as a label
        (["linux", "gpu"], "second"),
        (["linux", "arm64"], None),  # nothing matches: the job waits
        (["self-hosted"], None),  # nothing is implicit
    ],
)
def test_a_job_goes_to_the_first_scale_set_whose_labels_contain_all_of_its(
    job_labels: list[str], expected: str | None
) -> None:
    state, tenant = make_state()
    ids = {
        "first": add_set(state, tenant, "first", ["linux", "x64"]),
        "second": add_set(state, tenant, "second", ["linux", "gpu"]),
    }
    [job_id] = state.add_jobs(job_labels, now=T0)
    job = state.jobs[job_id]
    assert job.scale_set_id == (ids[expected] if expected else None)
    assert job.state == ("available" if expected else "queued")


def test_a_waiting_job_is_dispatched_when_a_scale_set_appears_or_is_relabelled() -> None:
    state, tenant = make_state()
    [early] = state.add_jobs(["arm64"], now=T0)
    [later] = state.add_jobs(["gpu"], now=T0)
    arm = add_set(state, tenant, "arm", ["arm64"])
    assert state.jobs[early].scale_set_id == arm
    assert state.jobs[later].state == "queued"
    other = add_set(state, tenant, "other", ["linux"])
    state.update_scale_set(tenant, other, labels=["linux", "gpu"], now=T0 + 1)
    assert state.jobs[later].scale_set_id == other
    assert kinds(drain(state, other)) == [("JobAvailable", later)]


def test_a_job_for_a_repository_only_matches_scale_sets_of_its_scope() -> None:
    state = SimState(realism=IDEAL)
    other_org = state.tenant_for("globex")
    repo = state.tenant_for("acme/web")
    add_set(state, other_org, "globex-linux", ["linux"])
    mine = add_set(state, repo, "web-linux", ["linux"])
    [job] = state.add_jobs(["linux"], repository="acme/web", now=T0)
    assert state.jobs[job].scale_set_id == mine
    [event] = drain(state, mine)
    assert (event["ownerName"], event["repositoryName"]) == ("acme", "web")


# -- the life of a job ---------------------------------------------------------------------------

STATS = (
    "totalAvailableJobs",
    "totalAcquiredJobs",
    "totalAssignedJobs",
    "totalRunningJobs",
    "totalRegisteredRunners",
    "totalBusyRunners",
    "totalIdleRunners",
)


def stats(state: SimState, scale_set_id: int) -> tuple[int, ...]:
    wire = state.statistics(scale_set_id).wire()
    assert set(wire) == set(STATS)
    return tuple(wire[name] for name in STATS)


def test_statistics_follow_a_job_from_queued_to_done() -> None:
    state, tenant = make_state()
    s = add_set(state, tenant, "linux")
    [a, b] = state.add_jobs(["linux"], count=2, duration=5, now=T0)
    assert stats(state, s) == (2, 0, 2, 0, 0, 0, 0)
    assert state.acquire_jobs(s, [a], now=T0 + 1) == [a]
    assert stats(state, s) == (1, 1, 2, 0, 0, 0, 0)
    runner = state.generate_jit_config(tenant, s, name="r1", work_folder="", now=T0 + 2)
    assert stats(state, s) == (1, 1, 2, 0, 1, 0, 1)
    assert state.take_job(runner, now=T0 + 3) is state.jobs[a]
    assert stats(state, s) == (1, 0, 2, 1, 1, 1, 0)
    assert state.job_progress(runner, a, now=T0 + 7.9) == ("running", "")
    assert state.job_progress(runner, a, now=T0 + 8) == ("finished", "succeeded")
    assert state.report_result(runner, a, "succeeded", now=T0 + 8.1)
    assert stats(state, s) == (1, 0, 1, 0, 0, 0, 0)  # the ephemeral runner is gone
    assert state.jobs[a].result == "succeeded"
    assert kinds(drain(state, s)) == [
        ("JobAvailable", a),
        ("JobAvailable", b),
        ("JobAssigned", a),
        ("JobStarted", a),
        ("JobCompleted", a),
    ]


def test_job_messages_carry_the_fields_the_clients_read() -> None:
    state, tenant = make_state()
    s = add_set(state, tenant, "linux")
    [job] = state.add_jobs(["linux"], duration=1, result="failed", now=T0)
    state.acquire_jobs(s, [job], now=T0)
    runner = state.generate_jit_config(tenant, s, name="r1", work_folder="", now=T0)
    state.take_job(runner, now=T0 + 1)
    assert state.job_progress(runner, job, now=T0 + 2) == ("finished", "failed")
    result = "failed"
    state.report_result(runner, job, result, now=T0 + 2)
    available, _, started, completed = drain(state, s)
    assert available["acquireJobUrl"].startswith("http://sim/_services/pipelines/")
    assert available["jobId"] == "00000000-0000-0000-0000-000000000001"
    assert available["requestLabels"] == ["linux"]
    assert available["queueTime"].endswith("Z") and available["runnerAssignTime"] is None
    assert (started["runnerId"], started["runnerName"]) == (runner.id, "r1")
    assert started["runnerAssignTime"] is not None
    assert (completed["result"], completed["runnerName"]) == ("failed", "r1")
    assert completed["finishTime"] is not None


def test_only_an_acquired_job_of_its_own_scale_set_is_taken_by_a_runner() -> None:
    state, tenant = make_state()
    mine = add_set(state, tenant, "mine")
    other = add_set(state, tenant, "other")
    [unacquired] = state.add_jobs(["mine"], now=T0)
    [elsewhere] = state.add_jobs(["other"], now=T0)
    state.acquire_jobs(other, [elsewhere], now=T0)
    runner = state.generate_jit_config(tenant, mine, name="r1", work_folder="", now=T0)
    assert state.take_job(runner, now=T0) is None
    assert state.acquire_jobs(mine, [elsewhere, unacquired, 999], now=T0) == [unacquired]
    assert state.acquire_jobs(mine, [unacquired], now=T0) == [unacquired]  # idempotent
    taken = state.take_job(runner, now=T0)
    assert taken is not None and taken.id == unacquired
    assert state.take_job(runner, now=T0 + 1) is taken  # one job per runner, ever


def test_an_acquired_job_nobody_takes_is_cancelled_and_assigned_again() -> None:
    state, tenant = make_state(redispatch_interval=30)
    s = add_set(state, tenant, "linux")
    [job] = state.add_jobs(["linux"], now=T0)
    state.acquire_jobs(s, [job], now=T0)
    drain(state, s)
    assert state.next_deadline() == T0 + 30
    assert not state.tick(T0 + 29)
    assert state.tick(T0 + 30)
    events = drain(state, s)
    assert kinds(events) == [("JobCompleted", job), ("JobAssigned", job)]
    assert events[0]["result"] == "canceled"
    assert state.jobs[job].state == "acquired" and state.jobs[job].redispatches == 1
    assert stats(state, s)[2] == 1  # still assigned to the scale set


def test_a_runner_that_never_reports_is_lost_and_its_job_fails() -> None:
    state, tenant = make_state(runner_lost_timeout=10)
    s = add_set(state, tenant, "linux")
    [job] = state.add_jobs(["linux"], duration=5, now=T0)
    state.acquire_jobs(s, [job], now=T0)
    runner = state.generate_jit_config(tenant, s, name="r1", work_folder="", now=T0)
    state.take_job(runner, now=T0)
    assert state.tick(T0 + 5)  # the work is done: waiting runners must hear of it
    assert not state.tick(T0 + 14)
    assert state.tick(T0 + 15)
    assert state.jobs[job].result == "failed"
    assert runner.id not in state.runners


@pytest.mark.parametrize(
    ("before", "expected_state", "expected_result"),
    [("queued", "done", "canceled"), ("available", "done", "canceled")],
)
def test_cancelling_a_job_that_no_runner_has(
    before: str, expected_state: str, expected_result: str
) -> None:
    state, tenant = make_state()
    if before != "queued":
        add_set(state, tenant, "linux")
    [job] = state.add_jobs(["linux"], now=T0)
    assert state.jobs[job].state == before
    assert state.cancel_jobs([job], now=T0) == [job]
    assert (state.jobs[job].state, state.jobs[job].result) == (expected_state, expected_result)


def test_cancelling_a_running_job_tells_its_runner() -> None:
    state, tenant = make_state()
    s = add_set(state, tenant, "linux")
    [job] = state.add_jobs(["linux"], duration=100, now=T0)
    state.acquire_jobs(s, [job], now=T0)
    runner = state.generate_jit_config(tenant, s, name="r1", work_folder="", now=T0)
    state.take_job(runner, now=T0)
    state.cancel_jobs([job], now=T0 + 1)
    assert state.job_progress(runner, job, now=T0 + 1) == ("canceled", "canceled")
    state.report_result(runner, job, "canceled", now=T0 + 1)
    assert drain(state, s)[-1]["result"] == "canceled"


# -- scale sets ----------------------------------------------------------------------------------


def test_a_partial_update_leaves_empty_and_zero_fields_alone() -> None:
    state, tenant = make_state()
    group = state.add_runner_group("big")
    s = add_set(state, tenant, "linux", ["linux", "x64"])
    state.update_scale_set(tenant, s, name="", runner_group_id=0, labels=[], now=T0)
    scale_set = state.scale_sets[s]
    assert (scale_set.name, scale_set.runner_group_id, scale_set.labels) == (
        "linux",
        1,
        ["linux", "x64"],
    )
    state.update_scale_set(tenant, s, runner_group_id=group, now=T0)
    assert (scale_set.runner_group_id, scale_set.runner_group_name) == (group, "big")


def test_deleting_a_scale_set_on_githubs_side_requeues_its_unfinished_jobs() -> None:
    state, tenant = make_state()
    doomed = add_set(state, tenant, "doomed", ["linux"])
    [running, waiting] = state.add_jobs(["linux"], count=2, duration=60, now=T0)
    state.acquire_jobs(doomed, [running, waiting], now=T0)
    runner = state.generate_jit_config(tenant, doomed, name="r1", work_folder="", now=T0)
    state.take_job(runner, now=T0)
    state.create_session(tenant, doomed, owner="op", now=T0)
    state.delete_scale_set(doomed, now=T0 + 1)
    assert state.sessions == {} and state.runners == {}
    assert [state.jobs[j].state for j in (running, waiting)] == ["queued", "queued"]
    assert state.job_progress(runner, running, now=T0 + 2) == ("gone", "")
    with pytest.raises(ApiError) as gone:
        state.get_scale_set(tenant, doomed)
    assert (gone.value.status, gone.value.message) == (
        404,
        f"No runner scale set found with identifier {doomed}.",
    )
    assert "RunnerScaleSetNotFoundException" in gone.value.body()["typeName"]
    heir = add_set(state, tenant, "heir", ["linux"])
    assert [state.jobs[j].scale_set_id for j in (running, waiting)] == [heir, heir]
    assert state.snapshot()["deletedScaleSets"] == [{"id": doomed, "name": "doomed"}]


@pytest.mark.parametrize(
    ("call", "status", "exception"),
    [
        (lambda st, t, s: add_set(st, t, "LINUX"), 409, "RunnerScaleSetExistsException"),
        (lambda st, t, s: st.create_session(t, s, owner="b", now=T0), 409, "SessionConflict"),
        (lambda st, t, s: st.delete_session(t, s, "nope"), 400, "SessionExpiredException"),
        (lambda st, t, s: st.refresh_session(t, s, "nope", now=T0), 404, "RunnerAdminException"),
        (
            lambda st, t, s: st.generate_jit_config(t, s, name="R1", work_folder="", now=T0),
            409,
            "AgentExistsException",
        ),
        (lambda st, t, s: st.get_runner(t, 999), 404, "AgentNotFoundException"),
        (lambda st, t, s: st.get_scale_set(t, 999), 404, "RunnerScaleSetNotFoundException"),
        (lambda st, t, s: st.get_scale_set("tenant-9", s), 404, "RunnerScaleSetNotFound"),
    ],
)
def test_refusals_carry_the_services_status_and_exception(
    call: Any, status: int, exception: str
) -> None:
    state, tenant = make_state()
    s = add_set(state, tenant, "linux")
    state.create_session(tenant, s, owner="a", now=T0)
    state.generate_jit_config(tenant, s, name="r1", work_folder="", now=T0)
    with pytest.raises(ApiError) as refused:
        call(state, tenant, s)
    assert refused.value.status == status
    assert exception in refused.value.body()["typeName"]


def test_the_session_conflict_reads_as_the_real_service_writes_it() -> None:
    state, tenant = make_state()
    s = add_set(state, tenant, "dev")
    state.create_session(tenant, s, owner="a", now=T0)
    with pytest.raises(ApiError) as conflict:
        state.create_session(tenant, s, owner="b", now=T0)
    assert conflict.value.body() == {
        "typeName": "GitHub.Actions.Runtime.WebApi.RunnerScaleSetSessionConflictException, "
        "GitHub.Actions.Runtime.WebApi",
        "message": "The actions runner scaleset dev already has an active session.",
    }


def test_removing_runners_absent_is_fine_busy_is_refused() -> None:
    state, tenant = make_state()
    s = add_set(state, tenant, "linux")
    idle = state.generate_jit_config(tenant, s, name="idle", work_folder="", now=T0)
    busy = state.generate_jit_config(tenant, s, name="busy", work_folder="", now=T0)
    [job] = state.add_jobs(["linux"], now=T0)
    state.acquire_jobs(s, [job], now=T0)
    state.take_job(busy, now=T0)
    state.remove_runner(tenant, idle.id)
    state.remove_runner(tenant, idle.id)  # absent: no error
    with pytest.raises(ApiError) as refused:
        state.remove_runner(tenant, busy.id)
    assert (refused.value.status, refused.value.exception) == (400, "JobStillRunningException")
    assert list(state.runners) == [busy.id]


@pytest.mark.parametrize(
    ("short", "qualified"),
    [
        (
            "AgentExistsException",
            "GitHub.DistributedTask.WebApi.AgentExistsException, GitHub.DistributedTask.WebApi",
        ),
        (
            "RunnerScaleSetNotFoundException",
            "GitHub.Actions.Runtime.WebApi.RunnerScaleSetNotFoundException, "
            "GitHub.Actions.Runtime.WebApi",
        ),
        (
            "VssUnauthorizedException",
            "GitHub.Services.WebApi.VssUnauthorizedException, GitHub.Services.WebApi",
        ),
    ],
)
def test_exception_type_names_are_namespace_and_assembly_qualified(
    short: str, qualified: str
) -> None:
    assert type_name(short) == qualified


# -- sessions and the message queue ---------------------------------------------------------------


def test_a_session_not_polled_for_poll_wait_plus_timeout_is_dropped() -> None:
    state, tenant = make_state(poll_wait=50, session_timeout=60)
    s = add_set(state, tenant, "linux")
    session = state.create_session(tenant, s, owner="a", now=T0)
    state.record_poll(session, max_capacity=3, now=T0 + 10)
    assert state.next_deadline() == T0 + 120
    assert not state.tick(T0 + 120)
    assert state.tick(T0 + 120.5)
    assert state.active_session(s) is None
    with pytest.raises(ApiError) as expired:
        state.live_session(session.id, s)
    assert expired.value.status == 401
    state.create_session(tenant, s, owner="b", now=T0 + 121)  # no conflict any more


def test_a_held_session_conflicts_until_released_and_never_expires() -> None:
    state, tenant = make_state(poll_wait=1, session_timeout=1)
    s = add_set(state, tenant, "linux")
    mine = state.create_session(tenant, s, owner="op", now=T0)
    state.hold_session(s, now=T0)
    assert mine.id not in state.sessions  # the phantom took over
    state.tick(T0 + 1000)
    with pytest.raises(ApiError) as conflict:
        state.create_session(tenant, s, owner="op", now=T0 + 1000)
    assert conflict.value.status == 409
    assert state.release_session(s)
    state.create_session(tenant, s, owner="op", now=T0 + 1000)


def test_messages_are_redelivered_until_deleted_and_skipped_up_to_the_cursor() -> None:
    state, tenant = make_state()
    s = add_set(state, tenant, "linux")
    session = state.create_session(tenant, s, owner="a", now=T0)
    assert state.next_message(session, last_message_id=0) is None
    state.add_jobs(["linux"], now=T0)
    first = state.next_message(session, last_message_id=0)
    assert first is not None
    assert state.next_message(session, last_message_id=0) == first  # redelivered
    state.add_jobs(["linux"], now=T0)
    second = state.next_message(session, last_message_id=first["messageId"])
    assert second is not None and second["messageId"] > first["messageId"]
    state.delete_message(session, second["messageId"])
    assert state.next_message(session, last_message_id=second["messageId"]) is None


def test_a_message_holds_at_most_fifty_jobs_and_always_statistics() -> None:
    state, tenant = make_state()
    s = add_set(state, tenant, "linux")
    session = state.create_session(tenant, s, owner="a", now=T0)
    state.add_jobs(["linux"], count=120, now=T0)
    sizes = []
    last = 0
    while (message := state.next_message(session, last_message_id=last)) is not None:
        assert message["messageType"] == "RunnerScaleSetJobMessages"
        assert message["statistics"]["totalAssignedJobs"] == 120
        sizes.append(len(json.loads(message["body"])))
        last = message["messageId"]
    assert sizes == [50, 50, 20]


def test_a_new_session_hears_again_of_jobs_offered_but_never_acquired() -> None:
    state, tenant = make_state()
    s = add_set(state, tenant, "linux")
    [lost, acquired] = state.add_jobs(["linux"], count=2, now=T0)
    session = state.create_session(tenant, s, owner="crashed", now=T0)
    drain(state, s)  # acked, then the listener crashed before acquiring `lost`
    state.acquire_jobs(s, [acquired], now=T0)
    state.delete_session(tenant, s, session.id)
    state.create_session(tenant, s, owner="restarted", now=T0 + 1)
    assert kinds(drain(state, s)) == [("JobAssigned", acquired), ("JobAvailable", lost)]
