"""The listener: one scale set's conversation with GitHub, from registration to long-poll.

It makes sure the scale set exists on GitHub as the manifest describes it, holds its message
session, and turns what GitHub says into three calls on the scaler: how many runners are
wanted, which runner started a job, which finished one. The wanted count comes from the
statistics GitHub sends with every answer (never from counting messages), so a listener that
restarts, or misses a message, still converges.

It survives what the real service does: a 409 means another operator holds the session
(standby, retry, take over when it frees); a 404 for the scale set means GitHub deleted it
(re-create it); anything else is retried with backoff. A crash leaves a session open on GitHub;
the state file remembers its id, so the next start deletes that stale session (only its own)
and takes over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from runscaler.engine.labels import label_mismatch
from runscaler.engine.statefile import StateFile
from runscaler.engine.tasks import Flag, stop_task
from runscaler.github.client import ScaleSetClient
from runscaler.github.errors import (
    AuthError,
    GitHubError,
    MessageUnparseableError,
    ScaleSetNotFoundError,
    SessionConflictError,
)
from runscaler.github.models import (
    JobAvailable,
    JobCompleted,
    JobStarted,
    Message,
    RunnerScaleSet,
    Statistics,
)
from runscaler.github.session import MessageSession

log = logging.getLogger(__name__)


class ScalerHooks(Protocol):
    """What the listener tells the scaler. Called from the listener's task; must not block."""

    def desired_runners(self, count: int) -> None: ...

    def job_started(self, job: JobStarted) -> None: ...

    def job_completed(self, job: JobCompleted) -> None: ...


@dataclass(frozen=True)
class ListenerSettings:
    """The parts of a scale set the listener needs; replaced whole on a live change."""

    name: str
    runner_group: str
    labels: Sequence[str]  # the name first, then the manifest's labels
    min_runners: int
    max_runners: int

    def desired(self, assigned_jobs: int) -> int:
        return max(0, min(self.max_runners, self.min_runners + assigned_jobs))


@dataclass(frozen=True)
class ListenerTiming:
    """Waits that are long in production and short in tests."""

    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    standby_initial: float = 5.0
    standby_max: float = 30.0


