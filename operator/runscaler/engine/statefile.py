"""What one operator remembers across restarts: what it owns, and the sessions it opened.

A small JSON file per fleet in the state directory records, per scale set identity key, the
GitHub scale set id and the id of the message session this operator opened. After a crash the
next start deletes exactly those sessions (never one another operator opened) so it takes over
at once instead of waiting for GitHub to expire them, and it finds its scale set by id, so a
changed `runnerGroup` moves the scale set instead of creating a second one. Losing the file
costs only that speed: everything else is re-derived.

It is also the fleet's durable intent: every scale set the last applied manifest named is
recorded as owned (its merged spec, so it can be drained without the manifest that named it),
and a removed one is marked `deleting` with its drain deadline before its drain starts. The
next start plans against what was owned, so a scale set dropped while the operator was down,
or a drain cut short by a crash, is drained (to the original deadline) and deleted.

Intent is written before `own`, `mark_deleting` or `forget` returns. Session memos (`update`),
which every scale set writes as its session opens and closes, are written once per turn of the
event loop however many changed in it: 100 scale sets stopping at once write the file a few
times, not 100 times (each write is the whole file). A crash in that turn loses only a memo.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScaleSetMemo:
    scale_set_id: int | None = None
    session_id: str | None = None


@dataclass(frozen=True)
class OwnedScaleSet:
    """A scale set this fleet owns: the spec it was applied with, and whether it is going."""

    key: str
    spec: dict[str, Any]
    base_dir: Path
    scale_set_id: int | None
    deleting_deadline: float | None  # wall-clock time the drain ends, once it is deleting


class StateFile:
    """`<state dir>/<fleet>.json`; every write is atomic (temp file + fsync + rename)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, Any]] = self._read()
        self._dirty = False  # memos changed and not yet written
        self._flush_loop: asyncio.AbstractEventLoop | None = None  # where a write is due

    @classmethod
    def for_fleet(cls, state_dir: Path, fleet: str) -> StateFile:
        return cls(state_dir / f"{fleet}.json")

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable state file %s: %s", self.path, exc)
            return {}
        scale_sets = raw.get("scaleSets") if isinstance(raw, dict) else None
        if not isinstance(scale_sets, dict):
            return {}
        return {k: v for k, v in scale_sets.items() if isinstance(v, dict)}

    def get(self, key: str) -> ScaleSetMemo:
        with self._lock:
            entry = self._entries.get(key, {})
        scale_set_id = entry.get("scaleSetId")
        session_id = entry.get("sessionId")
        return ScaleSetMemo(
            scale_set_id=scale_set_id if isinstance(scale_set_id, int) else None,
            session_id=session_id if isinstance(session_id, str) else None,
        )

    def update(self, key: str, *, scale_set_id: int | None, session_id: str | None) -> None:
        """Remember a scale set's id and session: written by the end of this loop turn (at
        once outside an event loop)."""
        with self._lock:
            entry = self._entries.setdefault(key, {})
            entry.update(scaleSetId=scale_set_id, sessionId=session_id)
            self._dirty = True
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._write()
                return
            if self._flush_loop is not loop:
                self._flush_loop = loop
                loop.call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        with self._lock:
            self._flush_loop = None
            if self._dirty:
                self._write()

    def flush(self) -> None:
        """Write the memos not written yet (before the process exits)."""
        with self._lock:
            if self._dirty:
                self._write()

    def own(self, key: str, *, spec: dict[str, Any], base_dir: Path) -> None:
        """Record that this fleet owns the scale set (no longer deleting, if it was)."""
        with self._lock:
            entry = self._entries.setdefault(key, {})
            entry.update(owned=True, spec=spec, baseDir=str(base_dir))
            entry.pop("deleting", None)
            self._write()

    def mark_deleting(self, key: str, *, deadline: float) -> None:
        """Before a removed scale set starts draining: it goes, its drain ends at `deadline`."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or not entry.get("owned"):
                return
            entry["deleting"] = {"deadline": deadline}
            self._write()

    def owned(self) -> list[OwnedScaleSet]:
        with self._lock:
            entries = {k: dict(v) for k, v in self._entries.items()}
        found = []
        for key, entry in entries.items():
            spec, base_dir = entry.get("spec"), entry.get("baseDir")
            if not entry.get("owned") or not isinstance(spec, dict):
                continue
            deleting = entry.get("deleting")
            deadline = deleting.get("deadline") if isinstance(deleting, dict) else None
            scale_set_id = entry.get("scaleSetId")
            found.append(
                OwnedScaleSet(
                    key=key,
                    spec=spec,
                    base_dir=Path(base_dir) if isinstance(base_dir, str) else self.path.parent,
                    scale_set_id=scale_set_id if isinstance(scale_set_id, int) else None,
                    deleting_deadline=float(deadline)
                    if isinstance(deadline, (int, float))
                    else None,
                )
            )
        return found

    def forget(self, key: str) -> None:
        with self._lock:
            if self._entries.pop(key, None) is not None:
                self._write()

    def _write(self) -> None:
        # One line per scale set, each by the C encoder (`indent` would use the pure Python
        # one, ten times slower): the file stays readable and a write of 500 entries is cheap.
        lines = ",\n".join(
            f"  {json.dumps(key)}: {json.dumps(entry, sort_keys=True)}"
            for key, entry in sorted(self._entries.items())
        )
        body = f'{{"version": 1, "scaleSets": {{\n{lines}\n}}}}'
        self._dirty = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".state-", suffix=".json")
            with os.fdopen(fd, "w") as handle:
                handle.write(body + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
            _fsync_dir(self.path.parent)
        except OSError as exc:
            # Losing the memo costs only takeover speed: never fail the scale set for it.
            log.warning("cannot write state file %s: %s", self.path, exc)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (a crash right after it must not undo it)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
