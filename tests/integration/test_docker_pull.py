"""Pull policies against a local registry, with the progress a user sees.

The payload image is the busybox image plus a 4 MiB random layer, pushed to Debian's
`docker-registry` on loopback and removed locally, so a pull downloads that layer for real
(and reports `Downloading` progress) while the busybox layers `Already exist`.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from runscaler.backends.base import LABEL_FLEET, LABEL_RUNNER, BackendError, RunnerSpec
from runscaler.backends.docker import DockerBackend
from runscaler.backends.docker_pull import PullEvent, is_mutable_tag
from runscaler.console.pulls import LogPullProgress, RichPullProgress, pull_progress
from runscaler.manifest.models import DockerTemplate
from tests.integration.dockerkit import LocalRegistry, build_image, docker, free_port
from tests.waiting import eventually

pytestmark = pytest.mark.docker


@dataclass
class Recorder:
    """A `PullProgress` that keeps what it was told."""

    started: list[str] = field(default_factory=list)
    events: list[PullEvent] = field(default_factory=list)
    finished: list[tuple[str, str | None]] = field(default_factory=list)

    def pull_started(self, image: str) -> None:
        self.started.append(image)

    def pull_event(self, event: PullEvent) -> None:
        self.events.append(event)

    def pull_finished(self, image: str, *, error: str | None = None) -> None:
        self.finished.append((image, error))


@pytest.fixture(scope="module")
def pushed_payload(
    busybox_image: str, local_registry: LocalRegistry, tmp_path_factory: pytest.TempPathFactory
) -> str:
    context = tmp_path_factory.mktemp("payload")
    local = f"runscaler-test/payload-build:{secrets.token_hex(4)}"
    build_image(
        local,
        dockerfile=f"FROM {busybox_image}\nRUN dd if=/dev/urandom of=/payload bs=1M count=4\n",
        context=context,
    )
    try:
        return local_registry.push(local, f"runscaler-test/payload:{secrets.token_hex(4)}")
    finally:
        docker("rmi", "-f", local, check=False)


@pytest.fixture
def payload(pushed_payload: str) -> Iterator[str]:
    """The payload's registry reference, absent from the engine before and after the test."""
    docker("rmi", "-f", pushed_payload, check=False)
    try:
        yield pushed_payload
    finally:
        docker("rmi", "-f", pushed_payload, check=False)


def template(image: str, pull: str) -> DockerTemplate:
    return DockerTemplate.model_validate({"image": image, "pull": pull})


def present(image: str) -> bool:
    return docker("image", "inspect", image, check=False).returncode == 0


async def test_missing_pulls_an_absent_image_once_and_reports_progress(
    payload: str, fleet_name: str
) -> None:
    progress = Recorder()
    backend = DockerBackend(fleet=fleet_name, pull_progress=progress)
    try:
        await backend.prepare(template(payload, "missing"))
        await backend.prepare(template(payload, "missing"))
    finally:
        await backend.close()

    assert present(payload)
    assert progress.started == [payload]
    assert progress.finished == [(payload, None)]
    downloads = [e for e in progress.events if e.status == "Downloading"]
    assert downloads, "no download progress was reported"
    assert all(e.layer and e.total and e.current is not None for e in downloads)
    assert {"Already exists", "Pull complete"} <= {e.status for e in progress.events}


async def test_always_pulls_once_per_backend_lifetime(payload: str, fleet_name: str) -> None:
    progress = Recorder()
    first = DockerBackend(fleet=fleet_name, pull_progress=progress)
    second = DockerBackend(fleet=fleet_name, pull_progress=progress)
    try:
        for _ in range(3):
            await first.prepare(template(payload, "always"))
        assert progress.started == [payload]
        await second.prepare(template(payload, "always"))
    finally:
        await first.close()
        await second.close()

    assert progress.started == [payload, payload]


async def test_never_uses_a_present_image_and_refuses_an_absent_one(
    payload: str, busybox_image: str, docker_backend: DockerBackend
) -> None:
    await docker_backend.prepare(template(busybox_image, "never"))

    with pytest.raises(BackendError) as caught:
        await docker_backend.prepare(template(payload, "never"))

    assert str(caught.value) == (
        f"image {payload} is not on Docker at unix:///var/run/docker.sock and docker.pull is "
        "never: load it there (docker pull or docker load) or set docker.pull: missing"
    )
    assert not present(payload)


