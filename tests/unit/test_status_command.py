"""`runscaler status`: the real CLI in process against a fake operator served over loopback."""

from __future__ import annotations

import io
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from runscaler.cli import run
from runscaler.commands.status import watch
from runscaler.engine.status import ReloadStatus
from runscaler.remote import fetch_json, server_url
from tests.fakeoperator import (
    FakeOperator,
    closed_port_url,
    fleet_status,
    scale_set_status,
    served_in_thread,
)


@pytest.fixture
def operator() -> FakeOperator:
    return FakeOperator(
        status=fleet_status(
            scale_set_status("linux", desired=3, idle=1, busy=2, starting=0),
            scale_set_status(
                "mac-arm",
                url="https://github.com/acme/ios",
                state="degraded",
                desired=2,
                idle=0,
                busy=0,
                starting=2,
                assigned_jobs=5,
                running_jobs=0,
                last_error="cannot start runners: image missing [red]x[/red]",
            ),
        )
    )


@pytest.fixture
def url(operator: FakeOperator) -> Iterator[str]:
    with served_in_thread(operator) as served:
        yield served


def status(*argv: str) -> int:
    return run(["status", *argv])


def test_text_shows_the_header_and_one_row_per_scale_set(
    url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)

    code = status("--server", url)

    out, err = capsys.readouterr()
    assert code == 0
    assert err == ""
    lines = out.splitlines()
    assert lines[0].startswith(
        "fleet acme-ci · generation 3 · revision 0123456789ab · last reload ok"
    )
    header = lines[2].split()
    assert header == [
        "SCALE",
        "SET",
        "STATE",
        "DESIRED",
        "IDLE",
        "BUSY",
        "STARTING",
        "ASSIGNED",
        "RUNNING",
    ]
    assert lines[3].split() == ["linux", "listening", "3", "1", "2", "0", "2", "2"]
    assert lines[4].split() == ["mac-arm", "degraded", "2", "0", "0", "2", "5", "0"]
    # The error is shown literally below the table: markup in it is not interpreted.
    assert lines[5:] == [
        "",
        "last errors:",
        "  mac-arm: cannot start runners: image missing [red]x[/red]",
    ]


def test_json_prints_what_the_operator_answered(
    url: str, operator: FakeOperator, capsys: pytest.CaptureFixture[str]
) -> None:
    code = status("--server", url, "--format", "json")

    out, _ = capsys.readouterr()
    assert code == 0
    assert json.loads(out) == operator.status.to_json()


def test_server_defaults_to_runscaler_server(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RUNSCALER_SERVER", url)

    code = status("--format", "json")

    assert code == 0
    assert json.loads(capsys.readouterr().out)["fleet"] == "acme-ci"


def test_a_rejected_reload_shows_its_located_error_in_the_header(
    url: str, operator: FakeOperator, capsys: pytest.CaptureFixture[str]
) -> None:
    operator.status = fleet_status(
        reload=ReloadStatus(ok=False, at=1.0, error="fleet.yaml:12:5: maxRunners: must be >= 1")
    )

    status("--server", url)

    first, second = capsys.readouterr().out.splitlines()[:2]
    assert re.search(r" · last reload rejected \d+d ago:$", first)
    assert second == "fleet.yaml:12:5: maxRunners: must be >= 1"


def test_an_unreachable_operator_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    nowhere = closed_port_url()

    code = status("--server", nowhere)

    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    assert err == (
        f"runscaler: cannot reach the operator at {nowhere}: "
        "is runscaler run running? (pass --server)\n"
    )


def test_a_server_that_is_not_an_operator_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    with served_in_thread(FakeOperator()) as url:
        code = run(["status", "--server", f"{url}/elsewhere"])

    assert code == 1
    assert capsys.readouterr().err == (
        f"runscaler: the server at {url}/elsewhere has no /status: is it a runscaler operator "
        "(of this version)? (pass --server)\n"
    )


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("http://127.0.0.1:9090/", "http://127.0.0.1:9090"),
        ("127.0.0.1:9090", "http://127.0.0.1:9090"),
        (None, "http://127.0.0.1:8080"),
    ],
)
def test_server_urls(given: str | None, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNSCALER_SERVER", raising=False)

    assert server_url(given) == url


def linux_row(frame: str) -> list[str]:
    return next(line.split() for line in frame.splitlines() if line.startswith("linux "))


def test_watch_redraws_with_fresh_data_until_ctrl_c(url: str, operator: FakeOperator) -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160, color_system=None)
    ticks: list[float] = []

    def sleep(seconds: float) -> None:
        ticks.append(seconds)
        if len(ticks) == 1:
            operator.status = fleet_status(scale_set_status("linux", desired=9))
        else:
            raise KeyboardInterrupt

    def fetch() -> object:
        return fetch_json(url, "/status")

    watch(console, fetch, first=fetch(), sleep=sleep)

    frames = out.getvalue().split("fleet acme-ci")[1:]
    assert ticks == [1.0, 1.0]
    assert linux_row(frames[0])[:3] == ["linux", "listening", "3"]
    assert linux_row(frames[-1])[:3] == ["linux", "listening", "9"]


