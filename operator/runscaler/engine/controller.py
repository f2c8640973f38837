"""The controller: applies Plans to the set of running scale sets.

It holds the last applied manifest and one `ScaleSetRuntime` per scale set, and turns each
`ScaleSetChange` of a Plan (from the same pure planner `runscaler plan` uses) into exactly
what it promises: a create starts a runtime, an update touches only what changed, a delete
drains in the background and deletes the scale set on GitHub once its busy runners are done.
A scale set that comes back while it drains is resumed instead of being created twice.
Scale sets the plan does not name are never touched, except that each reload re-resolves
secret refs and reconnects a scale set whose resolved credentials changed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from runscaler.engine.scaleset import ScaleSetRuntime, credentials_fingerprint
from runscaler.engine.tasks import stop_task
from runscaler.errors import UserError
from runscaler.manifest.loading import LoadedManifest
from runscaler.manifest.models import ScaleSet
from runscaler.planning import Plan, ScaleSetChange, plan

log = logging.getLogger(__name__)

Identity = tuple[str, str]
RuntimeFactory = Callable[[str, ScaleSet, Path], ScaleSetRuntime]  # fleet, scale set, base dir


class ApplyRefused(UserError):
    """The manifest is valid but this operator will not apply it (fleet renamed, emptied)."""


@dataclass(frozen=True)
class Applied:
    plan: Plan
    reconnected: tuple[str, ...] = ()


class Controller:
    def __init__(self, *, runtime_factory: RuntimeFactory, allow_empty: bool = False) -> None:
        self._factory = runtime_factory
        self._allow_empty = allow_empty
        self.manifest: LoadedManifest | None = None
        self.runtimes: dict[Identity, ScaleSetRuntime] = {}
        self._deleting: dict[Identity, tuple[ScaleSetRuntime, asyncio.Task[None]]] = {}
        self._lock = asyncio.Lock()

    @property
    def fleet_name(self) -> str | None:
        return None if self.manifest is None else self.manifest.fleet.metadata.name

    def check(self, desired: LoadedManifest) -> Plan:
        """The plan for `desired`, or `ApplyRefused` saying why it must not be applied."""
        current = self.manifest.fleet if self.manifest is not None else None
        result = plan(current, desired.fleet)
        if result.fleet_renamed:
            raise ApplyRefused(
                f"{desired.path}: metadata.name changed from {result.previous_fleet!r} to "
                f"{result.fleet!r}; a running operator keeps its fleet name (restart it to rename)"
            )
        if not desired.fleet.scale_sets and not self._allow_empty:
            what = "removes every scale set" if self.runtimes else "has no scale sets"
            raise ApplyRefused(
                f"{desired.path}: the manifest {what}; refusing without --allow-empty"
            )
        return result

    async def apply(self, desired: LoadedManifest) -> Applied:
        async with self._lock:
            result = self.check(desired)
            reconnected: list[str] = []
            for change in result.changes:
                if await self._apply_change(change, desired):
                    reconnected.append(change.name)
            self.manifest = desired
            return Applied(result, tuple(reconnected))

    async def _apply_change(self, change: ScaleSetChange, desired: LoadedManifest) -> bool:
        """Apply one change; True when the scale set reconnected for new credentials."""
        identity = change.identity
        base_dir = desired.base_dir
        if change.action == "create":
            assert change.after is not None
            revived = self._deleting.pop(identity, None)
            if revived is not None:
                runtime, task = revived
                await stop_task(task)
                log.info("%s: back in the manifest while draining; resuming it", change.name)
                self.runtimes[identity] = runtime
                await runtime.resume()
                return await self._update(runtime, change.after, base_dir, force_reconnect=False)
            runtime = self._factory(desired.fleet.metadata.name, change.after, base_dir)
            self.runtimes[identity] = runtime
            runtime.start()
            log.info("%s: added", change.name)
            return False
        if change.action == "delete":
            runtime = self.runtimes.pop(identity)
            log.info("%s: removed from the manifest; draining", change.name)
            task = asyncio.create_task(
                self._delete(identity, runtime), name=f"delete:{change.name}"
            )
            self._deleting[identity] = (runtime, task)
            return False
        runtime = self.runtimes[identity]
        assert change.after is not None
        if change.action == "update":
            log.info("%s: updating %s", change.name, ", ".join(c.path for c in change.changes))
        return await self._update(
            runtime, change.after, base_dir, force_reconnect=change.effects.credentials
        )

    async def _update(
        self, runtime: ScaleSetRuntime, new: ScaleSet, base_dir: Path, *, force_reconnect: bool
    ) -> bool:
        """Update in place; reconnect when credentials changed as written or as resolved
        (a rotated `file:` secret changes nothing in the manifest)."""
        try:
            fingerprint = credentials_fingerprint(new, base_dir)
        except UserError as exc:
            log.error("%s: cannot resolve credentials: %s; keeping the old ones", new.name, exc)
            fingerprint = runtime.credentials_fingerprint
        reconnect = force_reconnect or fingerprint != runtime.credentials_fingerprint
        if new == runtime.scale_set and not reconnect:
            return False
        runtime.base_dir = base_dir
        await runtime.update(new, reconnect=reconnect)
        return reconnect

    async def _delete(self, identity: Identity, runtime: ScaleSetRuntime) -> None:
        try:
            await runtime.delete()
            log.info("%s: drained and deleted", runtime.name)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: deleting failed", runtime.name)
        finally:
            current = self._deleting.get(identity)
            if current is not None and current[0] is runtime:
                del self._deleting[identity]

    @property
    def draining(self) -> list[ScaleSetRuntime]:
        return [runtime for runtime, _ in self._deleting.values()]

    async def wait_deletions(self) -> None:
        tasks = [task for _, task in self._deleting.values()]
        await asyncio.gather(*tasks, return_exceptions=True)

    async def shutdown(self, *, cleanup: bool) -> None:
        """Stop every scale set: by default close sessions, remove idle runners and leave busy
        ones to finish; with `cleanup`, drain and delete the scale sets as well."""
        async with self._lock:
            runtimes = list(self.runtimes.items())
            self.runtimes.clear()
            if cleanup:
                for identity, runtime in runtimes:
                    task = asyncio.create_task(runtime.delete(), name=f"delete:{runtime.name}")
                    self._deleting[identity] = (runtime, task)
                await self.wait_deletions()
                return
            for _, task in self._deleting.values():
                task.cancel()
            draining = [runtime for runtime, _ in self._deleting.values()]
            await asyncio.gather(
                *(task for _, task in self._deleting.values()), return_exceptions=True
            )
            self._deleting.clear()
            await asyncio.gather(
                *(runtime.shutdown() for _, runtime in runtimes),
                *(runtime.shutdown() for runtime in draining),
                return_exceptions=True,
            )
