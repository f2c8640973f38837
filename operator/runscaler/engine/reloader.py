"""Reloading the manifest: read, validate, and apply it, or reject it whole and keep running.

Every trigger (the file watcher, SIGHUP, `POST /-/reload`) ends here. A manifest whose content
hash is unchanged is skipped (unless forced: a forced re-read still re-resolves secret refs).
An invalid one is rejected whole: the fleet keeps running on the last good manifest, and the
located error goes to the log, `/status` and the reload metrics. Secret refs are resolved while
reading, so an unset `env:` ref is located like any other error. A valid one gets the next
generation and its plan is applied. `git pull` rewrites files in place, so a parse error is
retried briefly before it counts, and nothing is read while `.git/index.lock` exists.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from runscaler.engine.controller import Controller
from runscaler.engine.statefile import OwnedScaleSet
from runscaler.engine.status import ReloadStatus
from runscaler.errors import ManifestError, UserError
from runscaler.manifest.loading import LoadedManifest, load_manifest

log = logging.getLogger(__name__)

Result = Literal["applied", "unchanged", "rejected"]


@dataclass(frozen=True)
class ReloadOutcome:
    result: Result
    generation: int
    error: str | None = None


@dataclass(frozen=True)
class ReloadTiming:
    parse_retries: int = 3
    parse_retry_delay: float = 0.15
    lock_wait: float = 10.0  # how long to wait for a running git command to finish
    lock_poll: float = 0.05


def find_git_dir(path: Path) -> Path | None:
    for folder in [path.parent, *path.parent.parents]:
        candidate = folder / ".git"
        if candidate.exists():
            return candidate
    return None


def _work_tree(path: Path) -> Path | None:
    resolved = path.resolve()
    return resolved.parent if find_git_dir(resolved) is not None else None


def _index_lock(path: Path) -> Path | None:
    git_dir = find_git_dir(path.resolve())
    return git_dir / "index.lock" if git_dir is not None and git_dir.is_dir() else None


async def git_revision(path: Path) -> str | None:
    """The commit checked out in the manifest's work tree, if it is in one."""
    work_tree = _work_tree(path)
    if work_tree is None:
        return None
    try:
        process = await asyncio.create_subprocess_exec(
            "git",
            "-C",
            str(work_tree),
            "rev-parse",
            "HEAD",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await process.communicate()
    except OSError:
        return None
    return out.decode().strip() or None if process.returncode == 0 else None


class Reloader:
    def __init__(
        self,
        *,
        path: Path,
        controller: Controller,
        timing: ReloadTiming = ReloadTiming(),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self._controller = controller
        self._timing = timing
        self._clock = clock
        self.generation = 0
        self.revision: str | None = None
        self.status = ReloadStatus(ok=True, at=None, error=None)
        self.counts: dict[str, int] = {"success": 0, "failure": 0}
        self._last_sha: str | None = None
        self._rejected_sha: str | None = None
        self._lock = asyncio.Lock()

    @property
    def manifest(self) -> LoadedManifest | None:
        return self._controller.manifest

    async def start(self, loaded: LoadedManifest, owned: Iterable[OwnedScaleSet] = ()) -> None:
        """The first apply, against what the fleet `owned` when it last ran: an invalid or
        refused manifest is the user's error (exit 1)."""
        self._warn(loaded)
        await self._controller.start(loaded, owned)
        await self._accepted(loaded)

    async def reload(self, *, force: bool = False) -> ReloadOutcome:
        async with self._lock:
            try:
                await self._wait_for_git()
                sha = sha256_of(self.path)
            except OSError as exc:
                return self._rejected(UserError(f"{self.path}: cannot read the manifest: {exc}"))
            if sha == self._last_sha and not force:
                if not self.status.ok:  # put back as it was: nothing to apply, all good again
                    self.status = replace(self.status, ok=True, error=None, at=self._clock())
                return ReloadOutcome("unchanged", self.generation)
            if sha == self._rejected_sha and not force:
                return ReloadOutcome("rejected", self.generation, self.status.error)
            try:
                loaded = await self._read()
                if loaded.sha256 == self._last_sha:
                    # Forced and identical: only re-resolved secrets can differ.
                    await self._controller.apply(loaded)
                    return ReloadOutcome("unchanged", self.generation)
                applied = await self._controller.apply(loaded)
            except UserError as exc:
                self._rejected_sha = sha
                return self._rejected(exc)
            self._rejected_sha = None
            self._warn(loaded)
            await self._accepted(loaded)
            log.info(
                "manifest generation %d applied: %d added, %d changed, %d removed",
                self.generation,
                applied.plan.add,
                applied.plan.change,
                applied.plan.destroy,
            )
            return ReloadOutcome("applied", self.generation)

    async def _read(self) -> LoadedManifest:
        attempts = self._timing.parse_retries
        for attempt in range(attempts):
            try:
                # Secret refs and files are resolved here too: an unset one is located.
                return load_manifest(self.path, check_env=True)
            except ManifestError:
                # `git pull` may be writing the file right now: look again shortly.
                if attempt == attempts - 1:
                    raise
                await asyncio.sleep(self._timing.parse_retry_delay)
                await self._wait_for_git()
        raise AssertionError("unreachable")

    async def _wait_for_git(self) -> None:
        lock = _index_lock(self.path)
        if lock is None:
            return
        deadline = time.monotonic() + self._timing.lock_wait
        # git offers nothing to wait on but the lock file itself.
        while lock.exists() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(self._timing.lock_poll)

    async def _accepted(self, loaded: LoadedManifest) -> None:
        self._last_sha = loaded.sha256
        self.generation += 1
        self.revision = await git_revision(self.path)
        now = self._clock()
        self.status = ReloadStatus(ok=True, at=now, error=None, success_at=now)
        self.counts["success"] += 1

    def _rejected(self, exc: UserError) -> ReloadOutcome:
        if isinstance(exc, ManifestError) and exc.diagnostics:
            lines = [d.located() for d in exc.diagnostics]
            error = lines[0] if len(lines) == 1 else f"{lines[0]} (and {len(lines) - 1} more)"
        else:
            error = str(exc)
        log.error(
            "manifest rejected; the fleet keeps running on generation %d: %s",
            self.generation,
            error,
        )
        for extra in getattr(exc, "diagnostics", ())[1:20]:
            log.error("  %s", extra.located())
        self.status = replace(self.status, ok=False, at=self._clock(), error=error)
        self.counts["failure"] += 1
        return ReloadOutcome("rejected", self.generation, error)

    @staticmethod
    def _warn(loaded: LoadedManifest) -> None:
        for warning in loaded.warnings:
            log.warning("%s", warning.located())


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
