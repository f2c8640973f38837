"""The operator process: one root task group, signals, and an orderly way out.

`run_operator` loads the manifest (an invalid one at start is the user's error), applies it,
then runs the manifest watcher and the HTTP server until a signal. SIGTERM and SIGINT stop
gracefully (close sessions, remove idle runners, leave busy runners to finish, keep the scale
sets on GitHub); a second signal exits at once; SIGHUP re-reads the manifest. With
`cleanup_on_exit` the scale sets are drained and deleted instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runscaler.backends.base import Backend
from runscaler.engine.backendpool import BackendPool
from runscaler.engine.controller import Controller
from runscaler.engine.fleetlock import FleetLock
from runscaler.engine.reloader import Reloader, ReloadOutcome
from runscaler.engine.scaleset import RuntimeTiming, ScaleSetRuntime
from runscaler.engine.startlimit import StartLimiter
from runscaler.engine.statefile import StateFile
from runscaler.engine.status import FleetStatus
from runscaler.engine.watcher import watch_manifest
from runscaler.errors import EXIT_INTERRUPTED, EXIT_OK
from runscaler.manifest.loading import load_manifest
from runscaler.manifest.models import ScaleSet
from runscaler.metrics import Metrics
from runscaler.server import serve_http

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSettings:
    """Process settings: flags and environment, not the manifest."""

    manifest: Path
    listen: str = "127.0.0.1:8080"
    state_dir: Path = field(default_factory=lambda: Path.home() / ".local/state/runscaler")
    start_concurrency: int | None = None  # a cap on the adaptive start limit
    allow_empty: bool = False
    cleanup_on_exit: bool = False
    owner: str = field(default_factory=socket.gethostname)
    timing: RuntimeTiming = field(default_factory=RuntimeTiming)
    watch_settle_ms: int = 50
    resync_interval: float = 60.0


class Operator:
    """The running fleet as the HTTP server and the CLI see it."""

    def __init__(self, settings: RunSettings, *, backend_pool: BackendPool | None = None) -> None:
        self.settings = settings
        self.metrics = Metrics(self.snapshot)
        self._limiter = StartLimiter(settings.start_concurrency)
        self._backends = backend_pool or BackendPool()
        self.controller = Controller(
            runtime_factory=self._new_runtime,
            allow_empty=settings.allow_empty,
            check_backend=self._backends.check,
            intent=self._state_for,
        )
        self.reloader = Reloader(path=settings.manifest, controller=self.controller)
        self._state_file: StateFile | None = None
        self._lock: FleetLock | None = None
        self.ready = False

    def _state_for(self, fleet: str) -> StateFile:
        if self._state_file is None:
            self._state_file = StateFile.for_fleet(self.settings.state_dir, fleet)
        return self._state_file

    def _new_runtime(self, fleet: str, scale_set: ScaleSet, base_dir: Path) -> ScaleSetRuntime:
        state_file = self._state_for(fleet)
        backend: Backend = self._backends.backend_for(fleet, scale_set, base_dir)
        return ScaleSetRuntime(
            fleet=fleet,
            scale_set=scale_set,
            base_dir=base_dir,
            backend=backend,
            state_file=state_file,
            owner=self.settings.owner,
            start_limiter=self._limiter,
            timing=self.settings.timing,
            metrics=self.metrics,
        )

    async def start(self) -> None:
        """Load and apply the manifest; any problem is the user's to fix (exit 1)."""
        loaded = load_manifest(self.settings.manifest, check_env=True)
        fleet = loaded.fleet.metadata.name
        self._lock = FleetLock.acquire(self.settings.state_dir, fleet)
        await self.reloader.start(loaded, self._state_for(fleet).owned())
        self._backends.start_housekeeping(self.controller)
        self.ready = True

    async def reload(self, *, force: bool = True) -> ReloadOutcome:
        return await self.reloader.reload(force=force)

    def snapshot(self) -> FleetStatus:
        manifest = self.reloader.manifest
        # A replacement not started yet is shown as its predecessor, draining.
        started = [r for r in self.controller.runtimes.values() if r.started]
        runtimes = [*started, *self.controller.draining]
        return FleetStatus(
            fleet=self.controller.fleet_name or "",
            generation=self.reloader.generation,
            manifest_path=str(self.settings.manifest),
            manifest_sha256=manifest.sha256 if manifest else "",
            manifest_revision=self.reloader.revision,
            reload=self.reloader.status,
            ready=self.ready,
            scale_sets=tuple(
                sorted((r.snapshot() for r in runtimes), key=lambda s: (s.url, s.name))
            ),
            reloads=dict(self.reloader.counts),
        )

    def readiness(self) -> dict[str, str]:
        """Scale sets that should be listening and are not, with why (empty: serving)."""
        problems: dict[str, str] = {}
        for runtime in self.controller.runtimes.values():
            problem = runtime.serving_problem()
            if problem is not None:
                problems[runtime.name] = problem
        return problems

    def applied_fleet(self) -> dict[str, Any] | None:
        manifest = self.reloader.manifest
        return None if manifest is None else manifest.fleet.model_dump(mode="json")

    async def shutdown(self) -> None:
        await self.controller.shutdown(cleanup=self.settings.cleanup_on_exit)
        for error in self.controller.delete_errors:
            log.error("cleanup: %s", error)
        if self.controller.delete_errors:
            log.error(
                "cleanup left %d scale sets on GitHub; `runscaler doctor --fix` finishes them",
                len(self.controller.delete_errors),
            )
        await self._backends.close()
        if self._state_file is not None:
            self._state_file.flush()
        if self._lock is not None:
            self._lock.release()


