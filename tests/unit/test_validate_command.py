"""`runscaler validate` as users and CI run it: text, JSON and GitHub annotations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runscaler.cli import run
from runscaler.console.diagnostics import escape_data, escape_property, github_annotation
from runscaler.errors import Diagnostic

VALID = """\
apiVersion: runscaler/v1
kind: Fleet
metadata:
  name: acme
defaults:
  github:
    url: https://github.com/acme
    auth:
      token: env:RUNSCALER_TEST_TOKEN
scaleSets:
  - name: linux
  - name: big
    maxRunners: 4
"""
LITERAL = VALID.replace("env:RUNSCALER_TEST_TOKEN", "ghp_literal0123456789")
INVALID = VALID.replace("maxRunners: 4", "maxRunners: 0")


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RUNSCALER_MANIFEST", raising=False)
    return tmp_path


def validate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run(["validate", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_valid_file_says_so_on_stdout(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Path("fleet.yaml").write_text(VALID)
    assert validate(capsys, "fleet.yaml") == (0, "fleet.yaml: valid (2 scale sets)\n", "")


def test_the_default_file_is_fleet_yaml_or_the_environments(
    here: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    Path("fleet.yaml").write_text(VALID)
    assert validate(capsys)[1] == "fleet.yaml: valid (2 scale sets)\n"
    Path("other.toml").write_text(
        'apiVersion = "runscaler/v1"\nkind = "Fleet"\nscaleSets = []\n[metadata]\nname = "x"\n'
    )
    monkeypatch.setenv("RUNSCALER_MANIFEST", "other.toml")
    assert validate(capsys)[1] == "other.toml: valid (0 scale sets)\n"


def test_warnings_go_to_stderr_and_strict_fails_on_them(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Path("fleet.yaml").write_text(LITERAL)
    warning = (
        "fleet.yaml:9:14: warning: defaults.github.auth.token: literal token in the manifest, "
        "which lives in git: use env:NAME or file:PATH"
    )
    assert validate(capsys, "fleet.yaml") == (
        0,
        "fleet.yaml: valid (2 scale sets), 1 warning\n",
        warning + "\n",
    )
    code, out, err = validate(capsys, "--strict", "fleet.yaml")
    assert (code, out) == (1, "")
    assert err == (
        "fleet.yaml:9:14: defaults.github.auth.token: literal token in the manifest, which lives "
        "in git: use env:NAME or file:PATH (an error with --strict)\n"
    )
    assert "ghp_literal0123456789" not in err


def test_every_file_is_checked_and_any_invalid_one_fails(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Path("good.yaml").write_text(VALID)
    Path("bad.yaml").write_text(INVALID)
    code, out, err = validate(capsys, "bad.yaml", "good.yaml")
    assert code == 1
    assert out == "good.yaml: valid (2 scale sets)\n"
    assert err == "bad.yaml:13:17: scaleSets[1] (big).maxRunners: must be >= 1, got 0\n"


def test_json_lists_every_finding_and_each_files_validity(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Path("good.yaml").write_text(LITERAL)
    Path("bad.yaml").write_text(INVALID)
    code, out, err = validate(capsys, "--format", "json", "good.yaml", "bad.yaml")
    assert (code, err) == (1, "")
    assert json.loads(out) == {
        "format_version": "1",
        "valid": False,
        "files": [
            {"file": "good.yaml", "valid": True, "scaleSets": 2, "errors": 0, "warnings": 1},
            {"file": "bad.yaml", "valid": False, "scaleSets": None, "errors": 1, "warnings": 0},
        ],
        "diagnostics": [
            {
                "file": "good.yaml",
                "line": 9,
                "col": 14,
                "path": "defaults.github.auth.token",
                "message": "literal token in the manifest, which lives in git: "
                "use env:NAME or file:PATH",
                "severity": "warning",
            },
            {
                "file": "bad.yaml",
                "line": 13,
                "col": 17,
                "path": "scaleSets[1] (big).maxRunners",
                "message": "must be >= 1, got 0",
                "severity": "error",
            },
        ],
    }


def test_json_for_an_unreadable_file_has_no_position(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = validate(capsys, "--format=json", "missing.yaml")
    assert code == 1
    assert json.loads(out)["diagnostics"] == [
        {
            "file": "missing.yaml",
            "line": None,
            "col": None,
            "path": "",
            "message": "no such file (create one with `runscaler init`)",
            "severity": "error",
        }
    ]


def test_github_format_prints_annotations_and_still_fails(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Path("fleet.yaml").write_text(
        INVALID.replace("env:RUNSCALER_TEST_TOKEN", "ghp_literal0123456789")
    )
    code, out, err = validate(capsys, "--format", "github", "fleet.yaml")
    assert (code, err) == (1, "")
    assert out.splitlines() == [
        "::error file=fleet.yaml,line=13,col=17::"
        "scaleSets[1] (big).maxRunners: must be >= 1, got 0",
        "::warning file=fleet.yaml,line=9,col=14::defaults.github.auth.token: literal token in "
        "the manifest, which lives in git: use env:NAME or file:PATH",
        "fleet.yaml: invalid",
    ]


def test_annotations_are_escaped_as_actions_core_does() -> None:
    assert escape_data("100%\r\nnext") == "100%25%0D%0Anext"
    assert escape_property("a:b,c%\n") == "a%3Ab%2Cc%25%0A"
    weird = Diagnostic(
        file="dir,1/fleet:prod.yaml",
        message="bad 50%\nvalue, here: x",
        path="metadata.name",
        line=3,
        col=9,
    )
    assert github_annotation(weird) == (
        "::error file=dir%2C1/fleet%3Aprod.yaml,line=3,col=9::"
        "metadata.name: bad 50%25%0Avalue, here: x"
    )
    unlocated = Diagnostic(file="fleet.yaml", message="no such file", severity="error")
    assert github_annotation(unlocated) == "::error file=fleet.yaml::no such file"


def test_check_env_proves_env_refs_are_set(
    here: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    Path("fleet.yaml").write_text(VALID)
    monkeypatch.delenv("RUNSCALER_TEST_TOKEN", raising=False)
    assert validate(capsys, "fleet.yaml")[0] == 0  # without --check-env refs are not resolved
    code, out, err = validate(capsys, "--check-env", "fleet.yaml")
    assert (code, out) == (1, "")
    assert err == (
        "fleet.yaml:9:14: defaults.github.auth.token: secret env:RUNSCALER_TEST_TOKEN: "
        "RUNSCALER_TEST_TOKEN is not set in the environment\n"
    )
    monkeypatch.setenv("RUNSCALER_TEST_TOKEN", "a-token-value-1234")
    assert validate(capsys, "--check-env", "fleet.yaml") == (
        0,
        "fleet.yaml: valid (2 scale sets)\n",
        "",
    )


def test_check_env_reads_files_relative_to_the_manifest(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (here / "conf").mkdir()
    (here / "conf" / "fleet.yaml").write_text(
        VALID.replace("env:RUNSCALER_TEST_TOKEN", "file:secrets/token")
        + "    github:\n      caBundle: certs/ca.pem\n"
        "    docker:\n      env:\n        NPM_TOKEN: file:secrets/npm\n"
    )
    code, _, err = validate(capsys, "--check-env", "conf/fleet.yaml")
    assert code == 1
    conf = here / "conf"
    assert err.splitlines() == [
        f"conf/fleet.yaml:9:14: defaults.github.auth.token: secret file:secrets/token: "
        f"cannot read {conf / 'secrets' / 'token'}: No such file or directory",
        f"conf/fleet.yaml:15:17: scaleSets[1] (big).github.caBundle: "
        f"cannot read {conf / 'certs' / 'ca.pem'}: No such file or directory",
        f"conf/fleet.yaml:18:20: scaleSets[1] (big).docker.env.NPM_TOKEN: secret "
        f"file:secrets/npm: cannot read {conf / 'secrets' / 'npm'}: No such file or directory",
    ]
    (conf / "secrets").mkdir()
    (conf / "certs").mkdir()
    for name in ("secrets/token", "secrets/npm", "certs/ca.pem"):
        (conf / name).write_text("content-of-the-file\n")
    assert validate(capsys, "--check-env", "conf/fleet.yaml")[0] == 0


def test_help_shows_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run(["validate", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "--format {text,json,github}" in out
    assert "runscaler validate fleet.yaml --check-env" in out


@pytest.mark.parametrize(
    "host", ["tpc//localhost:2375", "localhost:2375", "unix://", "tcp://", "tcp://h:99999"]
)
def test_a_malformed_engine_address_is_a_located_error_offline(
    here: Path, capsys: pytest.CaptureFixture[str], host: str
) -> None:
    Path("fleet.yaml").write_text(VALID + f"    docker:\n      host: {json.dumps(host)}\n")

    code, _, err = validate(capsys, "fleet.yaml")

    assert code == 1
    [line] = err.splitlines()
    assert line.startswith("fleet.yaml:15:13: scaleSets[1] (big).docker.host: "), line
    assert "is not an engine address" in line


@pytest.mark.parametrize(
    "host", ["unix:///var/run/docker.sock", "tcp://127.0.0.1:2375", "https://[::1]:2376"]
)
def test_engine_addresses_the_backend_accepts_are_valid(
    here: Path, capsys: pytest.CaptureFixture[str], host: str
) -> None:
    Path("fleet.yaml").write_text(VALID + f"    docker:\n      host: {json.dumps(host)}\n")
    assert validate(capsys, "fleet.yaml")[0] == 0
