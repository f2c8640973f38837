"""`runscaler status`: what the live operator is doing, from its `/status` endpoint.

The operator is a separate process (`runscaler run`); this command only reads its HTTP
endpoint, so it works from any shell on the host. `--watch` redraws every second until Ctrl-C,
which is how a watch normally ends, so it exits 0 without a message.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from runscaler.errors import EXIT_OK, UserError

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

HELP = "show the live operator's scale sets, runners, jobs and last reload"
EXAMPLES = """\
  runscaler status
  runscaler status --watch                      # redraw every second; Ctrl-C ends it (exit 0)
  runscaler status --server http://127.0.0.1:9090 --format json"""

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
    parser.add_argument("--format", choices=("text", "json"), default="text", help="output format")


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
            console.print(render.render_text(data, now=time.time()))
        return EXIT_OK
    watch(console, fetch, first=data, json_format=args.format == "json")
    return EXIT_OK


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
        return render.render_text(data, now=clock())

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
