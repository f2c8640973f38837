"""How many runner starts may be in the engine at once, learned from the engine's answers.

A fixed limit is wrong both ways: 16 makes a burst of 20 jobs wait for a second wave on an
engine that takes 20 at once, and any larger number overloads a small engine. `StartLimiter`
does what TCP does with a congestion window (AIMD): it admits up to `window` starts at once,
grows the window by one for each start that succeeds while the window was full (doubling it per
round, "slow start") until the first engine error, then by one per round; an engine error or
timeout halves it (at most once per round of starts, so one overloaded burst halves it once),
never below 1. `--start-concurrency N` caps it.

It is an `asyncio.Semaphore` so it drops in where one was used (`async with limiter:`); the
start's outcome is read from the exception leaving the `async with` block. Only starts that
saw the window full grow it: a window nobody used says nothing about the
engine, and must not grow without bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

from runscaler.backends.base import BackendError

log = logging.getLogger(__name__)

INITIAL_WINDOW = 32  # as many as most bursts need, before anything is learned
MAX_WINDOW = 1024  # growth stops here even without a cap


def engine_overloaded(error: BaseException) -> bool:
    """Whether a start that raised `error` says the engine takes too many at once."""
    return isinstance(error, BackendError | TimeoutError)


@dataclass
class _Ticket:
    seq: int  # admission order, to halve once per round
    full_marks: int  # how often the window had filled up, when this start was admitted
    full: bool  # the window was full right after it was admitted


class StartLimiter(asyncio.Semaphore):
    """An adaptive, fleet-wide limit on starts in progress (see the module docstring)."""

    def __init__(
        self,
        cap: int | None = None,
        *,
        initial: int = INITIAL_WINDOW,
        overloaded: Callable[[BaseException], bool] = engine_overloaded,
    ) -> None:
        super().__init__(1)  # the base's own counter is unused; every method is replaced
        if cap is not None and cap < 1:
            raise ValueError("cap must be at least 1")
        self.cap = cap
        self.ceiling = float(min(cap, MAX_WINDOW) if cap is not None else MAX_WINDOW)
        # With a cap the user chose how many at once: start there, as a fixed limit did.
        self._window = float(cap if cap is not None else min(initial, MAX_WINDOW))
        self._threshold = self.ceiling  # slow start until the first overload
        self._overloaded = overloaded
        self.in_flight = 0
        self._seq = 0
        self._halved_at = -1  # the admission seq at the last halving
        self._full_marks = 0  # counts the times the window filled up or a start queued
        self._queue: deque[asyncio.Future[None]] = deque()
        self._tickets: dict[asyncio.Task[object], _Ticket] = {}

    @property
    def window(self) -> int:
        """How many starts may be in progress now."""
        return max(1, int(self._window))

    def locked(self) -> bool:
        return self.in_flight >= self.window

    # -- admission -------------------------------------------------------------------------

    async def acquire(self) -> Literal[True]:
        if not self._queue and self.in_flight < self.window:
            self._admit()
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(waiter)
        self._full_marks += 1
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Admitted in the same step it was cancelled: the slot goes to the next one.
                self.in_flight -= 1
            else:
                self._queue.remove(waiter)
            self._wake()
            raise
        return True

    def release(self) -> None:
        if self.in_flight <= 0:
            raise ValueError("StartLimiter released too many times")
        self.in_flight -= 1
        self._wake()

    def _admit(self) -> None:
        self.in_flight += 1
        if self.in_flight >= self.window:
            self._full_marks += 1

    def _wake(self) -> None:
        while self._queue and self.in_flight < self.window:
            waiter = self._queue.popleft()
            if not waiter.done():
                self._admit()
                waiter.set_result(None)

    # -- learning --------------------------------------------------------------------------

    async def __aenter__(self) -> None:
        await self.acquire()
        self._seq += 1
        task = asyncio.current_task()
        if task is not None:
            full = self.in_flight >= self.window
            self._tickets[task] = _Ticket(self._seq, self._full_marks - full, full)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task = asyncio.current_task()
        ticket = self._tickets.pop(task, None) if task is not None else None
        if ticket is not None:
            self.observe(ticket, exc)
        self.release()

    def observe(self, ticket: _Ticket, error: BaseException | None) -> None:
        """Grow or shrink the window after one start finished (with `error`, or none)."""
        if error is None:
            # Only a start that saw the window full says the engine took a full window.
            if ticket.full or self._full_marks > ticket.full_marks:
                self._grow()
        elif not isinstance(error, asyncio.CancelledError) and self._overloaded(error):
            self._shrink(ticket)

    def _grow(self) -> None:
        if self._window < self._threshold:
            self._window += 1.0  # slow start: one more per success doubles it per round
        else:
            self._window += 1.0 / self._window  # one more per round
        self._window = min(self._window, self.ceiling)

    def _shrink(self, ticket: _Ticket) -> None:
        if ticket.seq <= self._halved_at:
            return  # admitted before the last halving: that round was already counted
        self._halved_at = self._seq
        before = self.window
        self._window = max(1.0, self._window / 2)
        self._threshold = self._window
        if self.window != before:
            log.info(
                "the engine refused a start; at most %d runners start at once now", self.window
            )
