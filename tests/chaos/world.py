"""The chaos world: the simulator, the dedicated engine, the fleet's git repos and the operator.

`World` performs a scenario's events as a user, GitHub or an outage would: manifest commits
reach the operator by `git pull` in its clone; the operator is killed (`kill -9`) or stopped
(SIGTERM) by PID and started again on the same state directory; the engine is restarted; the
simulator's control API schedules faults. Whatever the operator does in reply is only observed.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from runscaler.simulator.server import Simulator
from tests.chaos.engine import ChaosEngine
from tests.chaos.observe import Ledger, Sampler
from tests.chaos.scenario import Event, Shape
from tests.e2e.operatorkit import SERVING, TOKEN_ENV, GitRepos, OperatorProcess, manifest

TIMING_SCALE = "0.1"
OWNER = "chaos-host"


def break_manifest(text: str, how: str) -> str:
    """A manifest the operator must reject whole (and keep running the last good one)."""
    lines = text.splitlines()
    if how == "yaml":
        at = max(i for i, line in enumerate(lines) if "maxRunners:" in line)
        lines[at] = lines[at].replace("maxRunners: ", "maxRunners: [")
    elif how == "min-above-max":
        at = next(i for i, line in enumerate(lines) if "minRunners:" in line)
        lines[at] = lines[at].split(":")[0] + ": 9"
    else:
        at = next(i for i, line in enumerate(lines) if "maxRunners:" in line)
        lines.insert(at + 1, "    chaosUnknownKey: 1")
    return "\n".join(lines) + "\n"


@dataclass
class World:
    sim: Simulator
    engine: ChaosEngine
    root: Path
    fleet: str = field(default_factory=lambda: f"chaos-{secrets.token_hex(3)}")
    token: str = field(default_factory=lambda: f"ghp_chaos{secrets.token_hex(16)}")
    operators: list[OperatorProcess] = field(default_factory=list)
    shapes: dict[str, Shape] = field(default_factory=dict)
    ledger: Ledger = field(default_factory=Ledger)
    sampler: Sampler | None = None
    findings: list[str] = field(default_factory=list)  # harness-level problems (crashes, hangs)
    notes: list[str] = field(default_factory=list)  # worth a look, not a loss
    _signalled: set[int] = field(default_factory=set)
    _repos: GitRepos | None = None
    _pushed: str = ""
    _invalid: bool = False  # the manifest in the operator's clone is invalid right now
    _invalid_seen: bool = False  # ...or was, at some moment since the operator started

    @property
    def repos(self) -> GitRepos:
        assert self._repos is not None, "create() first"
        return self._repos

    @property
    def operator(self) -> OperatorProcess:
        return self.operators[-1]

    # -- the fleet's manifest -------------------------------------------------------------------

    def manifest_text(self, shapes: list[dict[str, Any]]) -> str:
        return manifest(
            self.fleet,
            url=self.sim.config_url("acme"),
            scale_sets=shapes,
            docker={"host": self.engine.host},
        )

    async def create(self, base: tuple[Shape, ...]) -> None:
        self.shapes = {s.name: s for s in base}
        self._repos = GitRepos(self.root / "git")
        self.repos.root.mkdir(parents=True)
        self._pushed = self.manifest_text([s.manifest_entry() for s in base])
        await self.repos.create(self._pushed)

    async def push(self, text: str, message: str) -> None:
        """Commit and push `text` (unless it is what the manifest already says), then pull."""
        if text != self._pushed:
            await self.repos.push(text, message)
            self._pushed = text
        await self.repos.pull()

    async def commit(self, entries: list[dict[str, Any]], message: str) -> None:
        """Commit a valid manifest, pull it, and note the drains it begins or ends."""
        await self.push(self.manifest_text(entries), message)
        self._invalid = False
        now = time.time()
        after = {e["name"]: _shape(e) for e in entries}
        for name in set(self.shapes) | set(after):
            before, new = self.shapes.get(name), after.get(name)
            was_live = before is not None and not before.suspended
            is_live = new is not None and not new.suspended
            if was_live and not is_live:
                assert before is not None
                timeout = new.drain_timeout if new is not None else before.drain_timeout
                self.ledger.open_drain(name, at=now, timeout=timeout)
            elif is_live and not was_live:
                self.ledger.close_drain(name, at=now)
        self.shapes = after

    async def commit_invalid(self, how: str) -> None:
        good = self.manifest_text([s.manifest_entry() for s in self.shapes.values()])
        await self.push(break_manifest(good, how), f"an invalid manifest ({how})")
        self._invalid = self._invalid_seen = True

    # -- the operator ---------------------------------------------------------------------------

    def start_operator(self) -> OperatorProcess:
        logs = self.root / "logs"
        logs.mkdir(exist_ok=True)
        process = OperatorProcess.start(
            [
                str(self.repos.manifest),
                "--listen", "127.0.0.1:0",
                "--state-dir", str(self.root / "state"),
                "--timing-scale", TIMING_SCALE,
                "--log-level", "info",
            ],
            log_path=logs / f"operator-{len(self.operators) + 1}.log",
            env={TOKEN_ENV: self.token, "RUNSCALER_OWNER": OWNER, "DOCKER_HOST": self.engine.host},
        )  # fmt: skip
        self.operators.append(process)
        self._invalid_seen = self._invalid
        if self.sampler is not None:
            self.sampler.pids.append(process.pid)
        return process

    def check_operator(self) -> None:
        """An operator that exited without being told to is a finding; start another."""
        current = self.operator
        code = current.process.poll()
        if code is None or current.pid in self._signalled:
            return
        self._signalled.add(current.pid)
        # Started while the manifest was invalid, it must refuse to run, with a located error
        # (`FILE:LINE:COL: ...`): the service manager starts it again, as here.
        tail = current.log_lines()[-3:]
        refused = code == 1 and any(line.startswith(f"{self.repos.manifest}:") for line in tail)
        if not (refused and self._invalid_seen):
            self.findings.append(f"operator pid {current.pid} exited by itself with {code}")
        self.start_operator()

    async def kill9(self, restart_after: float) -> None:
        current = self.operator
        self._signalled.add(current.pid)
        current.signal(signal.SIGKILL)
        await current.wait(timeout=10)
        await asyncio.sleep(restart_after)  # the scenario's downtime
        self.start_operator()

    async def sigterm(self, restart_after: float) -> None:
        current = self.operator
        self._signalled.add(current.pid)
        current.signal(signal.SIGTERM)
        try:
            code = await current.wait(timeout=40)
        except AssertionError:
            self.findings.append(f"operator pid {current.pid} did not exit within 40s of SIGTERM")
            current.signal(signal.SIGKILL)
            code = await current.wait(timeout=10)
        if code == -signal.SIGTERM and SERVING.search(current.log_text()) is None:
            # Signalled while still starting (before its handlers exist): it had started
            # nothing, and a service manager counts death by SIGTERM as a clean stop.
            self.notes.append(f"operator pid {current.pid} got SIGTERM before it was serving")
        elif code != 0:
            self.findings.append(f"operator pid {current.pid} exited with {code} after SIGTERM")
        await asyncio.sleep(restart_after)
        self.start_operator()

    async def stop_operator(self) -> int | None:
        """The final shutdown: SIGTERM and wait; the exit code (None if it had to be killed)."""
        current = self.operator
        self._signalled.add(current.pid)
        if current.process.poll() is not None:
            return current.process.returncode
        current.signal(signal.SIGTERM)
        try:
            return await current.wait(timeout=40)
        except AssertionError:
            self.findings.append(f"operator pid {current.pid} did not exit within 40s of SIGTERM")
            current.signal(signal.SIGKILL)
            await current.wait(timeout=10)
            return None

    def kill_all(self) -> None:
        for process in self.operators:
            if process.process.poll() is None:
                process.process.kill()
                process.process.wait(timeout=10)

    def log_text(self) -> str:
        return "".join(p.log_text() for p in self.operators)

    def labelled_logs(self) -> str:
        """Every operator's log under a line naming it, for reading after a run."""
        return "".join(
            f"==> operator {i} (pid {p.pid}, exit {p.process.poll()}) <==\n{p.log_text()}"
            for i, p in enumerate(self.operators, 1)
        )

    # -- GitHub's side ---------------------------------------------------------------------------

    async def control(self, path: str, body: Any = None, *, method: str = "POST") -> int:
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.request(method, f"{self.sim.url}/_sim/{path}", json=body)
        return response.status_code

    async def delete_scale_set(self, name: str) -> int:
        on_github = [s for s in self.sim.state.scale_sets.values() if s.name == name]
        running = [
            j.id
            for j in self.sim.state.jobs.values()
            if on_github and j.scale_set_id == on_github[0].id and j.state != "done"
        ]
        status = await self.control("delete-scale-set", {"name": name})
        if status == 200:
            self.ledger.deleted_while_running.update(running)
        return status

    async def clear(self, base: tuple[Shape, ...]) -> None:
        """End of a window: faults cleared, sessions released, engine and operator up, and the
        base fleet committed again."""
        await self.control("faults", method="DELETE")
        for name in [s.name for s in self.sim.state.scale_sets.values()]:
            await self.control("release-session", {"name": name})
        if not self.engine.alive():
            await asyncio.to_thread(self.engine.start)
        self.check_operator()
        await self.commit([s.manifest_entry() for s in base], "back to the base fleet")

    # -- one event ---------------------------------------------------------------------------

    async def perform(self, event: Event) -> str:
        """Do `event`; a short note of what happened (for the scenario's log)."""
        detail = event.detail
        if event.kind == "manifest":
            await self.commit(detail["scaleSets"], detail["change"])
            return detail["change"]
        if event.kind == "invalid":
            await self.commit_invalid(detail["how"])
            return f"invalid manifest ({detail['how']})"
        if event.kind == "kill9":
            await self.kill9(detail["restartAfter"])
            return f"kill -9, restarted after {detail['restartAfter']}s"
        if event.kind == "sigterm":
            await self.sigterm(detail["restartAfter"])
            return f"SIGTERM, restarted after {detail['restartAfter']}s"
        if event.kind == "engine-restart":
            await asyncio.to_thread(self.engine.stop_daemon)
            await asyncio.sleep(detail["downFor"])
            await asyncio.to_thread(self.engine.start)
            return f"engine restarted (down {detail['downFor']}s)"
        if event.kind == "fault":
            status = await self.control("faults", detail["fault"])
            return f"{detail['what']} ({status})"
        if event.kind == "delete-scale-set":
            status = await self.delete_scale_set(detail["name"])
            return f"{detail['name']} deleted on GitHub ({status})"
        if event.kind in ("hold-session", "release-session"):
            status = await self.control(event.kind, {"name": detail["name"]})
            return f"{event.kind} {detail['name']} ({status})"
        if event.kind == "expire-tokens":
            status = await self.control("expire-tokens")
            return f"tokens expired ({status})"
        raise ValueError(f"unknown chaos event {event.kind!r}")


def _shape(entry: dict[str, Any]) -> Shape:
    return Shape(
        name=entry["name"],
        min_runners=entry["minRunners"],
        max_runners=entry["maxRunners"],
        suspended=entry["suspended"],
        drain_timeout=int(str(entry["drainTimeout"]).rstrip("s")),
        template=int(entry["docker"]["env"]["CHAOS_TEMPLATE"].lstrip("v")),
    )
