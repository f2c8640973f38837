"""The per-runner operations: start, unregister-and-remove, discard, finish, and clean-ups.

Each runs as one task of its scaler and owns its runner's record while it runs. Any await can
be a cancellation (a reload, a scale-down, a drain, a shutdown), so each settles in a `finally`
whatever it left half done: a registration with no container is unregistered; a container
that was created but never started is removed; a container that may have started is a live
runner that may hold a job: it is kept and tracked (or left for the next start to adopt),
never force-removed by a cancellation. The undoing itself runs to its end (bounded by
`cleanup_limit`) even when the operation is cancelled again meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from runscaler import __version__
from runscaler.backends.base import (
    LABEL_FLEET,
    LABEL_RUNNER,
    LABEL_SCALE_SET,
    LABEL_SCALE_SET_KEY,
    LABEL_TEMPLATE,
    BackendError,
    RunnerExit,
    RunnerNotFound,
    RunnerSpec,
)
from runscaler.engine.book import JUDGES, TRANSIENT, RunnerState
from runscaler.github.errors import GitHubError, JobStillRunningError
from runscaler.github.models import JitConfig
from runscaler.logs import secrets

if TYPE_CHECKING:
    from runscaler.engine.scaler import Scaler, Template

log = logging.getLogger("runscaler.engine.scaler")

OUTDATED_EXIT_CODE = 7  # the runner's code for "GitHub refuses this version"

# In every runner's environment: exit 7 (not 0) when GitHub refuses the runner's version, and
# say who started it in the runner's User-Agent.
RUNNER_ENV = {
    "ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE": "1",
    "GITHUB_ACTIONS_RUNNER_EXTRA_USER_AGENT": f"runscaler/{__version__}",
}


@dataclass(frozen=True)
class RegisteredRunner:
    """A runner's registration as GitHub reports it."""

    id: int
    busy: bool = False
    online: bool = False


class Unknown:
    """GitHub could not be asked (an error): nothing is concluded."""


UNKNOWN = Unknown()


class RunnerRegistry(Protocol):
    """The GitHub side of a runner's life, for one scale set. Raises only `GitHubError`."""

    async def register(self, runner_name: str) -> JitConfig: ...

    async def unregister(self, runner_id: int) -> None:
        """Remove the registration; `JobStillRunningError` when the runner has a job."""
        ...

    async def lookup(self, runner_name: str) -> RegisteredRunner | None:
        """The runner's registration, or None when it is not registered (any more)."""
        ...


class ScalerMetrics(Protocol):
    def runner_started(self, seconds: float) -> None: ...

    def runner_failed(self, reason: str) -> None: ...


@dataclass(frozen=True)
class Failure:
    """The last runner failure, for status."""

    reason: str  # start_failed | exited_early | drain_timeout | lost
    message: str
    exit_code: int | None = None
    log_tail: tuple[str, ...] = ()
    at: float = field(default_factory=time.time)


