"""`runscaler plan`: the real CLI in process, against files and a real temporary git repository."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from runscaler.cli import run

FLEET = """\
apiVersion: runscaler/v1
kind: Fleet
metadata:
  name: acme-ci
defaults:
  github:
    url: https://github.com/acme
    auth:
      token: env:GITHUB_TOKEN
scaleSets:
  - name: linux
    maxRunners: {max_runners}
"""


def manifest(path: Path, max_runners: int = 10) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(FLEET.format(max_runners=max_runners))
    return path


def plan(*argv: str | Path) -> int:
    return run(["plan", *map(str, argv)])


def test_against_a_file_prints_the_plan_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = manifest(tmp_path / "old.yaml", 10)
    new = manifest(tmp_path / "new.yaml", 4)

    code = plan(new, "--against", old)

    out, err = capsys.readouterr()
    assert code == 0
    assert err == ""
    assert out == (
        "runscaler will perform the following actions:\n"
        "\n"
        '  # scale set "linux" (https://github.com/acme) will be updated in-place\n'
        '  ~ scale set "linux"\n'
        "      ~ maxRunners = 10 -> 4  # surplus idle runners removed; busy runners finish\n"
        "\n"
        "Plan: 0 to add, 1 to change, 0 to destroy.\n"
    )


@pytest.mark.parametrize(
    ("old_max", "detailed", "expected"),
    [(10, False, 0), (4, False, 0), (10, True, 0), (4, True, 2)],
)
def test_exit_codes_with_and_without_detailed_exitcode(
    tmp_path: Path, old_max: int, detailed: bool, expected: int
) -> None:
    old = manifest(tmp_path / "old.yaml", old_max)
    new = manifest(tmp_path / "new.yaml", 10)

    code = plan(new, "--against", old, *(["--detailed-exitcode"] if detailed else []))

    assert code == expected


@pytest.mark.parametrize("detailed", [False, True])
def test_an_invalid_manifest_is_exit_1_with_the_located_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], detailed: bool
) -> None:
    old = manifest(tmp_path / "old.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text(FLEET.format(max_runners=0))

    code = plan(bad, "--against", old, *(["--detailed-exitcode"] if detailed else []))

    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    assert err.startswith(f"{bad}:12:")
    assert "scaleSets[0] (linux).maxRunners" in err.splitlines()[0]
    assert "Traceback" not in err


def test_no_changes_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    same = manifest(tmp_path / "fleet.yaml")

    assert plan(same, "--against", same, "--detailed-exitcode") == 0
    assert capsys.readouterr().out == "No changes. The fleet matches the manifest.\n"


def test_without_against_and_no_operator_it_says_so_and_suggests_against(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Port 1 on loopback: nothing listens there (the live comparison is tested in
    # tests/integration/test_server_plan.py against a served operator).
    code = plan(manifest(tmp_path / "fleet.yaml"), "--server", "http://127.0.0.1:1")

    assert code == 1
    assert capsys.readouterr().err == (
        "runscaler: cannot reach the operator at http://127.0.0.1:1 to compare with: is "
        "runscaler run running? pass --server URL, or compare with a manifest: "
        "--against FILE|git:REF\n"
    )


def test_file_defaults_to_runscaler_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNSCALER_MANIFEST", str(manifest(tmp_path / "env.yaml", 3)))

    assert plan("--against", manifest(tmp_path / "old.yaml", 10)) == 0
    assert "~ maxRunners = 10 -> 3" in capsys.readouterr().out


def test_json_and_markdown_formats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = manifest(tmp_path / "old.yaml", 10)
    new = manifest(tmp_path / "new.yaml", 4)

    assert plan(new, "--against", old, "--format", "json") == 0
    document = json.loads(capsys.readouterr().out)
    assert plan(new, "--against", old, "--format", "markdown") == 0
    markdown = capsys.readouterr().out

    assert document["summary"] == {"add": 0, "change": 1, "destroy": 0}
    assert document["changes"][0]["changed"] == ["maxRunners"]
    assert markdown.startswith(
        "### runscaler plan for fleet `acme-ci`: 0 to add, 1 to change, 0 to destroy\n\n```text\n"
    )


def test_warnings_of_the_planned_manifest_go_to_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new = tmp_path / "new.yaml"
    new.write_text(FLEET.format(max_runners=10).replace("env:GITHUB_TOKEN", "ghp_literal_token"))

    code = plan(new, "--against", manifest(tmp_path / "old.yaml"))

    out, err = capsys.readouterr()
    assert code == 0
    assert err.startswith(f"{new}:9:")
    assert ": warning: " in err
    assert "ghp_literal_token" not in out + err
    assert '~ github.auth.token = "env:GITHUB_TOKEN" -> (sensitive)' in out


def test_against_and_server_cannot_be_combined(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new = manifest(tmp_path / "fleet.yaml")

    with pytest.raises(SystemExit) as exited:
        plan(new, "--against", new, "--server", "http://127.0.0.1:1")

    assert exited.value.code == 1
    assert "argument --server: not allowed with argument --against" in capsys.readouterr().err


# --against git:REF, in a real repository


def git(repo: Path, *argv: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *argv],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return done.stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    return root


def commit(repo: Path, message: str = "change") -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


def test_against_git_ref_compares_with_the_committed_manifest(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = manifest(repo / "fleets" / "fleet.yaml", 10)
    commit(repo)
    manifest(path, 20)

    code = plan(path, "--against", "git:HEAD", "--detailed-exitcode")

    assert code == 2
    assert "      ~ maxRunners = 10 -> 20  # more runners may start\n" in capsys.readouterr().out


def test_against_an_older_revision_by_name(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = manifest(repo / "fleet.yaml", 5)
    commit(repo, "first")
    git(repo, "tag", "v1")
    manifest(path, 6)
    commit(repo, "second")

    assert plan(path, "--against", "git:v1") == 0
    assert "~ maxRunners = 5 -> 6" in capsys.readouterr().out
    assert plan(path, "--against", "git:main", "--detailed-exitcode") == 0


def test_a_manifest_absent_at_the_ref_is_an_empty_fleet_with_a_note(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (repo / "README").write_text("x\n")
    commit(repo)
    path = manifest(repo / "ci" / "fleet.yaml")

    code = plan(path, "--against", "git:HEAD")

    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith(
        "runscaler will perform the following actions:\n\n"
        "  # ci/fleet.yaml does not exist at git:HEAD: comparing with an empty fleet\n\n"
        '  # scale set "linux" (https://github.com/acme) will be created\n'
    )
    assert out.endswith("Plan: 1 to add, 0 to change, 0 to destroy.\n")


def test_a_manifest_invalid_at_the_ref_is_an_error_naming_the_ref(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = repo / "fleet.yaml"
    path.write_text(FLEET.format(max_runners=0))
    commit(repo)
    manifest(path, 3)

    code = plan(path, "--against", "git:main")

    err = capsys.readouterr().err
    assert code == 1
    assert err.splitlines()[0] == "main:fleet.yaml: the manifest at git:main is invalid"
    assert err.splitlines()[1].startswith("main:fleet.yaml:12:")
    assert "scaleSets[0] (linux).maxRunners" in err.splitlines()[1]


def test_an_unknown_ref_is_a_one_line_error(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = manifest(repo / "fleet.yaml")
    commit(repo)

    code = plan(path, "--against", "git:no-such-branch")

    assert code == 1
    assert capsys.readouterr().err == (
        f"runscaler: unknown git revision 'no-such-branch' in {repo.resolve()}: "
        "check --against git:no-such-branch\n"
    )


def test_outside_a_git_repository_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    path = manifest(tmp_path / "plain" / "fleet.yaml")

    code = plan(path, "--against", "git:HEAD")

    assert code == 1
    assert capsys.readouterr().err == (
        f"runscaler: {path.parent.resolve()} is not in a git repository: "
        "--against git:HEAD needs one\n"
    )


@pytest.mark.parametrize("ref", ["", "--output=/tmp/x"])
def test_a_ref_that_is_not_a_revision_is_refused(
    repo: Path, capsys: pytest.CaptureFixture[str], ref: str
) -> None:
    path = manifest(repo / "fleet.yaml")

    code = plan(path, f"--against=git:{ref}")

    assert code == 1
    assert "name a git revision, like git:origin/main" in capsys.readouterr().err


EMPTY = """\
apiVersion: runscaler/v1
kind: Fleet
metadata:
  name: acme-ci
