"""`runscaler service`: run the operator as a systemd or launchd service, and manage it.

`install` validates the manifest, writes the unit (or plist) and an environment file for the
tokens (mode 0600, never overwritten), then enables and starts it; `--dry-run` only prints the
unit. The other actions are thin, named wrappers around systemctl/journalctl or launchctl, so a
user does not need to know the unit's name, domain or log file. The files themselves are
rendered by `runscaler.servicing`.
"""

from __future__ import annotations

import argparse
import os
import re
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from runscaler.errors import EXIT_OK, EXIT_USER_ERROR, ConfigurationError, UserError
from runscaler.paths import default_manifest_path, default_state_dir
from runscaler.servicing import (
    DEFAULT_NAME,
    ENV_FILE_TEMPLATE,
    NAME_PATTERN,
    ServiceSpec,
    launchd_label,
    launchd_plist,
    run_command,
    systemd_unit,
)

HELP = "run the operator as a systemd (Linux) or launchd (macOS) service: install, logs, …"
EXAMPLES = """\
  sudo runscaler service install --manifest /srv/fleet/fleet.yaml
  runscaler service install --user --dry-run        # print the unit; change nothing
  runscaler service status
  runscaler service logs --follow
  runscaler service reload                          # re-read the manifest now (SIGHUP)
  sudo runscaler service uninstall"""

ACTIONS = ("install", "uninstall", "start", "stop", "restart", "reload", "status", "logs")
DEFAULT_LISTEN = "127.0.0.1:8080"


def _default_manager() -> str:
    return "launchd" if sys.platform == "darwin" else "systemd"


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action in ACTIONS:
        sub = actions.add_parser(
            action, help=_ACTION_HELP[action], description=_ACTION_HELP[action]
        )
        _common(sub)
        if action in ("install", "uninstall"):
            sub.add_argument(
                "--unit-dir",
                type=Path,
                metavar="DIR",
                help="where the unit goes (default: /etc/systemd/system, "
                "~/.config/systemd/user, /Library/LaunchDaemons or ~/Library/LaunchAgents)",
            )
        if action == "install":
            _install_options(sub)
        if action == "logs":
            sub.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
            sub.add_argument(
                "-n", "--lines", type=int, default=100, metavar="N", help="lines (default: 100)"
            )


_ACTION_HELP = {
    "install": "write the unit and the environment file, then enable and start the service",
    "uninstall": "stop and disable the service and remove its unit (the env file is kept)",
    "start": "start the service",
    "stop": "stop it: idle runners are removed, busy ones finish their job",
    "restart": "restart it: busy runners keep their job and are adopted",
    "reload": "make the operator re-read its manifest now (SIGHUP)",
    "status": "show whether the service runs (systemctl status / launchctl print)",
    "logs": "show the service's log (journalctl / its log file)",
}


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--user",
        action="store_true",
        help="a service of your user (systemctl --user, a LaunchAgent), not system-wide",
    )
    parser.add_argument(
        "--name",
        default=DEFAULT_NAME,
        help="the service's name; one per fleet on a host (default: %(default)s)",
    )
    parser.add_argument(
        "--manager",
        choices=("systemd", "launchd"),
        default=_default_manager(),
        help="the service manager (default: %(default)s on this machine)",
    )


def _install_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--manifest",
        type=Path,
        metavar="PATH",
        help="the fleet manifest (default: $RUNSCALER_MANIFEST, else ./fleet.yaml)",
    )
    parser.add_argument(
        "--env-file",
        type=Path,
        metavar="PATH",
        help="the tokens' environment file, created mode 0600 when missing (default: "
        "/etc/runscaler/NAME.env; with --user $XDG_CONFIG_HOME/runscaler/NAME.env)",
    )
    parser.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help="the operator's HTTP address (default: %(default)s)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="the operator's state directory (default: /var/lib/runscaler; with --user "
        "$XDG_STATE_HOME/runscaler)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the unit and what would run; change nothing"
    )


