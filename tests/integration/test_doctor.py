"""`runscaler doctor [--fix]` as a user runs it: a real process, the simulator, the real engine.

Leftovers are made the way a crash leaves them: containers carrying our labels (some exited,
some running with or without a GitHub registration), a session recorded in the state file and
still open on the simulator, a scale set the fleet owned that the manifest dropped. Beside them
stand things doctor must never remove: a runner running a job (listed, since no operator
watches it, but kept), another fleet's container, and a container named like ours without our
labels.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from runscaler.backends.base import (
    LABEL_FLEET,
    LABEL_RUNNER,
    LABEL_SCALE_SET,
    LABEL_SCALE_SET_KEY,
)
from runscaler.engine.fleetlock import FleetLock
from runscaler.engine.statefile import StateFile
from runscaler.github.auth import TokenCredentials
from runscaler.github.client import ScaleSetClient
from runscaler.github.models import JobAvailable, RunnerScaleSet
from runscaler.manifest.loading import load_manifest
from runscaler.manifest.models import ScaleSet
from runscaler.simulator.server import Simulator, SimulatorOptions, serve_simulator
from tests.integration.dockerkit import cleanup_fleet, docker, free_port, unique
from tests.integration.githubkit import take_job_as_runner
from tests.integration.runtimekit import TOKEN_ENV

pytestmark = pytest.mark.docker

TOKEN = "ghp_doctor_test_token_0123456789"


@pytest.fixture
async def github() -> AsyncIterator[Simulator]:
    # Sessions outlive the test: a "stale" one must still be open when doctor looks.
    async with serve_simulator(SimulatorOptions(poll_wait=0.3, session_timeout=600)) as sim:
        yield sim


@dataclass
class Setup:
    tmp: Path
    sim: Simulator
    fleet: str
    image: str

    @property
    def manifest(self) -> Path:
        return self.tmp / "fleet.yaml"

    @property
    def state_dir(self) -> Path:
        return self.tmp / "state"

    def write_manifest(self, *, host: str | None = None, extra: str = "") -> Path:
        """The one-scale-set manifest; `extra` adds lines under its `docker:`."""
        docker_host = f"\n      host: {host}" if host else ""
        docker_host += "".join(f"\n      {line}" for line in extra.splitlines())
        self.manifest.write_text(
            f"""\
apiVersion: runscaler/v1
kind: Fleet
metadata:
  name: {self.fleet}
scaleSets:
  - name: linux
    github:
      url: {self.sim.config_url("acme")}
      auth:
        token: env:{TOKEN_ENV}
    maxRunners: 3
    docker:
      image: {self.image}
      pull: never
      network: host{docker_host}
"""
        )
        return self.manifest

    @property
    def key(self) -> str:
        return load_manifest(self.manifest).fleet.scale_sets[0].key

    def client(self) -> ScaleSetClient:
        return ScaleSetClient(
            config_url=self.sim.config_url("acme"), credentials=lambda: TokenCredentials(TOKEN)
        )

    def container(
        self,
        runner: str,
        *,
        running: bool,
        fleet: str | None = None,
        labels: bool = True,
        scale_set_key: str | None = None,
    ) -> str:
        """A container labelled like one of our runners: `sleep` when running, else exited."""
        fleet = fleet or self.fleet
        name = f"runscaler-{fleet}-{runner}"
        marks: list[str] = []
        if labels:
            for key, value in (
                (LABEL_FLEET, fleet),
                (LABEL_SCALE_SET, "linux"),
                (LABEL_SCALE_SET_KEY, scale_set_key or self.key),
                (LABEL_RUNNER, runner),
            ):
                marks += ["--label", f"{key}={value}"]
        if running:
            docker("run", "-d", "--name", name, *marks, self.image, "sleep", "300")
        else:
            docker("run", "--name", name, *marks, self.image, "true")
        return name

    def helper(self) -> str:
        name = f"runscaler-{self.fleet}-sweep-{unique('h')}"
        labels = ["--label", f"{LABEL_FLEET}={self.fleet}", "--label", "dev.runscaler.role=sweep"]
        docker("create", "--name", name, *labels, self.image, "true")
        return name


@pytest.fixture
def setup(
    tmp_path: Path,
    github: Simulator,
    fleet_name: str,
    busybox_image: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Setup:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    made = Setup(tmp_path, github, fleet_name, busybox_image)
    made.write_manifest()
    return made


@pytest.fixture
def other_fleet(docker_engine: str) -> Iterator[str]:
    name = unique("t")
    try:
        yield name
    finally:
        cleanup_fleet(name)


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()

    def checks(self, status: str) -> list[str]:
        return [line for line in self.lines if line.startswith(f"{status} ")]


async def doctor(*args: str, cwd: Path) -> Result:
    """`runscaler doctor` in its own process, GitHub retries shortened."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "runscaler", "doctor", *args, "--timing-scale", "0.05",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env={k: v for k, v in os.environ.items() if k != "RUNSCALER_MANIFEST"},
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout=90)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())


