"""A scale set's warm pool: VMs booted ahead of demand, so a job waits seconds, not a boot.

`poolSize` fillers each keep one VM booted with its guest agent answering. A start takes one
(the VM's slot goes with it) and the filler boots the next. A pooled VM that dies is removed
and replaced; a filler whose boots fail backs off exponentially and the pool records why, so a
start fails at once with that reason (the scale set's error in status) instead of waiting on a
pool that cannot fill (the Go tool retried every 5 s forever and its starts never returned).
Pooled VMs hold host slots like any other; closing the pool removes them promptly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable

from runscaler.backends.base import BackendError
from runscaler.backends.tart_vm import VM
from runscaler.manifest.models import TartTemplate

log = logging.getLogger(__name__)

BACKOFF_INITIAL = 2.0
BACKOFF_MAX = 300.0


class WarmPool:
    def __init__(
        self,
        *,
        name: str,
        template: TartTemplate,
        boot: Callable[[], Awaitable[VM]],
        discard: Callable[[VM], Awaitable[None]],
        backoff_initial: float = BACKOFF_INITIAL,
    ) -> None:
        self.name = name
        self.template = template
        self._boot = boot
        self._discard = discard
        self._initial = backoff_initial
        self.ready: list[VM] = []
        self.error: str | None = None
        self._changed = asyncio.Event()
        self._fillers: list[asyncio.Task[None]] = []
        self._closed = False

    def start(self) -> None:
        for index in range(self.template.pool_size):
            task = asyncio.create_task(self._fill(), name=f"tart-pool:{self.name}:{index}")
            self._fillers.append(task)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _fill(self) -> None:
        failures = 0
        while not self._closed:
            try:
                vm = await self._boot()
            except BackendError as exc:
                failures += 1
                self.error = str(exc)
                delay = min(BACKOFF_MAX, self._initial * 2 ** (failures - 1))
                delay *= random.uniform(0.8, 1.0)
                log.error("warm pool %s: %s; next boot in %.0fs", self.name, exc, delay)
                self._notify()
                await asyncio.sleep(delay)
                continue
            self.error = None
            self.ready.append(vm)
            self._notify()
            taken = asyncio.ensure_future(self._taken(vm))
            died = asyncio.ensure_future(vm.exited.wait())
            try:
                await asyncio.wait({taken, died}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                taken.cancel()
                died.cancel()
            if vm in self.ready:  # it died while waiting in the pool
                self.ready.remove(vm)
                failures += 1
                log.warning("warm pool %s: pooled VM %s died; replacing it", self.name, vm.name)
                await self._discard(vm)
                await asyncio.sleep(min(BACKOFF_MAX, self._initial * 2 ** (failures - 1)))
            else:
                failures = 0

    async def _taken(self, vm: VM) -> None:
        while vm in self.ready:
            await self._changed.wait()

    async def take(self, timeout: float) -> VM:  # noqa: ASYNC109
        """A booted VM, removed from the pool; `BackendError` if the pool cannot fill."""
        deadline = time.monotonic() + timeout
        while True:
            for vm in list(self.ready):
                self.ready.remove(vm)
                if vm.running:
                    self._notify()
                    return vm
                log.warning("warm pool %s: VM %s already dead; discarding", self.name, vm.name)
                self._notify()
            if self.error is not None:
                raise BackendError(f"warm pool cannot boot VMs: {self.error}")
            if self._closed:
                raise BackendError("the warm pool is closed (scale set removed or shutting down)")
            left = deadline - time.monotonic()
            if left <= 0:
                raise BackendError(f"no warm VM was ready within {timeout:.0f}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def close(self) -> None:
        """Stop refilling and remove the pooled VMs (boots in flight remove their own)."""
        self._closed = True
        for task in self._fillers:
            task.cancel()
        for task in self._fillers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        ready, self.ready = self.ready, []
        self._notify()
        await asyncio.gather(*(self._discard(vm) for vm in ready))