def test_watch_keeps_going_when_the_operator_stops_answering() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160, color_system=None)
    nowhere = closed_port_url()
    ticks: list[float] = []

    def sleep(seconds: float) -> None:
        ticks.append(seconds)
        if len(ticks) == 2:
            raise KeyboardInterrupt

    watch(
        console,
        lambda: fetch_json(nowhere, "/status"),
        first=fleet_status().to_json(),
        sleep=sleep,
    )

    text = out.getvalue()
    assert f"cannot reach the operator at {nowhere}: is runscaler run running?" in text
    after = text.rsplit("(retrying)", 1)[1]
    assert linux_row(after)[:3] == ["linux", "listening", "3"]  # the last good view stays


def test_json_flag_is_format_json(
    url: str, operator: FakeOperator, capsys: pytest.CaptureFixture[str]
) -> None:
    code = status("--server", url, "--json")

    assert code == 0
    assert json.loads(capsys.readouterr().out) == operator.status.to_json()


def _git(work: Path, *argv: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@localhost", *argv],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@pytest.mark.parametrize(
    ("edit", "note"), [(False, False), (True, True)], ids=["committed", "uncommitted-edits"]
)
def test_the_revision_says_when_the_applied_file_has_uncommitted_edits(
    tmp_path: Path,
    operator: FakeOperator,
    url: str,
    capsys: pytest.CaptureFixture[str],
    edit: bool,
    note: bool,
) -> None:
    import hashlib

    manifest = tmp_path / "fleet.yaml"
    manifest.write_text("committed: 1\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "fleet.yaml")
    _git(tmp_path, "commit", "-q", "-m", "fleet")
    revision = _git(tmp_path, "rev-parse", "HEAD")
    if edit:
        manifest.write_text("committed: 1\nedited: 2\n")
    operator.status = fleet_status(
        manifest_path=str(manifest),
        manifest_revision=revision,
        manifest_sha256=hashlib.sha256(manifest.read_bytes()).hexdigest(),
    )

    assert status("--server", url) == 0

    first = capsys.readouterr().out.splitlines()[0]
    assert f"revision {revision[:12]}" in first
    assert ("(+ uncommitted edits)" in first) is note


class _Answering:
    """A /status answer of a newer operator (`runners` per scale set), served as is."""

    def __init__(self, status: object, data: dict[str, Any]) -> None:
        self.status = status
        self.data = data

    def to_json(self) -> dict[str, Any]:
        return self.data


def test_runners_lists_each_scale_sets_runners(
    url: str,
    operator: FakeOperator,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    data = operator.status.to_json()
    data["scaleSets"][0]["runners"] = [
        {
            "name": "linux-7f3a",
            "state": "busy",
            "since": 0,
            "jobId": "4711",
            "templateHash": "0123456789ab",
            "exitCode": None,
            "reason": None,
            "node": None,
        }
    ]
    data["scaleSets"][1]["runners"] = []
    operator.status = _Answering(operator.status, data)  # type: ignore[assignment]

    assert status("--server", url, "--runners") == 0

    lines = capsys.readouterr().out.splitlines()
    at = lines.index("linux: 1 runner")
    assert lines[at + 1].split() == ["RUNNER", "STATE", "SINCE", "JOB", "TEMPLATE", "EXIT", "NODE"]
    assert lines[at + 2].split()[:2] == ["linux-7f3a", "busy"]
    assert lines[at + 2].split()[3:] == ["4711", "01234567", "-", "-"]
    assert lines[at + 3] == "mac-arm: 0 runners"
