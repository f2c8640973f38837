"""`runscaler run`: the operator, or with `--dry-run` a check that changes nothing."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from runscaler.errors import EXIT_OK, EXIT_USER_ERROR, ConfigurationError
from runscaler.paths import default_manifest_path, default_state_dir

HELP = "run the operator: apply the manifest, hot-reload it, serve /status and /metrics"
EXAMPLES = """\
  runscaler run                         # ./fleet.yaml (or $RUNSCALER_MANIFEST)
  runscaler run fleet.yaml --listen 127.0.0.1:9090 --log-format json
  runscaler run fleet.yaml --dry-run    # prove credentials, groups, engine, image; create nothing
  runscaler run fleet.yaml --cleanup-on-exit   # drain and delete the scale sets on exit"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file",
        nargs="?",
        type=Path,
        metavar="FILE",
        help="the fleet manifest (default: $RUNSCALER_MANIFEST, else ./fleet.yaml)",
    )
    parser.add_argument(
        "--listen",
        default="127.0.0.1:8080",
        metavar="HOST:PORT",
        help="serve /status, /metrics and /-/reload here (default: %(default)s)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where sessions and the fleet lock are kept (default: $XDG_STATE_HOME/runscaler, "
        "else ~/.local/state/runscaler)",
    )
    parser.add_argument(
        "--start-concurrency",
        type=int,
        default=None,
        metavar="N",
        help="at most N runners starting at once, fleet-wide (default: as many as are missing, "
        "bounded by what the engine takes, learned from its answers)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="least severe log lines shown (default: %(default)s)",
    )
    parser.add_argument(
        "--log-format",
        default="text",
        choices=("text", "json"),
        help="text for people, json for a log pipeline (default: %(default)s)",
    )
    parser.add_argument(
        "--allow-empty", action="store_true", help="accept a manifest with no scale sets"
    )
    parser.add_argument(
        "--cleanup-on-exit",
        action="store_true",
        help="on exit, drain (up to drainTimeout) and delete the scale sets",
    )
    parser.add_argument("--dry-run", action="store_true", help="check everything; create nothing")
    # Shortens every internal wait (backoffs, resyncs, grace periods) for tests and demos.
    parser.add_argument("--timing-scale", type=float, default=1.0, help=argparse.SUPPRESS)


def main(args: argparse.Namespace) -> int:
    from runscaler.engine.running import RunSettings, run_operator
    from runscaler.engine.timing import scaled_timing
    from runscaler.logs import setup_logging
    from runscaler.manifest.loading import load_manifest

    level = args.log_level
    if args.dry_run and level == "info":
        # A dry run's output is its table and one stderr line per failing scale set; the
        # client's progress notes ("refused (401); reading them again") would bury that line.
        level = "warning"
    setup_logging(level, args.log_format)
    path: Path = args.file or default_manifest_path()
    if args.start_concurrency is not None and args.start_concurrency < 1:
        raise ConfigurationError("--start-concurrency must be at least 1")
    if args.timing_scale <= 0:
        raise ConfigurationError("--timing-scale must be positive")
    timing = scaled_timing(args.timing_scale)
    if args.dry_run:
        from runscaler.console.dryrun import render_dry_run
        from runscaler.engine.dryrun import dry_run

        loaded = load_manifest(path)
        for warning in loaded.warnings:
            print(warning.located(), file=__import__("sys").stderr)
        results = asyncio.run(dry_run(loaded, retry=timing.retry))
        render_dry_run(results)
        return EXIT_OK if all(r.ok for r in results) else EXIT_USER_ERROR
    settings = RunSettings(
        manifest=path,
        listen=args.listen,
        state_dir=args.state_dir or default_state_dir(),
        start_concurrency=args.start_concurrency,
        allow_empty=args.allow_empty,
        cleanup_on_exit=args.cleanup_on_exit,
        timing=timing,
        resync_interval=60.0 * args.timing_scale,
    )
    if os.environ.get("RUNSCALER_OWNER"):
        from dataclasses import replace

        settings = replace(settings, owner=os.environ["RUNSCALER_OWNER"])
    return asyncio.run(run_operator(settings))
