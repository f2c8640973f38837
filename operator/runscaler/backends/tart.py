"""Runners as Tart macOS VMs: the `Backend` protocol on one TART_HOME, for one fleet.

One `TartBackend` per TART_HOME serves every Tart scale set of the fleet on it, because the
host's VM slots (`tart_slots`) are the host's, not a scale set's. A cold start is slot, clone,
size, MAC, boot, readiness, runner (`tart_vm`); with `poolSize` a start takes a pre-booted VM
from the scale set's warm pool (`tart_pool`) and only hands it the runner. A VM's `tart run`
process ending is the runner's exit (the guest powers off when the runner ends), watched, not
polled; VMs adopted from an earlier operator have no process to watch and are polled.

Removal always gives the slot back, even when `tart delete` fails; such a VM is retried by the
housekeeping loop (`serve`), which also polls adopted VMs, prunes the cache and refreshes
mutable image tags. Only VMs named with this fleet's tag and carrying its labels are touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runscaler.backends.base import (
    LABEL_FLEET,
    LABEL_RUNNER,
    LABEL_SCALE_SET_KEY,
    BackendError,
    BackendUnavailable,
    OwnedRunner,
    RunnerExit,
    RunnerNotFound,
    RunnerSpec,
)
from runscaler.backends.tart_cli import NO_TART, TartCLI
from runscaler.backends.tart_images import ImageStore, prune_caches
from runscaler.backends.tart_pool import WarmPool
from runscaler.backends.tart_slots import SlotManager
from runscaler.backends.tart_vm import (
    VM,
    Booter,
    Timeouts,
    fleet_tag,
    read_sidecar,
    run_log_tail,
    slot_of,
    vm_name,
    write_sidecar,
)
from runscaler.logs import REDACTED, secrets
from runscaler.manifest.models import RunnerTemplate, TartTemplate, runner_shape

__all__ = ["Leftover", "TartBackend", "TartTiming", "leftovers", "tart_home"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TartTiming:
    poll: float = 5.0  # housekeeping tick: adopted VMs, leftovers to retry, timers
    sweep: float = 300.0  # how often stopped VMs of ours that nobody tracks are removed
    sweep_age: float = 300.0  # ...once this old (a removal in flight is not raced)
    pool_take: float = 900.0  # a start waits this long at most for a warm VM
    pool_backoff: float = 2.0  # first delay after a failed pool boot (doubles)


def tart_home(setting: str | None, base_dir: Path) -> Path | None:
    """The manifest's `tart.home` as an absolute path (None: TART_HOME or ~/.tart)."""
    if setting is None:
        return None
    path = Path(setting).expanduser()
    return path if path.is_absolute() else (base_dir / path).resolve()


def tart_template(template: RunnerTemplate) -> TartTemplate:
    if not isinstance(template, TartTemplate):
        raise BackendError(f"a {type(template).__name__} was given to the tart backend")
    return template


class _Exits:
    """One subscriber's exits (an `ExitStream`), fed by the backend from the moment it is made."""

    def __init__(self, backend: TartBackend, selector: Mapping[str, str]) -> None:
        self.backend = backend
        self.selector = dict(selector)
        self.queue: asyncio.Queue[RunnerExit] = asyncio.Queue()
        self.closed = False

    def __aiter__(self) -> _Exits:
        return self

    async def __anext__(self) -> RunnerExit:
        if self.closed:
            raise StopAsyncIteration
        return await self.queue.get()

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            self.backend._unsubscribe(self)


