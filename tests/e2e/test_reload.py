"""Hot reload as a user meets it: bad manifests are rejected whole, forced re-reads answer.

A rejected manifest changes nothing that runs (same session, same runner container) and says
why in `/status` (with `FILE:LINE`) and on `/metrics`; fixing the file puts things right.
`POST /-/reload` and SIGHUP re-read the file even when no change event arrives: the tests
change the manifest through a hard link, which (like NFS) tells no watcher of its directory,
and run with the production resync interval so only the forced re-read can see the change.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.e2e.conftest import E2E
from tests.e2e.operatorkit import OperatorProcess, metric_value, running
from tests.waiting import eventually

pytestmark = pytest.mark.docker

RELOAD_OK = "runscaler_manifest_last_reload_successful"


async def listening_with_a_runner(e2e: E2E, operator: OperatorProcess) -> tuple[str, str]:
    """Wait until scale set `linux` listens with one warm runner; (session id, container id)."""
    await operator.wait_ready()

    async def one_runner() -> list[str]:
        return [c.id for c in await running(e2e.fleet, "linux")]

    [container] = await eventually(one_runner, timeout=30, message="a warm runner")
    session = await eventually(lambda: e2e.session("linux"), timeout=10, message="a session")
    return session["id"], container


async def unchanged(
    e2e: E2E, operator: OperatorProcess, *, session_id: str, container: str
) -> None:
    """The fleet runs as before: same session on GitHub, same runner container, listening."""
    session = e2e.session("linux")
    assert session is not None and session["id"] == session_id
    assert [c.id for c in await running(e2e.fleet, "linux")] == [container]
    assert (await operator.scale_set("linux"))["state"] == "listening"


async def wait_reload(operator: OperatorProcess, *, ok: bool) -> dict[str, object]:
    async def settled() -> dict[str, object] | None:
        reload = (await operator.status())["reload"]
        return reload if reload["ok"] is ok else None

    found: dict[str, object] = await eventually(settled, timeout=10, message=f"reload ok={ok}")
    return found


def line_of(text: str, needle: str) -> int:
    """The 1-based line of the first line of `text` containing `needle`."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


async def test_a_bad_manifest_is_rejected_whole_and_fixing_it_recovers(e2e: E2E) -> None:
    good = e2e.manifest([{"name": "linux", "minRunners": 1, "maxRunners": 2}])
    path = e2e.write(good)
    operator = e2e.start(path)
    session_id, container = await listening_with_a_runner(e2e, operator)
    assert metric_value(await operator.metrics(), RELOAD_OK) == 1

    broken = good.replace("maxRunners: 2", "maxRunners: [2")
    for bad, line in (
        (broken, len(broken.splitlines()) + 1),  # the YAML ends inside the open list
        (good.replace("minRunners: 1", "minRunners: 3"), line_of(good, "minRunners")),
    ):
        path.write_text(bad)
        reload = await wait_reload(operator, ok=False)
        error = str(reload["error"])
        assert error.startswith(f"{path}:{line}:"), error
        assert metric_value(await operator.metrics(), RELOAD_OK) == 0
        await unchanged(e2e, operator, session_id=session_id, container=container)
        assert (await operator.status())["generation"] == 1
        path.write_text(good)
        reload = await wait_reload(operator, ok=True)
        assert reload["error"] is None
        assert metric_value(await operator.metrics(), RELOAD_OK) == 1
    assert "manifest rejected; the fleet keeps running on generation 1" in operator.log_text()
    await unchanged(e2e, operator, session_id=session_id, container=container)


async def test_a_manifest_that_removes_every_scale_set_is_refused(e2e: E2E) -> None:
    empty = e2e.write(e2e.manifest([]), "empty.yaml")
    at_start = e2e.start(empty)
    assert await at_start.wait() == 1
    lines = at_start.log_lines()
    assert lines == [
        f"runscaler: {empty}: the manifest has no scale sets; refusing without --allow-empty"
    ], lines

    path = e2e.write(e2e.manifest([{"name": "linux", "minRunners": 1}]))
    operator = e2e.start(path)
    session_id, container = await listening_with_a_runner(e2e, operator)
    path.write_text(e2e.manifest([]))
    reload = await wait_reload(operator, ok=False)
    assert reload["error"] == (
        f"{path}: the manifest removes every scale set; refusing without --allow-empty"
    )
    await unchanged(e2e, operator, session_id=session_id, container=container)
    assert e2e.scale_set("linux") is not None


