"""How the listener handles what a message carries: unparseable ones, and acquiring first.

Against the simulator over loopback, with a recorder where the scaler plugs in (the harness
of `test_listener`). A malformed message is planted in the simulator's queue in process,
since no control call of GitHub's can make one.
"""

from __future__ import annotations

import json
from typing import Any

from runscaler.simulator.records import QueueMessage
from tests.integration.runtimekit import sim_control, sim_state
from tests.integration.test_listener import listening, make, sim  # noqa: F401 (fixtures)
from tests.waiting import eventually


async def test_an_unparseable_message_is_acknowledged_counted_and_shown_and_jobs_flow_on(
    make: Any,  # noqa: F811
) -> None:
    harness = await make()
    harness.start()
    await eventually(listening(harness), message="listening")
    state = harness.sim.state
    [scale_set] = state.scale_sets.values()
    scale_set.messages.append(
        QueueMessage(id=state._id("message"), body="{not json", jobs=0, available=set())
    )

    async def acknowledged() -> bool:
        return not scale_set.messages and harness.listener.messages_unparseable == 1

    await eventually(acknowledged, message="the bad message acknowledged and counted")
    assert harness.listener.last_error is not None
    assert "could not be parsed and was skipped" in harness.listener.last_error
    assert "the message body is not JSON" in harness.listener.last_error
    # Not wedged: the next job is still acquired and asked for.
    [job] = harness.sim.add_jobs(["linux"], count=1, duration=30)

    async def acquired() -> bool:
        jobs = {j["id"]: j for j in (await sim_state(harness.sim))["jobs"]}
        return jobs[job]["state"] == "acquired" and harness.recorder.desired[-1] == 1

    await eventually(acquired, timeout=15, message="the next job acquired")
    assert harness.listener.messages_unparseable == 1


async def test_an_acquire_that_fails_redelivers_the_message_instead_of_losing_its_events(
    make: Any,  # noqa: F811
) -> None:
    harness = await make()
    harness.start()
    await eventually(listening(harness), message="listening")
    # More failures than the client's retries: the acquire call fails for the listener.
    await sim_control(
        harness.sim,
        "faults",
        {"method": "POST", "path": "acquirejobs", "times": 6, "status": 500},
    )
    # One message offering a job and reporting another job's completion.
    state = harness.sim.state
    [scale_set] = state.scale_sets.values()
    events = [
        {"messageType": "JobAvailable", "runnerRequestId": 999, "jobId": "j-999"},
        {
            "messageType": "JobCompleted",
            "runnerRequestId": 998,
            "jobId": "j-998",
            "runnerId": 5,
            "runnerName": "linux-0000abcd",
            "result": "succeeded",
        },
    ]
    scale_set.messages.append(
        QueueMessage(id=state._id("message"), body=json.dumps(events), jobs=2, available={999})
    )

    def completion_seen() -> bool:
        return [j.runner_name for j in harness.recorder.completed] == ["linux-0000abcd"]

    await eventually(completion_seen, timeout=15, message="the completion delivered")
    await eventually(lambda: not scale_set.messages, message="the message acknowledged")
