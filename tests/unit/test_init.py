"""`runscaler init` from flags (as scripts run it) and with answers from the injected prompt.

The command runs in process through `runscaler.cli.run`; under pytest stdin is not a terminal,
so these take the flags-only path. The question-and-answer path is driven by handing `gather`
a scripted prompt function (`test_init_terminal.py` drives the real prompts through a
pseudo-terminal).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from runscaler.cli import build_parser, run
from runscaler.commands.init import gather
from runscaler.manifest.loading import load_manifest
from runscaler.manifest.models import DEFAULT_DOCKER_IMAGE

MODELINE = "# yaml-language-server: $schema=schemas/fleet-v1.schema.json"


def init(tmp_path: Path, *flags: str, file: str = "fleet.yaml") -> tuple[int, Path]:
    target = tmp_path / file
    return run(["init", str(target), *flags]), target


def test_flags_alone_write_a_commented_manifest_that_validate_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, target = init(
        tmp_path, "--name", "acme-ci", "--url", "https://github.com/acme", "--max-runners", "4"
    )
    out = capsys.readouterr().out
    assert code == 0
    assert (
        out.splitlines()[0]
        == f"wrote {target}: fleet acme-ci, scale set linux on https://github.com/acme"
    )
    text = target.read_text()
    assert text.splitlines()[0] == MODELINE
    assert "  # The fleet's identity, stamped on every container it owns." in text
    assert "      token: env:GITHUB_TOKEN\n" in text
    assert "# A personal access token, read from the operator's environment" in text

    assert run(["validate", str(target)]) == 0
    assert capsys.readouterr().out.strip() == f"{target}: valid (1 scale set)"
    fleet = load_manifest(target).fleet
    (linux,) = fleet.scale_sets
    assert (fleet.metadata.name, linux.name, linux.max_runners) == ("acme-ci", "linux", 4)
    assert (linux.github.url, linux.github.auth.token) == (
        "https://github.com/acme",
        "env:GITHUB_TOKEN",
    )
    assert linux.docker.image == DEFAULT_DOCKER_IMAGE


def test_github_app_flags_write_references_to_the_key_file_never_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "app.pem").write_text("-----BEGIN PRIVATE KEY-----\nsecret\n")
    code, target = init(
        tmp_path,
        "--name", "app-fleet", "--url", "https://github.com/acme/deploy",
        "--app-client-id", "123456", "--app-installation-id", "987",
        "--app-key-file", "keys/app.pem", "--scale-set", "deploy", "--image", "runner:2",
    )  # fmt: skip
    assert code == 0
    text = target.read_text()
    assert "secret" not in text and "BEGIN" not in text
    assert '        clientId: "123456"' in text  # quoted: a numeric app id stays a string
    assert run(["validate", "--strict", str(target)]) == 0
    (deploy,) = load_manifest(target).fleet.scale_sets
    app = deploy.github.auth.app
    assert app is not None and deploy.github.auth.token is None
    assert (app.client_id, app.installation_id, app.private_key) == (
        "123456",
        987,
        "file:keys/app.pem",
    )
    assert (deploy.name, deploy.docker.image) == ("deploy", "runner:2")
    assert deploy.docker.pull == "never"  # a local image: a dry run must not reach a registry
    assert "put the App's private key" not in capsys.readouterr().out  # it is readable


def test_an_existing_file_is_kept_without_force_and_replaced_with_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "fleet.yaml"
    target.write_text("mine\n")
    flags = ("--name", "acme-ci", "--url", "https://github.com/acme")
    assert init(tmp_path, *flags)[0] == 1
    assert capsys.readouterr().err == (
        f"runscaler: {target}: already exists: pass --force to overwrite it\n"
    )
    assert target.read_text() == "mine\n"
    assert init(tmp_path, *flags, "--force")[0] == 0
    assert target.read_text().startswith(MODELINE)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ("--name", "acme-ci", "--url", "ftp://github.com/acme"),
            "--url: invalid URL 'ftp://github.com/acme': use https://HOST/ORG (or /ORG/REPO)",
        ),
        (
            ("--name", "acme-ci", "--url", "http://github.com/acme"),
            "--url: invalid URL 'http://github.com/acme': http:// is allowed only for loopback "
            "hosts",
        ),
        (
            ("--name", "Acme_CI", "--url", "https://github.com/acme"),
            "--name: 'Acme_CI' is not a fleet name: lowercase letters, digits and -, at most "
            "40, starting and ending with a letter or digit (e.g. acme-ci)",
        ),
        (
            ("--name", "acme-ci", "--url", "https://github.com/acme", "--max-runners", "0"),
            "--max-runners: '0' is not a whole number of at least 1",
        ),
        (
            ("--name", "acme-ci", "--url", "https://github.com/acme", "--scale-set", "a b"),
            "--scale-set: 'a b' is not a scale set name: letters, digits, '.', '_' and '-', "
            "at most 45",
        ),
        (
            ("--url", "https://github.com/acme"),
            "--name is required: stdin is not a terminal, so init cannot ask (e.g. runscaler "
            "init --name acme-ci --url https://github.com/acme)",
        ),
        (
            ("--name", "acme-ci", "--url", "https://github.com/acme", "--app-client-id", "Iv1"),
            "--app-installation-id is required: stdin is not a terminal, so init cannot ask",
        ),
        (
            (
                "--name",
                "acme-ci",
                "--url",
                "https://github.com/acme",
                "--token-env",
                "T",
                "--app-client-id",
                "Iv1",
            ),
            "use either --token-env or the --app-* flags, not both",
        ),
    ],
)
def test_a_bad_or_missing_value_is_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: tuple[str, ...], message: str
) -> None:
    code, target = init(tmp_path, *flags)
    assert code == 1
    assert capsys.readouterr().err == f"runscaler: {message}\n"
    assert not target.exists()


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--token-env", "ghp_16C7e42F292c6912E7710c838347Ae178B4a"),
        ("--token-env", "github_pat_11ABCDEFG0123456789_abcdefghijklmnop"),
        ("--app-key-file", "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA"),
    ],
)
def test_a_secret_given_where_a_reference_belongs_is_refused_without_echoing_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    extra = ("--app-client-id", "Iv1", "--app-installation-id", "1") if "app" in flag else ()
    code, target = init(
        tmp_path, "--name", "acme-ci", "--url", "https://github.com/acme", *extra, flag, value
    )
    err = capsys.readouterr().err
    assert code == 1 and not target.exists()
    assert err.startswith(f"runscaler: {flag}: takes the ") and err.count("\n") == 1
    assert value not in err and value[:12] not in err


def test_a_toml_file_name_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, target = init(
        tmp_path, "--name", "acme-ci", "--url", "https://github.com/acme", file="fleet.toml"
    )
    assert code == 1 and not target.exists()
    assert capsys.readouterr().err == (
        f"runscaler: {target}: init writes YAML: name the file .yaml or .yml\n"
    )


def _args(*flags: str) -> argparse.Namespace:
    return build_parser().parse_args(["init", *flags])


class Script:
    """A prompt function that answers from a list and records every question."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, str | None]] = []

    def __call__(self, question: str, default: str | None) -> str:
        self.asked.append((question, default))
        return self.answers.pop(0)