def exists(name: str) -> bool:
    return docker("inspect", name, check=False).returncode == 0


def is_running(name: str) -> bool:
    found = docker("inspect", "-f", "{{.State.Running}}", name, check=False)
    return found.stdout.strip() == "true"


async def test_a_healthy_setup_is_all_ok(setup: Setup) -> None:
    result = await doctor(str(setup.manifest), "--state-dir", str(setup.state_dir), cwd=setup.tmp)
    assert result.code == 0, result.out + result.err
    assert result.checks("fail") == [] and result.checks("warn") == []
    subjects = [line.split()[1] for line in result.lines if line.startswith("ok ")]
    assert subjects == ["python", "manifest", "docker", "image", "scale", "state", "operator"]
    url = setup.sim.config_url("acme")
    assert (
        f"ok    scale set  linux ({url}): credentials ok, runner group default (id 1), "
        "scale set would be created"
    ) in result.lines
    assert "ok    image      Docker " in result.out
    assert f": image {setup.image} present (pull: never)" in result.out
    assert result.lines[-1] == "doctor: 7 ok, 0 warnings, 0 failed, 0 leftovers"


async def test_leftovers_are_found_then_fixed_and_what_may_run_a_job_is_untouched(
    setup: Setup, other_fleet: str
) -> None:
    async with setup.client() as client:
        scale_set = await client.create_scale_set(
            RunnerScaleSet(name="linux", runner_group_id=1, labels=("linux",))
        )
        # A crashed operator's session, remembered in the state file and still open.
        session = await client.create_session(scale_set.id, owner="crashed-host")
        StateFile.for_fleet(setup.state_dir, setup.fleet).update(
            setup.key, scale_set_id=scale_set.id, session_id=session.session_id
        )
        # A runner left running a job (no operator watches it now).
        setup.sim.add_jobs(["linux"], duration=300)
        message = await session.get_message(last_message_id=0, max_capacity=1)
        assert message is not None
        (available,) = [j for j in message.jobs if isinstance(j, JobAvailable)]
        await session.acquire_jobs([available.runner_request_id])
        jit = await client.generate_jit_config(scale_set.id, runner_name="linux-busy0001")
        assert (await take_job_as_runner(setup.sim, jit.encoded))["state"] == "assigned"
        await client.generate_jit_config(scale_set.id, runner_name="linux-done0001")
    busy = setup.container("linux-busy0001", running=True)  # running a job
    done = setup.container("linux-done0001", running=False)  # exited, still registered
    gone = setup.container("linux-gone0001", running=True)  # running, GitHub forgot it
    helper = setup.helper()
    theirs = setup.container("linux-their001", running=False, fleet=other_fleet)
    unlabelled = setup.container("linux-nolabel1", running=False, labels=False)
    try:
        args = (str(setup.manifest), "--state-dir", str(setup.state_dir))
        found = await doctor(*args, cwd=setup.tmp)
        assert found.code == 1, found.out + found.err
        assert found.checks("fail") == []
        host = "unix:///var/run/docker.sock"
        listed = found.out[found.out.index(f"leftovers of fleet {setup.fleet} (5):") :]
        assert (
            f"  orphaned runner      {busy} on {host}: running with no operator of its fleet"
        ) in listed
        assert f"  exited runner        {done} on {host}: exited (0)" in listed
        assert (
            f"  unregistered runner  {gone} on {host}: running, but GitHub no longer knows "
            "its registration: it can run no job"
        ) in listed
        assert (
            f"  helper container     {helper} on {host}: sweep helper, created, never started"
            in listed
        )
        url = setup.sim.config_url("acme")
        assert (
            f"  stale session        {session.session_id} on linux ({url}): "
            "opened by an operator of this fleet that is gone"
        ) in listed
        for untouched in (theirs, unlabelled, other_fleet):
            assert untouched not in found.out
        assert "run `runscaler doctor --fix` to remove them" in found.out
        assert found.lines[-1] == "doctor: 7 ok, 0 warnings, 0 failed, 5 leftovers"

        fixed = await doctor(*args, "--fix", cwd=setup.tmp)
        assert fixed.code == 1, fixed.out + fixed.err  # the busy runner remains
        assert (
            f"  fixed exited runner        {done}: unregistered on GitHub and removed"
            in fixed.lines
        )
        assert (
            f"  fixed stale session        {session.session_id}: closed on GitHub and forgotten"
            in fixed.lines
        )
        assert "GitHub says it is running a job" in fixed.out
        assert "4 of 5 leftovers removed" in fixed.lines[-1], fixed.lines[-1]
        assert not exists(done) and not exists(gone) and not exists(helper)
        assert is_running(busy)
        assert exists(theirs) and exists(unlabelled)
        assert session.session_id not in setup.sim.state.sessions
        assert StateFile.for_fleet(setup.state_dir, setup.fleet).get(setup.key).session_id is None
        async with setup.client() as client:
            assert await client.get_runner_by_name("linux-done0001") is None
            assert await client.get_runner_by_name("linux-busy0001") is not None

        again = await doctor(*args, cwd=setup.tmp)
        assert again.code == 1, again.out + again.err
        assert again.lines[-1] == "doctor: 7 ok, 0 warnings, 0 failed, 1 leftover"
    finally:
        docker("rm", "-f", unlabelled, check=False)


