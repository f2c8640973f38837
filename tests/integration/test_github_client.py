"""The scale set client's endpoints against the simulator over real loopback HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from runscaler import __version__
from runscaler.github.client import ScaleSetClient
from runscaler.github.errors import (
    JobStillRunningError,
    RunnerExistsError,
    RunnerGroupNotFoundError,
    ScaleSetNotFoundError,
)
from runscaler.github.models import JobAvailable, RunnerScaleSet, UserAgent
from runscaler.simulator.server import Simulator
from tests.integration.githubkit import (
    RecordingTransport,
    add_fault,
    control,
    fault_hits,
    make_client,
    simulator,
    take_job_as_runner,
)
from tests.waiting import eventually


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with simulator() as running:
        yield running


@pytest.fixture
def wire() -> RecordingTransport:
    return RecordingTransport()


@pytest.fixture
async def client(sim: Simulator, wire: RecordingTransport) -> AsyncIterator[ScaleSetClient]:
    async with make_client(sim, transport=wire) as scale_sets:
        yield scale_sets


async def test_the_simulator_url_is_an_enterprise_server_scope(
    sim: Simulator, client: ScaleSetClient
) -> None:
    assert client.api_base == f"{sim.url}/api/v3"
    assert (client.scope.scope, client.scope.organization) == ("organization", "acme")


async def test_the_default_runner_group_is_1_without_a_request(
    client: ScaleSetClient, wire: RecordingTransport
) -> None:
    assert await client.get_runner_group_id("default") == 1
    assert await client.get_runner_group_id("Default") == 1
    assert wire.sent == []


async def test_a_named_runner_group_is_looked_up(
    sim: Simulator, client: ScaleSetClient, wire: RecordingTransport
) -> None:
    created = await control(sim, "POST", "/_sim/runner-groups", {"name": "gpu-pool"})
    assert await client.get_runner_group_id("gpu-pool") == created["id"]
    (lookup,) = wire.matching("GET", r"/_apis/runtime/runnergroups/$")
    assert lookup.query == "api-version=6.0-preview&groupName=gpu-pool"


async def test_a_missing_runner_group_says_what_to_do(client: ScaleSetClient) -> None:
    with pytest.raises(RunnerGroupNotFoundError) as caught:
        await client.get_runner_group_id("nope")
    assert str(caught.value) == (
        "no runner group named 'nope' in acme: create it on GitHub (Settings → Actions → "
        "Runner groups) or fix runnerGroup in the manifest"
    )


async def test_requests_carry_the_admin_token_api_version_and_our_user_agent(
    client: ScaleSetClient, wire: RecordingTransport
) -> None:
    client.user_agent = UserAgent(subsystem="controller", scale_set_id=0)
    await client.get_scale_set(runner_group_id=1, name="linux")
    (g1,) = wire.matching("POST", r"^/api/v3/orgs/acme/actions/runners/registration-token$")
    assert g1.headers["content-type"] == "application/vnd.github.v3+json"
    assert g1.headers["authorization"].startswith("Bearer ghp_")
    (g3,) = wire.matching("POST", r"^/api/v3/actions/runner-registration$")
    assert g3.headers["authorization"].startswith("RemoteAuth ")
    (a2,) = wire.matching("GET", r"/_apis/runtime/runnerscalesets$")
    assert a2.query == "api-version=6.0-preview&name=linux&runnerGroupId=1"
    assert a2.headers["content-type"] == "application/json"
    assert a2.headers["user-agent"] == f"runscaler/{__version__} (controller) ScaleSetID/NA"


async def test_the_user_agent_names_the_scale_set_once_a_session_is_open(
    client: ScaleSetClient, sim: Simulator
) -> None:
    created = await client.create_scale_set(RunnerScaleSet(name="ua", runner_group_id=1))
    session = await client.create_session(created.id, owner="test-host")
    try:
        await session.get_message(max_capacity=1)
        [polled] = sim.state.snapshot()["sessions"]
        assert polled["userAgent"] == f"runscaler/{__version__} (listener) ScaleSetID/{created.id}"
    finally:
        await session.close()


async def test_scale_set_lifecycle(client: ScaleSetClient) -> None:
    assert await client.get_scale_set(runner_group_id=1, name="linux-x64") is None
    created = await client.create_scale_set(
        RunnerScaleSet(name="linux-x64", runner_group_id=1, labels=("linux-x64", "docker"))
    )
    assert created.id > 0
    assert (created.name, created.runner_group_id, created.labels) == (
        "linux-x64",
        1,
        ("linux-x64", "docker"),
    )
    assert created.disable_update is True
    found = await client.get_scale_set(runner_group_id=1, name="linux-x64")
    assert found is not None and found.id == created.id
    by_id = await client.get_scale_set_by_id(created.id)
    assert by_id is not None and by_id.statistics is not None
    # GitHub answers a label PATCH with 200 and keeps the old labels (ARC #4424).
    updated = await client.update_scale_set(created.id, labels=["linux-x64", "gpu"])
    assert updated.labels == ("linux-x64", "docker")
    assert updated.name == "linux-x64"
    renamed = await client.update_scale_set(created.id, name="linux-arm64")
    assert (renamed.name, renamed.labels) == ("linux-arm64", ("linux-x64", "docker"))
    await client.delete_scale_set(created.id)
    assert await client.get_scale_set_by_id(created.id) is None
    await client.delete_scale_set(created.id)  # already gone: still deleted


async def test_without_labels_the_name_is_the_label(client: ScaleSetClient) -> None:
    created = await client.create_scale_set(RunnerScaleSet(name="plain", runner_group_id=1))
    assert created.labels == ("plain",)


async def test_runner_registration_lookup_and_removal(
    sim: Simulator, client: ScaleSetClient
) -> None:
    scale_set = await client.create_scale_set(RunnerScaleSet(name="s", runner_group_id=1))
    jit = await client.generate_jit_config(scale_set.id, runner_name="s-0badc0de")
    assert (jit.runner_name, jit.scale_set_id) == ("s-0badc0de", scale_set.id)
    assert jit.encoded
    runner = await client.get_runner(jit.runner_id)
    assert runner is not None
    assert (runner.name, runner.runner_scale_set_id) == ("s-0badc0de", scale_set.id)
    assert await client.get_runner_by_name("s-0badc0de") == runner
    assert await client.get_runner_by_name("s-nobody") is None
    await client.remove_runner(jit.runner_id)
    assert await client.get_runner(jit.runner_id) is None
    await client.remove_runner(jit.runner_id)  # already gone: still removed
    assert [r["name"] for r in (await control(sim, "GET", "/_sim/state"))["runners"]] == []


async def test_a_name_taken_in_another_scale_set_is_runner_exists_and_left_alone(
    sim: Simulator, client: ScaleSetClient
) -> None:
    theirs = await client.create_scale_set(RunnerScaleSet(name="theirs", runner_group_id=1))
    ours = await client.create_scale_set(RunnerScaleSet(name="ours", runner_group_id=1))
    foreign = await client.generate_jit_config(theirs.id, runner_name="s-twice")
    with pytest.raises(RunnerExistsError) as caught:
        await client.generate_jit_config(ours.id, runner_name="s-twice")
    assert caught.value.status == 409
    assert str(caught.value).startswith(f"cannot register runner 's-twice' in scale set {ours.id}")
    assert f"it belongs to scale set {theirs.id}, so it is left alone" in str(caught.value)
    assert [(r["id"], r["scaleSetId"]) for r in sim.state.snapshot()["runners"]] == [
        (foreign.runner_id, theirs.id)
    ]


async def test_a_registration_whose_answer_was_lost_is_replaced_on_the_retry(
    sim: Simulator, client: ScaleSetClient
) -> None:
    scale_set = await client.create_scale_set(RunnerScaleSet(name="s", runner_group_id=1))
    # The first attempt registers the runner, then its answer is lost (a 503): the retry meets
    # the registration it made itself (409 AgentExists).
    await control(
        sim,
        "POST",
        "/_sim/faults",
        {"method": "POST", "path": "generatejitconfig$", "status": 503, "after": True},
    )
    jit = await client.generate_jit_config(scale_set.id, runner_name="s-lost")
    runners = sim.state.snapshot()["runners"]
    assert [(r["id"], r["name"]) for r in runners] == [(jit.runner_id, "s-lost")]
    assert jit.runner_id > 1  # the first registration was removed, this is a new one


async def test_removing_a_busy_runner_is_job_still_running(
    sim: Simulator, client: ScaleSetClient
) -> None:
    scale_set = await client.create_scale_set(RunnerScaleSet(name="busy", runner_group_id=1))
    session = await client.create_session(scale_set.id, owner="test")
    try:
        sim.add_jobs(["busy"], duration=30)
        message = await session.get_message(last_message_id=0, max_capacity=1)
        assert message is not None
        (available,) = [j for j in message.jobs if isinstance(j, JobAvailable)]
        assert await session.acquire_jobs([available.runner_request_id]) == [
            available.runner_request_id
        ]
        jit = await client.generate_jit_config(scale_set.id, runner_name="busy-1")
        taken = await take_job_as_runner(sim, jit.encoded)
        assert taken["state"] == "assigned"
        with pytest.raises(JobStillRunningError) as caught:
            await client.remove_runner(jit.runner_id)
        assert caught.value.status == 400
        assert await client.get_runner(jit.runner_id) is not None
    finally:
        await session.close()


async def test_a_scale_set_deleted_on_github_is_not_found(
    sim: Simulator, client: ScaleSetClient
) -> None:
    scale_set = await client.create_scale_set(RunnerScaleSet(name="doomed", runner_group_id=1))
    await control(sim, "POST", "/_sim/delete-scale-set", {"name": "doomed"})
    assert await client.get_scale_set_by_id(scale_set.id) is None
    with pytest.raises(ScaleSetNotFoundError) as caught:
        await client.create_session(scale_set.id, owner="test")
    assert caught.value.status == 404
    with pytest.raises(ScaleSetNotFoundError):
        await client.generate_jit_config(scale_set.id, runner_name="doomed-1")
    with pytest.raises(ScaleSetNotFoundError):
        await client.update_scale_set(scale_set.id, name="revived")


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", r"/agents$"), ("DELETE", r"/agents/\d+$")],
    ids=["while-looking-up", "while-removing"],
)
async def test_cancelling_the_reconciliation_at_each_step_leaves_the_client_usable(
    sim: Simulator, client: ScaleSetClient, method: str, path: str
) -> None:
    scale_set = await client.create_scale_set(RunnerScaleSet(name="s", runner_group_id=1))
    await add_fault(sim, method="POST", path="generatejitconfig$", status=503, after=True)
    stall = await add_fault(sim, method=method, path=path, delay=30)
    task = asyncio.create_task(client.generate_jit_config(scale_set.id, runner_name="s-cut"))
    await eventually(lambda: fault_hits(sim, stall), message=f"the {method} on its way")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await control(sim, "DELETE", "/_sim/faults")
    # The half-done registration is reconciled by the next attempt, as after a lost answer.
    jit = await client.generate_jit_config(scale_set.id, runner_name="s-cut")
    assert [r["id"] for r in sim.state.snapshot()["runners"]] == [jit.runner_id]
