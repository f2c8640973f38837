"""The manifest watcher: notices when the manifest may have changed and asks for a reload.

It watches directories, not the file: editors and `sed -i` replace files by rename, git
rewrites them in place, and Kubernetes swaps a `..data` symlink, and a watch on the file itself
goes silent after the first of those. So it watches the manifest's directory (and, when the
manifest is a symlink, its target's directory), waits for changes to settle, and lets the
reloader decide by content hash whether anything changed. A periodic re-read covers file
systems where change events never arrive (NFS, some container mounts).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from watchfiles import awatch

log = logging.getLogger(__name__)


def watched_dirs(path: Path) -> tuple[Path, ...]:
    """The manifest's own directory, plus its symlink target's when that differs."""
    link_dir = Path(os.path.abspath(path)).parent
    target_dir = path.resolve().parent
    return (link_dir,) if target_dir == link_dir else (link_dir, target_dir)


async def watch_manifest(
    path: Path,
    reload: Callable[[], Awaitable[object]],
    *,
    settle_ms: int = 50,
    resync_interval: float = 60.0,
    stop: asyncio.Event | None = None,
) -> None:
    """Call `reload()` after every settled batch of changes, and every `resync_interval`."""
    stop = stop or asyncio.Event()
    while not stop.is_set():
        dirs = watched_dirs(path)
        if not all(d.is_dir() for d in dirs):
            log.warning("cannot watch %s: a directory is missing; looking again", path)
            await reload()
            await asyncio.sleep(min(resync_interval, 5.0))
            continue
        log.debug("watching %s", ", ".join(map(str, dirs)))
        async for _changes in awatch(
            *dirs,
            watch_filter=None,
            recursive=False,
            step=settle_ms,
            debounce=1600,
            rust_timeout=int(resync_interval * 1000),
            yield_on_timeout=True,
            stop_event=stop,
        ):
            await reload()
            if watched_dirs(path) != dirs:
                break  # the symlink now points elsewhere: watch the new place
