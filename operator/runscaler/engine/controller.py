"""The controller: applies Plans to the set of running scale sets, all or nothing.

It holds the last applied manifest and one `ScaleSetRuntime` per scale set, and turns each
`ScaleSetChange` of a Plan (from the same pure planner `runscaler plan` uses) into exactly
what it promises: a create starts a runtime, an update touches only what changed, a delete
drains in the background and deletes the scale set on GitHub once its busy runners are done,
a replace does both in that order. A scale set that comes back while it drains is resumed
instead of being created twice.

Applying happens in two steps. First everything the new generation needs is resolved with no
side effect on what runs (secrets, templates, engine addresses, the new runtimes themselves,
built but not started); any failure rejects the manifest whole and nothing changes. Only then
is the plan committed, and committing makes no network call: what waits on GitHub (closing a
session, deleting a scale set) runs in the runtimes' own tasks, so the lock is never held
across GitHub and shutdown never waits behind a slow reload. Once shutdown begins the
controller is closed and refuses every reload.

What the fleet owns is written to the state file before it changes (`own`, `mark_deleting`),
so the first apply after a restart also drains and deletes what the last run was removing,
or what the manifest dropped while the operator was down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from runscaler.engine.resolving import credentials_fingerprint, template_of
from runscaler.engine.scaler import Template
from runscaler.engine.scaleset import DeleteFailed, ScaleSetRuntime
from runscaler.engine.statefile import OwnedScaleSet
from runscaler.engine.tasks import stop_task
from runscaler.errors import UserError
from runscaler.manifest.loading import LoadedManifest
from runscaler.manifest.models import ScaleSet
from runscaler.planning import Plan, ScaleSetChange, plan

log = logging.getLogger(__name__)

Identity = tuple[str, str]
RuntimeFactory = Callable[[str, ScaleSet, Path], ScaleSetRuntime]  # fleet, scale set, base dir
BackendCheck = Callable[[ScaleSet, Path], None]  # raises when the backend cannot be built


class Intent(Protocol):
    """Where the fleet's durable intent goes (the state file)."""

    def own(self, key: str, *, spec: dict[str, object], base_dir: Path) -> None: ...

    def mark_deleting(self, key: str, *, deadline: float) -> None: ...


class ApplyRefused(UserError):
    """The manifest is valid but this operator will not apply it (fleet renamed, emptied,
    shutting down, or something it needs cannot be resolved)."""


@dataclass(frozen=True)
class Applied:
    plan: Plan
    reconnected: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Resolved:
    fingerprint: str
    template: Template


def _spec_of(scale_set: ScaleSet) -> dict[str, object]:
    return scale_set.model_dump(mode="json", by_alias=True, exclude_none=True)


