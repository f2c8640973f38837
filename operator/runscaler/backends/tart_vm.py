"""One Tart VM's life: clone, size, MAC, boot, readiness, the runner inside it, removal.

The steps and their order follow the real CLI (research/tart.md, section 3.4). What differs
from the Go tool, on purpose:

- readiness (`tart exec VM true` with backoff) races the `tart run` process, so a VM that dies
  at boot fails at once with tart's own words, not after the 2-minute deadline;
- the JIT config reaches the guest over stdin (`tart exec -i`) into a 0600 file the runner's
  wrapper reads and deletes: never in a process argument, never in a world-readable file;
- the runner's wrapper powers the guest off when `run.sh` ends, so the `tart run` process
  exiting *is* the runner's exit (no "sleep 2 s, then pgrep" guess);
- `tart stop` of a VM that is not running and `tart delete` of one that does not exist are
  success; the MAC is written into `config.json` atomically, keeping its keys' order.

Our VMs carry the fleet in their name (`rs-<fleet8>-<set8>-<slot>-<ts>`) and a `runscaler.json`
next to tart's `config.json` with the runner's labels, so adoption, `doctor` and removal only
ever touch VMs that are ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runscaler.backends.base import BackendError
from runscaler.backends.tart_cli import (
    EXIT_DOES_NOT_EXIST,
    EXIT_NOT_RUNNING,
    LIMIT_MESSAGE,
    TartCLI,
)
from runscaler.backends.tart_slots import slot_mac
from runscaler.manifest.models import TartTemplate

log = logging.getLogger(__name__)

SIDECAR = "runscaler.json"
RUN_LOG = "runscaler-run.log"
# In the guest, under the runner user's home (0700): the JIT file and the runner's output.
GUEST_DIR = "$HOME/.runscaler"
NAME_PATTERN = re.compile(r"^rs-([0-9a-f]{8})-([0-9a-f]{8})-(\d+)-([0-9a-z]+)$")
READY_BACKOFF = (1.0, 2.0, 4.0, 5.0)


class HostVMLimit(BackendError):
    """`tart run` refused: the host already runs as many VMs as macOS allows."""


@dataclass(frozen=True)
class Timeouts:
    clone: float = 600.0
    set: float = 30.0
    exec: float = 15.0
    stop: float = 45.0
    delete: float = 30.0


def fleet_tag(fleet: str) -> str:
    return hashlib.sha256(fleet.encode()).hexdigest()[:8]


def vm_name(fleet: str, scale_set_key: str, slot: int) -> str:
    stamp = int(time.time() * 1000)
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    ts = ""
    while stamp:
        stamp, rem = divmod(stamp, 36)
        ts = digits[rem] + ts
    ts += digits[int.from_bytes(os.urandom(1), "big") % 36]
    return f"rs-{fleet_tag(fleet)}-{scale_set_key[:8]}-{slot}-{ts}"


def slot_of(name: str) -> int | None:
    match = NAME_PATTERN.match(name)
    return int(match.group(3)) if match else None


@dataclass
class VM:
    """A VM of ours this process made (or adopted), with its `tart run` process."""

    name: str
    slot: int
    labels: dict[str, str]
    created_at: float = field(default_factory=time.time)
    runner: str | None = None
    process: subprocess.Popen[bytes] | None = None  # None: adopted (polled with tart list)
    exit_code: int | None = None
    adopted: bool = False  # found running (an earlier operator's): no process, polled
    runner_started: bool = False  # the runner's start command was sent: it may hold a job
    exited: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def running(self) -> bool:
        return not self.exited.is_set()


def read_sidecar(cli: TartCLI, name: str) -> dict[str, Any] | None:
    try:
        data = json.loads((cli.vm_dir(name) / SIDECAR).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_sidecar(cli: TartCLI, vm: VM, *, role: str) -> None:
    body = {"labels": vm.labels, "runner": vm.runner, "role": role, "createdAt": vm.created_at}
    _atomic_write(cli.vm_dir(vm.name) / SIDECAR, json.dumps(body, indent=2) + "\n", mode=0o600)


def _atomic_write(path: Path, text: str, *, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.runscaler-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def set_mac(cli: TartCLI, name: str, mac: str) -> None:
    """Write `macAddress` into the VM's config.json atomically (tart has no `set --mac`)."""
    path = cli.vm_dir(name) / "config.json"
    config = json.loads(path.read_text())
    if not isinstance(config, dict):
        raise ValueError("config.json is not an object")
    config["macAddress"] = mac
    _atomic_write(path, json.dumps(config, indent=4) + "\n", mode=path.stat().st_mode & 0o777)