class Backoff:
    """Exponential backoff with jitter, reset on success."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = maximum
        self._attempt = 0

    def reset(self) -> None:
        self._attempt = 0

    def next(self) -> float:
        delay: float = min(self.maximum, self.initial * 2.0**self._attempt)
        self._attempt += 1
        return delay * random.uniform(0.8, 1.0)


StateCallback = Callable[[str, str | None], None]


class Listener:
    """Runs forever (until cancelled) for one scale set; closes its session on the way out."""

    def __init__(
        self,
        *,
        client: ScaleSetClient,
        settings: ListenerSettings,
        hooks: ScalerHooks,
        owner: str,
        state_file: StateFile,
        key: str,
        timing: ListenerTiming = ListenerTiming(),
        on_state: StateCallback | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self._hooks = hooks
        self._owner = owner
        self._state_file = state_file
        self._key = key
        self._timing = timing
        self._on_state = on_state
        self.state = "starting"
        self.last_error: str | None = None
        self.scale_set_id: int | None = None
        self.statistics: Statistics | None = None
        # Why GitHub's labels differ from the manifest's, while they do (for /status).
        self.label_mismatch: str | None = None
        self._patches_tried: set[tuple[str, object]] = set()
        self._session: MessageSession | None = None
        self.messages_unparseable = 0
        self.close_timeout = 30.0  # closing the session on the way out waits no longer
        self._closing: asyncio.Future[None] | None = None
        self._repoll = Flag()
        self.scale_set_known = Flag()
        # Set once the session is ours: the lease that lets the runtime touch the backend.
        self.session_ready = Flag()

    # -- what the runtime calls ----------------------------------------------------------

    def update_settings(self, settings: ListenerSettings) -> None:
        """Apply a live change: a new max is sent on the next poll, which starts now."""
        self.settings = settings
        self._publish_desired()
        self._repoll.set()

    async def sync_scale_set(self) -> None:
        """Patch labels and runner group on GitHub to match the settings now."""
        if self.scale_set_id is None:
            return  # the next registration pass applies them
        existing = await self.client.get_scale_set_by_id(self.scale_set_id)
        if existing is not None:
            await self._patch_if_needed(existing)

    async def run(self) -> None:
        backoff = Backoff(self._timing.backoff_initial, self._timing.backoff_max)
        try:
            while True:
                try:
                    await self._register()
                    await self._open_session()
                    backoff.reset()
                    self._set_state("listening", None)
                    await self._listen()
                except ScaleSetNotFoundError:
                    log.warning("%s: the scale set is gone on GitHub; re-creating it", self._name)
                    self._forget_scale_set()
                    await self._drop_session()
                    await asyncio.sleep(self._timing.backoff_initial * random.uniform(0, 0.5))
                except GitHubError as exc:
                    self._set_state("degraded", str(exc))
                    delay = backoff.next()
                    hint = (
                        " (check the token or App credentials)"
                        if isinstance(exc, AuthError)
                        else ""
                    )
                    log.warning("%s: %s%s; retrying in %.1fs", self._name, exc, hint, delay)
                    await self._drop_session()
                    await asyncio.sleep(delay)
        finally:
            # Shielded: a cancelled listener still closes its session (`wait_closed` waits).
            self._closing = asyncio.ensure_future(self._close_session())
            await asyncio.shield(self._closing)

    async def wait_closed(self) -> None:
        """Until the session close begun on the way out is done (bounded by close_timeout)."""
        if self._closing is not None:
            await asyncio.wait({self._closing})

    # -- registration ----------------------------------------------------------------------

    @property
    def _name(self) -> str:
        return self.settings.name

    async def _register(self) -> None:
        """Find the scale set (by remembered id, then by name) or create it; patch what differs."""
        if self.scale_set_id is not None and self.scale_set_known.is_set():
            return
        group_id = await self.client.get_runner_group_id(self.settings.runner_group)
        existing = await self._find_remembered()
        if existing is None:
            existing = await self.client.get_scale_set(runner_group_id=group_id, name=self._name)
        if existing is None:
            existing = await self.client.create_scale_set(
                RunnerScaleSet(
                    name=self._name,
                    runner_group_id=group_id,
                    labels=tuple(self.settings.labels),
                    disable_update=True,
                )
            )
            log.info("%s: created the scale set on GitHub (id %d)", self._name, existing.id)
            self._check_labels(existing)
        else:
            existing = await self._patch_if_needed(existing, group_id=group_id)
        self.scale_set_id = existing.id
        self._remember(session_id=self._state_file.get(self._key).session_id)
        self.scale_set_known.set()

    async def _find_remembered(self) -> RunnerScaleSet | None:
        remembered = self._state_file.get(self._key).scale_set_id
        if remembered is None:
            return None
        try:
            found = await self.client.get_scale_set_by_id(remembered)
        except ScaleSetNotFoundError:
            return None
        if found is None or found.name.lower() != self._name.lower():
            return None
        return found

    async def _patch_if_needed(
        self, existing: RunnerScaleSet, *, group_id: int | None = None
    ) -> RunnerScaleSet:
        """Labels are never PATCHed: GitHub answers 200 and discards them (ARC #4424), so a
        label change means re-creating the scale set. Other fields are PATCHed once per
        wanted value: a field the service ignores is not sent again and again."""
        if group_id is None:
            group_id = await self.client.get_runner_group_id(self.settings.runner_group)
        changes: dict[str, object] = {}
        if existing.runner_group_id != group_id:
            changes["runner_group_id"] = group_id
        if not existing.disable_update:
            changes["disable_update"] = True
        tried = {change for change in changes.items() if change in self._patches_tried}
        for field, value in tried:
            log.debug("%s: GitHub kept %s despite an update to %r", self._name, field, value)
            del changes[field]
        if changes:
            log.info("%s: updating the scale set on GitHub: %s", self._name, ", ".join(changes))
            existing = await self.client.update_scale_set(
                existing.id,
                runner_group_id=group_id if "runner_group_id" in changes else None,
                disable_update=True if "disable_update" in changes else None,
            )
            self._patches_tried.update(changes.items())
        self._check_labels(existing)
        return existing

    def _check_labels(self, scale_set: RunnerScaleSet) -> None:
        """Say once (log and `label_mismatch`) that GitHub's labels are not the manifest's."""
        text = label_mismatch(self.settings.labels, scale_set.labels)
        if text is None:
            self.label_mismatch = None
            return
        if text != self.label_mismatch:
            log.warning("%s: %s", self._name, text)
        self.label_mismatch = text

    def _forget_scale_set(self) -> None:
        self.scale_set_id = None
        self.scale_set_known.clear()
        self._state_file.update(self._key, scale_set_id=None, session_id=None)

    def _remember(self, *, session_id: str | None) -> None:
        self._state_file.update(self._key, scale_set_id=self.scale_set_id, session_id=session_id)

    # -- the session -----------------------------------------------------------------------

    async def _open_session(self) -> None:
        assert self.scale_set_id is not None
        stale = self._state_file.get(self._key).session_id
        if stale:
            # Ours from before a crash: delete it so we need not wait for GitHub to expire it.
            with contextlib.suppress(GitHubError):
                await self.client.delete_session(self.scale_set_id, stale)
                log.info("%s: removed this operator's stale session", self._name)
            self._remember(session_id=None)
        standby = Backoff(self._timing.standby_initial, self._timing.standby_max)
        while True:
            try:
                session = await self.client.create_session(self.scale_set_id, owner=self._owner)
                break
            except SessionConflictError as exc:
                delay = standby.next()
                if self.state != "standby":
                    log.warning(
                        "%s: another operator holds this scale set's session; standing by "
                        "(retrying every %.0fs or so)",
                        self._name,
                        delay,
                    )
                self._set_state("standby", str(exc))
                await asyncio.sleep(delay)
        self._session = session
        self._remember(session_id=session.session_id)
        self.session_ready.set()
        log.info("%s: listening (session opened)", self._name)

    async def _drop_session(self) -> None:
        """Forget the session after an error; close it on GitHub if we still can."""
        await self._close_session()

    async def _close_session(self) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        self.session_ready.clear()
        try:
            async with asyncio.timeout(self.close_timeout):
                await session.close()
        except (GitHubError, TimeoutError) as exc:
            log.debug("%s: closing the session: %s", self._name, exc)
        # Closed (or gone): nothing stale to take over at the next start.
        if self.scale_set_id is not None:
            self._remember(session_id=None)

    # -- the long poll ---------------------------------------------------------------------

    async def _listen(self) -> None:
        session = self._session
        assert session is not None
        self.statistics = session.statistics
        self._publish_desired()
        while True:
            message = await self._next_message(session)
            if message is None:
                self._publish_desired()
                continue
            await self._handle(session, message)

    async def _next_message(self, session: MessageSession) -> Message | None:
        """Long-poll once; a live settings change interrupts the poll so the new capacity
        header goes out at once (an unread message is simply redelivered)."""
        self._repoll.clear()
        poll = asyncio.ensure_future(self._read_message(session))
        wake = asyncio.ensure_future(self._repoll.wait())
        try:
            await asyncio.wait({poll, wake}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await stop_task(wake)
            if not poll.done():
                await stop_task(poll)
        if poll.cancelled():
            return None
        return poll.result()

    async def _read_message(self, session: MessageSession) -> Message | None:
        """The next message; one that cannot be parsed is acknowledged, counted and shown as
        the scale set's last error, so it is not redelivered after every reconnect."""
        try:
            return await session.get_message(max_capacity=self.settings.max_runners)
        except MessageUnparseableError as exc:
            await session.delete_message(exc.message_id)
            self.messages_unparseable += 1
            self.last_error = f"message {exc.message_id} could not be parsed and was skipped: {exc}"
            log.warning("%s: %s", self._name, self.last_error)
            return None

    async def _handle(self, session: MessageSession, message: Message) -> None:
        if session.seen(message):
            # Redelivered after we handled it (the acknowledgement was lost): ack only.
            await session.delete_message(message.message_id)
            return
        # Acquire before the acknowledgement: if acquiring fails, the message is delivered
        # again instead of its job events being lost.
        available = [j.runner_request_id for j in message.jobs if isinstance(j, JobAvailable)]
        if available:
            acquired = await session.acquire_jobs(available)
            log.debug("%s: acquired %d of %d jobs", self._name, len(acquired), len(available))
        await session.delete_message(message.message_id)
        self.statistics = message.statistics
        for job in message.jobs:
            if isinstance(job, JobStarted):
                self._hooks.job_started(job)
            elif isinstance(job, JobCompleted):
                self._hooks.job_completed(job)
        session.mark_handled(message.message_id)
        self._publish_desired()

    def _publish_desired(self) -> None:
        assigned = self.statistics.total_assigned_jobs if self.statistics else 0
        self._hooks.desired_runners(self.settings.desired(assigned))

    def _set_state(self, state: str, error: str | None) -> None:
        self.state = state
        if error is not None or state == "listening":
            self.last_error = error
        if self._on_state is not None:
            self._on_state(state, error)