async def test_a_scale_set_the_manifest_dropped_is_listed_and_fix_finishes_deleting_it(
    setup: Setup,
) -> None:
    async with setup.client() as client:
        old = await client.create_scale_set(
            RunnerScaleSet(name="old", runner_group_id=1, labels=("old",))
        )
        await client.generate_jit_config(old.id, runner_name="old-idle0001")
    spec = {
        "name": "old",
        "github": {"url": setup.sim.config_url("acme"), "auth": {"token": f"env:{TOKEN_ENV}"}},
        "docker": {"image": setup.image, "pull": "never"},
    }
    dropped = ScaleSet.model_validate(spec)
    memory = StateFile.for_fleet(setup.state_dir, setup.fleet)
    memory.own(dropped.key, spec=spec, base_dir=setup.tmp)
    memory.update(dropped.key, scale_set_id=old.id, session_id=None)
    memory.mark_deleting(dropped.key, deadline=0.0)
    idle = setup.container(
        "old-idle0001", running=True, scale_set_key=dropped.key
    )  # left by kill -9

    args = (str(setup.manifest), "--state-dir", str(setup.state_dir))
    found = await doctor(*args, cwd=setup.tmp)
    url = setup.sim.config_url("acme")
    assert (
        f"  removed scale set    #{old.id} on old ({url}): owned by this fleet and still on "
        "GitHub; "
        "was draining when its operator stopped"
    ) in found.lines, found.out
    assert any(line.startswith(f"  orphaned runner      {idle} ") for line in found.lines)

    fixed = await doctor(*args, "--fix", cwd=setup.tmp)
    assert fixed.code == 0, fixed.out + fixed.err
    assert not exists(idle)
    assert setup.sim.state.snapshot()["deletedScaleSets"][0]["name"] == "old"
    assert [o.key for o in StateFile.for_fleet(setup.state_dir, setup.fleet).owned()] == []


