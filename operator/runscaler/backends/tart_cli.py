"""The `tart` CLI as async calls: the one place that runs it.

Every call gets `TART_HOME` (when the manifest names one), a timeout, and a result that keeps
tart's own words, so an error a user sees quotes tart. A call that times out or is cancelled
kills its `tart` process and reaps it before the exception leaves, so no `tart` child outlives
the call that made it. Secrets go over stdin (`input`), never in `args`: argv is public (`ps`).
The exception is `tart run`, the long-lived process that *is* a running VM: `spawn_run` starts
it in its own session so the VM outlives a restart of the operator (the next one adopts it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runscaler.backends.base import BackendError, BackendUnavailable

# tart's exit codes that mean "already in the state you want" (Sources/tart/Commands/*.swift).
EXIT_NOT_RUNNING = 2  # stop/exec: VM "x" is not running
EXIT_DOES_NOT_EXIST = 2  # delete/set: the specified VM "x" does not exist
LIMIT_MESSAGE = "exceeds the system limit"
NO_TART = "the tart backend needs the `tart` CLI on this host (macOS on Apple Silicon)"


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.code == 0

    @property
    def message(self) -> str:
        """tart's last error line, without its `Error: ` prefix."""
        lines = [line.strip() for line in self.stderr.splitlines() if line.strip()]
        if not lines:
            return f"exit status {self.code}"
        for line in lines:
            if line.startswith("Error:"):
                return line.removeprefix("Error:").strip()
        return lines[-1]


def default_home() -> Path:
    env = os.environ.get("TART_HOME")
    return Path(env).expanduser() if env else Path.home() / ".tart"


class TartCLI:
    """Runs `tart` for one TART_HOME (`home=None`: tart's own default)."""

    def __init__(self, home: Path | None = None, executable: str = "tart") -> None:
        self.home_setting = home
        self.home = home if home is not None else default_home()
        self.executable = executable

    def available(self) -> bool:
        return shutil.which(self.executable) is not None

    def _env(self) -> Mapping[str, str]:
        env = dict(os.environ)
        if self.home_setting is not None:
            env["TART_HOME"] = str(self.home_setting)
        return env

    def vm_dir(self, name: str) -> Path:
        return self.home / "vms" / name

    async def run(self, *args: str, timeout: float, input: bytes | None = None) -> Result:  # noqa: ASYNC109
        """`tart ARGS`; its exit status, output and errors (a non-zero exit is not raised)."""
        try:
            process = await asyncio.create_subprocess_exec(
                self.executable,
                *args,
                stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self._env(),
            )
        except FileNotFoundError as exc:
            raise BackendUnavailable(NO_TART) from exc
        except OSError as exc:
            raise BackendError(f"cannot run tart {args[0]}: {exc.strerror}") from exc
        try:
            out, err = await asyncio.wait_for(process.communicate(input), timeout)
        except BaseException as exc:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await asyncio.shield(process.wait())
            if isinstance(exc, TimeoutError):
                raise BackendError(f"tart {args[0]} did not finish within {timeout:.0f}s") from exc
            raise
        assert process.returncode is not None
        return Result(
            process.returncode, out.decode(errors="replace"), err.decode(errors="replace")
        )

    async def check(self, *args: str, timeout: float, what: str) -> Result:  # noqa: ASYNC109
        """Like `run`, but a non-zero exit raises `BackendError(what: tart's message)`."""
        result = await self.run(*args, timeout=timeout)
        if not result.ok:
            raise BackendError(f"{what}: {result.message}")
        return result

    async def list(self, timeout: float = 30.0) -> list[dict[str, Any]]:  # noqa: ASYNC109
        """`tart list --format json`: [{Source, Name, Disk, Size, Accessed, Running, State}]."""
        result = await self.check("list", "--format", "json", timeout=timeout, what="tart list")
        try:
            items = json.loads(result.stdout or "[]")
        except ValueError as exc:
            raise BackendError(f"tart list printed something that is not JSON: {exc}") from exc
        return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []

    def spawn_run(self, name: str, log_path: Path) -> subprocess.Popen[bytes]:
        """Start `tart run NAME --no-graphics`, its output in `log_path`; the VM runs while it
        does. A plain `Popen` in its own session, not an asyncio subprocess: asyncio kills a
        child whose transport is closed, and a VM must outlive the operator to be adopted."""
        try:
            with open(log_path, "ab") as log:
                return subprocess.Popen(
                    [self.executable, "run", name, "--no-graphics"],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    env=self._env(),
                    start_new_session=True,
                )
        except FileNotFoundError as exc:
            raise BackendUnavailable(NO_TART) from exc
        except OSError as exc:
            raise BackendError(f"cannot run tart run: {exc.strerror}") from exc
