"""`runscaler doctor`: check the environment and find what a fleet left behind; `--fix` it."""

from __future__ import annotations

import argparse
from pathlib import Path

from runscaler.errors import ConfigurationError

HELP = "check the engine, GitHub access and state, and find leftovers we own; --fix removes them"
EXAMPLES = """\
  runscaler doctor                      # ./fleet.yaml (or $RUNSCALER_MANIFEST)
  runscaler doctor fleet.yaml --fix     # also remove the leftovers (not while an operator runs)
  runscaler doctor --fleet acme-ci      # no manifest: the default engine, one fleet's leftovers
  runscaler doctor --fix --fleet acme-ci"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file",
        nargs="?",
        type=Path,
        metavar="FILE",
        help="the fleet manifest (default: $RUNSCALER_MANIFEST, else ./fleet.yaml when it exists)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="the operator's state directory (default: $XDG_STATE_HOME/runscaler)",
    )
    parser.add_argument(
        "--fix",
        action="store_true",
        help="remove the leftovers found (refused while an operator of the fleet runs)",
    )
    parser.add_argument(
        "--fleet",
        metavar="NAME",
        help="without a manifest: whose leftovers to list or fix (metadata.name)",
    )
    # Shortens GitHub retry waits, for tests.
    parser.add_argument("--timing-scale", type=float, default=1.0, help=argparse.SUPPRESS)


def main(args: argparse.Namespace) -> int:
    import asyncio

    from runscaler.console.doctor import render_report
    from runscaler.doctoring import DoctorSettings, examine
    from runscaler.github.client import RetryPolicy
    from runscaler.logs import setup_logging
    from runscaler.paths import default_state_dir

    setup_logging("warning")  # what the libraries warn about, secrets redacted
    if args.timing_scale <= 0:
        raise ConfigurationError("--timing-scale must be positive")
    scale = args.timing_scale
    settings = DoctorSettings(
        manifest=args.file,
        state_dir=args.state_dir or default_state_dir(),
        fix=args.fix,
        fleet=args.fleet,
        retry=RetryPolicy(attempts=3, wait_min=1.0 * scale, wait_max=5.0 * scale),
    )
    report = asyncio.run(examine(settings))
    render_report(report)
    return report.exit_code