async def test_fix_refuses_while_an_operator_holds_the_fleet_lock(setup: Setup) -> None:
    exited = setup.container("linux-done0002", running=False)
    lock = FleetLock.acquire(setup.state_dir, setup.fleet)
    try:
        args = (str(setup.manifest), "--state-dir", str(setup.state_dir), "--fix")
        refused = await doctor(*args, cwd=setup.tmp)
    finally:
        lock.release()
    assert refused.code == 1
    assert refused.out == ""
    assert refused.err == (
        f"runscaler: refusing to fix: an operator of fleet {setup.fleet} is running "
        f"(pid {os.getpid()}) with the state directory {setup.state_dir}; stop it first "
        "(runscaler doctor without --fix only lists)\n"
    )
    assert exists(exited)


@pytest.mark.parametrize("kind", ["closed tcp port", "missing socket"])
async def test_an_unreachable_engine_is_one_failing_line_saying_what_to_do(
    setup: Setup, kind: str
) -> None:
    host = (
        f"tcp://127.0.0.1:{free_port()}"
        if kind == "closed tcp port"
        else f"unix://{setup.tmp}/missing/docker.sock"
    )
    setup.write_manifest(host=host)
    result = await doctor(str(setup.manifest), "--state-dir", str(setup.state_dir), cwd=setup.tmp)
    assert result.code == 1
    assert result.checks("fail") == [
        f"fail  docker     cannot reach Docker at {host}: is the engine running? start it "
        "(systemctl start docker, or scripts/ensure-docker) or fix docker.host (or $DOCKER_HOST)"
    ]
    assert result.lines[-1].endswith(", 1 failed, 0 leftovers")


async def test_without_a_manifest_leftovers_are_listed_by_fleet_and_fix_needs_fleet(
    setup: Setup, other_fleet: str
) -> None:
    exited = setup.container("linux-done0003", running=False)
    theirs = setup.container("linux-their003", running=False, fleet=other_fleet)
    setup.manifest.unlink()
    state = ("--state-dir", str(setup.state_dir))

    listed = await doctor("--fleet", setup.fleet, *state, cwd=setup.tmp)
    assert listed.code == 1
    assert listed.checks("warn")[0].startswith("warn  manifest   no manifest at fleet.yaml:")
    assert f"leftovers of fleet {setup.fleet} (1):" in listed.lines
    assert theirs not in listed.out

    everyone = await doctor(*state, cwd=setup.tmp)
    assert f"leftovers of fleet {other_fleet} (1):" in everyone.lines
    assert exited in everyone.out and theirs in everyone.out
    # Each fleet's own command: a fleet nobody wrote down (a killed demo's) is named for them.
    for fleet in (setup.fleet, other_fleet):
        assert (
            f"run `runscaler doctor --fix --fleet {fleet}` to remove them "
            "(a registered runner is kept)"
        ) in everyone.lines

    refused = await doctor("--fix", *state, cwd=setup.tmp)
    assert (refused.code, refused.out) == (1, "")
    assert refused.err == (
        "runscaler: --fix without a manifest needs --fleet NAME: say whose leftovers to "
        "remove (runscaler doctor lists them by fleet)\n"
    )

    fixed = await doctor("--fix", "--fleet", setup.fleet, *state, cwd=setup.tmp)
    assert fixed.code == 0, fixed.out + fixed.err
    assert not exists(exited) and exists(theirs)


