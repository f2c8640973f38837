"""What every part of the running simulator shares: options, state, tokens, faults, the clock.

The HTTP handlers in `app.py`, `broker.py` and `control.py` all work on one `Core`. Long polls
wait on its change notifier: every mutation calls `changed()`, which wakes every waiter to
look again, so a message or a job reaches a waiting client at once rather than at the next poll.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from runscaler.simulator.faults import Faults
from runscaler.simulator.realism import Realism
from runscaler.simulator.state import SimState
from runscaler.simulator.tokens import Tokens

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimulatorOptions:
    """How the simulated GitHub behaves; the defaults are GitHub's (or close to them)."""

    token: str | None = None  # None: any non-empty token is accepted
    poll_wait: float = 50.0  # long-poll wait before 202
    session_timeout: float = 60.0  # a session not polled for poll_wait + this is dropped
    admin_token_ttl: float = 3600.0  # lifetime (JWT exp) of the admin token
    registration_token_ttl: float = 3600.0
    message_queue_token_ttl: float = 3600.0  # after this, the mq token answers 401
    redispatch_interval: float = 300.0  # an acquired job nobody takes is cancelled + re-assigned
    app_public_key: str | None = None  # PEM; when set, App JWTs are verified against it
    runner_lost_timeout: float = 10.0  # a runner that has not reported this long after its
    #                                    job's work was done is lost: the job fails
    realism: Realism = Realism()  # noqa: RUF009 (frozen) the live service's habits, all on


class Notifier:
    """Wake every waiter when something changed; waiters re-check their own condition."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> None:  # noqa: ASYNC109 (a bounded long-poll wait)
        event = self._event
        try:
            await asyncio.wait_for(event.wait(), timeout=max(timeout, 0.0))
        except TimeoutError:
            pass


class Core:
    def __init__(
        self, options: SimulatorOptions, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.options = options
        self.clock = clock
        self.state = SimState(
            poll_wait=options.poll_wait,
            session_timeout=options.session_timeout,
            redispatch_interval=options.redispatch_interval,
            runner_lost_timeout=options.runner_lost_timeout,
            realism=options.realism,
        )
        self.tokens = Tokens()
        self.faults = Faults()
        self.changes = Notifier()
        self.closing = False

    def now(self) -> float:
        return self.clock()

    def changed(self) -> None:
        self.changes.notify()

    async def wait_change(self, timeout: float) -> None:  # noqa: ASYNC109
        if not self.closing:
            await self.changes.wait(timeout)

    async def run_clock(self) -> None:
        """Apply time-driven changes (re-dispatch, expiry, work done) when they fall due."""
        while not self.closing:
            wait = 1.0
            try:
                if self.state.tick(self.now()):
                    self.changed()
                deadline = self.state.next_deadline()
                if deadline is not None:
                    wait = min(max(deadline - self.now(), 0.0) + 0.001, 1.0)
            except Exception:
                # A bug in one rule must not stop time for everything else (nor spin).
                log.exception("simulator clock failed; carrying on")
            await self.wait_change(wait)
