"""`runscaler convert`: the real CLI in process; its output loads as a valid manifest."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from runscaler.cli import run
from runscaler.manifest import load_manifest

CONFIG = """\
log-level = "debug"
health-port = 8081
url = "https://github.com/acme"
token = "ghp_do_not_copy_me_123"
max-runners = 6

[docker]
memory = 2048

[[scaleset]]
name = "linux"
labels = ["linux", "x64"]

[[scaleset]]
name = "mac"
backend = "tart"
max-runners = 2
[scaleset.tart]
image = "ghcr.io/cirruslabs/macos-sequoia-xcode:latest"
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "Old Config.toml"
    path.write_text(CONFIG)
    return path


def test_yaml_on_stdout_validates_and_warnings_go_to_stderr(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(["convert", str(config)])

    out, err = capsys.readouterr()
    assert code == 0
    assert out.startswith(
        "# yaml-language-server: $schema=schemas/fleet-v1.schema.json\n"
        "# Converted by `runscaler convert` from Old Config.toml (a config of the Go original).\n"
    )
    assert "ghp_do_not_copy_me_123" not in out + err
    assert f"{config}: warning: token: a literal token is not copied" in err
    assert (
        f"{config}: metadata.name old-config is the file's name (the config has no top-level "
        "name): pass --name to choose another\n"
    ) in err
    assert err.endswith(
        "process settings: run it with: runscaler run fleet.yaml "
        "--log-level debug --listen 127.0.0.1:8081\n"
    )
    written = tmp_path / "fleet.yaml"
    written.write_text(out)
    fleet = load_manifest(written).fleet
    assert fleet.metadata.name == "old-config"
    linux, mac = fleet.scale_sets
    assert (linux.max_runners, linux.labels, linux.docker.dind) == (6, ("x64",), True)
    assert linux.docker.memory == 2048 * 1024**2
    assert linux.github.auth.token == "env:RUNNER_TOKEN"
    assert (mac.backend, mac.max_runners) == ("tart", 2)


def test_toml_output_to_a_file_round_trips(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "fleet.toml"

    code = run(["convert", str(config), "--name", "acme-ci", "-o", str(target)])

    out, err = capsys.readouterr()
    assert code == 0 and out == ""
    text = target.read_text()
    assert text.startswith("#:schema schemas/fleet-v1.schema.json\n")
    assert f"runscaler run {target} --log-level debug" in err
    from_toml = load_manifest(target).fleet
    run(["convert", str(config), "--name", "acme-ci", "--format", "yaml"])
    yaml_twin = tmp_path / "twin.yaml"
    yaml_twin.write_text(capsys.readouterr().out)
    assert load_manifest(yaml_twin).fleet == from_toml
    assert tomllib.loads(text)["metadata"] == {"name": "acme-ci"}


def test_yaml_output_is_readable_block_style_with_flow_lists(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(["convert", str(config)])
    out = capsys.readouterr().out

    assert "    labels: [x64]\n" in out
    assert YAML(typ="safe").load(out)["defaults"]["docker"] == {"dind": True, "memory": "2GiB"}


def test_the_single_scale_set_form(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.toml"
    path.write_text('url = "https://github.com/a"\nname = "solo"\ntoken = "env:TOKEN"\n')

    assert run(["convert", str(path)]) == 0
    out = capsys.readouterr().out

    body = out.split("\n\n", 1)[1]
    assert body == (
        "apiVersion: runscaler/v1\n"
        "kind: Fleet\n"
        "metadata:\n"
        "  name: solo\n"
        "scaleSets:\n"
        "  - name: solo\n"
        "    github:\n"
        "      url: https://github.com/a\n"
        "      auth:\n"
        "        token: env:TOKEN\n"
        "    docker:\n"
        "      dind: true\n"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'url = "https://github.com/a"\nname = \n', "{path}:2:8: invalid TOML: invalid value"),
        (b"[docker]\n[docker]\n", "{path}:2:8: invalid TOML: cannot declare ('docker',) twice"),
        (b"name = '\xff'\n", "{path}: not UTF-8 text (byte 8)"),
        (b'url = "https://github.com/a"\nname = "x"\nmax-runners = 0\n', None),
    ],
    ids=["syntax", "duplicate-table", "not-utf8", "invalid-result"],
)
def test_bad_input_is_one_line_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, message: str | None
) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(content)

    code = run(["convert", str(path)])

    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert len(err.splitlines()) == 1
    if message is None:
        assert err.startswith(f"runscaler: {path}: cannot convert: the manifest would be invalid: ")
        assert "maxRunners" in err
    else:
        assert err == f"runscaler: {message.format(path=path)}\n"


def test_a_missing_file_or_a_directory_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["convert", str(tmp_path / "nope.toml")]) == 1
    assert capsys.readouterr().err == f"runscaler: {tmp_path / 'nope.toml'}: no such file\n"
    assert run(["convert", str(tmp_path)]) == 1
    assert capsys.readouterr().err == f"runscaler: {tmp_path}: is a directory, not a config file\n"


def test_an_invalid_name_flag_is_one_line(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["convert", str(config), "--name", "Bad_Name"]) == 1
    assert capsys.readouterr().err.startswith("runscaler: --name 'Bad_Name': a fleet name is")


def test_it_refuses_to_overwrite_the_config_it_converts(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["convert", str(config), "-o", str(config)]) == 1
    assert capsys.readouterr().err == (
        f"runscaler: {config}: is the config being converted: write elsewhere\n"
    )
    assert config.read_text() == CONFIG
