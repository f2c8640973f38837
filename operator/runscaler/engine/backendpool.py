"""One backend per engine, shared by every scale set that uses it, with its housekeeping.

Scale sets name their engine in the manifest (`docker.host`/`docker.tls`, `swarm.host`/
`swarm.tls`); those that name the same one share a `DockerBackend` (an image is pulled once and
the sweepers run once per engine) or a `SwarmBackend` (one task watch per manager). Tart scale
sets on one TART_HOME share a `TartBackend`, so the host's VM slots are counted once. On a host
without `tart`, a Tart scale set gets a backend that says why, so it shows as `degraded` with
that reason while the others run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from runscaler.backends.base import (
    Backend,
    BackendUnavailable,
    ExitStream,
    OwnedRunner,
    RunnerExit,
    RunnerSpec,
)
from runscaler.backends.docker import DockerBackend, DockerTLSPaths
from runscaler.backends.docker_client import default_host, parse_host, ssl_context
from runscaler.backends.docker_sweep import housekeeping
from runscaler.backends.swarm import SwarmBackend
from runscaler.backends.swarm_hygiene import housekeeping as swarm_housekeeping
from runscaler.console.pulls import pull_progress
from runscaler.manifest.models import RunnerTemplate, ScaleSet

if TYPE_CHECKING:
    from runscaler.backends.tart import TartBackend

log = logging.getLogger(__name__)

EngineKey = tuple[str, Path | None, Path | None, Path | None]


class _Template(Protocol):
    @property
    def spec(self) -> RunnerTemplate: ...


class _Scaler(Protocol):
    @property
    def backend(self) -> Backend: ...

    @property
    def template(self) -> _Template: ...


class _Runtime(Protocol):
    @property
    def scaler(self) -> _Scaler: ...


class _Controller(Protocol):
    @property
    def runtimes(self) -> Mapping[tuple[str, str], _Runtime]: ...


class _NoExits:
    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __aiter__(self) -> _NoExits:
        return self

    async def __anext__(self) -> RunnerExit:
        raise BackendUnavailable(self.reason)

    async def aclose(self) -> None:
        return None


class UnavailableBackend:
    """Stands in for a backend this host cannot provide; every call says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    async def check(self, template: RunnerTemplate) -> str:
        raise BackendUnavailable(self.reason)

    async def prepare(self, template: RunnerTemplate) -> None:
        raise BackendUnavailable(self.reason)

    async def start(self, spec: RunnerSpec) -> None:
        raise BackendUnavailable(self.reason)

    async def remove(self, name: str) -> None:
        raise BackendUnavailable(self.reason)

    async def list_owned(self, selector: Mapping[str, str]) -> list[OwnedRunner]:
        raise BackendUnavailable(self.reason)

    def exits(self, selector: Mapping[str, str]) -> ExitStream:
        return _NoExits(self.reason)

    async def logs_tail(self, name: str, lines: int = 20) -> list[str]:
        return []

    async def close(self) -> None:
        return None


def tart_reason() -> str:
    return "the tart backend needs the `tart` CLI on this host (macOS on Apple Silicon)"


def _absolute(base_dir: Path, path: str | None) -> Path | None:
    return None if path is None else (base_dir / path).resolve()


def _engine_key(scale_set: ScaleSet, base_dir: Path) -> EngineKey:
    block = scale_set.swarm if scale_set.backend == "swarm" else scale_set.docker
    tls = block.tls
    return (
        block.host or default_host(),
        _absolute(base_dir, tls.ca if tls else None),
        _absolute(base_dir, tls.cert if tls else None),
        _absolute(base_dir, tls.key if tls else None),
    )