@dataclass(frozen=True)
class Target:
    """Where one service lives and how its manager names it."""

    manager: str
    user: bool
    name: str

    @property
    def file_name(self) -> str:
        if self.manager == "launchd":
            return f"{launchd_label(self.name)}.plist"
        return f"{self.name}.service"

    def unit_dir(self) -> Path:
        home = Path.home()
        if self.manager == "launchd":
            return home / "Library/LaunchAgents" if self.user else Path("/Library/LaunchDaemons")
        if self.user:
            return _xdg("XDG_CONFIG_HOME", home / ".config") / "systemd/user"
        return Path("/etc/systemd/system")

    def domain(self) -> str:
        """launchd's domain target for this service."""
        base = f"gui/{os.getuid()}" if self.user else "system"
        return f"{base}/{launchd_label(self.name)}"

    def systemctl(self, *args: str) -> list[str]:
        return ["systemctl", *(["--user"] if self.user else []), *args]

    def log_file(self) -> Path:
        root = Path.home() / "Library/Logs" if self.user else Path("/Library/Logs")
        return root / "runscaler" / f"{self.name}.log"


def _xdg(variable: str, fallback: Path) -> Path:
    value = os.environ.get(variable)
    return Path(value) if value else fallback


def _target(args: argparse.Namespace) -> Target:
    if not re.fullmatch(NAME_PATTERN, args.name):
        raise ConfigurationError(
            f"--name {args.name!r}: use letters, digits, '.', '_', '-' or '@' (up to 64)"
        )
    return Target(manager=args.manager, user=args.user, name=args.name)


def main(args: argparse.Namespace) -> int:
    target = _target(args)
    if args.action == "install":
        return install(args, target)
    if args.action == "uninstall":
        return uninstall(target, unit_dir=args.unit_dir)
    if args.action == "logs":
        return logs(target, follow=args.follow, lines=args.lines)
    return _control(target, args.action)


def _executable() -> tuple[str, ...]:
    """How the service starts this same runscaler: its script beside the interpreter."""
    script = Path(sys.executable).parent / "runscaler"
    if script.is_file() and os.access(script, os.X_OK):
        return (str(script),)
    return (sys.executable, "-m", "runscaler")


def service_spec(args: argparse.Namespace, target: Target) -> ServiceSpec:
    manifest = (args.manifest or default_manifest_path()).absolute()
    name = target.name
    if target.user:
        env_default = _xdg("XDG_CONFIG_HOME", Path.home() / ".config") / "runscaler" / f"{name}.env"
        state_default = default_state_dir()
    else:
        env_default = Path("/etc/runscaler") / f"{name}.env"
        state_default = Path("/var/lib/runscaler")
        if target.manager == "launchd":
            state_default = Path("/Library/Application Support/runscaler")
    state_dir = (args.state_dir or state_default).absolute()
    command = run_command(_executable(), manifest=manifest, listen=args.listen, state_dir=state_dir)
    return ServiceSpec(
        name=name,
        command=command,
        manifest=manifest,
        env_file=(args.env_file or env_default).absolute(),
        state_dir=state_dir,
        user=target.user,
        log_file=target.log_file() if target.manager == "launchd" else None,
    )


def render(spec: ServiceSpec, target: Target) -> str:
    return launchd_plist(spec) if target.manager == "launchd" else systemd_unit(spec)


def install(args: argparse.Namespace, target: Target) -> int:
    from runscaler.manifest.loading import load_manifest

    spec = service_spec(args, target)
    text = render(spec, target)
    unit_path = (args.unit_dir or target.unit_dir()) / target.file_name
    steps = _start_steps(target, unit_path)
    if args.dry_run:
        sys.stdout.write(text)
        print(f"would write {unit_path}", file=sys.stderr)
        for step in steps:
            print(f"would run: {' '.join(step)}", file=sys.stderr)
        if not spec.manifest.is_file():
            print(f"note: {spec.manifest} does not exist yet", file=sys.stderr)
        return EXIT_OK
    load_manifest(spec.manifest)  # a service that cannot start is better refused here
    hint = "" if target.user else ": run it with sudo, or add --user"
    _ensure_env_file(spec.env_file, hint=hint)
    _make_dir(spec.state_dir, "--state-dir", hint=hint)
    if spec.log_file is not None:
        _make_dir(spec.log_file.parent, "the log directory", hint=hint)
    _make_dir(unit_path.parent, "--unit-dir", hint=hint)
    try:
        unit_path.write_text(text)
    except OSError as exc:
        raise _permission(unit_path, exc, target) from None
    print(f"wrote {unit_path}", file=sys.stderr)
    for step in steps:
        _run(step)
    print(
        f"service {target.name} enabled and started; tokens go in {spec.env_file}, "
        f"then: runscaler service restart{' --user' if target.user else ''}",
        file=sys.stderr,
    )
    return EXIT_OK