class _Signals:
    """First SIGTERM/SIGINT: stop gracefully. Second: exit at once. SIGHUP: reload."""

    def __init__(self, stop: asyncio.Event, on_hup: Callable[[], None]) -> None:
        self.stop = stop
        self.received: int | None = None
        self._on_hup = on_hup

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)

    def _stop(self, sig: int) -> None:
        if self.received is not None:
            log.warning("second signal: exiting now; busy runners keep running")
            os._exit(EXIT_INTERRUPTED)
        self.received = sig
        log.info("%s: shutting down (send it again to exit at once)", signal.Signals(sig).name)
        self.stop.set()

    def remove(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)


async def run_operator(settings: RunSettings) -> int:
    operator = Operator(settings)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    background: set[asyncio.Task[Any]] = set()

    def hup() -> None:
        log.info("SIGHUP: re-reading the manifest")
        task = asyncio.create_task(operator.reload(force=True))
        background.add(task)
        task.add_done_callback(background.discard)

    signals = _Signals(stop, hup)
    signals.install(loop)
    try:
        # Bind first: a busy port fails before anything is created on GitHub or the engine.
        async with serve_http(
            operator, listen=settings.listen, registry=operator.metrics.registry
        ) as url:
            try:
                await operator.start()
                count = len(operator.controller.runtimes)
                log.info(
                    "fleet %s: running %d scale set%s; serving %s",
                    operator.controller.fleet_name,
                    count,
                    "" if count == 1 else "s",
                    url,
                )
                await watch_manifest(
                    settings.manifest,
                    lambda: operator.reload(force=False),
                    settle_ms=settings.watch_settle_ms,
                    resync_interval=settings.resync_interval,
                    stop=stop,
                )
            finally:
                if operator.controller.runtimes or operator.controller.draining:
                    log.info("stopping: closing sessions, removing idle runners")
                await operator.shutdown()
    finally:
        for task in background:
            task.cancel()
        with contextlib.suppress(Exception):
            signals.remove(loop)
    log.info("stopped")
    return EXIT_INTERRUPTED if signals.received == signal.SIGINT else EXIT_OK