class Controller:
    def __init__(
        self,
        *,
        runtime_factory: RuntimeFactory,
        allow_empty: bool = False,
        check_backend: BackendCheck | None = None,
        intent: Callable[[str], Intent] | None = None,
    ) -> None:
        self._factory = runtime_factory
        self._allow_empty = allow_empty
        self._check_backend = check_backend
        self._intent = intent
        self.manifest: LoadedManifest | None = None
        self.runtimes: dict[Identity, ScaleSetRuntime] = {}
        self._deleting: dict[ScaleSetRuntime, asyncio.Task[None]] = {}
        self.delete_errors: list[str] = []
        self.closed = False
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

    def _refuse_if_closed(self) -> None:
        if self.closed:
            raise ApplyRefused("the operator is shutting down; the manifest is not applied")

    async def apply(self, desired: LoadedManifest) -> Applied:
        self._refuse_if_closed()
        async with self._lock:
            self._refuse_if_closed()
            result = self.check(desired)
            resolved = self._resolve(result, desired)
            built = self._build(result, desired)
            # Once committing starts it finishes, even if the caller is cancelled: a half
            # applied generation must not exist.
            commit = asyncio.ensure_future(self._commit(result, desired, resolved, built))
            try:
                reconnected = await asyncio.shield(commit)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await commit
                if commit.done() and not commit.cancelled() and commit.exception() is None:
                    self.manifest = desired
                raise
            self.manifest = desired
            return Applied(result, tuple(reconnected))

    async def start(self, desired: LoadedManifest, owned: Iterable[OwnedScaleSet] = ()) -> Applied:
        """The first apply, planned against what the fleet owned when it last ran: what the
        manifest no longer names (dropped while the operator was down, or still draining
        when it stopped) is drained, to the deadline it had if it had one, and deleted."""
        applied = await self.apply(desired)
        named = {s.key for s in desired.fleet.scale_sets}
        for memo in owned:
            if memo.key not in named:
                self._resume_deletion(desired.fleet.metadata.name, memo)
        return applied

    def _resume_deletion(self, fleet: str, memo: OwnedScaleSet) -> None:
        try:
            scale_set = ScaleSet.model_validate(memo.spec)
            runtime = self._factory(fleet, scale_set, memo.base_dir)
        except Exception as exc:  # a spec an older version wrote, a secret gone
            log.error(
                "%s: owned by this fleet but cannot be drained and deleted: %s "
                "(`runscaler doctor --fix` can finish it)",
                memo.key,
                exc,
            )
            return
        deadline = memo.deleting_deadline
        if deadline is None:
            deadline = time.time() + scale_set.drain_timeout
            log.info("%s: no longer in the manifest; draining and deleting it", scale_set.name)
        else:
            left = max(0.0, deadline - time.time())
            log.info("%s: resuming its interrupted drain (%.0fs left)", scale_set.name, left)
        self._intend(fleet).mark_deleting(memo.key, deadline=deadline)
        self._spawn_delete(runtime, deadline)

    # -- step 1: resolve everything, change nothing ----------------------------------------

    def _resolve(self, result: Plan, desired: LoadedManifest) -> dict[Identity, _Resolved]:
        resolved: dict[Identity, _Resolved] = {}
        for change in result.changes:
            new = change.after
            if new is None:
                continue
            try:
                if self._check_backend is not None:
                    self._check_backend(new, desired.base_dir)
                resolved[change.identity] = _Resolved(
                    fingerprint=credentials_fingerprint(new, desired.base_dir),
                    template=template_of(new, desired.base_dir),
                )
            except Exception as exc:
                raise ApplyRefused(f"{desired.path}: scale set {new.name}: {exc}") from None
        return resolved

    def _build(self, result: Plan, desired: LoadedManifest) -> dict[Identity, ScaleSetRuntime]:
        """New runtimes for what the plan creates, built (clients unopened) but not started."""
        built: dict[Identity, ScaleSetRuntime] = {}
        fleet = desired.fleet.metadata.name
        try:
            for change in result.changes:
                if change.after is None or change.action not in ("create", "replace"):
                    continue
                if change.action == "create" and self._revivable(change.identity) is not None:
                    continue
                built[change.identity] = self._factory(fleet, change.after, desired.base_dir)
        except Exception as exc:
            for runtime in built.values():
                runtime.discard()
            raise ApplyRefused(f"{desired.path}: {exc}") from None
        return built

    # -- step 2: commit (no network call) ---------------------------------------------------

    async def _commit(
        self,
        result: Plan,
        desired: LoadedManifest,
        resolved: dict[Identity, _Resolved],
        built: dict[Identity, ScaleSetRuntime],
    ) -> list[str]:
        reconnected: list[str] = []
        intent = self._intend(desired.fleet.metadata.name)
        for change in result.changes:
            identity = change.identity
            new = change.after
            if change.action == "delete":
                runtime = self.runtimes.pop(identity)
                deadline = time.time() + runtime.scale_set.drain_timeout
                intent.mark_deleting(runtime.scale_set.key, deadline=deadline)
                log.info("%s: removed from the manifest; draining", change.name)
                self._spawn_delete(runtime, deadline)
                continue
            assert new is not None
            intent.own(new.key, spec=_spec_of(new), base_dir=desired.base_dir)
            if change.action == "replace":
                self._replace(change, built[identity])
                continue
            if change.action == "create" and identity in built:
                runtime = built[identity]
                self.runtimes[identity] = runtime
                runtime.start()
                log.info("%s: added", change.name)
                continue
            if change.action == "create":
                runtime = await self._revive(identity)
                self.runtimes[identity] = runtime
            runtime = self.runtimes[identity]
            if change.action == "update":
                log.info("%s: updating %s", change.name, ", ".join(c.path for c in change.changes))
            if await self._update(
                runtime,
                new,
                desired.base_dir,
                resolved[identity],
                force_reconnect=change.effects.credentials,
            ):
                reconnected.append(change.name)
        return reconnected

    def _replace(self, change: ScaleSetChange, new: ScaleSetRuntime) -> None:
        """Labels cannot be changed on GitHub: drain the old scale set (busy runners finish),
        delete it, then create it again as the manifest says."""
        old = self.runtimes.pop(change.identity)
        self.runtimes[change.identity] = new
        log.info("%s: labels changed; draining, deleting and creating it again", change.name)

        async def then_create() -> None:
            if self.closed or self.runtimes.get(change.identity) is not new:
                return
            assert change.after is not None and self.manifest is not None
            self._intend(self.manifest.fleet.metadata.name).own(
                new.scale_set.key, spec=_spec_of(new.scale_set), base_dir=new.base_dir
            )
            new.start()
            log.info("%s: created again", change.name)

        deadline = time.time() + old.scale_set.drain_timeout
        self._spawn_delete(old, deadline, then=then_create)

    def _revivable(self, identity: Identity) -> ScaleSetRuntime | None:
        for runtime in self._deleting:
            if runtime.identity == identity and identity not in self.runtimes:
                return runtime
        return None

    async def _revive(self, identity: Identity) -> ScaleSetRuntime:
        runtime = self._revivable(identity)
        assert runtime is not None
        task = self._deleting.pop(runtime)
        await stop_task(task)  # the drain is cancelled at its next await: no GitHub wait
        log.info("%s: back in the manifest while draining; resuming it", runtime.name)
        await runtime.resume()
        return runtime

    async def _update(
        self,
        runtime: ScaleSetRuntime,
        new: ScaleSet,
        base_dir: Path,
        resolved: _Resolved,
        *,
        force_reconnect: bool,
    ) -> bool:
        """Update in place; reconnect when credentials changed as written or as resolved
        (a rotated `file:` secret changes nothing in the manifest)."""
        reconnect = force_reconnect or resolved.fingerprint != runtime.credentials_fingerprint
        if new == runtime.scale_set and not reconnect and runtime.base_dir == base_dir:
            return False
        runtime.base_dir = base_dir
        await runtime.update(
            new, reconnect=reconnect, template=resolved.template, fingerprint=resolved.fingerprint
        )
        return reconnect

    # -- deleting ---------------------------------------------------------------------------

    def _spawn_delete(
        self,
        runtime: ScaleSetRuntime,
        deadline: float,
        *,
        then: Callable[[], object] | None = None,
    ) -> None:
        async def delete() -> None:
            try:
                await runtime.delete(deadline=deadline)
                log.info("%s: drained and deleted", runtime.name)
            except DeleteFailed as exc:
                self.delete_errors.append(str(exc))
                log.error("%s; `runscaler doctor --fix` finishes it", exc)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s: deleting failed", runtime.name)
                return
            finally:
                if self._deleting.get(runtime) is asyncio.current_task():
                    del self._deleting[runtime]
            if then is not None:
                outcome = then()
                if asyncio.iscoroutine(outcome):
                    await outcome

        self._deleting[runtime] = asyncio.create_task(delete(), name=f"delete:{runtime.name}")

    @property
    def draining(self) -> list[ScaleSetRuntime]:
        return [r for r in self._deleting if r not in self.runtimes.values()]

    async def wait_deletions(self) -> None:
        await asyncio.gather(*self._deleting.values(), return_exceptions=True)

    def _intend(self, fleet: str) -> Intent:
        return self._intent(fleet) if self._intent is not None else _NoIntent()

    # -- shutdown ---------------------------------------------------------------------------

    async def shutdown(self, *, cleanup: bool) -> None:
        """Stop every scale set: by default close sessions, remove idle runners and leave busy
        ones to finish (a drain in progress is cut short; it stays recorded as `deleting` and
        the next start resumes it); with `cleanup`, drain and delete the scale sets as well.
        Refuses reloads from now on; an apply in progress finishes first (it never waits on
        GitHub)."""
        self.closed = True
        async with self._lock:
            runtimes = list(self.runtimes.values())
            self.runtimes.clear()
        if cleanup:
            fleet = self.fleet_name
            for runtime in runtimes:
                deadline = time.time() + runtime.scale_set.drain_timeout
                if fleet is not None:
                    self._intend(fleet).mark_deleting(runtime.scale_set.key, deadline=deadline)
                self._spawn_delete(runtime, deadline)
            await self.wait_deletions()
            return
        draining = list(self._deleting)
        for task in self._deleting.values():
            task.cancel()
        await asyncio.gather(*self._deleting.values(), return_exceptions=True)
        self._deleting.clear()
        await asyncio.gather(
            *(runtime.shutdown() for runtime in [*runtimes, *draining]),
            return_exceptions=True,
        )


class _NoIntent:
    """For a controller without a state file (tests, dry runs): intent is not kept."""

    def own(self, key: str, *, spec: dict[str, object], base_dir: Path) -> None:
        del key, spec, base_dir

    def mark_deleting(self, key: str, *, deadline: float) -> None:
        del key, deadline
