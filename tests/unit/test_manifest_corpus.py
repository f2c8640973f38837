"""Malformed manifests, one file each, through the real CLI: one located line, exit 1.

`manifest_corpus/expected.txt` holds the exact first line `runscaler validate` prints for
each file in that folder; cases that cannot be committed as files (a directory, a missing
path, a file over 1 MiB) are made here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from runscaler.cli import run

CORPUS = Path(__file__).parent / "manifest_corpus"
EXPECTED = {
    line.split(":", 1)[0]: line
    for line in (CORPUS / "expected.txt").read_text(encoding="utf-8").splitlines()
    if line and not line.startswith("#")
}
LOCATED = re.compile(r"^[^:]+:\d+:\d+: ")
# Cases whose input has no position to point at: the whole file is the problem.
UNLOCATED = {"yaml-empty.yaml", "yaml-comments-only.yaml"}


def validate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], str]:
    code = run(["validate", *args])
    out, err = capsys.readouterr()
    return code, err.splitlines(), out


def test_every_case_has_an_expectation_and_there_are_enough() -> None:
    files = {p.name for p in CORPUS.iterdir()} - {"expected.txt"}
    assert files == set(EXPECTED)
    assert len(files) + 3 >= 40  # plus the three cases made in this module


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_malformed_manifest_gets_one_located_line_per_problem(
    name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(CORPUS)
    code, lines, out = validate(capsys, name)
    assert code == 1
    assert out == ""
    assert lines[0] == EXPECTED[name]
    assert all(line.startswith(f"{name}:") for line in lines)
    assert "Traceback" not in "\n".join(lines)
    if name not in UNLOCATED:
        assert LOCATED.match(lines[0]), lines[0]


def test_a_directory_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "fleet.yaml"
    folder.mkdir()
    code, lines, _ = validate(capsys, str(folder))
    assert code == 1
    assert lines == [
        f"{folder}: is a directory; give the manifest file inside it (e.g. fleet.yaml)"
    ]


def test_a_missing_file_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere.yaml"
    code, lines, _ = validate(capsys, str(missing))
    assert code == 1
    assert lines == [f"{missing}: no such file (create one with `runscaler init`)"]


def test_a_file_over_one_mebibyte_is_refused_before_parsing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * 110_000)
    code, lines, _ = validate(capsys, str(big))
    assert code == 1
    assert lines == [
        f"{big}: the manifest is 1.0 MiB, over the 1 MiB limit (is this the right file?)"
    ]


def test_an_unknown_file_type_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "fleet.json"
    other.write_text("{}")
    code, lines, _ = validate(capsys, str(other))
    assert code == 1
    assert lines == [
        f"{other}: not a manifest file name: use .yaml, .yml or .toml (e.g. fleet.yaml)"
    ]


def test_several_problems_are_all_reported_in_file_order(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("fleet.yaml").write_text(
        "apiVersion: runscaler/v1\n"
        "kind: Fleet\n"
        "metadata: {name: acme}\n"
        "defaults:\n"
        "  github: {url: 'https://github.com/acme', auth: {token: 'env:T'}}\n"
        "scaleSets:\n"
        "  - name: a\n"
        "    maxRunners: 0\n"
        "  - name: b\n"
        "    minRunners: 3\n"
        "    maxRunners: 2\n"
        "    docker: {memroy: 4GiB}\n"
    )
    code, lines, _ = validate(capsys, "fleet.yaml")
    assert code == 1
    assert lines == [
        "fleet.yaml:8:17: scaleSets[0] (a).maxRunners: must be >= 1, got 0",
        "fleet.yaml:10:17: scaleSets[1] (b).minRunners: minRunners (3) must be <= maxRunners (2)",
        "fleet.yaml:12:14: scaleSets[1] (b).docker.memroy: unknown key 'memroy' "
        "(did you mean 'memory'?)",
    ]


def test_more_than_twenty_errors_end_with_a_count(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    items = "".join(f"  - name: s{i}\n    maxRunners: 0\n" for i in range(25))
    Path("fleet.yaml").write_text(
        "apiVersion: runscaler/v1\nkind: Fleet\nmetadata: {name: acme}\n"
        "defaults:\n  github: {url: 'https://github.com/acme', auth: {token: 'env:T'}}\n"
        f"scaleSets:\n{items}"
    )
    code, lines, _ = validate(capsys, "fleet.yaml")
    assert code == 1
    assert len(lines) == 21
    assert lines[0] == "fleet.yaml:8:17: scaleSets[0] (s0).maxRunners: must be >= 1, got 0"
    assert lines[-1] == "fleet.yaml: 5 more not shown (25 errors in all)"


def test_a_file_name_with_a_nul_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, _ = validate(capsys, "fleet\0.yaml")
    assert code == 1
    assert lines == ["fleet\0.yaml: not a valid file name"]
