"""`runscaler simulator` as a real process: the first line, a request, SIGTERM → exit 0."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from runscaler.commands.simulator import runner_image_note
from runscaler.simulator.runner import RUNNER_IMAGE
from tests.integration.dockerkit import make_tls_files


@pytest.fixture
def start() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    try:
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=30)


def simulator(started: list[subprocess.Popen[str]], *args: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "runscaler", "simulator", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started.append(process)
    return process


def test_the_simulator_prints_its_url_serves_and_stops_on_sigterm(
    start: list[subprocess.Popen[str]],
) -> None:
    process = simulator(start, "--listen", "127.0.0.1:0", "--poll-wait", "0.2")
    assert process.stdout is not None
    first = process.stdout.readline().strip()
    assert first.startswith("simulator listening on http://127.0.0.1:")
    url = first.rsplit(" ", 1)[1]
    port = int(url.rsplit(":", 1)[1])
    assert port > 0
    enqueue = urllib.request.Request(
        f"{url}/_sim/jobs",
        data=json.dumps({"labels": ["linux"], "count": 2}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(enqueue, timeout=10) as response:
        assert json.load(response) == {"ids": [1, 2]}
    with urllib.request.urlopen(f"{url}/_sim/state", timeout=10) as response:
        assert [job["state"] for job in json.load(response)["jobs"]] == ["queued", "queued"]
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=15)
    assert process.returncode == 0, err
    assert out == ""  # nothing after the first line
    assert "Traceback" not in err


def test_sigint_stops_it_cleanly_too(start: list[subprocess.Popen[str]]) -> None:
    process = simulator(start)
    assert process.stdout is not None
    assert process.stdout.readline().startswith("simulator listening on http://127.0.0.1:")
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=15)
    assert process.returncode == 0, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--listen", "0.0.0.0:0"],
            "runscaler: --listen 0.0.0.0:0: 0.0.0.0 is not a loopback address and the simulator "
            "accepts any token: use 127.0.0.1, or add --allow-remote to serve there anyway",
        ),
        (
            ["--app-key", "/nonexistent/key.pem"],
            "runscaler: --app-key /nonexistent/key.pem: cannot read it: No such file or directory",
        ),
        (
            ["--tls-cert", "/nonexistent/cert.pem"],
            "runscaler: --tls-cert and --tls-key go together: pass both, or neither",
        ),
        (
            ["--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"],
            "runscaler: --tls-cert /nonexistent/cert.pem, --tls-key /nonexistent/key.pem: "
            "cannot read them: No such file or directory",
        ),
    ],
)
def test_bad_settings_are_refused_in_one_line(
    start: list[subprocess.Popen[str]], args: list[str], message: str
) -> None:
    process = simulator(start, *args)
    out, err = process.communicate(timeout=30)
    assert (process.returncode, out, err.strip()) == (1, "", message)


def test_with_a_certificate_it_serves_https_that_its_ca_verifies(
    start: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    tls = make_tls_files(tmp_path)
    process = simulator(start, "--tls-cert", str(tls.server_cert), "--tls-key", str(tls.server_key))
    assert process.stdout is not None
    first = process.stdout.readline().strip()
    assert first.startswith("simulator listening on https://127.0.0.1:")
    url = first.rsplit(" ", 1)[1]
    trusted = ssl.create_default_context(cafile=str(tls.ca))
    with urllib.request.urlopen(f"{url}/_sim/state", timeout=10, context=trusted) as response:
        assert json.load(response)["sessions"] == []
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(f"{url}/_sim/state", timeout=10)  # not trusted by default
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0


def test_a_cert_without_its_key_is_refused_in_one_line(
    start: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    tls = make_tls_files(tmp_path)
    process = simulator(start, "--tls-cert", str(tls.server_cert), "--tls-key", str(tls.ca))
    out, err = process.communicate(timeout=30)
    assert (process.returncode, out) == (1, "")
    assert err.strip() == (
        f"runscaler: --tls-cert {tls.server_cert}, --tls-key {tls.ca}: not a PEM certificate and "
        "its unencrypted PEM key: pass the certificate (chain) and the key it was issued for"
    )


def test_a_port_in_use_is_refused_in_one_line(start: list[subprocess.Popen[str]]) -> None:
    first = simulator(start)
    assert first.stdout is not None
    url = first.stdout.readline().strip().rsplit(" ", 1)[1]
    address = url.removeprefix("http://")
    second = simulator(start, "--listen", address)
    out, err = second.communicate(timeout=30)
    assert second.returncode == 1 and out == ""
    assert err.strip() == (
        f"runscaler: --listen {address}: cannot listen there: Address already in use"
    )


def test_it_says_how_runners_use_it_on_stderr(start: list[subprocess.Popen[str]]) -> None:
    process = simulator(start)
    assert process.stdout is not None
    assert process.stdout.readline().startswith("simulator listening on http://127.0.0.1:")
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=15)

    [note] = [line for line in err.splitlines() if line.startswith("runner image: ")]
    assert f"image: {RUNNER_IMAGE}, pull: never and network: host" in note


def _docker_stub(tmp_path: Path, *, stderr: str, code: int) -> str:
    """A docker CLI answering `image inspect` as Docker does: the shared engine's images must
    not be removed to see what a machine without the image gets."""
    stub = tmp_path / "docker"
    stub.write_text(f"#!/bin/sh\necho '{stderr}' >&2\nexit {code}\n")
    stub.chmod(0o755)
    return str(stub)


def test_a_missing_runner_image_is_explained(tmp_path: Path) -> None:
    docker = _docker_stub(tmp_path, stderr=f"Error: No such image: {RUNNER_IMAGE}", code=1)

    note = runner_image_note(build=False, docker=docker)

    assert note.startswith(f"runner image: {RUNNER_IMAGE} is not built: add --build-runner-image")
    assert "network: host" in note


def test_no_engine_or_no_cli_is_said_in_one_line(tmp_path: Path) -> None:
    down = _docker_stub(tmp_path, stderr="Cannot connect to the Docker daemon", code=1)

    assert runner_image_note(build=False, docker=down) == (
        f"runner image: cannot ask Docker about {RUNNER_IMAGE}: is the engine running?"
    )
    assert runner_image_note(build=False, docker=str(tmp_path / "none")).startswith(
        f"runner image: no {tmp_path / 'none'} CLI here"
    )


@pytest.mark.docker
def test_build_runner_image_builds_it_or_finds_it_built() -> None:
    note = runner_image_note(build=True)

    assert note.startswith(f"runner image: {RUNNER_IMAGE} is built; runners: ")
    inspect = subprocess.run(
        ["docker", "image", "inspect", RUNNER_IMAGE], capture_output=True, timeout=30, check=False
    )
    assert inspect.returncode == 0