async def test_allow_empty_accepts_a_fleet_without_scale_sets(e2e: E2E) -> None:
    path = e2e.write(e2e.manifest([]))
    operator = e2e.start(path, "--allow-empty")
    await operator.wait_ready()
    assert (await operator.status())["scaleSets"] == []

    path.write_text(e2e.manifest([{"name": "linux"}]))
    await eventually(lambda: e2e.session("linux"), timeout=10, message="linux listening")
    path.write_text(e2e.manifest([]))
    await eventually(lambda: e2e.deleted("linux"), timeout=20, message="linux deleted")
    status = await operator.status()
    assert (status["generation"], status["reload"]["ok"], status["scaleSets"]) == (3, True, [])


async def test_a_reload_that_renames_the_fleet_is_refused(e2e: E2E) -> None:
    good = e2e.manifest([{"name": "linux", "minRunners": 1}])
    path = e2e.write(good)
    operator = e2e.start(path)
    session_id, container = await listening_with_a_runner(e2e, operator)

    path.write_text(good.replace(f"name: {e2e.fleet}", "name: another-fleet"))
    reload = await wait_reload(operator, ok=False)
    assert reload["error"] == (
        f"{path}: metadata.name changed from {e2e.fleet!r} to 'another-fleet'; "
        "a running operator keeps its fleet name (restart it to rename)"
    )
    await unchanged(e2e, operator, session_id=session_id, container=container)
    assert (await operator.status())["fleet"] == e2e.fleet


def write_unseen(path: Path, text: str) -> None:
    """Change the manifest without a change event in its directory (through a hard link)."""
    elsewhere = path.parent.parent / f"{path.name}.unwatched"
    elsewhere.unlink(missing_ok=True)
    os.link(path, elsewhere)
    with elsewhere.open("r+") as handle:  # in place: the manifest's inode changes
        handle.write(text)
        handle.truncate()
    elsewhere.unlink()


async def test_post_reload_answers_applied_unchanged_and_rejected(e2e: E2E) -> None:
    path = e2e.write(e2e.manifest([{"name": "linux", "maxRunners": 2}]))
    operator = e2e.start(path, timing_scale="1")
    await operator.wait_ready()
    await eventually(lambda: e2e.session("linux"), timeout=10, message="linux listening")

    write_unseen(path, e2e.manifest([{"name": "linux", "maxRunners": 3}]))
    assert (await operator.status())["generation"] == 1  # nobody noticed
    applied = await operator.post_reload()
    assert (applied.status_code, applied.json()) == (200, {"result": "applied", "generation": 2})
    session = await eventually(lambda: e2e.session("linux"), timeout=5, message="session")
    await eventually(
        lambda: e2e.session("linux")["maxCapacity"] == 3,  # type: ignore[index]
        timeout=5,
        message="the new maxCapacity",
    )
    assert e2e.session("linux")["id"] == session["id"]  # type: ignore[index]

    again = await operator.post_reload()
    assert (again.status_code, again.json()) == (200, {"result": "unchanged", "generation": 2})

    write_unseen(path, e2e.manifest([{"name": "linux", "maxRunners": 0}]))
    rejected = await operator.post_reload()
    assert rejected.status_code == 422
    body = rejected.json()
    assert body["result"] == "rejected"
    assert body["error"].startswith(f"{path}:")
    assert "maxRunners" in body["error"]
    assert (await operator.status())["generation"] == 2


async def test_sighup_rereads_the_manifest(e2e: E2E) -> None:
    path = e2e.write(e2e.manifest([{"name": "linux"}]))
    operator = e2e.start(path, timing_scale="1")
    await operator.wait_ready()
    await eventually(lambda: e2e.session("linux"), timeout=10, message="linux listening")

    write_unseen(path, e2e.manifest([{"name": "linux"}, {"name": "arm64"}]))
    assert (await operator.status())["generation"] == 1
    operator.signal(signal.SIGHUP)
    await eventually(lambda: e2e.session("arm64"), timeout=5, message="arm64 listening")
    status = await operator.status()
    assert status["generation"] == 2
    assert sorted(s["name"] for s in status["scaleSets"]) == ["arm64", "linux"]
    assert "SIGHUP: re-reading the manifest" in operator.log_text()
    assert operator.process.poll() is None  # SIGHUP does not stop it