def test_the_prompts_ask_what_flags_leave_out_with_defaults_and_ask_again_on_bad_answers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    script = Script(["acme-ci", "not a url", "https://github.com/acme", "", "", "", "", ""])
    answers = gather(_args("--max-runners", "3"), prompt=script)
    questions = [q for q, _ in script.asked]
    assert questions == [
        "Fleet name",
        "GitHub URL (https://HOST/ORG or /ORG/REPO)",
        "GitHub URL (https://HOST/ORG or /ORG/REPO)",
        "Sign in with a token or a GitHub App? (token/app)",
        "Environment variable holding the token",
        "Scale set name (its runs-on label)",
        "Runner image",
    ]
    assert dict(script.asked)["Environment variable holding the token"] == "GITHUB_TOKEN"
    assert capsys.readouterr().err == (
        "  --url: invalid URL 'not a url': use https://HOST/ORG (or /ORG/REPO)\n"
    )
    assert (answers.name, answers.url, answers.token_env) == (
        "acme-ci",
        "https://github.com/acme",
        "GITHUB_TOKEN",
    )
    assert (answers.scale_set, answers.max_runners, answers.image) == (
        "linux",
        3,
        DEFAULT_DOCKER_IMAGE,
    )
    assert script.answers == [""]  # max runners came from its flag: never asked


def test_choosing_app_at_the_prompt_asks_for_the_app_credentials() -> None:
    script = Script(
        [
            "acme-ci",
            "https://github.com/acme",
            "app",
            "Iv23li",
            "x",
            "42",
            "/k.pem",
            "mac",
            "2",
            "img",
        ]
    )
    answers = gather(_args(), prompt=script)
    assert (answers.app_client_id, answers.app_installation_id, answers.app_key_file) == (
        "Iv23li",
        42,
        "/k.pem",
    )
    assert answers.token_env is None
    assert [q for q, _ in script.asked].count("App installation id") == 2  # "x" was re-asked


@pytest.mark.parametrize(
    ("image", "pull"),
    [
        ("runscaler-sim-runner:latest", "never"),
        ("runner:2", "never"),
        ("ghcr.io/actions/actions-runner:latest", "missing"),
        ("acme/runner@sha256:" + "0" * 64, "missing"),
    ],
)
def test_the_pull_policy_follows_where_the_image_lives(
    tmp_path: Path, image: str, pull: str
) -> None:
    code, target = init(
        tmp_path, "--name", "acme-ci", "--url", "https://github.com/acme", "--image", image
    )

    assert code == 0
    (linux,) = load_manifest(target).fleet.scale_sets
    assert (linux.docker.image, linux.docker.pull) == (image, pull)
