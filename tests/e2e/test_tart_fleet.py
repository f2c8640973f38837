"""A fleet with a Tart scale set and a Docker scale set, run by the real `runscaler run`.

The fake `tart` is first on the operator's PATH: jobs of the macOS scale set run in fake VMs
(the stand-in runner inside takes them from the simulator), jobs of the Linux one in real
containers, and a SIGTERM leaves neither VMs (the warm pool's included) nor containers.
"""

from __future__ import annotations

import signal

import pytest

from tests.e2e.conftest import E2E
from tests.e2e.operatorkit import running
from tests.integration import tartkit
from tests.integration.tartkit import IMAGE, FakeTart
from tests.waiting import eventually

pytestmark = pytest.mark.docker
fake_tart = tartkit.fake_tart


async def test_tart_and_docker_scale_sets_run_jobs_side_by_side_and_leave_nothing(
    e2e: E2E, fake_tart: FakeTart
) -> None:
    path = e2e.write(
        e2e.manifest(
            [
                {"name": "linux", "maxRunners": 2},
                {
                    "name": "mac",
                    "backend": "tart",
                    "maxRunners": 2,
                    "tart": {"image": IMAGE, "poolSize": 1},
                },
            ]
        )
    )
    operator = e2e.start(path)
    await operator.wait_ready()
    # The warm pool boots before any job: pulled image, one VM up.
    await eventually(lambda: len(fake_tart.running()) == 1, timeout=90, message="a warm VM")
    jobs = e2e.sim.add_jobs(["mac"], count=2, duration=0.5)
    jobs += e2e.sim.add_jobs(["linux"], count=1, duration=0.5)

    def all_done() -> bool:
        return all(job["state"] == "done" for job in e2e.jobs(jobs))

    await eventually(all_done, timeout=240, interval=0.5, message="three jobs done")
    assert {job["result"] for job in e2e.jobs(jobs)} == {"succeeded"}
    mac = await operator.scale_set("mac")
    assert mac["state"] == "listening" and mac["lastFailure"] is None
    # The JIT configs went over stdin: no `tart` call carried one as an argument.
    assert not any("ACTIONS_RUNNER_INPUT_JITCONFIG=ey" in " ".join(c) for c in fake_tart.calls())
    assert all(len(arg) < 600 for call in fake_tart.calls() for arg in call)

    operator.signal(signal.SIGTERM)
    assert await operator.wait(timeout=60) == 0
    assert fake_tart.vms() == set() and fake_tart.running() == set()
    assert not await running(e2e.fleet)
