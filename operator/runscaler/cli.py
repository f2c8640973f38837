"""The command line: parse arguments, run one subcommand, turn its outcome into an exit code.

Each subcommand is a module in `runscaler.commands` with `HELP`, `EXAMPLES`, `configure(parser)`
and `main(args) -> int`. Command modules import their heavy dependencies inside `main`, so
`runscaler version` and `--help` start fast.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime
import importlib
import os
import sys
import threading
import traceback
import typing
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from runscaler import __version__
from runscaler.errors import (
    EXIT_INTERNAL_ERROR,
    EXIT_INTERRUPTED,
    EXIT_USER_ERROR,
    ManifestError,
    UserError,
)
from runscaler.paths import default_state_dir

# The order `--help` lists them in.
COMMANDS = (
    "run",
    "validate",
    "plan",
    "status",
    "service",
    "init",
    "doctor",
    "demo",
    "simulator",
    "schema",
    "convert",
    "completion",
    "version",
)


def _command_modules(names: Sequence[str] = COMMANDS) -> list[tuple[str, ModuleType]]:
    found = []
    for name in names:
        try:
            module = importlib.import_module(f"runscaler.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"runscaler.commands.{name}":
                raise
            continue
        found.append((name, module))
    return found


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 1 like every other user error (2 means "changes" to `plan`)."""

    def error(self, message: str) -> typing.NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message}\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; with `only` (a command's name, as the first argument names it), one
    with just that command: `runscaler run` then holds no other command's module (a MiB)."""
    parser = _Parser(
        prog="runscaler",
        description="Auto-scale ephemeral GitHub Actions runners from a fleet manifest.",
    )
    parser.add_argument("--version", action="version", version=f"runscaler {__version__}")
    commands = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )
    for name, module in _command_modules((only,) if only in COMMANDS else COMMANDS):
        sub = commands.add_parser(
            name,
            help=module.HELP,
            description=module.HELP,
            epilog=f"examples:\n{module.EXAMPLES}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.configure(sub)
        sub.set_defaults(handler=module.main)
    return parser


def write_crash_log(state_dir: Path) -> Path | None:
    """Write the current exception's traceback to `<state dir>/crash-<timestamp>.log`."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        path = state_dir / f"crash-{stamp}.log"
        path.write_text(traceback.format_exc())
    except OSError:
        return None
    return path


def _report_internal_error(args: argparse.Namespace | None) -> int:
    state_dir = getattr(args, "state_dir", None) or default_state_dir()
    path = write_crash_log(Path(state_dir))
    where = f"; details in {path}" if path else ""
    print(f"runscaler: internal error: {sys.exc_info()[1]!r}{where}", file=sys.stderr)
    print("please report it with that file", file=sys.stderr)
    return EXIT_INTERNAL_ERROR


def run(argv: Sequence[str] | None = None) -> int:
    args: argparse.Namespace | None = None
    try:
        words = sys.argv[1:] if argv is None else list(argv)
        args = build_parser(only=words[0] if words else None).parse_args(words)
        code: int = args.handler(args)
        return code
    except ManifestError as exc:
        from runscaler.console.diagnostics import text_lines

        for line in text_lines(exc.diagnostics):  # at most 20, then a count
            print(line, file=sys.stderr)
        return EXIT_USER_ERROR
    except UserError as exc:
        print(f"runscaler: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("runscaler: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout closed early (`runscaler plan | head`): not an error worth a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_USER_ERROR
    except Exception:
        return _report_internal_error(args)


def main() -> None:
    code = run()
    if sys.argv[1:2] == ["run"]:
        exit_without_teardown(code)
    sys.exit(code)


def exit_without_teardown(code: int) -> None:
    """Exit once the operator has stopped, without the interpreter's teardown: freeing every
    object one by one takes a fifth of a second with 100 scale sets (a third of the whole
    stop) and achieves nothing the kernel does not do at once. What an exit must still do
    happens first: atexit functions (logging's flush among them) and the standard streams.
    A thread still running (none should be) gets the ordinary exit, which waits for it."""
    others = [t for t in threading.enumerate() if t is not threading.main_thread()]
    if any(t.is_alive() and not t.daemon for t in others):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