def _start_steps(target: Target, unit_path: Path) -> list[list[str]]:
    if target.manager == "launchd":
        domain = target.domain().rsplit("/", 1)[0]
        return [["launchctl", "bootstrap", domain, str(unit_path)]]
    return [target.systemctl("daemon-reload"), target.systemctl("enable", "--now", target.name)]


def uninstall(target: Target, *, unit_dir: Path | None = None) -> int:
    unit_path = (unit_dir or target.unit_dir()) / target.file_name
    if target.manager == "launchd":
        _run(["launchctl", "bootout", target.domain()], ok_codes=(0, 3, 36, 113))
    else:
        _run(target.systemctl("disable", "--now", target.name), ok_codes=(0, 1, 5))
    try:
        unit_path.unlink()
    except FileNotFoundError:
        print(f"{unit_path}: not installed", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:
        raise _permission(unit_path, exc, target) from None
    if target.manager == "systemd":
        _run(target.systemctl("daemon-reload"))
    print(f"removed {unit_path} (the environment file is kept)", file=sys.stderr)
    return EXIT_OK


def _control(target: Target, action: str) -> int:
    if target.manager == "systemd":
        argv = target.systemctl(action, target.name)
        if action == "status":
            argv = target.systemctl("status", "--no-pager", target.name)
        return _passthrough(argv)
    domain = target.domain()
    launchctl = {
        "start": ["launchctl", "kickstart", domain],
        "stop": ["launchctl", "kill", "TERM", domain],
        "restart": ["launchctl", "kickstart", "-k", domain],
        "reload": ["launchctl", "kill", "HUP", domain],
        "status": ["launchctl", "print", domain],
    }
    return _passthrough(launchctl[action])


def logs(target: Target, *, follow: bool, lines: int) -> int:
    if lines < 0:
        raise ConfigurationError("--lines must be 0 or more")
    if target.manager == "launchd":
        argv = ["tail", "-n", str(lines), *(["-F"] if follow else []), str(target.log_file())]
    else:
        unit = ["--user-unit", target.name] if target.user else ["--unit", target.name]
        argv = ["journalctl", *unit, "--no-pager", "-n", str(lines), *(["-f"] if follow else [])]
    return _passthrough(argv)


def _ensure_env_file(path: Path, *, hint: str = "") -> None:
    """Create the env file mode 0600; refuse one that others can read."""
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise UserError(
                f"{path}: holds tokens but is readable by others (mode {mode:04o}): "
                f"chmod 600 {path}"
            )
        return
    _make_dir(path.parent, "--env-file's directory", hint=hint)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise UserError(
            f"{path}: cannot create it: {exc.strerror}{_if_denied(exc, hint)}"
        ) from None
    with os.fdopen(fd, "w") as file:
        file.write(ENV_FILE_TEMPLATE)
    print(f"created {path} (mode 0600): put the manifest's tokens there", file=sys.stderr)


def _make_dir(path: Path, what: str, *, hint: str = "") -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = f"{exc.strerror}{_if_denied(exc, hint)}"
        raise UserError(f"{what} {path}: cannot create it: {why}") from None


def _if_denied(exc: OSError, hint: str) -> str:
    return hint if isinstance(exc, PermissionError) else ""


def _permission(path: Path, exc: OSError, target: Target) -> UserError:
    hint = "" if target.user else ": run it with sudo, or add --user"
    return UserError(f"{path}: {exc.strerror}{hint}")


def _missing(tool: str) -> UserError:
    return UserError(
        f"{tool} not found: this machine does not run that service manager; "
        "print the unit with --dry-run and install it by hand, or pick --manager"
    )


def _run(argv: list[str], *, ok_codes: tuple[int, ...] = (0,)) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    except FileNotFoundError:
        raise _missing(argv[0]) from None
    if done.returncode not in ok_codes:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        why = lines[-1] if lines else f"exit status {done.returncode}"
        raise UserError(f"{' '.join(argv)}: {why}")


def _passthrough(argv: list[str]) -> int:
    """Run a manager's own command with our terminal; its failure is exit 1."""
    try:
        code = subprocess.run(argv, check=False).returncode
    except FileNotFoundError:
        raise _missing(argv[0]) from None
    return EXIT_OK if code == 0 else EXIT_USER_ERROR
