"""Benchmark: from N jobs enqueued to N runner containers running, against `docker run -d` x N.

The operator is a real `runscaler run` process at its default settings (maxRunners N; pass
`--start-concurrency C` to measure a cap) against a `runscaler simulator` process; the jobs run
long enough that all N runners are up at once. The
baseline starts the same image with the same flags (host network, the runner's environment
with a real JIT config, our labels) from the Docker CLI, N `docker run -d` in parallel. Both
sides are observed the same way: the engine's own `start` events for the side's label, so
"running" is the engine's word and its clock. Rounds interleave (operator first, then baseline
first) and the medians are compared, in the same run, on the same engine.

    python bench/scaleup.py [--runners 20 100] [--rounds 3] [--start-concurrency C] [--quick]

The last line per N is `scaleup (N=20): T s (ratio R vs docker run -d x20)`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from benchkit import (
    LABEL_FLEET,
    RUNNER_IMAGE,
    BenchError,
    Processes,
    containers,
    manifest,
    remove_fleet,
    session_open,
    start_operator,
    start_simulator,
    wait_for,
)
from runscaler.github.auth import TokenCredentials
from runscaler.github.client import ScaleSetClient
from runscaler.github.models import RunnerScaleSet
from runscaler.simulator.runner import build_runner_image

JIT_ENV = "ACTIONS_RUNNER_INPUT_JITCONFIG"
JOB_SECONDS = 600  # far longer than any round: every runner stays busy until cancelled
SCALE_SET = "bench"


class StartEvents:
    """The engine's `start` events for containers with one label, from a moment on."""

    def __init__(self, label: str, *, since_ns: int) -> None:
        since = f"{since_ns // 1_000_000_000}.{since_ns % 1_000_000_000:09d}"
        self._process = subprocess.Popen(
            [
                "docker", "events", "--since", since,
                "--filter", "type=container", "--filter", "event=start",
                "--filter", f"label={label}",
                "--format", "{{.ID}} {{.TimeNano}}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        self.started: dict[str, int] = {}
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            container, _, when = line.strip().partition(" ")
            with self._lock:
                self.started.setdefault(container, int(when))

    def nth(self, n: int, *, timeout: float) -> int:
        """When the n-th distinct container started (engine time, ns)."""

        def done() -> int | None:
            with self._lock:
                times = sorted(self.started.values())
            return times[n - 1] if len(times) >= n else None

        return wait_for(done, timeout=timeout, what=f"{n} containers to start", interval=0.01)

    def close(self) -> None:
        self._process.terminate()
        self._process.wait(timeout=10)
        self._reader.join(timeout=10)
        if self._process.stdout is not None:
            self._process.stdout.close()


def measure_operator(sim: str, fleet: str, n: int) -> float:
    scale_set = f"{SCALE_SET}-{n}"
    t0 = time.time_ns()
    events = StartEvents(f"{LABEL_FLEET}={fleet}", since_ns=t0)
    try:
        t0 = time.time_ns()
        posted = httpx.post(
            f"{sim}/_sim/jobs",
            json={"labels": [scale_set], "count": n, "duration": JOB_SECONDS},
            timeout=10,
        )
        posted.raise_for_status()
        end = events.nth(n, timeout=120)
    finally:
        events.close()
    running = len(containers(fleet, running=True))
    if running != n:
        raise BenchError(f"operator round: {running} runners running at the end, not {n}")
    ids = posted.json()["ids"]
    httpx.post(f"{sim}/_sim/cancel-jobs", json={"ids": ids}, timeout=10).raise_for_status()
    wait_for(lambda: not containers(fleet), timeout=120, what="the operator's runners to go")
    return (end - t0) / 1e9


class JitConfigs:
    """Real JIT configs from the simulator, for a scale set the operator does not know."""

    def __init__(self, sim: str, token: str, name: str) -> None:
        self.sim = sim
        self.token = token
        self.name = name
        self.scale_set_id = asyncio.run(self._create())

    def _client(self) -> ScaleSetClient:
        token = TokenCredentials(self.token)
        return ScaleSetClient(config_url=f"{self.sim}/acme", credentials=lambda: token)

    async def _create(self) -> int:
        async with self._client() as client:
            made = await client.create_scale_set(
                RunnerScaleSet(name=self.name, runner_group_id=1, labels=(self.name,))
            )
            return made.id

    def make(self, names: list[str]) -> list[str]:
        async def generate() -> list[str]:
            async with self._client() as client:
                return [
                    (await client.generate_jit_config(self.scale_set_id, runner_name=name)).encoded
                    for name in names
                ]

        return asyncio.run(generate())


def measure_baseline(fleet: str, n: int, jit: JitConfigs, round_no: int) -> float:
    names = [f"base-{round_no}-{i:03d}-{secrets.token_hex(3)}" for i in range(n)]
    configs = jit.make(names)
    commands = [
        [
            "docker", "run", "-d", "--name", f"runscaler-{fleet}-{name}",
            "--network", "host", "--user", "runner",
            "--label", f"{LABEL_FLEET}={fleet}",
            "--label", f"dev.runscaler.scale-set={SCALE_SET}",
            "--label", f"dev.runscaler.runner={name}",
            "--env", JIT_ENV,
            RUNNER_IMAGE, "/home/runner/run.sh",
        ]
        for name in names
    ]  # fmt: skip
    t0 = time.time_ns()
    events = StartEvents(f"{LABEL_FLEET}={fleet}", since_ns=t0)
    try:
        t0 = time.time_ns()
        runs = [
            subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env={**os.environ, JIT_ENV: config},
            )
            for command, config in zip(commands, configs, strict=True)
        ]
        end = events.nth(n, timeout=120)
        for run in runs:
            _, err = run.communicate(timeout=60)
            if run.returncode != 0:
                raise BenchError(f"docker run -d failed: {err.decode().strip()}")
    finally:
        events.close()
    running = len(containers(fleet, running=True))
    if running != n:
        raise BenchError(f"baseline round: {running} containers running at the end, not {n}")
    remove_fleet(fleet)
    return (end - t0) / 1e9


def run_rounds(
    args: argparse.Namespace, work: Path, processes: Processes, sim: str, fleet: str, n: int
) -> None:
    token = f"bench_{secrets.token_hex(16)}"
    path = work / f"fleet-{n}.yaml"
    specs = [{"name": f"{SCALE_SET}-{n}", "maxRunners": n}]
    path.write_text(manifest(fleet, url=sim, scale_sets=specs))
    flags = (
        []
        if args.start_concurrency is None
        else ["--start-concurrency", str(args.start_concurrency)]
    )
    operator, _ = start_operator(
        processes,
        path,
        state_dir=work / f"state-{n}",
        token=token,
        args=flags,
        name=f"operator-{n}",
    )
    wait_for(
        lambda: session_open(sim, f"{SCALE_SET}-{n}"), timeout=30, what="the operator's session"
    )
    jit = JitConfigs(sim, token, f"baseline-{n}")
    ours: list[float] = []
    theirs: list[float] = []
    for round_no in range(args.rounds):
        sides = ["operator", "baseline"] if round_no % 2 == 0 else ["baseline", "operator"]
        for side in sides:
            if side == "operator":
                ours.append(measure_operator(sim, fleet, n))
            else:
                theirs.append(measure_baseline(f"{fleet}-base", n, jit, round_no))
            seconds = (ours if side == "operator" else theirs)[-1]
            print(f"N={n} round {round_no + 1}: {side:<8} {seconds:.2f} s", flush=True)
    processes.stop(operator, timeout=120)
    operator_s, baseline = statistics.median(ours), statistics.median(theirs)
    print(f"docker run -d x{n}: {baseline:.2f} s (median of {args.rounds})")
    print(
        f"scaleup (N={n}): {operator_s:.2f} s "
        f"(ratio {operator_s / baseline:.2f} vs docker run -d x{n})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runners", type=int, nargs="+", default=[20, 100], help="N: runners to start"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument(
        "--start-concurrency", type=int, default=None, help="pass this cap to the operator"
    )
    parser.add_argument("--quick", action="store_true", help="8 runners, 1 round (CI smoke)")
    args = parser.parse_args()
    if args.quick:
        args.runners, args.rounds = [8], 1
    build_runner_image()
    fleet = f"bench-{secrets.token_hex(4)}"
    with tempfile.TemporaryDirectory(prefix="runscaler-bench-") as tmp:
        work = Path(tmp)
        try:
            with Processes(work / "logs") as processes:
                sim = start_simulator(processes)
                for n in args.runners:
                    run_rounds(args, work, processes, sim, f"{fleet}-{n}", n)
        except BenchError as exc:
            print(f"scaleup: failed: {exc}", file=sys.stderr)
            return 1
        finally:
            for n in args.runners:
                remove_fleet(f"{fleet}-{n}")
                remove_fleet(f"{fleet}-{n}-base")
    return 0


if __name__ == "__main__":
    sys.exit(main())