class TartBackend:
    def __init__(
        self,
        *,
        fleet: str,
        home: Path | None = None,
        vm_limit: int = 2,
        executable: str = "tart",
        timing: TartTiming = TartTiming(),
        timeouts: Timeouts | None = None,
    ) -> None:
        self.fleet = fleet
        self.tag = fleet_tag(fleet)
        self.cli = TartCLI(home, executable)
        self.slots = SlotManager(vm_limit)
        self.booter = Booter(self.cli, timeouts=timeouts or Timeouts())
        self.images = ImageStore(self.cli)
        self.timing = timing
        self.vms: dict[str, VM] = {}  # ours, by VM name
        self.zombies: set[str] = set()  # VMs that would not delete; retried
        self._templates: dict[str, TartTemplate] = {}  # by scale set key
        self._pools: dict[str, WarmPool] = {}
        self._subs: list[_Exits] = []
        self._tasks: set[asyncio.Task[None]] = set()  # work close() waits for
        self._followers: set[asyncio.Task[None]] = set()  # exit watchers close() cancels
        self._jit: dict[str, str] = {}
        self._adopted = False
        self._adopt_lock = asyncio.Lock()
        self._active = asyncio.Event()
        self._next_prune = 0.0
        self._next_sweep = time.monotonic() + timing.sweep
        self._closed = False

    @property
    def home(self) -> Path:
        return self.cli.home

    def register(self, scale_set_key: str, template: TartTemplate) -> None:
        """The template a scale set uses now (its warm pool follows it)."""
        previous = self._templates.get(scale_set_key)
        self._templates[scale_set_key] = template
        changed = previous is not None and runner_shape(previous) != runner_shape(template)
        if changed and scale_set_key in self._pools:
            self._retire_pool(scale_set_key)
            self._ensure_pool(scale_set_key)

    # -- Backend ---------------------------------------------------------------------------

    async def check(self, template: RunnerTemplate) -> str:
        tart = tart_template(template)
        if not self.cli.available():
            raise BackendUnavailable(NO_TART)
        present = await self.images.present(tart.image)
        where = f"Tart at {self.home}"
        if present:
            return f"{where}: image {tart.image} present"
        return f"{where}: image {tart.image} not present; it is pulled before the first VM"

    async def prepare(self, template: RunnerTemplate) -> None:
        tart = tart_template(template)
        self._active.set()
        await self._ensure_adopted()
        await self.images.ensure(tart.image)

    async def start(self, spec: RunnerSpec) -> None:
        template = tart_template(spec.template)
        key = spec.labels.get(LABEL_SCALE_SET_KEY, "0" * 8)
        self._active.set()
        secrets.add(spec.jit_config)
        self._jit[spec.name] = spec.jit_config
        try:
            await self._ensure_adopted()
            self.register(key, template)
            pool = self._ensure_pool(key)
            if pool is not None:
                vm = await pool.take(self.timing.pool_take)
                vm.runner, vm.labels = spec.name, dict(spec.labels)
                write_sidecar(self.cli, vm, role="runner")
            else:
                await self.images.ensure(template.image)
                vm = await self._boot(key, template, dict(spec.labels), runner=spec.name)
        except BaseException:
            self._forget_jit(spec.name)
            raise
        try:
            await self.booter.start_runner(vm, template, spec.jit_config)
        except BaseException as exc:
            if vm.runner_started and isinstance(exc, asyncio.CancelledError):
                raise  # it may run a runner that holds a job: kept, and listed as ours
            await asyncio.shield(self._finish(vm.name))
            self._forget_jit(spec.name)
            raise
        log.debug("runner %s runs in VM %s", spec.name, vm.name)

    async def remove(self, name: str) -> None:
        targets = [vm.name for vm in self.vms.values() if vm.runner == name]
        if not targets:
            for item in await self._ours():
                side = read_sidecar(self.cli, item)
                if side is not None and side.get("runner") == name:
                    targets.append(item)
        self._forget_jit(name)
        if not targets:
            raise RunnerNotFound(f"runner {name}: no Tart VM of ours runs it on {self.home}")
        for target in targets:
            await self._finish(target)

    async def list_owned(self, selector: Mapping[str, str]) -> list[OwnedRunner]:
        await self._ensure_adopted()
        found: list[OwnedRunner] = []
        for item in await self.cli.list():
            name = str(item.get("Name", ""))
            if item.get("Source") != "local" or not self._is_ours(name):
                continue
            side = read_sidecar(self.cli, name)
            if side is None or side.get("role") != "runner" or not side.get("runner"):
                continue
            labels = {str(k): str(v) for k, v in dict(side.get("labels") or {}).items()}
            if labels.get(LABEL_FLEET) != self.fleet:
                continue
            if any(labels.get(k) != v for k, v in selector.items()):
                continue
            vm = self.vms.get(name)
            running = vm.running if vm is not None else bool(item.get("Running"))
            exit_code = None if running else (vm.exit_code if vm and vm.exit_code else 0)
            created = side.get("createdAt")
            found.append(
                OwnedRunner(
                    name=labels.get(LABEL_RUNNER, str(side["runner"])),
                    labels=labels,
                    running=running,
                    exit_code=exit_code,
                    created_at=float(created) if isinstance(created, int | float) else None,
                    node=name,
                )
            )
        return found

    def exits(self, selector: Mapping[str, str]) -> _Exits:
        self._active.set()
        sub = _Exits(self, selector)
        self._subs.append(sub)
        key = selector.get(LABEL_SCALE_SET_KEY)
        if key is not None and key in self._templates:
            self._ensure_pool(key)
        return sub

    async def logs_tail(self, name: str, lines: int = 20) -> list[str]:
        vm = next((v for v in self.vms.values() if v.runner == name), None)
        if vm is None:
            raise RunnerNotFound(f"runner {name}: no Tart VM of ours runs it")
        tail: list[str] = []
        if vm.running:
            with contextlib.suppress(BackendError):
                tail = await self.booter.runner_log(vm.name, lines)
        tail = tail or run_log_tail(self.cli, vm.name, lines)
        hidden = self._jit.get(name)
        return [secrets.redact(line.replace(hidden, REDACTED) if hidden else line) for line in tail]

    async def close(self) -> None:
        """Remove the warm pools' VMs and runner VMs that powered off; running runner VMs
        stay (the next operator adopts them)."""
        if self._closed:
            return
        self._closed = True
        for key in list(self._pools):
            self._retire_pool(key)
        for vm in list(self.vms.values()):
            # Its runner has ended, so no job is left in it; its disk must not outlive us.
            if vm.runner is not None and not vm.running:
                self._spawn(self._finish_now(vm.name), f"tart-remove:{vm.name}")
        for follower in [*self._followers, *self.booter.watchers]:
            follower.cancel()
        tasks = list(self._tasks)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for sub in self._subs:
            sub.closed = True

    # -- housekeeping ----------------------------------------------------------------------

    async def serve(self) -> None:
        """The housekeeping loop (run as a task once per backend); cancelling it closes the
        backend. It idles until the backend is used for real (not by `plan` or `doctor`)."""
        try:
            await self._active.wait()
            while True:
                await self.housekeeping()
                await asyncio.sleep(self.timing.poll)
        finally:
            await self.close()

    async def housekeeping(self) -> None:
        """One pass: adopted VMs that stopped, leftovers to delete, cache and image timers."""
        try:
            await self._poll_adopted()
        except BackendError as exc:
            log.warning("Tart on %s: cannot list VMs: %s", self.home, exc)
        for name in list(self.zombies):
            if await self.booter.destroy(name):
                self.zombies.discard(name)
                log.info("removed leftover VM %s", name)
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + self.timing.sweep
            try:
                await self.sweep_stopped()
            except BackendError as exc:
                log.warning("Tart on %s: cannot sweep leftover VMs: %s", self.home, exc)
        templates = list(self._templates.values())
        if not templates:
            return
        first = templates[0]
        now = time.monotonic()
        if first.cache_cleanup_interval > 0 and now >= self._next_prune:
            self._next_prune = now + first.cache_cleanup_interval
            await prune_caches(
                self.cli, max_age=first.cache_max_age, budget_gb=first.cache_budget_gb
            )
        for template in templates:
            if self.images.due_for_refresh(template.image, template.image_refresh):
                self.images.pulled_at[template.image] = now
                self._spawn(self._refresh(template.image), f"tart-refresh:{template.image}")

    async def sweep_stopped(self) -> list[str]:
        """Remove stopped VMs of this fleet that nothing tracks (a runner whose scale set is
        gone, a half-made clone); running ones and everyone else's are left alone."""
        removed = []
        for item in await self.cli.list():
            name = str(item.get("Name", ""))
            if item.get("Source") != "local" or not self._is_ours(name) or name in self.vms:
                continue
            if item.get("Running"):
                continue
            side = read_sidecar(self.cli, name)
            if side is not None and dict(side.get("labels") or {}).get(LABEL_FLEET) != self.fleet:
                continue
            created = (side or {}).get("createdAt")
            if isinstance(created, int | float) and time.time() - created < self.timing.sweep_age:
                continue
            if await self.booter.destroy(name):
                removed.append(name)
                log.info("removed stopped leftover VM %s", name)
        return removed

    async def _refresh(self, image: str) -> None:
        try:
            await self.images.pull(image)
        except BackendError as exc:
            log.warning("refreshing %s: %s", image, exc)

    async def _poll_adopted(self) -> None:
        adopted = [vm for vm in self.vms.values() if vm.adopted and vm.running]
        if not adopted:
            return
        running = {str(item.get("Name")) for item in await self.cli.list() if item.get("Running")}
        for vm in adopted:
            if vm.name not in running:
                vm.exit_code = 0
                vm.exited.set()

    # -- internals -------------------------------------------------------------------------

    def _is_ours(self, name: str) -> bool:
        return name.startswith(f"rs-{self.tag}-") and slot_of(name) is not None

    async def _ours(self) -> list[str]:
        items = await self.cli.list()
        return [
            str(item["Name"])
            for item in items
            if item.get("Source") == "local" and self._is_ours(str(item.get("Name", "")))
        ]

    async def _ensure_adopted(self) -> None:
        """Once: VMs of ours from an earlier operator hold their slots; its pool VMs go."""
        if self._adopted:
            return
        async with self._adopt_lock:
            if self._adopted:
                return
            for item in await self.cli.list():
                name = str(item.get("Name", ""))
                if item.get("Source") != "local" or not self._is_ours(name) or name in self.vms:
                    continue
                side = read_sidecar(self.cli, name)
                labels = dict((side or {}).get("labels") or {})
                if side is not None and labels.get(LABEL_FLEET) != self.fleet:
                    continue  # our tag, another fleet's labels (a hash collision): not ours
                if side is None or side.get("role") != "runner" or not side.get("runner"):
                    log.info("removing VM %s, left half-made or pooled by an earlier run", name)
                    if not await self.booter.destroy(name):
                        self.zombies.add(name)
                    continue
                if not item.get("Running"):
                    continue  # listed as exited: its scale set removes it
                slot = slot_of(name)
                assert slot is not None
                self.slots.claim(slot)
                vm = VM(name=name, slot=slot, labels=labels, runner=str(side["runner"]))
                vm.runner_started = vm.adopted = True
                self.vms[name] = vm
                self._follow(vm)
            self._adopted = True

    async def _boot(
        self, key: str, template: TartTemplate, labels: dict[str, str], *, runner: str | None
    ) -> VM:
        slot = await self.slots.acquire()
        vm = VM(name=vm_name(self.fleet, key, slot), slot=slot, labels=labels, runner=runner)
        self.vms[vm.name] = vm
        try:
            await self.booter.boot(vm, template, role="runner" if runner else "pool")
        except BaseException:
            self.vms.pop(vm.name, None)
            self.slots.release(slot)
            raise
        self._follow(vm)
        return vm

    async def _pool_boot(self, key: str, template: TartTemplate) -> VM:
        await self._ensure_adopted()
        await self.images.ensure(template.image)
        labels = {LABEL_FLEET: self.fleet, LABEL_SCALE_SET_KEY: key}
        return await self._boot(key, template, labels, runner=None)

    def _ensure_pool(self, key: str) -> WarmPool | None:
        template = self._templates.get(key)
        if template is None or template.pool_size == 0 or self._closed:
            return None
        pool = self._pools.get(key)
        if pool is None:
            pool = WarmPool(
                name=key,
                template=template,
                boot=lambda: self._pool_boot(key, template),
                discard=lambda vm: self._finish(vm.name),
                backoff_initial=self.timing.pool_backoff,
            )
            self._pools[key] = pool
            pool.start()
        return pool

    def _retire_pool(self, key: str) -> None:
        pool = self._pools.pop(key, None)
        if pool is not None:
            self._spawn(pool.close(), f"tart-pool-close:{key}")

    def _unsubscribe(self, sub: _Exits) -> None:
        with contextlib.suppress(ValueError):
            self._subs.remove(sub)
        key = sub.selector.get(LABEL_SCALE_SET_KEY)
        if key is not None and not any(
            s.selector.get(LABEL_SCALE_SET_KEY) == key for s in self._subs
        ):
            self._retire_pool(key)

    def _follow(self, vm: VM) -> None:
        task = asyncio.create_task(self._on_exit(vm), name=f"tart-exit:{vm.name}")
        self._followers.add(task)
        task.add_done_callback(self._followers.discard)

    async def _on_exit(self, vm: VM) -> None:
        await vm.exited.wait()
        if vm.runner is None or not vm.runner_started or self.vms.get(vm.name) is not vm:
            return  # a pooled VM (its pool deals with it) or one being removed
        code = vm.exit_code if vm.exit_code is not None else 0
        detail = "the VM powered off" if code == 0 else f"tart run exited with code {code}"
        event = RunnerExit(vm.runner, code, time.time(), detail=detail)
        for sub in list(self._subs):
            if all(vm.labels.get(k) == v for k, v in sub.selector.items()):
                sub.queue.put_nowait(event)

    async def _finish(self, name: str) -> None:
        """Remove a VM of ours; its slot is free afterwards whatever tart says. A cancelled
        caller does not stop the removal half-way (close() waits for it)."""
        await asyncio.shield(self._spawn(self._finish_now(name), f"tart-remove:{name}"))

    async def _finish_now(self, name: str) -> None:
        vm = self.vms.pop(name, None)
        try:
            if not await self.booter.destroy(name):
                self.zombies.add(name)
        finally:
            if vm is not None:
                self.slots.release(vm.slot)
                if vm.runner is not None:
                    self._forget_jit(vm.runner)

    def _forget_jit(self, runner: str) -> None:
        secrets.discard(self._jit.pop(runner, None))

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