async def test_concurrent_prepares_share_one_pull(payload: str, fleet_name: str) -> None:
    progress = Recorder()
    backend = DockerBackend(fleet=fleet_name, pull_progress=progress)
    try:
        await asyncio.gather(
            *(backend.prepare(template(payload, policy)) for policy in ["missing", "always"] * 5)
        )
    finally:
        await backend.close()

    assert progress.started == [payload]
    assert present(payload)


async def test_a_failed_pull_says_which_image_and_why(
    local_registry: LocalRegistry, docker_backend: DockerBackend
) -> None:
    progress = Recorder()
    backend = DockerBackend(fleet=docker_backend.fleet, pull_progress=progress)
    image = f"{local_registry.host}/runscaler-test/never-pushed:1"
    try:
        with pytest.raises(BackendError) as caught:
            await backend.prepare(template(image, "missing"))
    finally:
        await backend.close()

    assert str(caught.value).startswith(
        f"cannot pull image {image} on Docker at unix:///var/run/docker.sock: "
    )
    assert "manifest unknown" in str(caught.value)
    assert progress.finished == [(image, str(caught.value))]


async def test_always_keeps_using_the_local_copy_when_the_registry_is_down(
    busybox_image: str, docker_backend: DockerBackend, caplog: pytest.LogCaptureFixture
) -> None:
    image = f"127.0.0.1:{free_port()}/runscaler-test/offline:{secrets.token_hex(4)}"
    docker("tag", busybox_image, image)
    try:
        await docker_backend.prepare(template(image, "always"))
    finally:
        docker("rmi", image, check=False)

    assert f"cannot pull image {image}" in caplog.text
    assert "using the copy already on the engine" in caplog.text


async def test_check_finds_a_pullable_image_without_downloading_it(
    payload: str, docker_backend: DockerBackend
) -> None:
    summary = await docker_backend.check(template(payload, "missing"))

    assert re.fullmatch(
        rf"Docker \S+ at unix:///var/run/docker.sock: image {re.escape(payload)} not present; "
        r"pullable \(sha256:[0-9a-f]{64}\)",
        summary,
    ), summary
    assert not present(payload)


async def test_check_refuses_an_image_no_registry_has(
    local_registry: LocalRegistry, docker_backend: DockerBackend
) -> None:
    image = f"{local_registry.host}/runscaler-test/never-pushed:1"

    with pytest.raises(BackendError) as caught:
        await docker_backend.check(template(image, "missing"))

    assert str(caught.value) == (
        f"image {image} is not on Docker at unix:///var/run/docker.sock and cannot be pulled: "
        f"manifest unknown: manifest unknown"
    )


async def _pull_with(progress: Any, *, image: str, fleet: str) -> None:
    backend = DockerBackend(fleet=fleet, pull_progress=progress)
    try:
        await backend.prepare(template(image, "missing"))
    finally:
        await backend.close()


async def test_log_progress_is_one_line_at_the_start_and_one_at_the_end(
    payload: str, fleet_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="runscaler.pulls")

    await _pull_with(LogPullProgress(interval=3600), image=payload, fleet=fleet_name)

    lines = [r.getMessage() for r in caplog.records if r.name == "runscaler.pulls"]
    assert lines[0] == f"pulling {payload}"
    assert re.fullmatch(
        rf"pulled {re.escape(payload)} in \d+\.\ds \(\d+ layers, [45]\.\d MiB\)", lines[1]
    ), lines
    assert len(lines) == 2


async def test_log_progress_reports_layers_and_bytes_between(
    payload: str, fleet_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="runscaler.pulls")

    await _pull_with(LogPullProgress(interval=0), image=payload, fleet=fleet_name)

    lines = [r.getMessage() for r in caplog.records if r.name == "runscaler.pulls"]
    between = lines[1:-1]
    assert between
    assert all(
        re.fullmatch(rf"pulling {re.escape(payload)}: \d+/\d+ layers, .* MiB of .* MiB", line)
        for line in between
    ), between


async def test_rich_progress_draws_a_bar_that_ends_done(payload: str, fleet_name: str) -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120, color_system=None)

    await _pull_with(RichPullProgress(console), image=payload, fleet=fleet_name)

    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    assert re.search(rf"pulling {re.escape(payload)} .* MiB .*done", text), text[-500:]


