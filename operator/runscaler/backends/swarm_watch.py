"""One watch over a fleet's runner tasks, shared by every exit subscriber and starting runner.

The manager has no task events, so the backend lists; this module makes that one list per pass
for the whole fleet, however many scale sets subscribe and runners start: a single loop runs
while anyone listens, and each pass (tasks and nodes, two calls) feeds every subscriber's exits
(a runner whose task ended or whose node is down) and wakes every `start` waiting for its task
to run. The loop stops when the last listener leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from runscaler.backends.base import BackendError, BackendUnavailable, RunnerExit
from runscaler.backends.swarm_tasks import NO_EXIT_CODE, Phase, RunnerTask, Snapshot

log = logging.getLogger(__name__)

POLL_INTERVAL = 1.0  # seconds between passes: how late an exit or a node failure is seen
# While a start waits, passes come this often at most (the manager answers many starters once).
MIN_GAP = 0.2
_CLOSED = object()


class SwarmExits:
    """Exits of runners matching a selector; subscribed on creation (see `Backend.exits`)."""

    def __init__(self, watch: TaskWatch, selector: Mapping[str, str]) -> None:
        self._watch = watch
        self.selector = dict(selector)
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._reported: set[str] = set()
        self._closed = False
        watch.add(self)

    def feed(self, snapshot: Snapshot) -> None:
        for name, runner in snapshot.runners.items():
            if name in self._reported or not self._matches(runner):
                continue
            if runner.phase in (Phase.ENDED, Phase.LOST):
                self._reported.add(name)
                self._queue.put_nowait(_exit(runner))
        self._reported &= set(snapshot.runners)

    def fail(self, exc: BaseException) -> None:
        self._queue.put_nowait(exc)

    def _matches(self, runner: RunnerTask) -> bool:
        return all(runner.labels.get(k) == v for k, v in self.selector.items())

    def __aiter__(self) -> SwarmExits:
        return self

    async def __anext__(self) -> RunnerExit:
        if self._closed:
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is _CLOSED:
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._closed = True
            self._watch.remove(self)
            raise item
        assert isinstance(item, RunnerExit)
        return item

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._watch.remove(self)
            self._queue.put_nowait(_CLOSED)


def _exit(runner: RunnerTask) -> RunnerExit:
    code = runner.exit_code if runner.exit_code is not None else NO_EXIT_CODE
    return RunnerExit(
        name=runner.name,
        exit_code=code,
        at=time.time(),
        lost=runner.phase is Phase.LOST,
        detail=runner.detail,
        node=runner.node,
    )


class TaskWatch:
    """Runs the listing loop while there are subscribers or waiters."""

    def __init__(
        self,
        fetch: Callable[[], Awaitable[Snapshot]],
        *,
        interval: float = POLL_INTERVAL,
    ) -> None:
        self._fetch = fetch
        self.interval = interval
        self._subscribers: list[SwarmExits] = []
        self._waiters = 0
        self._next: asyncio.Future[Snapshot] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._kick = asyncio.Event()
        self._lost: set[str] = set()

    def subscribe(self, selector: Mapping[str, str]) -> SwarmExits:
        return SwarmExits(self, selector)

    def add(self, subscriber: SwarmExits) -> None:
        self._subscribers.append(subscriber)
        self._ensure_loop()

    def remove(self, subscriber: SwarmExits) -> None:
        with contextlib.suppress(ValueError):
            self._subscribers.remove(subscriber)

    async def next_snapshot(self) -> Snapshot:
        """The result of the next complete pass (raises what that pass raised)."""
        if self._next is None or self._next.done():
            self._next = asyncio.get_running_loop().create_future()
        future = self._next
        self._waiters += 1
        self._ensure_loop()
        self._kick.set()
        try:
            return await asyncio.shield(future)
        finally:
            self._waiters -= 1

    async def close(self) -> None:
        task, self._loop_task = self._loop_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for subscriber in list(self._subscribers):
            await subscriber.aclose()
        if self._next is not None and not self._next.done():
            self._next.set_exception(BackendUnavailable("the Swarm backend was closed"))
            self._next.exception()  # retrieved: nobody may be waiting any more

    def _ensure_loop(self) -> None:
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.create_task(self._run(), name="swarm-task-watch")

    async def _run(self) -> None:
        while self._subscribers or self._waiters:
            self._kick.clear()
            began = time.monotonic()
            future = self._next
            try:
                snapshot = await self._fetch()
            except BackendError as exc:
                for subscriber in list(self._subscribers):
                    subscriber.fail(exc)
                self._subscribers.clear()
                if future is not None and not future.done():
                    future.set_exception(exc)
                    future.exception()
                await self._pause(began)
                continue
            self._note_lost(snapshot)
            for subscriber in list(self._subscribers):
                subscriber.feed(snapshot)
            if future is not None and not future.done():
                future.set_result(snapshot)
            await self._pause(began)

    def _note_lost(self, snapshot: Snapshot) -> None:
        """Say once, whoever listens, which runners a failed node took with it."""
        lost = {n for n, r in snapshot.runners.items() if r.phase is Phase.LOST}
        for name in sorted(lost - self._lost):
            log.warning("runner %s is lost: %s", name, snapshot.runners[name].detail)
        self._lost = lost | (self._lost & set(snapshot.runners))

    async def _pause(self, began: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._kick.wait(), self.interval)
        gap = MIN_GAP - (time.monotonic() - began)
        if gap > 0:
            await asyncio.sleep(gap)
