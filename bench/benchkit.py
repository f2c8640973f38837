"""What the operator benchmarks share: real processes, always stopped, and the engine's view.

The benchmarks time whole processes as a user feels them: `runscaler simulator` and
`runscaler run` are started as commands (never imported), their output goes to log files in the
benchmark's temp dir, and `Processes` stops every one of them by PID when the benchmark ends,
however it ends. What runs on the engine is read with the Docker CLI, independently of the code
being measured.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx

T = TypeVar("T")

LABEL_FLEET = "dev.runscaler.fleet"
RUNNER_IMAGE = "runscaler-sim-runner:latest"
TOKEN_ENV = "RUNSCALER_BENCH_TOKEN"
SERVING = re.compile(r"; serving (http://\S+)")


class BenchError(Exception):
    """The benchmark cannot go on; the message says why (and where the logs are)."""


def runscaler_command() -> list[str]:
    """The installed `runscaler` beside this Python (as a user runs it), else `-m runscaler`."""
    script = Path(sys.executable).parent / "runscaler"
    if script.exists():
        return [str(script)]
    found = shutil.which("runscaler")
    return [found] if found else [sys.executable, "-m", "runscaler"]


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (`p` in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def wait_for(
    probe: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.02
) -> T:
    """Call `probe` until it returns something truthy; that value, or BenchError at the end."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


class Processes:
    """Child processes of one benchmark; `close()` stops them all (SIGTERM, then SIGKILL)."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self._running: list[tuple[subprocess.Popen[bytes], Path]] = []

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(
        self, args: Sequence[str], *, name: str, env: Mapping[str, str] | None = None
    ) -> tuple[subprocess.Popen[bytes], Path]:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                [*runscaler_command(), *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
            )
        self._running.append((process, log))
        return process, log

    def stop(self, process: subprocess.Popen[bytes], *, timeout: float = 30.0) -> int:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self._running = [(p, log) for p, log in self._running if p is not process]
        return process.returncode

    def close(self) -> None:
        # Newest first: an operator stops before the simulator it talks to, so it can still
        # unregister and remove its idle runners.
        for process, _ in reversed(list(self._running)):
            self.stop(process)


def run_benchmark(name: str, body: Callable[[Path, Processes], None]) -> int:
    """Run `body(work dir, processes)` in a temp dir it removes; a `BenchError` is one line."""
    with tempfile.TemporaryDirectory(prefix="runscaler-bench-") as tmp:
        try:
            with Processes(Path(tmp) / "logs") as processes:
                body(Path(tmp), processes)
        except BenchError as exc:
            print(f"{name}: failed: {exc}", file=sys.stderr)
            return 1
    return 0


def log_tail(log: Path, lines: int = 20) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def _alive(process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    if process.poll() is not None:
        raise BenchError(f"{what} exited with {process.returncode}:\n{log_tail(log)}")


def start_simulator(
    processes: Processes,
    *,
    poll_wait: float = 50.0,
    args: Sequence[str] = (),
    name: str = "simulator",
) -> str:
    """`runscaler simulator` on a free loopback port; its base URL."""
    process, log = processes.start(
        ["simulator", "--listen", "127.0.0.1:0", "--poll-wait", str(poll_wait), *args],
        name=name,
    )

    def url() -> str | None:
        _alive(process, log, "the simulator")
        found = re.search(r"simulator listening on (https?://\S+)", log.read_text())
        return found[1] if found else None

    return wait_for(url, timeout=30, what="the simulator to listen")


def start_operator(
    processes: Processes,
    manifest: Path,
    *,
    state_dir: Path,
    token: str,
    args: Sequence[str] = (),
    name: str = "operator",
) -> tuple[subprocess.Popen[bytes], str]:
    """`runscaler run MANIFEST` on a free loopback port, once `/readyz` answers 200."""
    process, log = processes.start(
        ["run", str(manifest), "--listen", "127.0.0.1:0", "--state-dir", str(state_dir), *args],
        name=name,
        env={TOKEN_ENV: token},
    )

    def ready() -> str | None:
        _alive(process, log, "the operator")
        found = SERVING.search(log.read_text(errors="replace"))
        if not found:
            return None
        try:
            answered = httpx.get(f"{found[1]}/readyz", timeout=5).status_code == 200
        except httpx.TransportError:
            return None
        return found[1] if answered else None

    try:
        # 500 scale sets on a loaded 2-core machine take over a minute to open their sessions.
        return process, wait_for(ready, timeout=300, what="the operator to be ready")
    except BenchError as exc:
        raise BenchError(f"{exc}; its log ends:\n{log_tail(log)}") from None


def manifest(
    fleet: str,
    *,
    url: str,
    scale_sets: Sequence[Mapping[str, Any]],
    ca_bundle: Path | None = None,
) -> str:
    """A fleet of docker scale sets on the simulator, the stand-in runner on the host network;
    `ca_bundle` for a simulator that serves HTTPS with a certificate of its own."""
    lines = [
        "apiVersion: runscaler/v1",
        "kind: Fleet",
        "metadata:",
        f"  name: {fleet}",
        "defaults:",
        "  github:",
        f"    url: {url}/acme",
        f"    auth: {{token: 'env:{TOKEN_ENV}'}}",
        *([f"    caBundle: '{ca_bundle}'"] if ca_bundle else []),
        "  drainTimeout: 30s",
        f"  docker: {{image: '{RUNNER_IMAGE}', pull: never, network: host}}",
        "scaleSets:",
    ]
    for scale_set in scale_sets:
        lines.append(f"  - {json.dumps(dict(scale_set))}")
    return "\n".join(lines) + "\n"


def sim_state(url: str, *, verify: str | bool = True) -> dict[str, Any]:
    response = httpx.get(f"{url}/_sim/state", timeout=10, verify=verify)
    response.raise_for_status()
    state: dict[str, Any] = response.json()
    return state


def session_open(url: str, name: str) -> bool:
    """Whether scale set `name` has a message session in the simulator right now."""
    state = sim_state(url)
    ids = {s["id"] for s in state["scaleSets"] if s["name"] == name}
    return any(session["scaleSetId"] in ids for session in state["sessions"])


def docker(*args: str, timeout: float = 60.0) -> str:
    done = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"docker {' '.join(args[:2])} failed: {done.stderr.strip()}")
    return done.stdout


def containers(fleet: str, *, running: bool = False) -> list[str]:
    """Ids of the containers labelled with `fleet` (only running ones with `running`)."""
    args = ["ps", "-q" if running else "-aq", "--filter", f"label={LABEL_FLEET}={fleet}"]
    return docker(*args).split()


def remove_fleet(fleet: str) -> None:
    """Force-remove every container of `fleet`."""
    ids = containers(fleet)
    if ids:
        docker("rm", "-f", *ids, timeout=120)