class RunnerOps:
    """The operations of one scaler; they read and write its book."""

    def __init__(self, scaler: Scaler, *, start_limiter: asyncio.Semaphore) -> None:
        self._scaler = scaler
        self._limiter = start_limiter
        self._jit: dict[str, str] = {}

    @property
    def _name(self) -> str:
        return self._scaler.scale_set_name

    # -- start -----------------------------------------------------------------------------

    async def start(self, name: str, template: Template) -> None:
        scaler, book = self._scaler, self._scaler.book
        began = time.monotonic()
        # How far it got: prepare | register | registered | engine | started
        phase = "prepare"
        error: GitHubError | BackendError | None = None
        try:
            # Pulls happen outside the limiter, so a slow pull does not hold up other
            # scale sets' starts; it is shared and cheap once done.
            await scaler.backend.prepare(template.spec)
            if not scaler.accepting:
                return
            phase = "register"
            jit = await scaler.registry.register(name)
            phase = "registered"
            book.registered(name, jit.runner_id)
            # The client registered it as a secret; forgetting the runner discards it.
            self._jit[name] = jit.encoded
            async with self._limiter:
                if not scaler.accepting or book.get(name) is None:
                    return
                phase = "engine"
                await scaler.backend.start(
                    RunnerSpec(
                        name=name,
                        jit_config=jit.encoded,
                        labels=self._labels(name, template.hash),
                        template=template.spec,
                        env={**template.env, **RUNNER_ENV},
                    )
                )
            phase = "started"
        except (GitHubError, BackendError) as exc:
            error = exc
        finally:
            await self.settle(self._after_start(name, phase, error, began))

    async def _after_start(
        self, name: str, phase: str, error: GitHubError | BackendError | None, began: float
    ) -> None:
        scaler, book = self._scaler, self._scaler.book
        record = book.get(name)
        if record is None or record.op != "start":
            # Someone else took the record (a drain force-removed it): a container this start
            # made is a leftover for the resync.
            self._forget_jit(name)
            return
        if phase == "started":
            elapsed = time.monotonic() - began
            scaler.metrics.runner_started(elapsed)
            node_of = getattr(scaler.backend, "node_of", None)
            node = node_of(name) if callable(node_of) else None
            if isinstance(node, str) and node:
                book.placed(name, node)
            where = f" on node {node}" if isinstance(node, str) and node else ""
            log.info("%s: runner %s started%s in %.2fs", self._name, name, where, elapsed)
            exit_code = record.exit_code
            if book.online(name) is None:
                book.released(name)  # it took a job before the start returned
            if exit_code is not None:
                scaler.on_exit(RunnerExit(name, exit_code, time.time()))
            return
        if error is not None:
            if isinstance(error, BackendError):
                scaler.unavailable(error)
            log.error("%s: could not start runner %s: %s", self._name, name, error)
            book.failed(name, reason="start_failed")
            await self._clean(name, lookup=phase == "register")
            scaler.failed(Failure(reason="start_failed", message=str(error)))
            return
        # Cancelled, or told to stop starting.
        if phase == "engine":
            await self._keep_if_started(name)
            return
        book.failed(name, reason="cancelled")
        await self._clean(name, lookup=phase == "register", container=False)

    async def _keep_if_started(self, name: str) -> None:
        """Cancelled while the engine was starting it: a runner that may be running is kept."""
        scaler, book = self._scaler, self._scaler.book
        try:
            found = await scaler.backend.list_owned({**scaler.selector, LABEL_RUNNER: name})
        except BackendError:
            book.released(name)  # the resync judges it once the engine answers
            return
        if any(r.running for r in found):
            log.info("%s: runner %s was started before the cancellation; kept", self._name, name)
            book.online(name)
            return
        book.failed(name, reason="cancelled")
        await self._clean(name)

    def _labels(self, name: str, template_hash: str) -> dict[str, str]:
        scaler = self._scaler
        return {
            LABEL_FLEET: scaler.fleet,
            LABEL_SCALE_SET: scaler.scale_set_name,
            LABEL_SCALE_SET_KEY: scaler.key,
            LABEL_RUNNER: name,
            LABEL_TEMPLATE: template_hash,
        }

    # -- removing --------------------------------------------------------------------------

    async def remove_idle(self, name: str) -> None:
        """Unregister first: if GitHub says it has a job, it is busy and stays. The record is
        already `removing` (the caller moved it, so no second removal starts)."""
        scaler, book = self._scaler, self._scaler.book
        unregistered: bool | None = False  # None: asked, but the answer never came
        try:
            record = book.get(name)
            if record is None or record.state is not RunnerState.REMOVING:
                return
            # GitHub may have assigned it a job it has not started yet: removing it now would
            # bounce that job (ARC #4000), and GitHub already reports such a runner busy.
            found = await scaler.registry.lookup(name)
            if found is not None and found.busy:
                log.info("%s: runner %s was assigned a job; keeping it", self._name, name)
                book.job_started(name, runner_id=found.id)
                return
            runner_id = found.id if found is not None else record.runner_id
            if runner_id is not None:
                unregistered = None
                await scaler.registry.unregister(runner_id)
            unregistered = True
        except JobStillRunningError:
            unregistered = False
            log.info("%s: runner %s took a job; keeping it", self._name, name)
            book.job_started(name)
        except GitHubError as exc:
            unregistered = False
            log.warning("%s: cannot unregister %s yet: %s", self._name, name, exc)
        finally:
            await self.settle(self._after_remove(name, unregistered))

    async def _after_remove(self, name: str, unregistered: bool | None) -> None:
        book = self._scaler.book
        if unregistered is None:
            # Cancelled while GitHub was unregistering it: ask whether it happened.
            unregistered = await self.registered(name) is None
        record = book.get(name)
        if record is None or record.state is not RunnerState.REMOVING:
            return
        if not unregistered:
            book.kept(name)
            return
        book.gone(name, registration=False)
        log.info("%s: removed idle runner %s", self._name, name)
        await self.clean_leftover(name)

    async def discard(
        self,
        name: str,
        *,
        reason: str,
        detail: str | None = None,
        lost: bool = False,
        node: str | None = None,
    ) -> None:
        """Unregister (best effort) and remove a runner that failed, was lost or outstayed a
        drain."""
        book = self._scaler.book
        moved = (
            book.lost(name, reason=detail or reason, node=node)
            if lost
            else book.failed(name, reason=reason)
        )
        if moved is None:
            return
        if lost:
            self._scaler.runner_lost(moved)
        await self.settle(self._clean(name))

    async def finish(self, name: str) -> None:
        """Its process ended with its job: remove the container now; the record counts until
        the job's completion is seen or the hold passes."""
        scaler, book = self._scaler, self._scaler.book
        await self.remove_container(name)
        record = book.get(name)
        if record is None or record.state is not RunnerState.FINISHING:
            return
        await asyncio.sleep(max(0.0, record.hold - time.monotonic()))
        record = book.get(name)
        if record is not None and record.state is RunnerState.FINISHING:
            book.gone(name)
            await self.clean_leftover(name)
        scaler.wake()

    async def judge_exit(self, name: str, exit_code: int) -> None:
        """A runner's process ended with no job we know of: judged by its exit code and the
        job events, after a grace for late events (GitHub's arrive tens of seconds late and
        it removes an ephemeral runner's registration lazily)."""
        book = self._scaler.book
        if book.claim(name, "judge") is None:
            return
        try:
            await self._judge(name, exit_code)
        except asyncio.CancelledError:
            # Stopped while waiting for late events (a shutdown): its process has ended, so
            # nothing of a job is left in it; its dead container must not outlive us.
            record = book.get(name)
            if record is not None and record.op in JUDGES:
                await self.settle(self._clean(name))
            raise
        finally:
            book.released(name, by=JUDGES)

    async def _judge(self, name: str, exit_code: int) -> None:
        scaler, book = self._scaler, self._scaler.book
        if exit_code == OUTDATED_EXIT_CODE:
            await self._outdated(name)
            return
        registered = await self.registered(name)
        if registered is not None:
            # Still registered: it waits for late job events; a failed one is not capacity
            # meanwhile, a clean exit (likely a job whose events are late) still is.
            book.claim(name, "grace-clean" if exit_code == 0 else "grace", held_by="judge")
        deadline = time.monotonic() + scaler.timing.exit_grace
        while registered is not None and not self._job_seen(name):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                registered = await self.registered(name)
                break
            await scaler.book_changed(remaining)
        record = book.get(name)
        if record is None or record.state in TRANSIENT:
            return
        if self._job_seen(name) or registered is None:
            # It ran a job: a normal end, whatever order its events arrive in.
            if record.state is RunnerState.FINISHING and record.completed:
                book.gone(name)
                await self.clean_leftover(name)
                return
            book.job_ended(
                name, completed=False, hold=scaler.timing.completion_hold, exit_code=exit_code
            )
            book.released(name, by=JUDGES)
            await self.finish(name)
            return
        tail: list[str] = []
        with contextlib.suppress(BackendError):
            tail = await scaler.backend.logs_tail(name, lines=20)
        if exit_code == 0:
            # No job, no failure code: not counted as a crash (GitHub may have withheld jobs).
            log.warning(
                "%s: runner %s exited with code 0 without taking a job; replacing it",
                self._name,
                name,
            )
            if book.failed(name, reason="exited_without_job", exit_code=0) is not None:
                await self.settle(self._clean(name))
            return
        log.error(
            "%s: runner %s exited with code %d before taking a job", self._name, name, exit_code
        )
        if book.failed(name, reason="exited_early", exit_code=exit_code) is None:
            return
        await self.settle(self._clean(name))
        scaler.failed(
            Failure(
                reason="exited_early",
                message=f"runner exited with code {exit_code} before taking a job",
                exit_code=exit_code,
                log_tail=tuple(tail),
            )
        )

    def _job_seen(self, name: str) -> bool:
        record = self._scaler.book.get(name)
        if record is None or record.took_job:
            return True
        return record.state not in (RunnerState.IDLE, RunnerState.STARTING)

    async def _outdated(self, name: str) -> None:
        scaler, book = self._scaler, self._scaler.book
        image = getattr(scaler.template.spec, "image", "?")
        message = (
            f"the runner in image {image} is too old for GitHub (exit code 7): publish an "
            "image with a current actions/runner; a mutable tag is pulled again before the "
            "next start"
        )
        log.error("%s: runner %s: %s", self._name, name, message)
        if book.failed(name, reason="runner_outdated", exit_code=OUTDATED_EXIT_CODE) is None:
            return
        await self.settle(self._clean(name))
        scaler.runner_outdated(
            Failure(reason="runner_outdated", message=message, exit_code=OUTDATED_EXIT_CODE)
        )

    async def reap_if_stuck(self, name: str) -> None:
        await asyncio.sleep(self._scaler.timing.finished_grace)
        book = self._scaler.book
        record = book.get(name)
        if record is not None and record.state is RunnerState.FINISHING and record.op is None:
            log.warning("%s: runner %s did not exit after its job; removing", self._name, name)
            book.gone(name)
            await self.settle(self.clean_leftover(name))

    # -- clean-ups -------------------------------------------------------------------------

    async def _clean(self, name: str, *, lookup: bool = False, container: bool = True) -> None:
        """End a failed record: unregister and remove what exists; the rest stays a leftover
        for the resync. `lookup`: a registration may exist that the record does not know."""
        book = self._scaler.book
        record = book.get(name)
        runner_id = record.runner_id if record is not None else None
        if runner_id is None and lookup:
            found = await self.registered(name)
            runner_id = found.id if isinstance(found, RegisteredRunner) else None
        book.gone(name, container=container, runner_id=runner_id)
        self._forget_jit(name)
        await self.clean_leftover(name)

    async def clean_leftover(self, name: str) -> None:
        """Remove what is left of a runner whose record is gone: its registration, then its
        container. What fails stays a leftover; the resync retries it."""
        await self.clean_registration(name)
        leftover = self._scaler.book.leftovers.get(name)
        if leftover is not None and leftover.container and await self.remove_container(name):
            self._scaler.book.cleaned(name, container=True, registration=False)

    async def clean_registration(self, name: str) -> None:
        book = self._scaler.book
        leftover = book.leftovers.get(name)
        if leftover is None or leftover.runner_id is None:
            return
        try:
            await self._scaler.registry.unregister(leftover.runner_id)
        except GitHubError as exc:
            log.debug("%s: cannot unregister %s yet: %s", self._name, name, exc)
            return
        book.cleaned(name, container=False, registration=True)

    async def remove_container(self, name: str) -> bool:
        """True once the container is gone (removed now, or already)."""
        try:
            await self._scaler.backend.remove(name)
        except RunnerNotFound:
            pass
        except BackendError as exc:
            log.warning("%s: cannot remove %s (will retry): %s", self._name, name, exc)
            return False
        self._forget_jit(name)
        return True

    async def registered(self, name: str) -> RegisteredRunner | Unknown | None:
        try:
            return await self._scaler.registry.lookup(name)
        except GitHubError as exc:
            log.debug("%s: cannot look up runner %s: %s", self._name, name, exc)
            return UNKNOWN

    def _forget_jit(self, name: str) -> None:
        jit = self._jit.pop(name, None)
        if jit is not None:
            secrets.discard(jit)

    # -- running undo to its end -----------------------------------------------------------

    async def settle(self, undo: Coroutine[Any, Any, None]) -> None:
        """Run `undo` to its end (at most `cleanup_limit`), even if cancelled meanwhile; a
        cancellation of the caller is re-raised once it is done."""
        limit = self._scaler.timing.cleanup_limit

        async def bounded() -> None:
            try:
                async with asyncio.timeout(limit):
                    await undo
            except TimeoutError:
                log.warning(
                    "%s: cleaning up took over %.0fs; the resync finishes it", self._name, limit
                )
            except (GitHubError, BackendError) as exc:
                log.warning("%s: cleaning up: %s; the resync retries it", self._name, exc)

        task = asyncio.ensure_future(bounded())
        cancelled = False
        while not task.done():
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                if task.done():
                    break
                cancelled = True
        if not task.cancelled():
            task.exception()
        if cancelled:
            raise asyncio.CancelledError
