"""`runscaler plan`: preview what applying a manifest would change, terraform-style.

The comparison base is another manifest file, the same manifest at a git revision (for CI on
pull requests), or the live operator: its `/-/fleet`, where literal secrets arrive as
fingerprints, so the manifest's own literals are fingerprinted the same way before planning (an
unchanged one is no change, a rotated one shows as `(sensitive)`). Whatever the base, the diff
is the planner's pure function, the same one the running controller applies.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from runscaler.errors import (
    EXIT_CHANGES,
    EXIT_OK,
    EXIT_USER_ERROR,
    ConfigurationError,
    Diagnostic,
    ManifestError,
    UserError,
)

if TYPE_CHECKING:
    from runscaler.manifest.loading import LoadedManifest
    from runscaler.manifest.models import Fleet

HELP = "preview what applying a manifest would change"
EXAMPLES = """\
  runscaler plan fleet.yaml --against git:origin/main
  runscaler plan fleet.yaml --against old-fleet.yaml --format json
  runscaler plan --against git:HEAD --detailed-exitcode   # exit 2 when there are changes"""

GIT_PREFIX = "git:"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file",
        nargs="?",
        type=Path,
        metavar="FILE",
        help="the manifest to plan (default: $RUNSCALER_MANIFEST or ./fleet.yaml)",
    )
    base = parser.add_mutually_exclusive_group()
    base.add_argument(
        "--against",
        metavar="FILE|git:REF",
        help="compare with another manifest, or with FILE at a git revision (git:origin/main)",
    )
    base.add_argument(
        "--server",
        metavar="URL",
        help="compare with the live operator at URL (the default without --against: "
        "$RUNSCALER_SERVER or http://127.0.0.1:8080)",
    )
    parser.add_argument(
        "--format",
        choices=("text", "json", "markdown"),
        default="text",
        help="output format (default: %(default)s)",
    )
    parser.add_argument(
        "--allow-empty",
        action="store_true",
        help="plan a manifest with no scale sets as `run --allow-empty` applies it "
        "(without it, such a plan exits 1: the operator would refuse it)",
    )
    parser.add_argument(
        "--detailed-exitcode",
        action="store_true",
        help="exit 0 when there are no changes, 2 when there are, 1 on errors",
    )


def main(args: argparse.Namespace) -> int:
    from runscaler.console import plans
    from runscaler.manifest import load_manifest
    from runscaler.paths import default_manifest_path
    from runscaler.planning import plan

    path: Path = args.file or default_manifest_path()
    desired = load_manifest(path)
    for warning in desired.warnings:
        print(warning.located(), file=sys.stderr)
    base = _comparison_base(path, against=args.against, server=args.server)
    wanted = desired.fleet
    if base.fingerprinted:
        from runscaler.fingerprints import fingerprint_fleet

        wanted = fingerprint_fleet(wanted)
    result = plan(base.fleet, wanted)
    if base.notes:
        result = replace(result, notes=(*base.notes, *result.notes))
    render = {
        "text": plans.render_text,
        "json": plans.render_json,
        "markdown": plans.render_markdown,
    }[args.format]
    sys.stdout.write(render(result))
    sys.stdout.flush()
    if not desired.fleet.scale_sets and not args.allow_empty:
        # The operator refuses this manifest: say so here, where CI sees it first.
        print(
            f"{path}: the manifest has no scale sets; the operator refuses it without "
            "--allow-empty (pass --allow-empty to plan and run if that is intended)",
            file=sys.stderr,
        )
        return EXIT_USER_ERROR
    if args.detailed_exitcode and result.has_changes:
        return EXIT_CHANGES
    return EXIT_OK


@dataclass(frozen=True)
class Base:
    """What the manifest is compared with: a fleet (None for nothing yet) and why, if notable."""

    fleet: Fleet | None
    notes: tuple[str, ...] = ()
    fingerprinted: bool = False  # literal secrets are fingerprints (the live operator's fleet)


