"""Image pull progress for people: a live display on a terminal, sparse log lines elsewhere.

The Docker backend reports pulls as `PullEvent`s per layer; a pull of a multi-gigabyte runner
image can take minutes, so the operator shows it. On a terminal, `RichPullProgress` draws one
bar per image (bytes over all layers); under a service manager or CI, `LogPullProgress` writes a
line at most every few seconds per image, plus one when the pull ends, so logs stay readable.
`pull_progress()` picks the right one for stderr.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from runscaler.backends.docker_pull import PullEvent, PullProgress

if TYPE_CHECKING:
    # rich is imported only where bars are drawn: an operator under a service manager never
    # draws one, and rich costs it several MiB.
    from rich.console import Console
    from rich.progress import Progress, TaskID

log = logging.getLogger("runscaler.pulls")

LOG_INTERVAL = 5.0
_DONE = frozenset({"Download complete", "Extracting", "Pull complete", "Already exists"})


@dataclass
class _Layer:
    total: int | None = None
    current: int = 0
    done: bool = False
    finished: bool = False  # extracted (or already there): nothing more will happen


@dataclass
class PullState:
    """What is known about one image's pull, summed over its layers."""

    started: float
    layers: dict[str, _Layer] = field(default_factory=dict)

    def update(self, event: PullEvent) -> None:
        if event.layer is None:
            return
        layer = self.layers.setdefault(event.layer, _Layer())
        if event.total:
            layer.total = event.total
        if event.status == "Downloading" and event.current is not None:
            layer.current = event.current
        if event.status in _DONE:
            layer.done = True
        if event.status in ("Pull complete", "Already exists"):
            layer.finished = True

    @property
    def total_bytes(self) -> int:
        return sum(layer.total or 0 for layer in self.layers.values())

    @property
    def done_bytes(self) -> int:
        return sum(
            (layer.total or 0) if layer.done else min(layer.current, layer.total or layer.current)
            for layer in self.layers.values()
        )

    @property
    def finished_layers(self) -> int:
        return sum(1 for layer in self.layers.values() if layer.finished)


def _mib(size: int) -> str:
    return f"{size / 1024**2:.1f} MiB"


class LogPullProgress:
    """Pull progress as log lines: at most one every `interval` seconds per image, plus done."""

    def __init__(
        self,
        *,
        logger: logging.Logger | None = None,
        interval: float = LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger or log
        self._interval = interval
        self._clock = clock
        self._pulls: dict[str, PullState] = {}
        self._last: dict[str, float] = {}

    def pull_started(self, image: str) -> None:
        now = self._clock()
        self._pulls[image] = PullState(started=now)
        self._last[image] = now
        self._log.info("pulling %s", image)

    def pull_event(self, event: PullEvent) -> None:
        state = self._pulls.get(event.image)
        if state is None:
            return
        state.update(event)
        now = self._clock()
        if now - self._last[event.image] >= self._interval:
            self._last[event.image] = now
            self._log.info(
                "pulling %s: %d/%d layers, %s of %s",
                event.image,
                state.finished_layers,
                len(state.layers),
                _mib(state.done_bytes),
                _mib(state.total_bytes),
            )

    def pull_finished(self, image: str, *, error: str | None = None) -> None:
        state = self._pulls.pop(image, None)
        self._last.pop(image, None)
        took = self._clock() - state.started if state else 0.0
        if error is not None:
            self._log.warning("pull of %s failed after %.1fs: %s", image, took, error)
            return
        layers = len(state.layers) if state else 0
        size = _mib(state.total_bytes) if state else "?"
        self._log.info("pulled %s in %.1fs (%d layers, %s)", image, took, layers, size)


class RichPullProgress:
    """Pull progress as live bars on a terminal, one per image being pulled."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._pulls: dict[str, PullState] = {}

    def pull_started(self, image: str) -> None:
        from rich.markup import escape
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        if self._progress is None:
            self._progress = Progress(
                TextColumn("pulling {task.description}"),
                BarColumn(),
                DownloadColumn(binary_units=True),
                TextColumn("{task.fields[layers]}"),
                TimeElapsedColumn(),
                console=self._console,
                transient=False,
            )
            self._progress.start()
        self._pulls[image] = PullState(started=time.monotonic())
        self._tasks[image] = self._progress.add_task(escape(image), total=None, layers="")

    def pull_event(self, event: PullEvent) -> None:
        state = self._pulls.get(event.image)
        if state is None or self._progress is None:
            return
        state.update(event)
        self._progress.update(
            self._tasks[event.image],
            total=state.total_bytes or None,
            completed=state.done_bytes,
            layers=f"{state.finished_layers}/{len(state.layers)} layers",
        )

    def pull_finished(self, image: str, *, error: str | None = None) -> None:
        task = self._tasks.pop(image, None)
        state = self._pulls.pop(image, None)
        if self._progress is None or task is None:
            return
        if error is None:
            total = state.total_bytes if state else 0
            self._progress.update(task, total=total or 1, completed=total or 1, layers="done")
        else:
            from rich.markup import escape

            self._progress.update(task, layers=f"[red]failed: {escape(error)}[/red]")
        self._progress.stop_task(task)
        if not self._tasks:
            self._progress.stop()
            self._progress = None


def pull_progress(stream: TextIO | None = None) -> PullProgress:
    """A live display when `stream` (stderr by default) is a terminal, log lines otherwise."""
    stream = stream or sys.stderr
    if stream.isatty():
        from rich.console import Console

        return RichPullProgress(Console(file=stream))
    return LogPullProgress()