def test_progress_is_live_on_a_terminal_and_log_lines_elsewhere(tmp_path: Path) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert isinstance(pull_progress(io.StringIO()), LogPullProgress)
    assert isinstance(pull_progress(Terminal()), RichPullProgress)


async def test_a_runner_that_exits_outdated_gets_its_mutable_tag_pulled_again(
    payload: str, fleet_name: str
) -> None:
    progress = Recorder()
    backend = DockerBackend(fleet=fleet_name, pull_progress=progress)
    spec = DockerTemplate.model_validate(
        {"image": payload, "pull": "missing", "user": "0", "command": ["sh", "-c", "exit 7"]}
    )
    selector = {LABEL_FLEET: fleet_name}
    try:
        await backend.prepare(spec)
        async with contextlib.aclosing(backend.exits(selector)) as exits:
            await backend.start(
                RunnerSpec(
                    name="linux-0000beef",
                    jit_config="not-a-real-jit-config",
                    labels={**selector, LABEL_RUNNER: "linux-0000beef"},
                    template=spec,
                )
            )
            async with asyncio.timeout(30):
                event = await anext(aiter(exits))
        assert event.exit_code == 7
        await backend.prepare(spec)  # present, but outdated: pulled again
        await backend.prepare(spec)  # once
        await backend.remove("linux-0000beef")
    finally:
        await backend.close()
    assert progress.started == [payload, payload]


async def test_always_pulls_again_once_the_refresh_interval_has_passed(
    payload: str, fleet_name: str
) -> None:
    progress = Recorder()
    backend = DockerBackend(fleet=fleet_name, pull_progress=progress, image_refresh=0.3)
    try:
        await backend.prepare(template(payload, "always"))
        await backend.prepare(template(payload, "always"))
        assert progress.started == [payload]  # fresh: not pulled per runner

        async def pulled_again() -> bool:
            await backend.prepare(template(payload, "always"))
            return len(progress.started) == 2

        await eventually(pulled_again, timeout=10, message="pulled again after the interval")
    finally:
        await backend.close()


async def test_missing_refreshes_a_latest_tag_on_schedule_but_not_a_pinned_tag(
    payload: str, busybox_image: str, local_registry: LocalRegistry, fleet_name: str
) -> None:
    latest = local_registry.push(busybox_image, "runscaler-test/payload-latest:latest")
    progress = Recorder()
    backend = DockerBackend(fleet=fleet_name, pull_progress=progress, image_refresh=0.3)
    try:
        for image in (latest, payload):
            await backend.prepare(template(image, "missing"))  # absent: pulled once each
        assert sorted(progress.started) == sorted([latest, payload])
        progress.started.clear()

        async def refreshed() -> bool:
            for image in (latest, payload):
                await backend.prepare(template(image, "missing"))
            return bool(progress.started)

        await eventually(refreshed, timeout=10, message="the latest tag pulled again")
        assert progress.started == [latest]  # the pinned tag is never pulled again
    finally:
        await backend.close()
        docker("rmi", "-f", latest, check=False)


def test_only_latest_and_untagged_images_count_as_mutable() -> None:
    assert is_mutable_tag("ghcr.io/actions/actions-runner:latest")
    assert is_mutable_tag("ghcr.io/actions/actions-runner")
    assert is_mutable_tag("127.0.0.1:5000/runner")  # a registry port is not a tag
    assert not is_mutable_tag("127.0.0.1:5000/runner:2.320.0")
    assert not is_mutable_tag("runner@sha256:" + "0" * 64)


async def test_an_untagged_image_pulls_latest_and_no_other_tag(
    busybox_image: str, local_registry: LocalRegistry, fleet_name: str
) -> None:
    repository = f"runscaler-test/untagged-{secrets.token_hex(4)}"
    latest = local_registry.push(busybox_image, f"{repository}:latest")
    other = local_registry.push(busybox_image, f"{repository}:other")
    untagged = latest.removesuffix(":latest")
    for image in (latest, other):
        docker("rmi", "-f", image, check=False)
    backend = DockerBackend(fleet=fleet_name)
    try:
        await backend.prepare(template(untagged, "missing"))
        # The engine pulls every tag of a repository asked for without one; `docker pull`
        # means latest, and so do we.
        assert present(latest)
        assert not present(other)
    finally:
        await backend.close()
        for image in (latest, other):
            docker("rmi", "-f", image, check=False)
