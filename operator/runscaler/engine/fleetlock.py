"""One operator per fleet and state directory: an advisory lock beside the state file.

Two operators of the same fleet on one host would fight over the same containers and the same
remembered sessions. The running operator holds an exclusive `flock` on
`<state dir>/<fleet>.lock` (with its PID inside, for messages); a second one refuses to start,
and `runscaler doctor --fix` refuses to clean up while the lock is held. The kernel drops the
lock when the process dies, however it dies, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from runscaler.errors import UserError


def lock_path(state_dir: Path, fleet: str) -> Path:
    return state_dir / f"{fleet}.lock"


class FleetLock:
    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, state_dir: Path, fleet: str) -> FleetLock:
        path = lock_path(state_dir, fleet)
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UserError(
                f"cannot use the state directory {state_dir}: {exc.strerror}; pass --state-dir DIR"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            who = f" (pid {pid})" if pid else ""
            raise UserError(
                f"another runscaler operator of fleet {fleet!r} is running{who} with the state "
                f"directory {state_dir}; stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return cls(path, fd)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def holder(state_dir: Path, fleet: str) -> int | None:
    """The PID of the operator holding the fleet's lock, or None when nobody does."""
    try:
        fd = os.open(lock_path(state_dir, fleet), os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd) or -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