@dataclass(frozen=True)
class Leftover:
    """A VM of a fleet found on a TART_HOME (for `doctor`)."""

    name: str
    running: bool
    runner: str | None
    scale_set_key: str | None


async def leftovers(fleet: str, home: Path | None = None) -> list[Leftover]:
    """The fleet's VMs on `home` (TART_HOME or ~/.tart when None): only names carrying the
    fleet's tag, so the user's own VMs are never listed (nor removed by `--fix`)."""
    cli = TartCLI(home)
    prefix = f"rs-{fleet_tag(fleet)}-"
    found = []
    for item in await cli.list():
        name = str(item.get("Name", ""))
        if item.get("Source") != "local" or not name.startswith(prefix) or slot_of(name) is None:
            continue
        side = read_sidecar(cli, name) or {}
        labels = dict(side.get("labels") or {})
        if labels and labels.get(LABEL_FLEET) != fleet:
            continue
        found.append(
            Leftover(
                name=name,
                running=bool(item.get("Running")),
                runner=side.get("runner"),
                scale_set_key=labels.get(LABEL_SCALE_SET_KEY),
            )
        )
    return found


async def remove_leftover(fleet: str, name: str, home: Path | None = None) -> bool:
    """`doctor --fix`: stop and delete one of the fleet's VMs (refuses any other name)."""
    if not name.startswith(f"rs-{fleet_tag(fleet)}-") or slot_of(name) is None:
        raise BackendError(f"VM {name} is not one of fleet {fleet}'s: left alone")
    return await Booter(TartCLI(home)).destroy(name)
