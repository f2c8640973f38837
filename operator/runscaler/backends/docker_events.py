"""Runner exits from the engine's event stream: one stream per engine, many subscribers.

Exits are watched, not polled. Every scale set wants its own runners' exits, but a connection
per scale set would exhaust the client's connection pool on a large fleet, so one `die` event
stream per backend (filtered by the engine to our fleet's label) feeds every subscription, and
each subscription keeps the exits its selector matches.

A subscription is registered when `subscribe` is called, not when iteration begins, and the
stream asks the engine to replay events since shortly before it was opened: a runner that dies
between "subscribe" and "the stream is connected" is still reported. When the stream breaks
(the engine stopped or restarted) every subscription raises `BackendUnavailable`; subscribing
again opens a new stream.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from runscaler.backends.base import (
    LABEL_FLEET,
    LABEL_RUNNER,
    BackendError,
    BackendUnavailable,
    RunnerExit,
)
from runscaler.backends.docker_api import DockerAPI, json_lines
from runscaler.backends.docker_client import engine_calls
from runscaler.backends.engine_http import Response

log = logging.getLogger(__name__)

# Replayed history covers the gap between subscribing and the stream being connected, and a
# little clock skew with a remote engine. A replayed exit of a runner the caller no longer
# tracks is harmless: callers ignore exits of runners they do not know.
REPLAY_MARGIN = 2.0

_CLOSED = object()

# The runner's exit code when GitHub refuses its version (with
# ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE=1 in its environment).
OUTDATED_EXIT_CODE = 7


class ExitSubscription:
    """An async iterator of `RunnerExit`s matching one selector.

    Every scale set holds one for its whole life: its buffer is a deque and one waiter, not
    an `asyncio.Queue` (four deques and an event: 3 KiB, against 0.8)."""

    def __init__(self, watch: ExitWatch, selector: Mapping[str, str]) -> None:
        self._watch = watch
        self.selector = dict(selector)
        self._items: collections.deque[object] = collections.deque()
        self._waiters: list[asyncio.Future[None]] = []
        self._done = False

    def __aiter__(self) -> ExitSubscription:
        return self

    async def __anext__(self) -> RunnerExit:
        if self._done:
            raise StopAsyncIteration
        while not self._items:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                self._waiters.remove(waiter)
        item = self._items.popleft()
        if isinstance(item, RunnerExit):
            return item
        self._done = True
        self._watch.unsubscribe(self)
        if isinstance(item, BaseException):
            raise item
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self._done = True
        self._watch.unsubscribe(self)

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(key) == value for key, value in self.selector.items())

    def put(self, item: object) -> None:
        if self._done:
            return
        self._items.append(item)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)


class ExitWatch:
    """The one `die` event stream of a backend, shared by its subscriptions."""

    def __init__(
        self,
        *,
        docker: Callable[[], DockerAPI],
        host: str,
        fleet: str,
        on_outdated: Callable[[str], None] | None = None,
    ) -> None:
        self._docker = docker
        self._on_outdated = on_outdated
        self._host = host
        self._fleet = fleet
        # Weak: a subscription its owner dropped without closing stops receiving and goes away.
        self._subscriptions: weakref.WeakSet[ExitSubscription] = weakref.WeakSet()
        self._task: asyncio.Task[None] | None = None
        self._stopping: set[asyncio.Task[None]] = set()

    def subscribe(self, selector: Mapping[str, str]) -> ExitSubscription:
        subscription = ExitSubscription(self, selector)
        self._subscriptions.add(subscription)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"docker events {self._host}")
        return subscription

    def unsubscribe(self, subscription: ExitSubscription) -> None:
        self._subscriptions.discard(subscription)
        if not self._subscriptions and self._task is not None:
            self._task.cancel()
            self._stopping.add(self._task)
            self._task.add_done_callback(self._stopping.discard)
            self._task = None

    async def close(self) -> None:
        tasks = [*self._stopping, *([self._task] if self._task else [])]
        self._task = None
        for subscription in list(self._subscriptions):
            subscription.put(_CLOSED)
        self._subscriptions = weakref.WeakSet()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self) -> None:
        try:
            await self._stream(since=time.time() - REPLAY_MARGIN)
            error: BackendError = BackendUnavailable(
                f"Docker at {self._host} closed its event stream: "
                "is the engine restarting? try runscaler doctor"
            )
        except BackendError as exc:
            error = exc
        log.warning("%s", error)
        for subscription in list(self._subscriptions):
            subscription.put(error)
        self._subscriptions = weakref.WeakSet()
        if self._task is asyncio.current_task():
            self._task = None

    async def _stream(self, *, since: float) -> None:
        filters = {
            "type": ["container"],
            "event": ["die"],
            "label": [f"{LABEL_FLEET}={self._fleet}"],
        }
        params = {"since": f"{since:.9f}", "filters": json.dumps(filters)}
        with engine_calls(self._host, "cannot watch container events"):
            stream = self._docker().stream("events", params=params, read_timeout=None)
            async with stream as response:
                try:
                    await self._read(response)
                except OSError:
                    pass  # connected, then cut: the engine went away (reported by the caller)

    async def _read(self, response: Response) -> None:
        async for event in json_lines(response):
            self._dispatch(event)

    def _dispatch(self, event: dict[str, Any]) -> None:
        actor = event.get("Actor") or {}
        labels: dict[str, str] = actor.get("Attributes") or {}
        runner = labels.get(LABEL_RUNNER)
        if runner is None:
            return  # a housekeeping helper of ours, not a runner
        try:
            exit_code = int(labels.get("exitCode", "-1"))
        except ValueError:
            exit_code = -1
        at = event.get("timeNano")
        when = at / 1e9 if isinstance(at, int) else float(event.get("time") or time.time())
        image = labels.get("image")
        if exit_code == OUTDATED_EXIT_CODE and image and self._on_outdated is not None:
            self._on_outdated(image)
        runner_exit = RunnerExit(name=runner, exit_code=exit_code, at=when)
        for subscription in list(self._subscriptions):
            if subscription.matches(labels):
                subscription.put(runner_exit)
