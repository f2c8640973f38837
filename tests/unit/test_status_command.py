"""`runscaler status`: the real CLI in process against a fake operator served over loopback."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

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
    assert header[:3] == ["SCALE", "SET", "STATE"]
    assert "ASSIGNED" in header and "LAST" in header
    linux = lines[3].split()
    assert linux == ["linux", "listening", "3", "1", "2", "0", "2", "2", "-"]
    mac = lines[4].split(maxsplit=8)
    assert mac[:8] == ["mac-arm", "degraded", "2", "0", "0", "2", "5", "0"]
    # The error is shown literally: markup in it is not interpreted.
    assert mac[8].strip() == "cannot start runners: image missing [red]x[/red]"


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

    first = capsys.readouterr().out.splitlines()[0]
    assert "last reload rejected" in first
    assert first.endswith(": fleet.yaml:12:5: maxRunners: must be >= 1")


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
