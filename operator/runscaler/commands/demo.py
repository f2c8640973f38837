"""`runscaler demo`: the simulator, the operator and the real Docker engine, live.

It shows what runscaler does without a GitHub account: a demo fleet of two scale sets scales
up for a burst of jobs and back down to its warm minimum, then a summary. The operator runs in
this process (not as a `runscaler run` child) so that one process owns everything the demo
starts: Ctrl-C, a failure or the end all clean up the same way, with no child to orphan and no
port to pick. Its `/status` is still served on a free loopback port for `runscaler status`.
"""

from __future__ import annotations

import argparse
import datetime
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from runscaler.errors import EXIT_INTERRUPTED, EXIT_OK, UserError

HELP = "watch a demo fleet scale up and down: the simulator, the operator and Docker, live"
EXAMPLES = """\
  runscaler demo                         # about 35 s: 20 jobs on two scale sets
  runscaler demo --jobs 40 --max-runners 8
  runscaler demo --keep-going            # a new burst whenever the fleet settles; Ctrl-C ends it"""

TOKEN_ENV = "RUNSCALER_DEMO_TOKEN"
_ENGINE_TIMEOUT = 20.0


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 and at most 3600 seconds")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--jobs",
        type=_positive_int,
        default=20,
        metavar="N",
        help="jobs in each burst (default 20)",
    )
    parser.add_argument(
        "--duration",
        type=_seconds,
        default=8.0,
        metavar="S",
        help="average job duration in seconds; each job runs 0.5x to 1.5x of it (default 8)",
    )
    parser.add_argument(
        "--max-runners",
        type=_positive_int,
        default=4,
        metavar="N",
        help="maxRunners of the `linux` scale set; `linux-big` gets half (default 4)",
    )
    parser.add_argument(
        "--keep-going",
        action="store_true",
        help="enqueue a new burst each time the fleet settles, until Ctrl-C (then exit 0)",
    )
    # Another runner image (it must speak to the simulator like the stand-in): for tests.
    parser.add_argument("--image", default=None, help=argparse.SUPPRESS)


def check_engine(docker: str = "docker") -> None:
    """Fail with one line unless a Docker engine answers the CLI."""
    checkout = "or run `make demo` in the runscaler checkout"
    try:
        probe = subprocess.run(
            [docker, "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            text=True,
            timeout=_ENGINE_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise UserError(
            f"the demo needs Docker and `{docker}` is not installed: install and start it "
            f"with scripts/ensure-docker, {checkout}"
        ) from None
    except subprocess.TimeoutExpired:
        raise UserError(
            f"the Docker engine did not answer within {_ENGINE_TIMEOUT:g} s: check it with "
            f"`docker info`, or restart it with scripts/ensure-docker"
        ) from None
    if probe.returncode != 0:
        raise UserError(
            f"the Docker engine does not answer: start it with scripts/ensure-docker, {checkout}"
        )


def main(args: argparse.Namespace) -> int:
    import asyncio

    from rich.console import Console

    from runscaler.console.demo import ProgressDisplay, summary_lines
    from runscaler.demoing import DemoSettings, play
    from runscaler.logs import secrets as redacted
    from runscaler.logs import setup_logging
    from runscaler.simulator.runner import RUNNER_IMAGE, build_runner_image

    check_engine()
    if args.image is None:
        build_runner_image()
    display = ProgressDisplay(Console(file=sys.stdout, highlight=False), stream=sys.stdout)
    token = f"demo_{secrets.token_hex(16)}"
    redacted.add(token)
    workdir = Path(tempfile.mkdtemp(prefix="runscaler-demo-"))
    settings = DemoSettings(
        jobs=args.jobs,
        duration=args.duration,
        max_runners=args.max_runners,
        keep_going=args.keep_going,
        token_env=TOKEN_ENV,
        workdir=workdir,
        image=args.image or RUNNER_IMAGE,
    )
    log_path = workdir / "demo.log"
    os.environ[TOKEN_ENV] = token
    try:
        # The operator's log would draw over the live view: it goes to a file, kept on failure.
        with log_path.open("w") as log:
            setup_logging("info", stream=log)
            try:
                outcome = asyncio.run(play(settings, display=display))
            except Exception:
                # A bug: the CLI writes the crash log; keep the operator's side of it too.
                print(f"runscaler: demo failed{_kept(log_path)}", file=sys.stderr)
                raise
            finally:
                setup_logging("warning")  # back to stderr before the file closes
                display.close()
        if outcome.error is not None:
            raise UserError(f"{outcome.error}{_kept(log_path)}")
    finally:
        os.environ.pop(TOKEN_ENV, None)
        shutil.rmtree(workdir, ignore_errors=True)
    if outcome.signal == signal.SIGHUP:
        return EXIT_INTERRUPTED  # the terminal is gone: nobody to tell, writing would fail
    for line in summary_lines(outcome.summary):
        print(line, flush=True)
    if outcome.signal is not None and not args.keep_going:
        print("runscaler: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK


def _kept(log: Path) -> str:
    """Copy the demo's log into the state directory; ` (log: PATH)` to add to the error."""
    from runscaler.paths import default_state_dir

    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    kept = default_state_dir() / f"demo-{stamp}.log"
    try:
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log, kept)
    except OSError:
        return ""
    return f" (the demo's log: {kept})"
