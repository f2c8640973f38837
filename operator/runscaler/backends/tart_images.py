"""VM images and disk hygiene on one TART_HOME: present-or-pull, refresh, cache pruning.

An image is present when `tart list --format json` has an entry whose `Name` is exactly it (the
Go tool matched a substring of the whole output, so `macos:15` was "present" when only
`macos:15-xcode` was). A missing image is pulled once however many starts want it, with tart's
progress lines in the log. A mutable tag (not pinned with `@sha256:`) is pulled again every
`imageRefresh`, so `:latest` does not stay a year old. The cache is pruned with
`tart prune --entries caches` on `cacheCleanupInterval`, never `--entries vms`: VMs are the
user's or ours, and ours are removed one by one.
"""

from __future__ import annotations

import asyncio
import logging
import time

from runscaler.backends.base import BackendError
from runscaler.backends.tart_cli import TartCLI

log = logging.getLogger(__name__)

PULL_TIMEOUT = 3600.0
PRUNE_TIMEOUT = 1800.0


def mutable(image: str) -> bool:
    return "@sha256:" not in image


class ImageStore:
    def __init__(self, cli: TartCLI) -> None:
        self.cli = cli
        self._pulls: dict[str, asyncio.Task[None]] = {}
        self.pulled_at: dict[str, float] = {}
        self.unavailable: dict[str, str] = {}

    async def present(self, image: str) -> bool:
        return any(item.get("Name") == image for item in await self.cli.list())

    async def ensure(self, image: str) -> None:
        """Pull `image` unless it is present (a failing `list` pulls anyway)."""
        if image in self.pulled_at:
            return
        try:
            if await self.present(image):
                self.pulled_at[image] = time.monotonic()
                return
        except BackendError as exc:
            log.warning("cannot list Tart images (%s); pulling %s anyway", exc, image)
        await self.pull(image)

    async def pull(self, image: str) -> None:
        """One `tart pull` per image at a time; concurrent callers share it."""
        task = self._pulls.get(image)
        if task is None:
            task = asyncio.create_task(self._pull(image), name=f"tart-pull:{image}")
            self._pulls[image] = task
            task.add_done_callback(lambda _: self._pulls.pop(image, None))
        await asyncio.shield(task)

    async def _pull(self, image: str) -> None:
        log.info("pulling Tart image %s", image)
        result = await self.cli.run("pull", image, timeout=PULL_TIMEOUT)
        for line in result.stdout.splitlines()[-3:]:
            log.info("tart pull %s: %s", image, line.strip())
        if not result.ok:
            self.unavailable[image] = result.message
            raise BackendError(f"image {image} is not available: tart pull: {result.message}")
        self.unavailable.pop(image, None)
        self.pulled_at[image] = time.monotonic()

    def due_for_refresh(self, image: str, interval: float) -> bool:
        pulled = self.pulled_at.get(image)
        return (
            interval > 0
            and mutable(image)
            and pulled is not None
            and time.monotonic() - pulled >= interval
        )


def prune_args(max_age: float, budget_gb: int) -> list[str] | None:
    """The `tart prune` arguments, or None when both criteria are off (tart needs one)."""
    args = ["prune", "--entries", "caches"]
    if max_age > 0:
        args += ["--older-than", str(max(1, int(max_age // 86400)))]
    if budget_gb > 0:
        args += ["--space-budget", str(budget_gb)]
    return args if len(args) > 3 else None


async def prune_caches(cli: TartCLI, *, max_age: float, budget_gb: int) -> bool:
    args = prune_args(max_age, budget_gb)
    if args is None:
        return False
    result = await cli.run(*args, timeout=PRUNE_TIMEOUT)
    if not result.ok:
        log.warning("tart prune on %s failed: %s", cli.home, result.message)
        return False
    log.info("pruned the Tart caches of %s (%s)", cli.home, " ".join(args[3:]))
    return True
