"""The operator as a system service: a systemd unit or a launchd plist, rendered from one spec.

Pure text, no side effects, so `runscaler service install --dry-run` and the tests see exactly
what would be installed. Tokens never appear in either file: systemd reads them from an
`EnvironmentFile` (mode 0600), launchd has no such key, so its job sources the same file
through `/bin/sh` before it execs the operator.

Stopping is SIGTERM to the operator alone (busy runners keep their jobs and the next start
adopts them), with time to close its sessions; reloading is SIGHUP.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# launchd starts jobs with PATH=/usr/bin:/bin:/usr/sbin:/sbin: `tart` (Homebrew) and `docker`
# (Docker Desktop, Colima) live in these.
LAUNCHD_PATH = "/opt/homebrew/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
STOP_TIMEOUT_S = 120
DEFAULT_NAME = "runscaler"
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}"


@dataclass(frozen=True)
class ServiceSpec:
    name: str  # the unit name without `.service`; the plist's label is dev.runscaler.NAME
    command: tuple[str, ...]  # how to start the operator: the runscaler executable, `run`, …
    manifest: Path
    env_file: Path
    state_dir: Path
    user: bool  # a per-user service (systemctl --user, a LaunchAgent) rather than system-wide
    log_file: Path | None = None  # launchd only: where stdout and stderr go


def run_command(
    executable: tuple[str, ...], *, manifest: Path, listen: str, state_dir: Path
) -> tuple[str, ...]:
    return (*executable, "run", str(manifest), "--listen", listen, "--state-dir", str(state_dir))


def launchd_label(name: str) -> str:
    return f"dev.runscaler.{name}"


def _systemd_word(word: str) -> str:
    """One ExecStart argument: quoted when needed; `%` and `$` kept literal."""
    word = word.replace("%", "%%").replace("$", "$$")
    if re.fullmatch(r"[A-Za-z0-9_@%+=:,./-]+", word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _systemd_path(path: Path) -> str:
    text = str(path).replace("%", "%%")
    if any(c.isspace() for c in text) or '"' in text:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def systemd_unit(spec: ServiceSpec) -> str:
    exec_start = " ".join(_systemd_word(w) for w in spec.command)
    wanted_by = "default.target" if spec.user else "multi-user.target"
    # A user manager cannot order itself after the system's docker.service; it only exists there.
    docker = "" if spec.user else " docker.service"
    sandbox = "" if spec.user else _SYSTEM_SANDBOX.format(state_dir=_systemd_path(spec.state_dir))
    return f"""\
# Written by `runscaler service install`; `runscaler service uninstall` removes it.
# Tokens go in the environment file (mode 0600), never in this unit.
[Unit]
Description=runscaler: auto-scaled GitHub Actions runners ({spec.manifest.name})
After=network-online.target{docker}
Wants=network-online.target{docker}

[Service]
Type=exec
EnvironmentFile={_systemd_path(spec.env_file)}
WorkingDirectory={_systemd_path(spec.manifest.parent)}
ExecStart={exec_start}
# SIGHUP re-reads the manifest now (it is also re-read on every change).
ExecReload=/bin/kill -HUP $MAINPID
# SIGTERM to the operator alone: idle runners are removed, busy ones keep their job and the
# next start adopts them. Its git children are killed only if it outlives the timeout.
KillMode=mixed
KillSignal=SIGTERM
TimeoutStopSec={STOP_TIMEOUT_S}
Restart=on-failure
RestartSec=5s
# Sandboxing (system services): read-only host, writable state directory, no devices.
{sandbox}
[Install]
WantedBy={wanted_by}
"""


# The operator talks to the Docker socket (root-equivalent anyway) and may reach GitHub through
# a proxy, so the sandbox keeps the host's files out of reach for writing, not the network.
# ProtectSystem=full rather than strict: /run stays writable, so a Docker engine restarted
# under the operator (a new socket inode) is reachable again without a restart of ours.
_SYSTEM_SANDBOX = """\
NoNewPrivileges=yes
ProtectSystem=full
ProtectHome=read-only
ReadWritePaths={state_dir}
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
RestrictNamespaces=yes
LockPersonality=yes
SystemCallArchitectures=native
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
UMask=0077
"""


def launchd_plist(spec: ServiceSpec) -> str:
    # `. FILE` with `set -a` exports what the env file sets, then the shell becomes the operator,
    # so launchd signals the operator itself.
    loader = ("/bin/sh", "-c", 'set -a && . "$0" && set +a && exec "$@"', str(spec.env_file))
    log = str(spec.log_file) if spec.log_file else "/dev/null"
    job = {
        "Label": launchd_label(spec.name),
        "ProgramArguments": [*loader, *spec.command],
        "EnvironmentVariables": {"PATH": LAUNCHD_PATH},
        "WorkingDirectory": str(spec.manifest.parent),
        "RunAtLoad": True,
        # Restarted when it fails, not after a clean stop.
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": 5,
        "ExitTimeOut": STOP_TIMEOUT_S,
        "ProcessType": "Standard",
        "Umask": 0o077,
        "StandardOutPath": log,
        "StandardErrorPath": log,
    }
    import plistlib  # with its XML parser: only for a launchd unit, never in `run`

    return plistlib.dumps(job, sort_keys=False).decode()


ENV_FILE_TEMPLATE = """\
# Environment of the runscaler service: the secrets your manifest names as env:NAME.
# Keep this file mode 0600. After a change: runscaler service restart (or reload).
# GITHUB_TOKEN=ghp_...
"""