def run_log_tail(cli: TartCLI, name: str, lines: int = 20) -> list[str]:
    try:
        text = (cli.vm_dir(name) / RUN_LOG).read_text(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]


# How often a VM's `tart run` process is looked at (a non-blocking waitpid): the latency of
# noticing a VM that stopped.
WATCH_INTERVAL = 0.1
DETACHED: list[subprocess.Popen[bytes]] = []


async def _watch(vm: VM) -> None:
    assert vm.process is not None
    try:
        # A process exit is no event to wait on portably (no pidfd on macOS): poll waitpid.
        while (code := vm.process.poll()) is None:  # noqa: ASYNC110
            await asyncio.sleep(WATCH_INTERVAL)
        vm.exit_code = code
    finally:
        if vm.process.returncode is None:
            # Left running on purpose (the operator stops watching, the VM goes on): kept
            # referenced so Python does not warn about a child it thinks was forgotten.
            DETACHED.append(vm.process)
        vm.exited.set()


class Booter:
    """Makes VMs from a template on one TART_HOME."""

    def __init__(self, cli: TartCLI, *, timeouts: Timeouts | None = None) -> None:
        self.cli = cli
        self.timeouts = timeouts or Timeouts()
        self.watchers: set[asyncio.Task[None]] = set()

    async def boot(self, vm: VM, template: TartTemplate, *, role: str) -> None:
        """Clone, size, MAC and boot `vm` and wait until its guest agent answers. On failure or
        cancellation the VM is destroyed (the caller still owns the slot)."""
        t = self.timeouts
        try:
            clone = await self.cli.run("clone", template.image, vm.name, timeout=t.clone)
            if not clone.ok:
                raise BackendError(_clone_error(template.image, vm.name, clone.message))
            write_sidecar(self.cli, vm, role=role)
            sizing = [*_opt("--cpu", template.cpu), *_opt("--memory", template.memory)]
            if sizing:
                await self.cli.check(
                    "set", vm.name, *sizing, timeout=t.set, what=f"cannot size VM {vm.name}"
                )
            await self._mac(vm, template)
            vm.process = self.cli.spawn_run(vm.name, self.cli.vm_dir(vm.name) / RUN_LOG)
            watcher = asyncio.create_task(_watch(vm), name=f"tart-run:{vm.name}")
            self.watchers.add(watcher)
            watcher.add_done_callback(self.watchers.discard)
            await self._wait_ready(vm, template)
        except BaseException:
            await asyncio.shield(self.destroy(vm.name))
            raise

    async def _mac(self, vm: VM, template: TartTemplate) -> None:
        try:
            if template.mac_address == "random":
                await self.cli.check(
                    "set", vm.name, "--random-mac", timeout=10.0, what="tart set --random-mac"
                )
            else:
                set_mac(self.cli, vm.name, slot_mac(vm.slot, template.mac_offset))
        except (OSError, ValueError, BackendError) as exc:
            log.warning("VM %s: keeping the clone's MAC address: %s", vm.name, exc)

    async def _wait_ready(self, vm: VM, template: TartTemplate) -> None:
        deadline = time.monotonic() + template.ready_timeout
        last = "no answer yet"
        for attempt in range(1_000_000):
            probe = asyncio.ensure_future(
                self.cli.run("exec", vm.name, "true", timeout=self.timeouts.exec)
            )
            if not await _or_exit(vm, probe):
                self._died_booting(vm)
            result = probe.result()
            if result.ok:
                return
            last = result.message
            pause = READY_BACKOFF[min(attempt, len(READY_BACKOFF) - 1)]
            if time.monotonic() + pause > deadline:
                break
            sleep = asyncio.ensure_future(asyncio.sleep(pause))
            if not await _or_exit(vm, sleep):
                self._died_booting(vm)
        raise BackendError(
            f"the guest agent of VM {vm.name} did not answer within "
            f"{template.ready_timeout:.0f}s ({last}): does image {template.image} run the Tart "
            "Guest Agent (all Cirrus Labs images do)?"
        )

    def _died_booting(self, vm: VM) -> None:
        tail = run_log_tail(self.cli, vm.name, 5)
        text = " / ".join(tail) or "no output"
        if any(LIMIT_MESSAGE in line for line in tail):
            raise HostVMLimit(
                f"VM {vm.name} did not start: {text}: other VMs on this host use the slots macOS "
                "allows; stop them or lower tart.vmLimit"
            )
        raise BackendError(f"VM {vm.name} stopped while booting (exit {vm.exit_code}): {text}")

    async def start_runner(self, vm: VM, template: TartTemplate, jit_config: str) -> None:
        """Check the runner is there, hand it the JIT over stdin and start it so the guest
        powers off when it ends. `vm.runner_started` says whether the start command was sent
        (from then on the VM may run a runner that holds a job)."""
        t = self.timeouts
        run_sh = f"{template.runner_dir.rstrip('/')}/run.sh"
        found = await self.cli.run("exec", vm.name, "test", "-x", run_sh, timeout=t.exec)
        if not found.ok:
            raise BackendError(
                f"no runner at {run_sh} in VM {vm.name} (image {template.image}): set "
                "tart.runnerDir to where the image keeps actions-runner"
            )
        script = f'umask 077; mkdir -p "{GUEST_DIR}" && cat > "{GUEST_DIR}/jit"'
        given = await self.cli.run(
            "exec", "-i", vm.name, "sh", "-c", script, timeout=t.exec, input=jit_config.encode()
        )
        if not given.ok:
            raise BackendError(f"cannot hand the JIT config to VM {vm.name}: {given.message}")
        inner = (
            f'ACTIONS_RUNNER_INPUT_JITCONFIG="$(cat "{GUEST_DIR}/jit")"; rm -f "{GUEST_DIR}/jit"; '
            f"export ACTIONS_RUNNER_INPUT_JITCONFIG; {shlex.quote(run_sh)}; sudo shutdown -h now"
        )
        start = (
            f"umask 077; nohup sh -c {shlex.quote(inner)} "
            f'> "{GUEST_DIR}/runner.log" 2>&1 < /dev/null &'
        )
        vm.runner_started = True
        started = await self.cli.run("exec", vm.name, "sh", "-c", start, timeout=t.exec)
        if not started.ok:
            vm.runner_started = False
            raise BackendError(f"cannot start the runner in VM {vm.name}: {started.message}")

    async def runner_log(self, name: str, lines: int) -> list[str]:
        script = f'tail -n {int(lines)} "{GUEST_DIR}/runner.log"'
        result = await self.cli.run("exec", name, "sh", "-c", script, timeout=15.0)
        return result.stdout.splitlines() if result.ok else []

    async def destroy(self, name: str) -> bool:
        """`tart stop` then `tart delete`; True when the VM is gone (or never was)."""
        t = self.timeouts
        try:
            stop = await self.cli.run("stop", name, "--timeout", "30", timeout=t.stop)
            if not stop.ok and stop.code != EXIT_NOT_RUNNING:
                log.warning("VM %s: tart stop failed: %s", name, stop.message)
            delete = await self.cli.run("delete", name, timeout=t.delete)
        except BackendError as exc:
            log.warning("VM %s: cannot remove it: %s", name, exc)
            return False
        if delete.ok or delete.code == EXIT_DOES_NOT_EXIST:
            return True
        log.warning("VM %s: tart delete failed: %s; retrying later", name, delete.message)
        return False


def _opt(flag: str, value: int | None) -> list[str]:
    return [flag, str(value)] if value is not None else []


def _clone_error(image: str, name: str, message: str) -> str:
    hint = ""
    if "space" in message.lower():
        hint = ": free disk space under TART_HOME (tart prune --entries caches)"
    return f"cannot clone {image} into VM {name}: {message}{hint}"


async def _or_exit(vm: VM, work: asyncio.Future[Any]) -> bool:
    """Wait for `work` or the VM's exit; False (work cancelled) when the VM exited first."""
    ended = asyncio.ensure_future(vm.exited.wait())
    try:
        await asyncio.wait({work, ended}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        work.cancel()
        ended.cancel()
        with contextlib.suppress(BaseException):
            await work
        raise
    ended.cancel()
    if work.done():
        return True
    work.cancel()
    with contextlib.suppress(BaseException):
        await work
    return False
