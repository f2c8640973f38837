"""`runscaler validate`: check manifests offline, as CI does on every pull request."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "check manifests offline: syntax, schema and semantics, with located errors"
EXAMPLES = """\
  runscaler validate                               # $RUNSCALER_MANIFEST or ./fleet.yaml
  runscaler validate fleet.yaml staging.toml --strict
  runscaler validate fleet.yaml --format github    # annotations in a GitHub Actions job
  runscaler validate fleet.yaml --check-env        # also prove env: and file: refs resolve"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "files",
        nargs="*",
        type=Path,
        metavar="FILE",
        help="manifests to check (default: $RUNSCALER_MANIFEST, else ./fleet.yaml)",
    )
    parser.add_argument(
        "--format",
        choices=("text", "json", "github"),
        default="text",
        help="text (default), json, or github workflow annotations",
    )
    parser.add_argument(
        "--strict", action="store_true", help="treat warnings (literal secrets …) as errors"
    )
    parser.add_argument(
        "--check-env",
        action="store_true",
        help="also check that env: variables are set and file: paths are readable",
    )


def main(args: argparse.Namespace) -> int:
    from runscaler.console.diagnostics import (
        FileResult,
        github_annotation,
        json_document,
        summary_line,
        text_lines,
    )
    from runscaler.errors import ManifestError
    from runscaler.manifest.loading import load_manifest
    from runscaler.paths import default_manifest_path

    files: list[Path] = args.files or [default_manifest_path()]
    results = []
    for path in files:
        try:
            loaded = load_manifest(path, strict=args.strict, check_env=args.check_env)
        except ManifestError as exc:
            found = (*exc.diagnostics, *exc.warnings)
            results.append(FileResult(str(path), False, None, found))
        else:
            count = len(loaded.fleet.scale_sets)
            results.append(FileResult(str(path), True, count, loaded.warnings))

    if args.format == "json":
        print(json_document(results))
    for result in results if args.format != "json" else ():
        if args.format == "github":
            for diagnostic in result.diagnostics:
                print(github_annotation(diagnostic))
            print(summary_line(result))
            continue
        for line in text_lines(result.diagnostics):
            print(line, file=sys.stderr)
        if result.valid:
            print(summary_line(result))
    return 0 if all(r.valid for r in results) else 1
