"""The real `runscaler run` process, a fleet manifest in real git, and the engine, for e2e tests.

- `OperatorProcess`: `python -m runscaler run ...` as a subprocess, its output in a file. It
  learns its HTTP address from the operator's own "serving URL" line (the operator binds
  `127.0.0.1:0`), and offers what a user has: `/status`, `/metrics`, `POST /-/reload`,
  signals, the exit code and the log text. `stop()` ends it by PID, always.
- `GitRepos`: a bare repository, the clone the operator watches, and a second clone to push
  from, so a change reaches the operator by `git commit` + `git push` + `git pull`.
- `manifest()`: a fleet manifest (YAML, one key per line, so errors have real lines) of docker
  scale sets on the simulator, with the stand-in runner image on the host network.
- `containers()`: the fleet's containers as the docker CLI sees them (independent of the code
  under test).

Everything blocking runs in a thread: the simulator serves from the test's event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from runscaler.simulator.runner import RUNNER_IMAGE
from tests.waiting import eventually

TOKEN_ENV = "RUNSCALER_E2E_TOKEN"
DRAIN_TIMEOUT = "20s"
SERVING = re.compile(r"; serving (http://\S+)")


# -- manifests -----------------------------------------------------------------------------------


def _value(value: Any) -> str:
    """A YAML value on one line (JSON is YAML, and keeps nested values on their key's line)."""
    return json.dumps(value)


def manifest(
    fleet: str,
    *,
    url: str,
    scale_sets: Sequence[Mapping[str, Any]],
    auth: Mapping[str, Any] | None = None,
    docker: Mapping[str, Any] | None = None,
) -> str:
    """A fleet of docker scale sets on the simulator at `url`, one manifest key per line."""
    template = {"image": RUNNER_IMAGE, "pull": "never", "network": "host", **(docker or {})}
    lines = [
        "apiVersion: runscaler/v1",
        "kind: Fleet",
        "metadata:",
        f"  name: {fleet}",
        "defaults:",
        "  github:",
        f"    url: {_value(url)}",
        f"    auth: {_value(dict(auth or {'token': f'env:{TOKEN_ENV}'}))}",
        f"  drainTimeout: {DRAIN_TIMEOUT}",
        f"  docker: {_value(template)}",
    ]
    if not scale_sets:
        lines.append("scaleSets: []")
    else:
        lines.append("scaleSets:")
        for scale_set in scale_sets:
            first = True
            for key, value in scale_set.items():
                lines.append(f"{'  - ' if first else '    '}{key}: {_value(value)}")
                first = False
    return "\n".join(lines) + "\n"


# -- processes -----------------------------------------------------------------------------------


async def run(*cmd: str, cwd: Path | None = None, check: bool = True) -> str:
    """Run a command in a thread (the event loop keeps serving); its stdout."""
    done = await asyncio.to_thread(
        subprocess.run, cmd, cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr}")
    return done.stdout


def runscaler_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "runscaler", *args]


class OperatorProcess:
    """One `runscaler run` process; its output (stdout and stderr) goes to `log_path`."""

    def __init__(self, process: subprocess.Popen[bytes], log_path: Path) -> None:
        self.process = process
        self.log_path = log_path
        self.url: str | None = None
        self.exit_seen_at: float | None = None

    @classmethod
    def start(
        cls, args: Sequence[str], *, log_path: Path, env: Mapping[str, str]
    ) -> OperatorProcess:
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                runscaler_command("run", *args),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **env},
            )
        return cls(process, log_path)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_lines(self) -> list[str]:
        return self.log_text().splitlines()

    def _check_alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(
                f"the operator exited with {self.process.returncode}:\n{self.log_text()}"
            )

    async def wait_ready(self, timeout: float = 30.0) -> str:  # noqa: ASYNC109
        """Wait for the operator to serve and answer `/readyz` 200; its base URL."""

        def serving() -> str | None:
            self._check_alive()
            found = SERVING.search(self.log_text())
            return found.group(1) if found else None

        self.url = await eventually(serving, timeout=timeout, message="the operator to serve")

        async def ready() -> bool:
            self._check_alive()
            async with httpx.AsyncClient() as http:
                return (await http.get(f"{self.url}/readyz")).status_code == 200

        await eventually(ready, timeout=timeout, message="/readyz 200")
        return self.url

    async def get(self, path: str) -> httpx.Response:
        assert self.url is not None, "wait_ready() first"
        async with httpx.AsyncClient(timeout=10) as http:
            return await http.get(f"{self.url}{path}")

    async def status(self) -> dict[str, Any]:
        response = await self.get("/status")
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def scale_set(self, name: str) -> dict[str, Any]:
        """One scale set's entry in `/status`."""
        for entry in (await self.status())["scaleSets"]:
            if entry["name"] == name:
                return dict(entry)
        raise AssertionError(f"no scale set {name!r} in /status")

    async def metrics(self) -> str:
        response = await self.get("/metrics")
        assert response.status_code == 200, response.text
        return response.text

    async def post_reload(self) -> httpx.Response:
        assert self.url is not None, "wait_ready() first"
        async with httpx.AsyncClient(timeout=30) as http:
            return await http.post(f"{self.url}/-/reload")

    def signal(self, sig: int) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)

    async def wait(self, timeout: float = 30.0) -> int:  # noqa: ASYNC109
        """Wait for the process to exit; its exit code."""
        code = await eventually(
            lambda: self.process.poll() is not None,
            timeout=timeout,
            interval=0.02,
            message=f"the operator (pid {self.pid}) to exit",
        )
        del code
        self.exit_seen_at = time.monotonic()
        return int(self.process.returncode)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a deadline; by PID, and reaped."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=25)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def metric_values(text: str, metric: str, /, **labels: str) -> list[float]:
    """The values of every series of `metric` that has these labels (Prometheus text)."""
    found = []
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(metric):
            continue
        series, _, value = line.rpartition(" ")
        if series.split("{", 1)[0] != metric:
            continue
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            found.append(float(value))
    return found


