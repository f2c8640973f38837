"""Doctor's single checks and its report, each on its own (no engine, no GitHub needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runscaler.console.doctor import check_lines, report_lines, summary_line
from runscaler.doctoring import checks
from runscaler.doctoring.report import DoctorReport, Leftover, Outcome
from runscaler.engine.fleetlock import FleetLock
from runscaler.manifest.models import ScaleSet


def _scale_set(name: str, backend: str) -> ScaleSet:
    return ScaleSet.model_validate(
        {
            "name": name,
            "github": {"url": "https://github.com/acme", "auth": {"token": "env:T"}},
            "backend": backend,
        }
    )


def test_python_and_its_dependencies_import() -> None:
    check = checks.python_check()
    assert check.status == "ok"
    assert check.detail.endswith("; 11 dependencies import")


def test_tart_is_needed_only_by_tart_scale_sets_and_found_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert checks.tart_check([_scale_set("linux", "docker")]) is None
    missing = checks.tart_check([_scale_set("mac", "tart"), _scale_set("mac2", "tart")])
    assert missing == checks.Check(
        "fail",
        "tart",
        "scale sets mac, mac2 use backend tart, but `tart` is not on PATH: install Tart "
        "(brew install cirruslabs/cli/tart) on macOS on Apple Silicon",
    )
    tart = tmp_path / "tart"
    tart.write_text("#!/bin/sh\n")
    tart.chmod(0o755)
    assert checks.tart_check([_scale_set("mac", "tart")]) == checks.Check(
        "ok", "tart", f"tart at {tart}"
    )


def test_the_state_directory_is_writable_creatable_or_a_failure_saying_why(
    tmp_path: Path,
) -> None:
    assert checks.state_dir_check(tmp_path) == checks.Check(
        "ok", "state dir", f"{tmp_path} is writable"
    )
    assert os.listdir(tmp_path) == []  # the proof leaves nothing behind
    later = tmp_path / "a" / "b"
    assert checks.state_dir_check(later).detail == f"{later} does not exist yet; it will be created"
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert checks.state_dir_check(blocker) == checks.Check(
        "fail", "state dir", f"{blocker} is not a directory: pass --state-dir DIR"
    )
    assert checks.state_dir_check(blocker / "state") == checks.Check(
        "fail", "state dir", f"{blocker / 'state'} cannot be created: {blocker} is not a directory"
    )


def test_the_operator_check_names_the_pid_holding_the_fleet_lock(tmp_path: Path) -> None:
    free = checks.operator_check(tmp_path, "acme-ci")
    assert free.detail == f"no operator of fleet acme-ci runs with {tmp_path}"
    lock = FleetLock.acquire(tmp_path, "acme-ci")
    try:
        held = checks.operator_check(tmp_path, "acme-ci")
    finally:
        lock.release()
    assert held.detail == (
        f"an operator of fleet acme-ci runs (pid {os.getpid()}) with {tmp_path}: "
        "--fix refuses while it runs"
    )


def test_an_unreachable_engine_gets_doctors_advice_and_other_messages_stay() -> None:
    assert checks.engine_problem(
        "cannot reach Docker at tcp://127.0.0.1:1: is the engine running? try runscaler doctor"
    ) == (
        "cannot reach Docker at tcp://127.0.0.1:1: is the engine running? start it "
        "(systemctl start docker, or scripts/ensure-docker) or fix docker.host (or $DOCKER_HOST)"
    )
    tls = "cannot reach Docker at tcp://h:2376: TLS failed (bad cert): check docker.tls"
    assert checks.engine_problem(tls) == tls


def _leftover(name: str) -> Leftover:
    return Leftover(
        fleet="acme-ci",
        kind="exited runner",
        name=name,
        where="unix:///var/run/docker.sock",
        reason="exited (0) 2 minutes ago",
    )


def test_the_report_shows_each_check_each_leftover_and_what_fixing_kept() -> None:
    report = DoctorReport(fixing=True)
    report.add("ok", "python", "Python 3.11.2; 11 dependencies import")
    report.add("warn", "manifest", "fleet.yaml:9:14: warning: a literal token")
    first, second = _leftover("runscaler-acme-ci-linux-1"), _leftover("runscaler-acme-ci-linux-2")
    report.leftovers = [first, second]
    report.outcomes = [
        Outcome(first, True, "unregistered on GitHub and removed"),
        Outcome(second, False, "GitHub says it is running a job"),
    ]
    report.remaining = [second]
    assert check_lines(report) == [
        "ok    python     Python 3.11.2; 11 dependencies import",
        "warn  manifest   fleet.yaml:9:14: warning: a literal token",
    ]
    assert report_lines(report) == [
        "",
        "leftovers of fleet acme-ci (2):",
        "  exited runner        runscaler-acme-ci-linux-1 on unix:///var/run/docker.sock: "
        "exited (0) 2 minutes ago",
        "  exited runner        runscaler-acme-ci-linux-2 on unix:///var/run/docker.sock: "
        "exited (0) 2 minutes ago",
        "",
        "fixing:",
        "  fixed exited runner        runscaler-acme-ci-linux-1: unregistered on GitHub and "
        "removed",
        "  kept  exited runner        runscaler-acme-ci-linux-2: GitHub says it is running a job",
    ]
    assert summary_line(report) == (
        "doctor: 1 ok, 1 warning, 0 failed, 1 of 2 leftovers removed, 1 remain"
    )
    assert report.exit_code == 1
    report.remaining = []
    assert report.exit_code == 0
    report.add("fail", "docker", "cannot reach Docker")
    assert report.exit_code == 1