def _comparison_base(path: Path, *, against: str | None, server: str | None) -> Base:
    if against is None:
        return fetch_live_fleet(server)
    if against.startswith(GIT_PREFIX):
        return load_at_revision(path, against.removeprefix(GIT_PREFIX))
    from runscaler.manifest import load_manifest

    return Base(load_manifest(Path(against)).fleet)


def fetch_live_fleet(server: str | None) -> Base:
    """The fleet the live operator runs, from its `/-/fleet` (literal secrets fingerprinted)."""
    from pydantic import ValidationError

    from runscaler import remote
    from runscaler.fingerprints import fleet_from_dump

    url = remote.server_url(server)
    try:
        dump = remote.fetch_json(url, "/-/fleet")
    except remote.OperatorUnreachable:
        raise ConfigurationError(
            f"cannot reach the operator at {url} to compare with: is runscaler run running? "
            "pass --server URL, or compare with a manifest: --against FILE|git:REF"
        ) from None
    except remote.OperatorRefused as exc:
        raise UserError(f"{exc}; or compare with a manifest: --against FILE|git:REF") from None
    try:
        return Base(fleet_from_dump(dump), fingerprinted=True)
    except (ValidationError, TypeError, AttributeError) as exc:
        raise UserError(
            f"the operator at {url} runs a fleet this runscaler cannot read "
            f"({_first_problem(exc)}): "
            "use the same runscaler version, or --against FILE|git:REF"
        ) from None


def _first_problem(exc: Exception) -> str:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError) and exc.errors():
        first = exc.errors()[0]
        return f"{'.'.join(map(str, first['loc']))}: {first['msg']}"
    return str(exc) or type(exc).__name__


def load_at_revision(path: Path, ref: str) -> Base:
    """The manifest at the same path, relative to the work tree's root, at git revision `ref`."""
    if not ref or ref.startswith("-"):
        raise ConfigurationError(f"--against git:{ref}: name a git revision, like git:origin/main")
    where = path.resolve().parent
    found = _git(where, "rev-parse", "--show-toplevel")
    if found.returncode != 0:
        if b"not a git repository" in found.stderr:
            raise UserError(f"{where} is not in a git repository: --against git:{ref} needs one")
        raise UserError(_git_failure("rev-parse", ref, found.stderr))
    root = Path(found.stdout.decode().strip())
    try:
        relative = path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        raise UserError(f"{path} is outside the git work tree {root}") from None
    if _git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").returncode != 0:
        raise UserError(f"unknown git revision {ref!r} in {root}: check --against git:{ref}")
    spec = f"{ref}:{relative}"
    if _git(root, "cat-file", "-e", spec).returncode != 0:
        note = f"{relative} does not exist at git:{ref}: comparing with an empty fleet"
        return Base(None, notes=(note,))
    shown = _git(root, "show", spec)
    if shown.returncode != 0:
        raise UserError(_git_failure("show", ref, shown.stderr))
    fmt: Literal["yaml", "toml"] = "toml" if path.suffix.lower() == ".toml" else "yaml"
    return Base(_load_text(shown.stdout, source=spec, fmt=fmt, base_dir=where, ref=ref))


def _load_text(
    text: bytes, *, source: str, fmt: Literal["yaml", "toml"], base_dir: Path, ref: str
) -> Fleet:
    from runscaler.manifest import load_manifest_text

    try:
        loaded: LoadedManifest = load_manifest_text(text, source=source, fmt=fmt, base_dir=base_dir)
    except ManifestError as exc:
        # The located lines read `REF:PATH:LINE:COL: …`; the first one says what they are about.
        intro = Diagnostic(file=source, message=f"the manifest at git:{ref} is invalid")
        raise ManifestError((intro, *exc.diagnostics)) from None
    return loaded.fleet


def _git(cwd: Path, *argv: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            ["git", *argv], cwd=cwd, capture_output=True, check=False, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError:
        raise ConfigurationError("git is not installed: --against git:REF needs it") from None


def _git_failure(command: str, ref: str, stderr: bytes) -> str:
    lines = stderr.decode(errors="replace").strip().splitlines()
    return f"git {command} failed for --against git:{ref}: {lines[0] if lines else 'no output'}"