def metric_value(text: str, metric: str, /, **labels: str) -> float | None:
    """The sum of the series of `metric` that have these labels, or None when there are none."""
    values = metric_values(text, metric, **labels)
    return sum(values) if values else None


# -- git -----------------------------------------------------------------------------------------


_GIT_ENV = {
    "GIT_AUTHOR_NAME": "e2e",
    "GIT_AUTHOR_EMAIL": "e2e@localhost",
    "GIT_COMMITTER_NAME": "e2e",
    "GIT_COMMITTER_EMAIL": "e2e@localhost",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_TERMINAL_PROMPT": "0",
}


async def git(*args: str, cwd: Path) -> str:
    done = await asyncio.to_thread(
        subprocess.run,
        ["git", "-c", "init.defaultBranch=main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **_GIT_ENV},
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return done.stdout


@dataclass
class GitRepos:
    """`origin.git` (bare), `watched/` (the operator's clone) and `pusher/` (a teammate's)."""

    root: Path
    file_name: str = "fleet.yaml"

    @property
    def bare(self) -> Path:
        return self.root / "origin.git"

    @property
    def watched(self) -> Path:
        return self.root / "watched"

    @property
    def pusher(self) -> Path:
        return self.root / "pusher"

    @property
    def manifest(self) -> Path:
        """The file the operator runs from."""
        return self.watched / self.file_name

    async def create(self, first: str) -> None:
        """Initialise the repositories with `first` as the manifest's first commit."""
        await git("init", "--bare", "-q", str(self.bare), cwd=self.root)
        await git("clone", "-q", str(self.bare), str(self.pusher), cwd=self.root)
        await self.push(first, "first fleet")
        await git("clone", "-q", str(self.bare), str(self.watched), cwd=self.root)

    async def push(self, text: str, message: str) -> str:
        """Commit `text` as the manifest in the pusher's clone and push it; the commit id."""
        (self.pusher / self.file_name).write_text(text)
        await git("add", self.file_name, cwd=self.pusher)
        await git("commit", "-q", "-m", message, cwd=self.pusher)
        await git("push", "-q", "origin", "HEAD:main", cwd=self.pusher)
        return (await git("rev-parse", "HEAD", cwd=self.pusher)).strip()

    async def pull(self) -> None:
        """`git pull` in the watched clone, as a deploy job or a cron would."""
        await git("pull", "-q", "--ff-only", cwd=self.watched)


# -- the engine ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Container:
    id: str
    name: str
    state: str  # created | running | exited | ...
    scale_set: str
    runner: str


async def containers(fleet: str) -> list[Container]:
    """Every container labelled with `fleet`, as `docker ps -a` lists it."""
    fmt = (
        '{{.ID}}\t{{.Names}}\t{{.State}}\t{{.Label "dev.runscaler.scale-set"}}'
        '\t{{.Label "dev.runscaler.runner"}}'
    )
    out = await run(
        "docker", "ps", "-a", "--no-trunc", "--filter", f"label=dev.runscaler.fleet={fleet}",
        "--format", fmt,
    )  # fmt: skip
    found = []
    for line in out.splitlines():
        cid, name, state, scale_set, runner = line.split("\t")
        found.append(Container(cid, name, state, scale_set, runner))
    return found


async def running(fleet: str, scale_set: str | None = None) -> list[Container]:
    return [
        c
        for c in await containers(fleet)
        if c.state == "running" and (scale_set is None or c.scale_set == scale_set)
    ]


async def container_env(container_id: str) -> dict[str, str]:
    """A container's environment; empty when it is gone (runners come and go)."""
    out = await run(
        "docker", "inspect", "--format", "{{json .Config.Env}}", container_id, check=False
    )  # fmt: skip
    pairs = json.loads(out) if out.strip() else []
    return dict(p.split("=", 1) for p in pairs if "=" in p)
