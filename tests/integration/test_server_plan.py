"""`runscaler plan FILE` without `--against`: the real CLI against a served fake operator.

The operator's `/-/fleet` carries literal secrets only as fingerprints; the plan must still tell
an unchanged literal (no change) from a rotated one (`(sensitive)`), and never print either.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runscaler.cli import run
from runscaler.manifest.models import Fleet
from tests.fakeoperator import FakeOperator, closed_port_url, served_in_thread

TOKEN = "ghp_liveLiteralToken0123456789"
ROTATED = "ghp_rotatedLiteralToken987654"

MANIFEST = """\
apiVersion: runscaler/v1
kind: Fleet
metadata:
  name: acme-ci
scaleSets:
  - name: linux
    github:
      url: https://github.com/acme
      auth:
        token: {token}
    maxRunners: {max_runners}
    docker:
      env:
        API_KEY: {token}
        FROM_ENV: env:API_KEY
"""


def live_fleet(*, token: str = TOKEN, max_runners: int = 10) -> Fleet:
    return Fleet.model_validate(
        {
            "apiVersion": "runscaler/v1",
            "kind": "Fleet",
            "metadata": {"name": "acme-ci"},
            "scaleSets": [
                {
                    "name": "linux",
                    "github": {"url": "https://github.com/acme", "auth": {"token": token}},
                    "maxRunners": max_runners,
                    "docker": {"env": {"API_KEY": token, "FROM_ENV": "env:API_KEY"}},
                }
            ],
        }
    )


def manifest(tmp_path: Path, *, token: str = TOKEN, max_runners: int = 10) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(MANIFEST.format(token=token, max_runners=max_runners))
    return path


@pytest.fixture
def operator() -> FakeOperator:
    return FakeOperator(fleet=live_fleet().model_dump(mode="json"))


@pytest.fixture
def url(operator: FakeOperator) -> Iterator[str]:
    with served_in_thread(operator) as served:
        yield served


def test_an_unchanged_fleet_with_literal_secrets_has_no_changes(
    tmp_path: Path, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(["plan", str(manifest(tmp_path)), "--server", url, "--detailed-exitcode"])

    out, err = capsys.readouterr()
    assert out == "No changes. The fleet matches the manifest.\n"
    assert code == 0
    assert TOKEN not in out + err


def test_a_rotated_literal_secret_shows_as_a_sensitive_change(
    tmp_path: Path, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(["plan", str(manifest(tmp_path, token=ROTATED)), "--server", url])

    out, err = capsys.readouterr()
    assert code == 0
    changed = {
        line.split()[1]: line.split("#")[0].split() for line in out.splitlines() if "~ " in line
    }
    assert changed["github.auth.token"] == ["~", "github.auth.token", "=", "(sensitive)"]
    assert changed["docker.env.API_KEY"] == ["~", "docker.env.API_KEY", "=", "(sensitive)"]
    assert out.rstrip().endswith("Plan: 0 to add, 1 to change, 0 to destroy.")
    for secret in (TOKEN, ROTATED, "sensitive:"):
        assert secret not in out + err


def test_an_ordinary_change_is_planned_against_the_live_fleet(
    tmp_path: Path, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(["plan", str(manifest(tmp_path, max_runners=4)), "--server", url])

    out, _ = capsys.readouterr()
    assert code == 0
    assert "      ~ maxRunners = 10 -> 4" in out
    assert "github.auth.token" not in out


def test_the_server_defaults_to_runscaler_server(
    tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RUNSCALER_SERVER", url)

    code = run(["plan", str(manifest(tmp_path, max_runners=4))])

    assert code == 0
    assert "maxRunners = 10 -> 4" in capsys.readouterr().out


def test_no_reachable_operator_is_one_line_suggesting_against(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    nowhere = closed_port_url()
    monkeypatch.setenv("RUNSCALER_SERVER", nowhere)

    code = run(["plan", str(manifest(tmp_path))])

    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    assert err.endswith(
        f"runscaler: cannot reach the operator at {nowhere} to compare with: is runscaler run "
        "running? pass --server URL, or compare with a manifest: --against FILE|git:REF\n"
    )


def test_an_operator_without_an_applied_fleet_is_one_line(
    tmp_path: Path, operator: FakeOperator, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    operator.fleet = None

    code = run(["plan", str(manifest(tmp_path)), "--server", url])

    assert code == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"runscaler: the operator at {url} answered /-/fleet with HTTP 503: no manifest is "
        "applied yet; or compare with a manifest: --against FILE|git:REF"
    )


def test_a_fleet_this_version_cannot_read_is_one_line(
    tmp_path: Path, operator: FakeOperator, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert operator.fleet is not None
    operator.fleet["scaleSets"][0]["futureField"] = True

    code = run(["plan", str(manifest(tmp_path)), "--server", url])

    assert code == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"runscaler: the operator at {url} runs a fleet this runscaler cannot read "
        "(scaleSets.0.futureField: Extra inputs are not permitted): "
        "use the same runscaler version, or --against FILE|git:REF"
    )
