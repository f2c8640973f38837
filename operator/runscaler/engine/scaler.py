"""The scaler: keeps one scale set's runners at the count the listener asks for.

Runners are ephemeral: each is registered with a just-in-time config, started on the backend,
takes at most one job and exits. Their records live in the book (`engine/book.py`), which only
named transitions change. The scaler acts on three inputs, the desired count and job events
(from the listener) and runner exits (watched on the backend, not polled), plus a resync on
its own timer that reconciles the book with the engine and GitHub whatever the traffic:

- missing runners start concurrently; a fleet-wide start slot is held only while the engine
  starts a container, never while waiting for GitHub or a listener;
- a runner that exits without having taken a job is a failure: it is unregistered on GitHub,
  removed, replaced with crash-loop backoff, and its exit code and log tail kept for status;
- a runner whose process ends with its job still counts until the job's completion is seen
  (or a short hold passes), so a completion never starts a runner that is removed at once;
- surplus idle runners are removed when demand drops, unregistering first, so a runner that
  took a job in the meantime (`JobStillRunning`) is kept as busy;
- after a template change idle runners are replaced make-before-break; busy ones finish.

Every per-runner operation lives in `engine/runnerops.py` and settles its record when it ends,
cancelled or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from runscaler.backends.base import (
    LABEL_FLEET,
    LABEL_SCALE_SET_KEY,
    LABEL_TEMPLATE,
    Backend,
    BackendError,
    BackendUnavailable,
    OwnedRunner,
    RunnerExit,
)
from runscaler.engine.book import Book, RunnerRecord, RunnerState
from runscaler.engine.listener import Backoff
from runscaler.engine.runnerops import (
    Failure,
    RegisteredRunner,
    RunnerOps,
    RunnerRegistry,
    ScalerMetrics,
)
from runscaler.engine.runners import new_runner_name, plan_pass
from runscaler.engine.tasks import Flag, stop_task, wait_event
from runscaler.github.models import JobCompleted, JobStarted
from runscaler.manifest.models import RunnerTemplate

__all__ = ["Failure", "RunnerRegistry", "Scaler", "ScalerMetrics", "ScalerTiming", "Template"]

log = logging.getLogger(__name__)


class _NoMetrics:
    def runner_started(self, seconds: float) -> None:
        del seconds

    def runner_failed(self, reason: str) -> None:
        del reason


@dataclass(frozen=True)
class ScalerTiming:
    crash_backoff_initial: float = 2.0
    crash_backoff_max: float = 120.0
    finished_grace: float = 60.0  # a runner whose job completed should exit by then
    resync_interval: float = 30.0  # reconcile with the engine and GitHub, whatever the traffic
    backend_retry: float = 5.0
    # A runner that exited with its job still counts this long, until JobCompleted arrives.
    completion_hold: float = 30.0
    cleanup_limit: float = 10.0  # how long a cancelled operation may spend undoing itself
    # How long a runner that exited without a job we know of waits for late job events
    # before it is judged (GitHub's can arrive tens of seconds late).
    exit_grace: float = 30.0
    # Manifest durations the scaler waits out (scaleDownDelay) are multiplied by this.
    manifest_scale: float = 1.0


@dataclass(frozen=True)
class Template:
    """The runner template in force, with its hash and resolved environment."""

    spec: RunnerTemplate
    hash: str
    env: Mapping[str, str] = field(default_factory=dict, repr=False)


class Scaler:
    def __init__(
        self,
        *,
        fleet: str,
        scale_set_name: str,
        scale_set_key: str,
        template: Template,
        max_runners: int,
        backend: Backend,
        registry: RunnerRegistry,
        start_limiter: asyncio.Semaphore,
        timing: ScalerTiming = ScalerTiming(),
        metrics: ScalerMetrics | None = None,
        scale_down_delay: Callable[[], float] = lambda: 0.0,
    ) -> None:
        self.fleet = fleet
        self._scale_down_delay = scale_down_delay
        self._surplus_since: float | None = None  # when demand fell below the runners
        self._not_before_removal = 0.0
        self.scale_set_name = scale_set_name
        self.key = scale_set_key
        self.template = template
        self.max_runners = max_runners
        self.backend = backend
        self.registry = registry
        self._timing = timing
        self._metrics = metrics or _NoMetrics()
        self._wake = Flag()
        self._changed = Flag()
        self.book = Book(scale_set_name, on_change=self._on_book_change)
        self.desired = 0
        self._have_desired = False  # nothing is started or removed before the listener speaks
        self.last_failure: Failure | None = None
        self.failures_in_row = 0
        self.degraded: str | None = None  # why the backend is unusable, if it is
        self._not_before = 0.0
        self._crash_backoff = Backoff(timing.crash_backoff_initial, timing.crash_backoff_max)
        self._accepting = True  # False once draining or shutting down: start nothing new
        self._tasks: set[asyncio.Task[None]] = set()
        self._waiters: set[Flag] = set()
        self.outdated: str | None = None  # what to do about an outdated runner image
        self.ops = RunnerOps(self, start_limiter=start_limiter)

    def _on_book_change(self) -> None:
        self._changed.set()
        self._wake.set()
        for waiter in self._waiters:
            waiter.set()

    async def book_changed(self, limit: float) -> bool:
        """Wait at most `limit` seconds for any change in the book."""
        waiter = Flag()
        self._waiters.add(waiter)
        try:
            return await wait_event(waiter, limit)
        finally:
            self._waiters.discard(waiter)

    # -- inputs ----------------------------------------------------------------------------

    @property
    def selector(self) -> dict[str, str]:
        return {LABEL_FLEET: self.fleet, LABEL_SCALE_SET_KEY: self.key}

    @property
    def accepting(self) -> bool:
        return self._accepting

    @property
    def timing(self) -> ScalerTiming:
        return self._timing

    @property
    def metrics(self) -> ScalerMetrics:
        return self._metrics

    def desired_runners(self, count: int) -> None:
        if count != self.desired:
            log.debug("%s: desired runners %d -> %d", self.scale_set_name, self.desired, count)
        self.desired = count
        self._have_desired = True
        self._wake.set()

    def job_started(self, job: JobStarted) -> None:
        record = self.book.get(job.runner_name)
        if record is None:
            return
        moved = self.book.job_started(
            record.name, job_id=job.job_id or None, runner_id=job.runner_id or None
        )
        if moved is not None and record.state is not RunnerState.BUSY:
            log.info(
                "%s: job %s started on runner %s",
                self.scale_set_name,
                job.job_id,
                record.name,
                extra={
                    "scale_set": self.scale_set_name,
                    "runner": record.name,
                    "job_id": job.job_id,
                },
            )
        self.failures_in_row = 0
        self.outdated = None
        self._crash_backoff.reset()

    def job_completed(self, job: JobCompleted) -> None:
        record = self.book.get(job.runner_name)
        if record is None:
            return
        duration = time.time() - record.job_since if record.job_since else None
        log.info(
            "%s: job %s ended on runner %s (%s)%s",
            self.scale_set_name,
            job.job_id,
            record.name,
            job.result,
            f" after {duration:.1f}s" if duration is not None else "",
            extra={
                "scale_set": self.scale_set_name,
                "runner": record.name,
                "job_id": job.job_id,
                "result": job.result,
                "duration": None if duration is None else round(duration, 3),
            },
        )
        if record.state is RunnerState.FINISHING and record.exit_code is not None:
            # Its process already ended and its container is being (or was) removed.
            self.book.gone(record.name)
            return
        if self.book.job_ended(record.name, completed=True, job_id=job.job_id or None):
            self.spawn(self.ops.reap_if_stuck(record.name), f"reap:{record.name}")

    def set_max_runners(self, max_runners: int) -> None:
        self.max_runners = max_runners
        self._wake.set()

    def set_template(self, template: Template) -> None:
        """New runners use it at once; idle ones with the old hash are rolled."""
        if template.hash != self.template.hash:
            log.info("%s: runner template changed; rolling idle runners", self.scale_set_name)
        self.template = template
        self._wake.set()

    # -- counts for status and metrics -----------------------------------------------------

    def count(self, state: RunnerState) -> int:
        return self.book.count(state)

    def records(self) -> list[RunnerRecord]:
        return list(self.book)

    # -- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        """Adopt what runs, then reconcile on every input until cancelled."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._watch_exits(), name=f"exits:{self.scale_set_name}")
                group.create_task(self._reconcile_loop(), name=f"scaler:{self.scale_set_name}")
        finally:
            while self._tasks:
                for task in list(self._tasks):
                    await stop_task(task)

    async def _reconcile_loop(self) -> None:
        await self._adopt()
        resync_at = time.monotonic() + self._timing.resync_interval
        while True:
            self._wake.clear()
            self._reconcile_once()
            now = time.monotonic()
            if now >= resync_at:
                # On its own timer: a busy scale set wakes this loop all the time.
                await self.resync()
                resync_at = time.monotonic() + self._timing.resync_interval
                continue
            timeout = resync_at - now
            for at in (self._not_before, self._not_before_removal):
                if at > now:
                    timeout = min(timeout, at - now)
            await wait_event(self._wake, max(0.01, timeout))

    def _reconcile_once(self) -> None:
        if not self._have_desired and self._accepting:
            return
        may_start = (
            self._accepting and self.degraded is None and time.monotonic() >= self._not_before
        )
        decision = plan_pass(
            self.book,
            desired=self.desired if self._accepting else 0,
            max_runners=self.max_runners,
            template_hash=self.template.hash,
            may_start=may_start,
        )
        for name in self._due_removals(decision.remove):
            if self.book.removing(name) is not None:
                self.spawn(self.ops.remove_idle(name), f"remove:{name}")
        for _ in range(decision.start):
            record = self.book.starting(new_runner_name(self.scale_set_name), self.template.hash)
            self.spawn(self.ops.start(record.name, self.template), f"start:{record.name}")

    def _due_removals(self, removals: tuple[str, ...]) -> tuple[str, ...]:
        """Surplus idle runners go only once demand has stayed below them for the scale
        set's `scaleDownDelay` (GitHub re-offers jobs, so demand dips for a moment)."""
        now = time.monotonic()
        running = sum(1 for r in self.book if r.counts and r.state is not RunnerState.STARTING)
        if running <= self.desired or not self._accepting:
            self._surplus_since = None
            return removals  # a drain, or a template replaced in place: at once
        if self._surplus_since is None:
            self._surplus_since = now
        due = self._surplus_since + self._scale_down_delay() * self._timing.manifest_scale
        if now >= due:
            return removals
        self._not_before_removal = due
        # Old-template runners being rolled are not demand's surplus: they go at once.
        return tuple(
            name
            for name in removals
            if (r := self.book.get(name)) is not None and r.template_hash != self.template.hash
        )

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=f"{self.scale_set_name}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error(
                "%s: %s failed unexpectedly",
                self.scale_set_name,
                task.get_name(),
                exc_info=exc,
            )

    def wake(self) -> None:
        self._wake.set()

    # -- failures --------------------------------------------------------------------------

    def failed(self, failure: Failure) -> None:
        self.last_failure = failure
        self.failures_in_row += 1
        self._metrics.runner_failed(failure.reason)
        delay = self._crash_backoff.next()
        self._not_before = time.monotonic() + delay
        if self.failures_in_row >= 3:
            self._metrics.runner_failed("crash_loop")
            log.warning(
                "%s: %d runner failures in a row; next start in %.0fs",
                self.scale_set_name,
                self.failures_in_row,
                delay,
            )
        self._wake.set()

    def runner_outdated(self, failure: Failure) -> None:
        """Not a crash loop: the image is pulled again before the next start, which waits
        the crash backoff so an image that is still outdated does not spin."""
        self.last_failure = failure
        self.outdated = failure.message
        self._metrics.runner_failed(failure.reason)
        self._not_before = time.monotonic() + self._crash_backoff.next()
        self._wake.set()

    def runner_lost(self, record: RunnerRecord) -> None:
        """Not a failure of the runner (no crash-loop backoff): its node failed. A busy
        one's job is lost with it, unavoidably; the log and status say which job and node."""
        where = f" on node {record.node}" if record.node else ""
        why = record.reason or "out of reach"
        if record.took_job and not record.completed:
            job = record.job_id or "(id unknown)"
            message = f"runner {record.name}{where} was lost with job {job}: {why}"
            log.error(
                "%s: %s; the job is lost",
                self.scale_set_name,
                message,
                extra={"scale_set": self.scale_set_name, "runner": record.name, "job_id": job},
            )
        else:
            message = f"runner {record.name}{where} was lost: {why}"
            log.warning("%s: %s", self.scale_set_name, message)
        self.last_failure = Failure(reason="lost", message=message)
        self._metrics.runner_failed("lost")
        self._wake.set()

    def unavailable(self, exc: BackendError) -> None:
        if isinstance(exc, BackendUnavailable):
            self.degraded = str(exc)

    # -- exits -----------------------------------------------------------------------------

    async def _watch_exits(self) -> None:
        while True:
            try:
                async with contextlib.aclosing(self.backend.exits(self.selector)) as exits:
                    async for event in exits:
                        if self.degraded is not None:
                            self._recovered()
                        self.on_exit(event)
            except BackendUnavailable as exc:
                if self.degraded is None:
                    log.error("%s: %s; retrying", self.scale_set_name, exc)
                self.degraded = str(exc)
            await asyncio.sleep(self._timing.backend_retry)
            await self.resync()

    def _recovered(self) -> None:
        log.info("%s: the backend is reachable again", self.scale_set_name)
        self.degraded = None
        self._wake.set()

    def on_exit(self, event: RunnerExit) -> None:
        """Judge an exit at once; what needs I/O runs as an operation of its own."""
        name = event.name
        record = self.book.get(name)
        if record is None:
            if name in self.book.leftovers:
                self.spawn(self.ops.clean_leftover(name), f"clean:{name}")
            return
        if record.op == "start":
            self.book.exited_while_starting(name, event.exit_code)
            return
        if record.op is not None:
            return  # its operation removes it
        if event.lost:
            self.spawn(
                self.ops.discard(
                    name, reason="lost", detail=event.detail, lost=True, node=event.node
                ),
                f"lost:{name}",
            )
            return
        if record.state is RunnerState.FINISHING:
            if record.completed or not record.counts:
                self.book.gone(name)
                self.spawn(self.ops.clean_leftover(name), f"clean:{name}")
            return
        if record.state is RunnerState.BUSY or record.took_job:
            self.book.job_ended(
                name, completed=False, hold=self._timing.completion_hold, exit_code=event.exit_code
            )
            self.spawn(self.ops.finish(name), f"finish:{name}")
            return
        self.spawn(self.ops.judge_exit(name, event.exit_code), f"exit:{name}")

    # -- adoption and resync ---------------------------------------------------------------

    async def _adopt(self) -> None:
        """Count and watch this scale set's running runners; remove exited ones."""
        while True:
            try:
                owned = await self.backend.list_owned(self.selector)
                break
            except BackendUnavailable as exc:
                self.degraded = str(exc)
                log.error("%s: %s; retrying", self.scale_set_name, exc)
                await asyncio.sleep(self._timing.backend_retry)
        if self.degraded is not None:
            self._recovered()
        adopted = 0
        for runner in owned:
            if runner.name in self.book:
                continue
            if runner.lost:
                await self._adopt_lost(runner)
                continue
            if not runner.running:
                await self.ops.remove_container(runner.name)
                continue
            adopted += await self._adopt_one(runner)
        if adopted:
            log.info("%s: adopted %d running runners", self.scale_set_name, adopted)

    async def _adopt_one(self, runner: OwnedRunner) -> int:
        """Adopt with GitHub's word on its state: busy, idle, or never online (starting)."""
        registered = await self.ops.registered(runner.name)
        if runner.name in self.book:
            return 0
        state = RunnerState.IDLE
        if isinstance(registered, RegisteredRunner):
            state = (
                RunnerState.BUSY
                if registered.busy
                else RunnerState.IDLE
                if registered.online
                else RunnerState.STARTING
            )
        elif registered is None:
            state = RunnerState.FINISHING  # unregistered: its job is done, it is exiting
        adopted = self.book.adopt(
            runner.name,
            runner.labels.get(LABEL_TEMPLATE, ""),
            state=state,
            runner_id=registered.id if isinstance(registered, RegisteredRunner) else None,
            created_at=runner.created_at,
            node=runner.node,
        )
        if adopted is not None and state is RunnerState.FINISHING:
            self.spawn(self.ops.reap_if_stuck(runner.name), f"reap:{runner.name}")
        return 1 if adopted is not None else 0

    async def _adopt_lost(self, runner: OwnedRunner) -> None:
        """A runner of ours whose node is down: lost, like one the book tracked (its
        registration removed, its service removed when the backend lets us)."""
        registered = await self.ops.registered(runner.name)
        if runner.name in self.book:
            return
        found = registered if isinstance(registered, RegisteredRunner) else None
        adopted = self.book.adopt(
            runner.name,
            runner.labels.get(LABEL_TEMPLATE, ""),
            state=RunnerState.BUSY if found is not None and found.busy else RunnerState.IDLE,
            runner_id=found.id if found is not None else None,
            created_at=runner.created_at,
            node=runner.node,
        )
        if adopted is not None:
            detail = f"node {runner.node} is down" if runner.node else "its node is down"
            await self.ops.discard(runner.name, reason="lost", detail=detail, lost=True)

    async def resync(self) -> None:
        """Reconcile the book with the engine's list and with GitHub, in both directions."""
        listed_at = time.monotonic()
        try:
            owned = {r.name: r for r in await self.backend.list_owned(self.selector)}
        except BackendError as exc:
            self.degraded = str(exc)
            return
        if self.degraded is not None:
            self._recovered()
        await self._resync_records(owned, listed_at)
        await self._resync_containers(owned)
        self._wake.set()

    async def _resync_records(self, owned: dict[str, OwnedRunner], listed_at: float) -> None:
        """Records whose runner exited unseen, or vanished, and runners that came online."""
        for record in self.book:
            if record.op is not None or record.changed > listed_at:
                continue  # an operation owns it, or it changed after the listing
            found = owned.get(record.name)
            if found is None:
                if record.state is RunnerState.FINISHING and record.counts:
                    continue  # it still counts until its completion is seen
                self.book.gone(record.name, container=False)
            elif found.lost or not found.running:
                exit_code = found.exit_code if found.exit_code is not None else -1
                self.on_exit(
                    RunnerExit(
                        record.name, exit_code, time.time(), lost=found.lost, node=found.node
                    )
                )
            else:
                if found.node:
                    self.book.placed(record.name, found.node)
                if record.state is RunnerState.STARTING:
                    await self._check_online(record.name)

    async def _resync_containers(self, owned: dict[str, OwnedRunner]) -> None:
        """Containers without a record, and what is left of runners whose record is gone."""
        for name, found in owned.items():
            if name in self.book:
                continue
            if found.lost and name not in self.book.leftovers:
                await self._adopt_lost(found)
            elif not found.running or found.lost or name in self.book.leftovers:
                await self.ops.remove_container(name)
            else:
                await self._adopt_one(found)  # a start that was cancelled kept it
        for name in list(self.book.leftovers):
            if name not in owned:
                self.book.cleaned(name, container=True, registration=False)
            await self.ops.clean_registration(name)

    async def _check_online(self, name: str) -> None:
        registered = await self.ops.registered(name)
        if isinstance(registered, RegisteredRunner):
            if registered.busy:
                self.book.job_started(name, runner_id=registered.id)
            elif registered.online:
                self.book.online(name, runner_id=registered.id)

    # -- drain and shutdown ----------------------------------------------------------------

    async def remove_idle_runners(self) -> None:
        """Stop starting runners and remove the idle ones (unregistering first)."""
        self._accepting = False
        self._wake.set()
        removals = [
            self.spawn(self.ops.remove_idle(r.name), f"remove:{r.name}")
            for r in self.book
            if self.book.removing(r.name) is not None
        ]
        if removals:
            await asyncio.wait(removals)

    async def drain(self, limit: float) -> int:
        """Remove idle runners, wait for busy ones up to `limit` seconds, then force-remove the
        stragglers (loudly). Returns how many were force-removed."""
        await self.remove_idle_runners()
        deadline = time.monotonic() + limit
        while len(self.book) and time.monotonic() < deadline:
            self._changed.clear()
            await wait_event(self._changed, min(1.0, deadline - time.monotonic()))
            # Idle runners can appear late (a start that was in flight): remove them too.
            await self.remove_idle_runners()
        stragglers = [r for r in self.book if r.op in (None, "start")]
        for record in stragglers:
            log.error(
                "%s: runner %s still %s after the drain timeout (%.0fs); force-removing it",
                self.scale_set_name,
                record.name,
                record.state.value,
                limit,
            )
            self._metrics.runner_failed("drain_timeout")
            await self.ops.discard(record.name, reason="drain_timeout")
        if stragglers:
            self.last_failure = Failure(
                reason="drain_timeout",
                message=f"{len(stragglers)} busy runners force-removed after {limit:.0f}s",
            )
        return len(stragglers)

    def resume(self) -> None:
        self._accepting = True
        self._wake.set()