scaleSets: []
"""


@pytest.mark.parametrize("detailed", [False, True])
def test_an_empty_manifest_is_exit_1_saying_the_operator_refuses_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], detailed: bool
) -> None:
    old = manifest(tmp_path / "old.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text(EMPTY)

    code = plan(empty, "--against", old, *(["--detailed-exitcode"] if detailed else []))

    out, err = capsys.readouterr()
    assert code == 1
    assert out.endswith("Plan: 0 to add, 0 to change, 1 to destroy.\n")
    assert err == (
        f"{empty}: the manifest has no scale sets; the operator refuses it without "
        "--allow-empty (pass --allow-empty to plan and run if that is intended)\n"
    )


def test_an_empty_manifest_with_allow_empty_plans_like_the_operator_applies_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = manifest(tmp_path / "old.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text(EMPTY)

    assert plan(empty, "--against", old, "--allow-empty", "--detailed-exitcode") == 2
    out, err = capsys.readouterr()
    assert err == ""
    assert "1 to destroy" in out


def test_a_label_change_plans_a_replace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = manifest(tmp_path / "old.yaml")
    new = tmp_path / "new.yaml"
    new.write_text(FLEET.format(max_runners=10) + "    labels: [gpu]\n")

    assert plan(new, "--against", old) == 0

    out = capsys.readouterr().out
    assert '  -/+ scale set "linux"' in out
    assert "must be replaced (labels cannot change on an existing scale set" in out
    assert out.endswith("Plan: 1 to add, 0 to change, 1 to destroy.\n")
