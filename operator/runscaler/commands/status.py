"""`runscaler status`: what the live operator is doing, from its `/status` endpoint.

The operator is a separate process (`runscaler run`); this command only reads its HTTP
endpoint, so it works from any shell on the host. On the operator's own host it also compares
the applied manifest with the file in the reported git revision, to say when what runs has
uncommitted edits. `--watch` redraws every second until Ctrl-C,
which is how a watch normally ends, so it exits 0 without a message.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runscaler.errors import EXIT_OK, UserError

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

HELP = "show the live operator's scale sets, runners, jobs and last reload"
EXAMPLES = """\
  runscaler status
  runscaler status --watch                      # redraw every second; Ctrl-C ends it (exit 0)
  runscaler status --runners                    # also each scale set's runners
  runscaler status --server http://127.0.0.1:9090 --json"""

WATCH_INTERVAL = 1.0
# Wide enough for every column when the output is not a terminal (a file, a pipe, CI logs).
_PIPE_WIDTH = 160


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        metavar="URL",
        help="the operator's address (default: $RUNSCALER_SERVER or http://127.0.0.1:8080)",
    )
    parser.add_argument(
        "--watch", action="store_true", help="redraw every second until Ctrl-C (then exit 0)"
    )
    parser.add_argument("--runners", action="store_true", help="also list each scale set's runners")
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="output format (default: %(default)s)",
    )
    parser.add_argument(
        "--json",
        dest="format",
        action="store_const",
        const="json",
        help="the operator's /status JSON as it answered (same as --format json)",
    )


def main(args: argparse.Namespace) -> int:
    from runscaler import remote
    from runscaler.console import status as render

    url = remote.server_url(args.server)

    def fetch() -> Any:
        return remote.fetch_json(url, "/status")

    data = fetch()  # an unreachable operator fails here, before anything is drawn
    console = _console()
    if not args.watch:
        if args.format == "json":
            sys.stdout.write(render.render_json(data))
        else:
            view = render.render_text(
                data, now=time.time(), edited=edited(data), with_runners=args.runners
            )
            console.print(view)
        return EXIT_OK
    watch(console, fetch, first=data, json_format=args.format == "json", with_runners=args.runners)
    return EXIT_OK


@functools.cache
def _differs(path: str, revision: str, sha256: str) -> bool | None:
    file = Path(path)
    try:
        shown = subprocess.run(
            ["git", "-C", str(file.parent), "show", f"{revision}:./{file.name}"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if shown.returncode != 0:
        return True  # the file is not in that commit: not committed yet
    return hashlib.sha256(shown.stdout).hexdigest() != sha256


def edited(data: Any) -> bool | None:
    """Whether the applied manifest differs from the file in the shown git revision
    (uncommitted edits); None when that cannot be told from this host."""
    manifest = data.get("manifest") if isinstance(data, dict) else None
    if not isinstance(manifest, dict):
        return None
    path, revision, sha256 = (manifest.get(k) for k in ("path", "revision", "sha256"))
    if not (isinstance(path, str) and isinstance(revision, str) and isinstance(sha256, str)):
        return None
    if not revision or not sha256 or not Path(path).parent.is_dir():
        return None  # an operator on another host, or outside git
    return _differs(path, revision, sha256)


def _console() -> Console:
    import os

    from rich.console import Console

    console = Console(file=sys.stdout, highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = _PIPE_WIDTH
    return console


def watch(
    console: Console,
    fetch: Callable[[], Any],
    *,
    first: Any,
    json_format: bool = False,
    with_runners: bool = False,
    interval: float = WATCH_INTERVAL,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
) -> None:
    """Redraw the status every `interval` until Ctrl-C; an operator that stops answering is
    shown as such over the last good view, and the watch keeps trying."""
    from rich.live import Live
    from rich.text import Text

    from runscaler.console import status as render

    def view(data: Any) -> RenderableType:
        if json_format:
            return Text(render.render_json(data))
        return render.render_text(data, now=clock(), edited=edited(data), with_runners=with_runners)

    last = view(first)
    try:
        with Live(last, console=console, auto_refresh=False, transient=False) as live:
            while True:
                sleep(interval)
                try:
                    last = view(fetch())
                    live.update(last, refresh=True)
                except UserError as exc:
                    live.update(render.render_unreachable(str(exc), last=last), refresh=True)
    except KeyboardInterrupt:
        return
