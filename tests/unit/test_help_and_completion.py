"""Every `--help` shows real defaults, and `runscaler completion` completes what the parser has."""

from __future__ import annotations

import argparse
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from runscaler.cli import build_parser, run
from runscaler.commands.completion import SHELLS, completion_script

SKIPPED = (argparse._HelpAction, argparse._VersionAction, argparse._StoreTrueAction)
# Options whose default is computed at run time (None in argparse) but real all the same.
MUST_NAME_A_DEFAULT = {"state_dir", "listen", "server", "file", "files", "manifest", "env_file"}


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(build_parser()))


@pytest.mark.parametrize(
    ("path", "parser"), COMMANDS, ids=[" ".join(p) or "-" for p, _ in COMMANDS]
)
def test_help_names_each_default(path: tuple[str, ...], parser: argparse.ArgumentParser) -> None:
    text = parser.format_help()

    assert "default: None" not in text and "(default None)" not in text
    for action in parser._actions:
        if isinstance(action, SKIPPED) or action.help == argparse.SUPPRESS:
            continue
        name = action.option_strings[-1] if action.option_strings else action.dest
        if action.default is not None and not isinstance(action, argparse._SubParsersAction):
            assert "default" in (action.help or ""), f"{' '.join(path)} {name}: default not shown"
        if action.dest in MUST_NAME_A_DEFAULT:
            assert "default" in (action.help or ""), f"{' '.join(path)} {name}: say the default"


def test_run_help_shows_the_listen_address_and_the_state_dir(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        run(["run", "--help"])

    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 127.0.0.1:8080)" in text
    assert "(default: $XDG_STATE_HOME/runscaler, else ~/.local/state/runscaler)" in text


@pytest.mark.parametrize("shell", SHELLS)
def test_every_command_is_in_the_completion_script(
    shell: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["completion", shell]) == 0

    script = capsys.readouterr().out
    assert script == completion_script(shell)
    for path, _ in COMMANDS[1:]:
        assert path[-1] in script


def _complete(script: Path, words: list[str]) -> list[str]:
    """What bash offers after `words`, through the generated completion function."""
    line = " ".join(words)
    probe = f"""
source {script}
COMP_WORDS=({line})
COMP_CWORD={len(words) - 1}
COMP_LINE="{line}"
COMP_POINT=${{#COMP_LINE}}
_shtab_runscaler runscaler "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", probe],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout.split()


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completes_commands_and_their_options(tmp_path: Path) -> None:
    script = tmp_path / "runscaler.bash"
    script.write_text(completion_script("bash"))

    assert _complete(script, ["runscaler", "ser"]) == ["service"]
    assert set(_complete(script, ["runscaler", "service", ""])) >= {"install", "logs", "status"}
    assert "--state-dir" in _complete(script, ["runscaler", "run", "--st"])
    assert _complete(script, ["runscaler", "status", "--form"]) == ["--format"]
