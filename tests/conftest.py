"""Fixtures every test gets: the loopback-only network guard and the leak checks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

GUARD_DIR = Path(__file__).parent / "guard"
sys.path.insert(0, str(GUARD_DIR))

import loopback_only  # noqa: E402

loopback_only.install()

# Real Docker parts (busybox image, registry, extra engines) for every test package.
pytest_plugins = (
    "tests.integration.dockerkit",
    "tests.integration.runtimekit",
    "tests.integration.swarmkit",
)

_GUARD_LOG = Path(tempfile.mkstemp(prefix="runscaler-guard-", suffix=".log")[1])

# Python subprocesses (the operator, the simulator) get the same guard through sitecustomize.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(GUARD_DIR), os.environ.get("PYTHONPATH", "")) if p
)
os.environ["RUNSCALER_TEST_LOOPBACK_ONLY"] = "1"
os.environ["RUNSCALER_TEST_GUARD_LOG"] = str(_GUARD_LOG)
# Nothing a test runs may reach a proxy either: proxies are not on loopback.
for _name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
    os.environ.pop(_name, None)
os.environ["NO_PROXY"] = "*"


@pytest.fixture(autouse=True)
def _loopback_only() -> Iterator[None]:
    """Fail the test that tried to reach anything but loopback (in process or in a child)."""
    before = len(loopback_only.violations)
    size = _GUARD_LOG.stat().st_size if _GUARD_LOG.exists() else 0
    yield
    new = loopback_only.violations[before:]
    with _GUARD_LOG.open() as log:
        log.seek(size)
        child = log.read()
    assert not new and not child, "\n".join([*new, child])


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False)
    return probe.returncode == 0


def _ours(kind: str) -> list[str]:
    out = subprocess.run(
        [
            "docker",
            kind,
            "ls",
            "-aq" if kind == "container" else "-q",
            "--filter",
            "label=dev.runscaler.fleet",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return out.stdout.split()


@pytest.fixture(scope="session", autouse=True)
def _nothing_left_on_the_engine() -> Iterator[None]:
    """The suite leaves no container or volume of ours on the engine.

    The check is engine-wide, so a developer running several suites against one engine at
    once sets RUNSCALER_TEST_SHARED_ENGINE=1 to skip it; CI runs alone and always checks."""
    docker = _docker_answers() and os.environ.get("RUNSCALER_TEST_SHARED_ENGINE") != "1"
    before = {k: set(_ours(k)) for k in ("container", "volume")} if docker else {}
    yield
    _GUARD_LOG.unlink(missing_ok=True)
    if not docker:
        return
    leaked = {k: sorted(set(_ours(k)) - before[k]) for k in ("container", "volume")}
    assert not any(leaked.values()), f"the test suite left these on the engine: {leaked}"