class BackendPool:
    def __init__(self) -> None:
        self._docker: dict[EngineKey, DockerBackend] = {}
        self._swarm: dict[EngineKey, SwarmBackend] = {}
        self._tart: dict[Path | None, TartBackend] = {}
        self._housekeeping: list[asyncio.Task[None]] = []
        self._controller: _Controller | None = None

    def check(self, scale_set: ScaleSet, base_dir: Path) -> None:
        """What `backend_for` would refuse, found before anything is created: the engine
        address and its TLS files (`BackendError` saying what is wrong). Touches no engine."""
        if scale_set.backend not in ("docker", "swarm"):
            return
        key = _engine_key(scale_set, base_dir)
        if key in self._docker or key in self._swarm:
            return
        block = scale_set.swarm if scale_set.backend == "swarm" else scale_set.docker
        tls = DockerTLSPaths(ca=key[1], cert=key[2], key=key[3]) if block.tls else None
        parse_host(key[0], tls=tls)
        if tls is not None:
            ssl_context(key[0], tls)

    def backend_for(self, fleet: str, scale_set: ScaleSet, base_dir: Path) -> Backend:
        if scale_set.backend == "tart":
            if shutil.which("tart") is None:
                return UnavailableBackend(tart_reason())
            # Imported here: a fleet without Tart scale sets (most) does not hold it in memory.
            from runscaler.backends.tart import TartBackend, tart_home

            # One backend per TART_HOME: the host's VM slots are shared by its scale sets.
            home = tart_home(scale_set.tart.home, base_dir)
            tart = self._tart.get(home)
            if tart is None:
                tart = TartBackend(fleet=fleet, home=home, vm_limit=scale_set.tart.vm_limit)
                self._tart[home] = tart
                with contextlib.suppress(RuntimeError):  # no loop: nothing to keep house for
                    asyncio.get_running_loop()
                    # Cancelled by close(), which makes it close the backend (pool VMs go).
                    self._housekeeping.append(
                        asyncio.create_task(tart.serve(), name=f"housekeeping:tart:{tart.home}")
                    )
            tart.register(scale_set.key, scale_set.tart)
            return tart
        if scale_set.backend == "swarm":
            # One backend per manager: its task watch serves every scale set on that swarm.
            skey = _engine_key(scale_set, base_dir)
            swarm = self._swarm.get(skey)
            if swarm is None:
                stls = scale_set.swarm.tls
                spaths = DockerTLSPaths(ca=skey[1], cert=skey[2], key=skey[3]) if stls else None
                swarm = SwarmBackend(fleet=fleet, host=skey[0], tls=spaths)
                self._swarm[skey] = swarm
                if self._controller is not None:
                    self._start_sweeps(swarm)
            return swarm
        tls = scale_set.docker.tls
        key = _engine_key(scale_set, base_dir)
        backend = self._docker.get(key)
        if backend is None:
            paths = DockerTLSPaths(ca=key[1], cert=key[2], key=key[3]) if tls else None
            backend = DockerBackend(
                fleet=fleet, host=key[0], tls=paths, pull_progress=pull_progress()
            )
            self._docker[key] = backend
            if self._controller is not None:
                self._start_sweeps(backend)
        return backend

    def start_housekeeping(self, controller: _Controller) -> None:
        """Run each engine's sweepers over the templates of the scale sets using it now
        (engines first used by a later reload get theirs then)."""
        self._controller = controller
        engines: list[DockerBackend | SwarmBackend] = [*self._docker.values()]
        for backend in [*engines, *self._swarm.values()]:
            self._start_sweeps(backend)

    def _start_sweeps(self, backend: DockerBackend | SwarmBackend) -> None:
        controller = self._controller
        assert controller is not None

        def templates() -> Iterable[object]:
            return [
                runtime.scaler.template.spec
                for runtime in controller.runtimes.values()
                if runtime.scaler.backend is backend
            ]

        if isinstance(backend, SwarmBackend):
            loop = swarm_housekeeping(backend, templates)
            name = f"housekeeping:swarm:{backend.host}"
        else:
            loop, name = housekeeping(backend, templates), f"housekeeping:{backend.host}"
        self._housekeeping.append(asyncio.create_task(loop, name=name))

    async def close(self) -> None:
        for task in self._housekeeping:
            task.cancel()
        for task in self._housekeeping:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._housekeeping.clear()
        for backend in self._docker.values():
            with contextlib.suppress(Exception):
                await backend.close()
        self._docker.clear()
        for swarm in self._swarm.values():
            with contextlib.suppress(Exception):
                await swarm.close()
        self._swarm.clear()
        for tart in self._tart.values():
            with contextlib.suppress(Exception):
                await tart.close()  # removes pooled VMs; idempotent after housekeeping's own
        self._tart.clear()
