"""What one operator remembers across restarts: scale set ids and the sessions it opened.

A small JSON file per fleet in the state directory records, per scale set identity key, the
GitHub scale set id and the id of the message session this operator opened. After a crash the
next start deletes exactly those sessions (never one another operator opened) so it takes over
at once instead of waiting for GitHub to expire them, and it finds its scale set by id, so a
changed `runnerGroup` moves the scale set instead of creating a second one. Losing the file
costs only that speed: everything else is re-derived.
"""

from __future__ import annotations

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


class StateFile:
    """`<state dir>/<fleet>.json`; every write is atomic (temp file + rename)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, Any]] = self._read()

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
        with self._lock:
            self._entries[key] = {"scaleSetId": scale_set_id, "sessionId": session_id}
            self._write()

    def forget(self, key: str) -> None:
        with self._lock:
            if self._entries.pop(key, None) is not None:
                self._write()

    def _write(self) -> None:
        body = json.dumps({"version": 1, "scaleSets": self._entries}, indent=2, sort_keys=True)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".state-", suffix=".json")
            with os.fdopen(fd, "w") as handle:
                handle.write(body + "\n")
            os.replace(tmp, self.path)
        except OSError as exc:
            # Losing the memo costs only takeover speed: never fail the scale set for it.
            log.warning("cannot write state file %s: %s", self.path, exc)