async def test_an_unused_shared_volume_and_buildx_leftovers_are_found_and_swept(
    setup: Setup,
) -> None:
    setup.write_manifest(extra="dind: true")
    shared = f"runscaler-{setup.fleet}-shared"
    docker(
        "volume", "create", "--label", f"{LABEL_FLEET}={setup.fleet}",
        "--label", "dev.runscaler.role=shared", shared,
    )  # fmt: skip
    # What `docker buildx` leaves when a job's builder stopped (Debian 12 has no buildx).
    builder = unique("buildx_buildkit_doctor").replace("-", "_")
    docker("volume", "create", f"{builder}_state")
    docker("run", "--name", builder, "-v", f"{builder}_state:/state", setup.image, "true")
    orphan = f"{unique('buildx_buildkit_orphan').replace('-', '_')}_state"
    docker("volume", "create", orphan)
    args = (str(setup.manifest), "--state-dir", str(setup.state_dir))
    try:
        found = await doctor(*args, cwd=setup.tmp)
        assert found.code == 1, found.out + found.err
        host = "unix:///var/run/docker.sock"
        assert (
            f"  shared volume        {shared} on {host}: no scale set on this engine uses "
            "sharedVolume any more"
        ) in found.lines
        assert (
            f"  buildx builder       {builder} on {host}: exited; its {builder}_state volume "
            "goes with it"
        ) in found.lines
        assert f"  buildx volume        {orphan} on {host}: no builder uses it" in found.lines

        fixed = await doctor(*args, "--fix", cwd=setup.tmp)
        assert fixed.code == 0, fixed.out + fixed.err
        for name in (shared, f"{builder}_state", orphan):
            assert docker("volume", "inspect", name, check=False).returncode != 0, name
        assert not exists(builder)

        setup.write_manifest(extra="sharedVolume:\n  path: /cache")
        docker(
            "volume", "create", "--label", f"{LABEL_FLEET}={setup.fleet}",
            "--label", "dev.runscaler.role=shared", shared,
        )  # fmt: skip
        in_use = await doctor(*args, cwd=setup.tmp)
        assert in_use.code == 0, in_use.out + in_use.err
        assert shared not in in_use.out
    finally:
        docker("rm", "-f", builder, check=False)
        docker("volume", "rm", "-f", f"{builder}_state", orphan, check=False)


async def test_manifest_warnings_and_failing_credentials_are_lines_of_their_own(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV)
    literal = "ghp_literal_token_in_the_manifest_0123"
    url = setup.sim.config_url("acme")
    setup.manifest.write_text(
        f"""\
apiVersion: runscaler/v1
kind: Fleet
metadata:
  name: {setup.fleet}
defaults:
  github:
    url: {url}
  docker:
    image: {setup.image}
    pull: never
scaleSets:
  - name: linux
    github:
      auth:
        token: env:{TOKEN_ENV}
  - name: literal
    github:
      auth:
        token: {literal}
"""
    )
    result = await doctor(str(setup.manifest), "--state-dir", str(setup.state_dir), cwd=setup.tmp)
    assert result.code == 1
    assert result.checks("fail") == [
        f"fail  scale set  linux ({url}): secret env:{TOKEN_ENV}: {TOKEN_ENV} is not set in the "
        "environment; check the token or App credentials and their scopes"
    ]
    (warning,) = result.checks("warn")
    assert warning.startswith(f"warn  manifest   {setup.manifest}:19:16: warning: ")
    assert f"ok    scale set  literal ({url}): credentials ok" in result.out
    assert literal not in result.out + result.err


async def test_an_invalid_manifest_fails_its_line_and_the_engine_is_still_checked(
    setup: Setup,
) -> None:
    setup.manifest.write_text(setup.manifest.read_text().replace("maxRunners: 3", "maxRunners: 0"))
    result = await doctor(str(setup.manifest), "--state-dir", str(setup.state_dir), cwd=setup.tmp)
    assert result.code == 1
    assert result.checks("fail") == [
        f"fail  manifest   {setup.manifest}:11:17: scaleSets[0] (linux).maxRunners: must be "
        f">= 1, got 0 (runscaler validate {setup.manifest} shows every problem)"
    ]
    assert [line.split()[1] for line in result.checks("ok")] == ["python", "docker", "state"]
