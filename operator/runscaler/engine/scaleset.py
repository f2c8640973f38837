"""One scale set at run time: its GitHub client, listener and scaler, supervised together.

The controller creates one `ScaleSetRuntime` per scale set in the manifest and tells it about
changes; the runtime decides which of its parts a change touches, so a resize never reconnects
and a credential change never touches a runner. A failure inside is logged with the scale set's
name, backed off and restarted; it never reaches the controller or another scale set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from runscaler.backends.base import Backend, BackendUnavailable
from runscaler.engine.listener import Backoff, Listener, ListenerTiming
from runscaler.engine.resolving import (
    credentials_fingerprint,
    listener_settings,
    resolve_credentials,
    template_of,
)
from runscaler.engine.runnerops import RegisteredRunner
from runscaler.engine.runners import RunnerState
from runscaler.engine.scaler import Scaler, ScalerMetrics, ScalerTiming, Template
from runscaler.engine.statefile import StateFile
from runscaler.engine.status import FailureStatus, RunnerStatus, ScaleSetStatus
from runscaler.engine.tasks import stop_task, wait_event
from runscaler.errors import UserError
from runscaler.github.client import RetryPolicy, ScaleSetClient
from runscaler.github.errors import (
    AuthError,
    GitHubError,
    RunnerNotFoundError,
    ScaleSetNotFoundError,
    TransportError,
)
from runscaler.github.models import JitConfig, JobCompleted, JobStarted
from runscaler.manifest.models import ScaleSet
from runscaler.manifest.values import parse_config_url

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RuntimeTiming:
    listener: ListenerTiming = field(default_factory=ListenerTiming)
    scaler: ScalerTiming = field(default_factory=ScalerTiming)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    restart_initial: float = 1.0
    restart_max: float = 60.0
    delete_retry: float = 5.0
    shutdown_deadline: float = 20.0  # SIGTERM: per scale set, whatever GitHub does
    delete_deadline: float = 60.0  # deleting the scale set on GitHub after its drain
    adopt_wait: float = 10.0  # a drain resumed at start first waits for adoption this long


class FleetMetrics(Protocol):
    """What the runtime reports as it happens (gauges are read from snapshots instead)."""

    def job_started(self, scale_set: ScaleSet, job: JobStarted) -> None: ...

    def job_completed(self, scale_set: ScaleSet, job: JobCompleted) -> None: ...

    def runner_started(self, scale_set: ScaleSet, seconds: float) -> None: ...

    def runner_failed(self, scale_set: ScaleSet, reason: str) -> None: ...


class NoMetrics:
    def job_started(self, scale_set: ScaleSet, job: JobStarted) -> None:
        del scale_set, job

    def job_completed(self, scale_set: ScaleSet, job: JobCompleted) -> None:
        del scale_set, job

    def runner_started(self, scale_set: ScaleSet, seconds: float) -> None:
        del scale_set, seconds

    def runner_failed(self, scale_set: ScaleSet, reason: str) -> None:
        del scale_set, reason


_Retired = tuple["asyncio.Task[None] | None", Listener, ScaleSetClient]


class DeleteFailed(Exception):
    """The scale set could not be deleted on GitHub (it stays recorded as `deleting`)."""


class _ScalerMetrics(ScalerMetrics):
    """The fleet's metrics, bound to one runtime's current scale set."""

    def __init__(self, runtime: ScaleSetRuntime, metrics: FleetMetrics) -> None:
        self._runtime = runtime
        self._metrics = metrics

    def runner_started(self, seconds: float) -> None:
        self._metrics.runner_started(self._runtime.scale_set, seconds)

    def runner_failed(self, reason: str) -> None:
        self._metrics.runner_failed(self._runtime.scale_set, reason)


class _Registry:
    """The scaler's view of GitHub: always the runtime's current client and scale set id.

    Only `GitHubError` leaves here: a client closed under an in-flight call (`RuntimeError`)
    or a `file:` secret gone missing during a token refresh (`UserError`) is translated."""

    def __init__(self, runtime: ScaleSetRuntime) -> None:
        self._runtime = runtime

    async def register(self, runner_name: str) -> JitConfig:
        with _github_only("register a runner"):
            scale_set_id = await self._scale_set_id()
            return await self._runtime.client.generate_jit_config(
                scale_set_id, runner_name=runner_name
            )

    async def _scale_set_id(self) -> int:
        # The listener can be replaced while this waits (a reconnect): follow the current one.
        while True:
            listener = self._runtime.listener
            if listener.scale_set_known.is_set() and listener.scale_set_id is not None:
                return listener.scale_set_id
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await listener.scale_set_known.wait()

    async def unregister(self, runner_id: int) -> None:
        with (
            _github_only(f"unregister runner {runner_id}"),
            contextlib.suppress(RunnerNotFoundError),
        ):
            await self._runtime.client.remove_runner(runner_id)

    async def lookup(self, runner_name: str) -> RegisteredRunner | None:
        with _github_only(f"look up runner {runner_name}"):
            return await _registered_runner(self._runtime.client, runner_name)


@contextlib.contextmanager
def _github_only(what: str) -> Iterator[None]:
    try:
        yield
    except GitHubError:
        raise
    except (RuntimeError, UserError) as exc:
        raise TransportError(f"cannot {what}: {exc}") from exc


async def _registered_runner(client: ScaleSetClient, name: str) -> RegisteredRunner | None:
    found = await client.get_runner_by_name(name)
    if found is None:
        return None
    return RegisteredRunner(id=found.id, busy=found.busy, online=found.online)


class ScaleSetRuntime:
    """Listener + scaler for one scale set, and what a plan can do to them."""

    def __init__(
        self,
        *,
        fleet: str,
        scale_set: ScaleSet,
        base_dir: Path,
        backend: Backend,
        state_file: StateFile,
        owner: str,
        start_limiter: asyncio.Semaphore,
        timing: RuntimeTiming = RuntimeTiming(),
        metrics: FleetMetrics | None = None,
    ) -> None:
        self.fleet = fleet
        self.scale_set = scale_set
        self.base_dir = base_dir
        self._state_file = state_file
        self._owner = owner
        self._timing = timing
        self._metrics: FleetMetrics = metrics or NoMetrics()
        self.credentials_fingerprint = credentials_fingerprint(scale_set, base_dir)
        self.client = self._new_client()
        self.scaler = Scaler(
            fleet=fleet,
            scale_set_name=scale_set.name,
            scale_set_key=scale_set.key,
            template=template_of(scale_set, base_dir),
            max_runners=scale_set.max_runners,
            backend=backend,
            registry=_Registry(self),
            start_limiter=start_limiter,
            timing=timing.scaler,
            metrics=_ScalerMetrics(self, self._metrics),
            scale_down_delay=lambda: self.scale_set.scale_down_delay,
        )
        self.backend = backend
        self.listener = self._new_listener()
        self.listener.close_timeout = min(self.listener.close_timeout, timing.shutdown_deadline)
        self.phase = "suspended" if scale_set.suspended else "active"  # | draining | stopped
        self.started = False  # a replacement waits, unstarted, for the old one to go
        self.unavailable: str | None = None  # why the backend cannot run runners here
        self.delete_error: str | None = None  # why the scale set is still on GitHub
        self._listener_task: asyncio.Task[None] | None = None
        self._scaler_task: asyncio.Task[None] | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._chore: asyncio.Task[None] | None = None  # GitHub work an update left to do
        self._retired: list[_Retired] = []  # replaced by a reconnect, not yet closed

    # -- wiring ----------------------------------------------------------------------------

    def _new_client(self) -> ScaleSetClient:
        github = self.scale_set.github
        ca_bundle = self.base_dir / github.ca_bundle if github.ca_bundle else None
        return ScaleSetClient(
            config_url=github.url,
            credentials=lambda: resolve_credentials(self.scale_set, self.base_dir),
            proxy=github.proxy,
            ca_bundle=ca_bundle,
            retry=self._timing.retry,
            # The fingerprint covers the URL, proxy, CA bundle and resolved secrets: scale sets
            # that agree on all of them share one admin token.
            share_tokens=self.credentials_fingerprint,
        )

    def _new_listener(self) -> Listener:
        listener = Listener(
            client=self.client,
            settings=listener_settings(self.scale_set),
            hooks=self,
            owner=self._owner,
            state_file=self._state_file,
            key=self.scale_set.key,
            timing=self._timing.listener,
        )
        old = getattr(self, "listener", None)
        if old is not None and old.scale_set_id is not None:
            listener.scale_set_id = old.scale_set_id  # found again by id, without a search
        return listener

    # ScalerHooks, with metrics on the way through.
    def desired_runners(self, count: int) -> None:
        self.scaler.desired_runners(count)

    def job_started(self, job: JobStarted) -> None:
        self._metrics.job_started(self.scale_set, job)
        self.scaler.job_started(job)

    def job_completed(self, job: JobCompleted) -> None:
        self._metrics.job_completed(self.scale_set, job)
        self.scaler.job_completed(job)

    # -- life ------------------------------------------------------------------------------

    def start(self) -> None:
        """Listen, and scale once the session is ours: the session is the lease, so an
        operator in standby (another one holds it) touches nothing on the backend. A
        suspended scale set takes no jobs; its idle runners (adopted) go."""
        self.started = True
        if self.phase == "active":
            self._start_listener()
            self._scaler_task = self._supervise(self._scale_when_leased, "scaler")
        else:
            self._scaler_task = self._supervise(self._scale_without_jobs, "scaler")

    async def _scale_when_leased(self) -> None:
        # The listener is replaced on a reconnect: wait on whichever is current.
        while not self.listener.session_ready.is_set():
            await wait_event(self.listener.session_ready, 1.0)
        await self.scaler.run()

    async def _scale_without_jobs(self) -> None:
        await self.scaler.remove_idle_runners()  # adopted idle runners go, none start
        await self.scaler.run()

    def _start_listener(self) -> None:
        self._listener_task = self._supervise(self._listen_when_available, "listener")

    async def _listen_when_available(self) -> None:
        """A backend that cannot run runners here (no `tart`, no engine) registers nothing
        and opens no session: it would take jobs no one runs."""
        backoff = Backoff(self._timing.restart_initial, self._timing.restart_max)
        while True:
            try:
                await self.backend.list_owned(self.scaler.selector)
                break
            except BackendUnavailable as exc:
                if self.unavailable is None:
                    log.error("%s: %s; not listening until it is", self.name, exc)
                self.unavailable = str(exc)
                await asyncio.sleep(backoff.next())
        self.unavailable = None
        await self.listener.run()

    def _supervise(
        self, run: Callable[[], Coroutine[Any, Any, None]], part: str
    ) -> asyncio.Task[None]:
        async def supervised() -> None:
            backoff = Backoff(self._timing.restart_initial, self._timing.restart_max)
            while True:
                try:
                    await run()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception:
                    if self.phase == "stopped":
                        return  # failing on the way out (its client closed): nothing to restart
                    delay = backoff.next()
                    log.exception(
                        "%s: the %s failed unexpectedly; restarting in %.1fs",
                        self.scale_set.name,
                        part,
                        delay,
                    )
                    await asyncio.sleep(delay)

        return asyncio.create_task(supervised(), name=f"{part}:{self.scale_set.name}")

    async def _stop_listener(self) -> None:
        """Close the session: GitHub assigns this scale set no new jobs through us."""
        task, listener = self._listener_task, self.listener
        # Forgotten only once it has finished: a stopper cancelled while it waits leaves the
        # task for the next one (shutdown), which must not close the client under it.
        await stop_task(task)
        await listener.wait_closed()
        if self._listener_task is task:
            self._listener_task = None

    async def _stop_scaler(self) -> None:
        task = self._scaler_task
        await stop_task(task)
        if self._scaler_task is task:
            self._scaler_task = None

    # -- what plans do ---------------------------------------------------------------------

    async def update(
        self,
        new: ScaleSet,
        *,
        reconnect: bool,
        template: Template | None = None,
        fingerprint: str | None = None,
    ) -> None:
        """Apply a changed scale set in place; only the parts that changed are touched.
        `template` and `fingerprint` are what the controller resolved before committing;
        nothing here waits on GitHub."""
        old, self.scale_set = self.scale_set, new
        settings = listener_settings(new)
        self.scaler.set_max_runners(new.max_runners)
        self.scaler.set_template(template or template_of(new, self.base_dir))
        if reconnect:
            # Closing the old session is a GitHub call: done in the background, so the
            # controller never waits on GitHub (the new client is ready now).
            log.info("%s: credentials changed; reconnecting", new.name)
            retired = (self._listener_task, self.listener, self.client)
            self._listener_task = None
            self._retired.append(retired)
            self.credentials_fingerprint = fingerprint or credentials_fingerprint(
                new, self.base_dir
            )
            self.client = self._new_client()
            self.listener = self._new_listener()
            self._then(self._reconnect(retired), "reconnect")
        else:
            self.listener.update_settings(settings)
        github_settings_changed = (
            old.runner_group != new.runner_group or old.all_labels != new.all_labels
        )
        if github_settings_changed and not reconnect:
            self._then(self._sync_on_github(), "sync")
        if new.suspended and self.phase == "active":
            self.suspend()
        elif not new.suspended and self.phase in ("draining", "suspended"):
            await self.resume()

    def _then(self, work: Coroutine[Any, Any, None], part: str) -> None:
        """Run `work` after what an earlier update left to do, in order, in the background."""
        before = self._chore

        async def chore() -> None:
            try:
                if before is not None:
                    await asyncio.wait({before})  # its outcome is its own; ours is cancellable
            except BaseException:
                work.close()  # never started: what it would have cleaned up, `_settle` does
                raise
            await work

        self._chore = asyncio.create_task(chore(), name=f"{part}:{self.name}")

    async def _reconnect(self, retired: _Retired) -> None:
        """Close the old session first (a new one would meet it as a conflict), then listen."""
        await self._retire(retired)
        if self.phase == "active" and self._listener_task is None:
            self._start_listener()

    async def _retire(self, retired: _Retired) -> None:
        task, listener, client = retired
        await stop_task(task)
        await listener.wait_closed()
        # Interrupted before this, it stays listed for `_settle`: never closed under a close.
        if retired in self._retired:
            self._retired.remove(retired)
            await client.aclose()

    async def _sync_on_github(self) -> None:
        try:
            await self.listener.sync_scale_set()
        except GitHubError as exc:
            log.warning("%s: cannot update the scale set on GitHub yet: %s", self.name, exc)

    async def _settle(self) -> None:
        """Stop what updates left to do; retire the listeners and clients they replaced."""
        task, self._chore = self._chore, None
        await stop_task(task)
        for retired in list(self._retired):
            await self._retire(retired)

    def suspend(self) -> None:
        """Keep the scale set; take no new jobs; idle runners go, busy ones finish (up to
        `drainTimeout`). Runs in the background: a later change may resume it."""
        self.phase = "draining"
        self._drain_task = asyncio.create_task(self._suspend(), name=f"suspend:{self.name}")

    async def _suspend(self) -> None:
        await self._stop_listener()
        await self.scaler.drain(self.scale_set.drain_timeout)
        self.phase = "suspended"

    async def resume(self) -> None:
        """Undo a suspension (or a delete still draining): listen and scale again."""
        await self._cancel_drain()
        self.phase = "active"
        self.scaler.resume()
        if self._scaler_task is None or self._scaler_task.done():
            self._scaler_task = self._supervise(self._scale_when_leased, "scaler")
        task = self._listener_task
        if task is None or task.done():
            self._start_listener()
        elif task.cancelling():
            # A drain cut short while its listener was closing the session: listen again once
            # that close is done (waiting on GitHub here would hold up the controller).
            self._then(self._listen_after(task), "relisten")

    async def _listen_after(self, task: asyncio.Task[None]) -> None:
        await stop_task(task)
        if self.phase == "active" and self._listener_task is task:
            self._start_listener()

    async def _cancel_drain(self) -> None:
        task, self._drain_task = self._drain_task, None
        await stop_task(task)

    async def delete(self, *, deadline: float | None = None) -> None:
        """Drain until `deadline` (wall clock; default `drainTimeout` from now), then delete
        the scale set on GitHub. The caller runs this as a task; cancelling it (the scale
        set came back) leaves the runtime usable. A runtime never started (a drain resumed
        at start) first adopts what runs, so busy runners are waited for, not forgotten."""
        if deadline is None:
            deadline = time.time() + self.scale_set.drain_timeout
        self.phase = "draining"
        await self._cancel_drain()
        await self._settle()
        await self._stop_listener()
        if self._scaler_task is None:
            await self._adopt_for_drain()
        await self.scaler.drain(max(0.0, deadline - time.time()))
        await self._stop_scaler()
        try:
            await self._delete_on_github()
        except DeleteFailed:
            self.phase = "stopped"
            await self.client.aclose()
            raise
        self.phase = "stopped"
        await self.client.aclose()

    async def _adopt_for_drain(self) -> None:
        await self.scaler.remove_idle_runners()  # takes no new runners while it adopts
        self._scaler_task = self._supervise(self.scaler.run, "scaler")
        give_up = time.monotonic() + self._timing.adopt_wait
        while time.monotonic() < give_up:
            try:
                running = {
                    r.name for r in await self.backend.list_owned(self.scaler.selector) if r.running
                }
            except BackendUnavailable:
                running = set()
            if running <= {record.name for record in self.scaler.records()}:
                return
            await self.scaler.book_changed(min(0.5, max(0.0, give_up - time.monotonic())))

    @property
    def name(self) -> str:
        return self.scale_set.name

    @property
    def identity(self) -> tuple[str, str]:
        return self.scale_set.identity

    def discard(self) -> None:
        """Forget a runtime that was built but never started (its reload was rejected)."""
        self.phase = "stopped"
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().create_task(self.client.aclose())

    async def _delete_on_github(self) -> None:
        """Delete on GitHub, retrying until `delete_deadline`; never past a 401/403 (no
        retry fixes credentials). On failure the state file keeps the scale set as
        `deleting`, so the next start or `doctor --fix` finishes it; `DeleteFailed` says why."""
        memo = self._state_file.get(self.scale_set.key)
        scale_set_id = self.listener.scale_set_id or memo.scale_set_id
        give_up = time.monotonic() + self._timing.delete_deadline
        while scale_set_id is not None:
            try:
                async with asyncio.timeout(max(0.0, give_up - time.monotonic())):
                    await self.client.delete_scale_set(scale_set_id)
                log.info("%s: deleted the scale set on GitHub", self.name)
                break
            except ScaleSetNotFoundError:
                break
            except (GitHubError, TimeoutError) as exc:
                why = str(exc) or "no answer in time"
                if (
                    isinstance(exc, AuthError)
                    or time.monotonic() + self._timing.delete_retry > give_up
                ):
                    self.delete_error = f"cannot delete the scale set on GitHub: {why}"
                    raise DeleteFailed(f"{self.name}: {self.delete_error}") from None
                log.warning(
                    "%s: GitHub refused to delete the scale set (%s); retrying in %.0fs",
                    self.name,
                    why,
                    self._timing.delete_retry,
                )
                await asyncio.sleep(self._timing.delete_retry)
        self.delete_error = None
        self._state_file.forget(self.scale_set.key)

    async def shutdown(self) -> None:
        """Process exit: close the session, remove idle runners, leave busy ones running.
        Bounded by `shutdown_deadline` whatever GitHub does: what is left undone then (an
        idle runner not yet unregistered) is adopted or reaped by the next start."""
        try:
            async with asyncio.timeout(self._timing.shutdown_deadline):
                await self._cancel_drain()
                await self._settle()
                await self._stop_listener()
                with contextlib.suppress(Exception):
                    await self.scaler.remove_idle_runners()
        except TimeoutError:
            log.warning(
                "%s: GitHub did not answer within %.0fs while stopping; leaving the rest to "
                "the next start",
                self.name,
                self._timing.shutdown_deadline,
            )
        finally:
            # Each wait below is bounded (a session close by its own timeout).
            await self._cancel_drain()
            await self._settle()
            await self._stop_listener()
            await self._stop_scaler()
            self.phase = "stopped"
            await self.client.aclose()

    def serving_problem(self) -> str | None:
        """Why this scale set should listen and does not, or None (it does, or need not)."""
        if self.phase != "active":
            return None
        if not self.started:
            return "replacing: created again once the old scale set is drained and deleted"
        if self.unavailable is not None:
            return f"backend unavailable: {self.unavailable}"
        if self.listener.state == "listening":
            return None
        reason = self.listener.last_error or "no session yet"
        return f"{self.listener.state}: {reason}"

    # -- status ----------------------------------------------------------------------------

    @property
    def state(self) -> str:
        if self.phase in ("draining", "suspended"):
            return self.phase
        if self.unavailable is not None or self.scaler.degraded is not None:
            return "degraded"
        return self.listener.state

    def _last_error(self) -> str | None:
        """What is wrong now: the backend, GitHub, or runners failing in a row."""
        if self.delete_error is not None:
            return self.delete_error
        if self.unavailable is not None:
            return self.unavailable
        if self.scaler.degraded is not None:
            return self.scaler.degraded
        if self.listener.last_error is not None:
            return self.listener.last_error
        failure = self.scaler.last_failure
        if failure is not None and self.scaler.failures_in_row > 0:
            return f"{failure.message} ({self.scaler.failures_in_row} in a row)"
        return None

    def snapshot(self) -> ScaleSetStatus:
        stats = self.listener.statistics
        scope = parse_config_url(self.scale_set.github.url)
        failure = self.scaler.last_failure
        return ScaleSetStatus(
            name=self.scale_set.name,
            url=self.scale_set.github.url,
            key=self.scale_set.key,
            state=self.state,
            desired=self.scaler.desired,
            idle=self.scaler.count(RunnerState.IDLE),
            busy=self.scaler.count(RunnerState.BUSY),
            starting=self.scaler.count(RunnerState.STARTING),
            assigned_jobs=stats.total_assigned_jobs if stats else 0,
            running_jobs=stats.total_running_jobs if stats else 0,
            registered_runners=stats.total_registered_runners if stats else 0,
            min_runners=self.scale_set.min_runners,
            max_runners=self.scale_set.max_runners,
            organization=scope.organization,
            repository=scope.repository,
            enterprise=scope.enterprise,
            last_error=self._last_error() or self.scaler.outdated,
            last_failure=None
            if failure is None
            else FailureStatus(
                failure.reason, failure.message, failure.exit_code, failure.log_tail, failure.at
            ),
            failures_in_row=self.scaler.failures_in_row,
            runners=tuple(
                RunnerStatus(
                    name=r.name,
                    state=r.state.value,
                    since=r.since,
                    job_id=r.job_id,
                    template_hash=r.template_hash,
                    exit_code=r.exit_code,
                    reason=r.reason,
                    node=r.node,
                )
                for r in sorted(self.scaler.records(), key=lambda r: r.created_at)
                + list(self.scaler.book.recently_lost)
            ),
            messages_unparseable=self.listener.messages_unparseable,
            label_mismatch=self.listener.label_mismatch,
        )
