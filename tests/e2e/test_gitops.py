"""A manifest change reaches the running operator through git, as it does in production.

The operator watches a clone; a teammate pushes a commit from another clone; `git pull` in the
watched clone is the only thing that touches the operator's files. What users see: the added
scale set listens at once, the resized one keeps its session and its runners, and the removed
one lets its busy runner finish the job before it is deleted on GitHub.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import E2E
from tests.e2e.operatorkit import GitRepos, containers, running
from tests.waiting import eventually

pytestmark = pytest.mark.docker


@pytest.fixture
async def repos(tmp_path: Path) -> GitRepos:
    root = tmp_path / "git"
    root.mkdir()
    return GitRepos(root)


async def test_a_pulled_commit_adds_resizes_and_removes_scale_sets_without_killing_a_job(
    e2e: E2E, repos: GitRepos
) -> None:
    a = {"name": "a", "minRunners": 1, "maxRunners": 2}
    c = {"name": "c", "maxRunners": 1}
    await repos.create(e2e.manifest([a, c]))
    operator = e2e.start(repos.manifest)
    await operator.wait_ready()

    async def a_runner() -> list[str]:
        return [x.id for x in await running(e2e.fleet, "a")]

    [a_container] = await eventually(a_runner, timeout=30, message="a's warm runner")
    await eventually(lambda: e2e.session("c"), timeout=10, message="c listening")
    [job] = e2e.sim.add_jobs(["c"], duration=6)
    await eventually(
        lambda: e2e.jobs([job])[0]["state"] == "running", timeout=20, message="c's job running"
    )
    a_session = e2e.session("a")
    assert a_session is not None and a_session["maxCapacity"] == 2

    # Watch what a user would watch, all along: a's runner stays, c outlives its job.
    seen: list[str] = []

    async def watch() -> None:
        while True:
            job_done = e2e.jobs([job])[0]["state"] == "done"
            if e2e.deleted("c") and not job_done:
                seen.append("c deleted on GitHub while its job still ran")
            if a_container not in await a_runner():
                seen.append("a's runner was replaced or removed")
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    try:
        revision = await repos.push(
            e2e.manifest([{**a, "maxRunners": 3}, {"name": "b", "maxRunners": 1}]),
            "add b, let a grow to 3, retire c",
        )
        await repos.pull()
        pulled = time.monotonic()
        await eventually(lambda: e2e.session("b"), timeout=2.0, message="b listening")
        b_listening = time.monotonic() - pulled

        def a_resized() -> bool:
            session = e2e.session("a")
            return session is not None and session["maxCapacity"] == 3

        await eventually(a_resized, timeout=5, message="a's new maxCapacity on its session")
        assert e2e.session("a")["id"] == a_session["id"]  # type: ignore[index]
        # c takes no new jobs at once, but stays on GitHub while its runner works.
        await eventually(lambda: e2e.session("c") is None, timeout=5, message="c's session closed")
        assert e2e.scale_set("c") is not None
        assert e2e.jobs([job])[0]["state"] == "running"
        draining = await operator.scale_set("c")
        assert (draining["state"], draining["busy"]) == ("draining", 1)
        await eventually(lambda: e2e.deleted("c"), timeout=30, message="c deleted on GitHub")
    finally:
        watcher.cancel()
    assert seen == []
    [finished] = e2e.jobs([job])
    assert (finished["state"], finished["result"]) == ("done", "succeeded")
    assert e2e.scale_set("c") is None
    assert b_listening < 2.0
    status = await operator.status()
    assert status["manifest"]["revision"] == revision
    assert status["generation"] == 2
    assert sorted(s["name"] for s in status["scaleSets"]) == ["a", "b"]
    assert await a_runner() == [a_container]
    assert [x for x in await containers(e2e.fleet) if x.scale_set == "c"] == []
