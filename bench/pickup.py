"""Benchmark: pickup latency, one job at a time on an idle fleet, against the engine alone.

A real `runscaler run` process serves two scale sets against a `runscaler simulator` process:
`warm` keeps one idle runner (`minRunners: 1`) and `cold` keeps none (`minRunners: 0`). Each
round queues one short job for one scale set, waits for it to finish and for the fleet to
settle (the warm runner replaced and polling), and reads the job's own record in the simulator:
pickup is `startedAt - queuedAt`, from the job being queued to a runner taking it. The baseline
is what the engine alone needs to create and start the same container (`docker run -d`, timed
to the engine's `start` event), measured in the same run. What we add over the engine is the
pickup minus that baseline for a cold start, and the whole pickup for a warm one (the engine
has nothing to do then). The simulator's hand-over delay (`--start-delay`, GitHub's 0.5-2 s
between a runner taking a job and starting it) is off: it is the service's, not ours.

    python bench/pickup.py [--rounds 15] [--quick]

The last lines are `pickup (warm): T s p50 (...)` and `pickup (cold): T s p50 (...)`.
"""

from __future__ import annotations

import argparse
import datetime
import secrets
import statistics
import sys
import time
from pathlib import Path

import httpx

from benchkit import (
    LABEL_FLEET,
    RUNNER_IMAGE,
    BenchError,
    Processes,
    docker,
    manifest,
    percentile,
    remove_fleet,
    run_benchmark,
    session_open,
    sim_state,
    start_operator,
    start_simulator,
    wait_for,
)
from runscaler.simulator.runner import build_runner_image
from scaleup import JitConfigs, StartEvents

JOB_SECONDS = 0.5


def _epoch(stamp: str) -> float:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _scale_set_id(sim: str, name: str) -> int:
    return next(s["id"] for s in sim_state(sim)["scaleSets"] if s["name"] == name)


def _settled(sim: str, fleet: str, warm_id: int) -> bool:
    """No job is running, and the warm scale set has exactly one runner polling for work."""
    state = sim_state(sim)
    if any(not job["finishedAt"] for job in state["jobs"]):
        return False
    warm = [r for r in state["runners"] if r["scaleSetId"] == warm_id]
    running = docker("ps", "-q", "--filter", f"label={LABEL_FLEET}={fleet}").split()
    return len(warm) == 1 and warm[0]["status"] == "idle" and len(running) == 1


def _pickup(sim: str, scale_set: str) -> float:
    posted = httpx.post(
        f"{sim}/_sim/jobs",
        json={"labels": [scale_set], "count": 1, "duration": JOB_SECONDS},
        timeout=10,
    )
    posted.raise_for_status()
    job_id = posted.json()["ids"][0]

    def finished() -> dict[str, str] | None:
        job = next(j for j in sim_state(sim)["jobs"] if j["id"] == job_id)
        return job if job["finishedAt"] else None

    job = wait_for(finished, timeout=120, what=f"job {job_id} to finish", interval=0.05)
    if not job["startedAt"]:
        raise BenchError(f"job {job_id} finished without a runner taking it")
    return _epoch(job["startedAt"]) - _epoch(job["queuedAt"])


def _engine_start(fleet: str, jit: JitConfigs, round_no: int) -> float:
    """Create and start one runner container from the CLI, to the engine's start event."""
    name = f"base-{round_no}-{secrets.token_hex(3)}"
    config = jit.make([name])[0]
    t0 = time.time_ns()
    events = StartEvents(f"{LABEL_FLEET}={fleet}", since_ns=t0)
    try:
        t0 = time.time_ns()
        docker(
            "run", "-d", "--name", f"runscaler-{fleet}-{name}", "--network", "host",
            "--user", "runner", "--label", f"{LABEL_FLEET}={fleet}",
            "--env", f"ACTIONS_RUNNER_INPUT_JITCONFIG={config}",
            RUNNER_IMAGE, "/home/runner/run.sh",
        )  # fmt: skip
        end = events.nth(1, timeout=60)
    finally:
        events.close()
    remove_fleet(fleet)
    return (end - t0) / 1e9


def _line(name: str, values: list[float], baseline: float, what: str) -> str:
    p50, p95 = statistics.median(values), percentile(values, 95)
    overhead = p50 - baseline
    return (
        f"{name}: {p50:.3f} s p50, {p95:.3f} s p95 "
        f"(overhead {overhead:+.3f} s over {what} {baseline:.3f} s)"
    )


def run(args: argparse.Namespace, work: Path, processes: Processes) -> None:
    fleet = f"bench-{secrets.token_hex(4)}"
    token = secrets.token_hex(16)
    # GitHub's own hand-over delay (0.5-2 s between a runner taking a job and starting it,
    # which the simulator models) is not ours: off, so the figure is what the operator adds.
    sim = start_simulator(processes, args=["--start-delay", "0"])
    path = work / "fleet.yaml"
    scale_sets = [
        {"name": "warm", "minRunners": 1, "maxRunners": 2},
        {"name": "cold", "minRunners": 0, "maxRunners": 1},
    ]
    path.write_text(manifest(fleet, url=sim, scale_sets=scale_sets))
    try:
        start_operator(processes, path, state_dir=work / "state", token=token)
        for name in ("warm", "cold"):
            wait_for(lambda n=name: session_open(sim, n), timeout=30, what=f"{name}'s session")
        warm_id = _scale_set_id(sim, "warm")
        jit = JitConfigs(sim, token, "baseline")
        warm: list[float] = []
        cold: list[float] = []
        engine: list[float] = []
        for round_no in range(args.rounds):
            for side, into in (("warm", warm), ("cold", cold)):
                wait_for(
                    lambda: _settled(sim, fleet, warm_id),
                    timeout=120,
                    what="the fleet to settle",
                    interval=0.05,
                )
                into.append(_pickup(sim, side))
            engine.append(_engine_start(f"{fleet}-base", jit, round_no))
            print(
                f"round {round_no + 1}: warm {warm[-1]:.3f} s, cold {cold[-1]:.3f} s, "
                f"engine {engine[-1]:.3f} s",
                flush=True,
            )
    finally:
        remove_fleet(f"{fleet}-base")
    base = statistics.median(engine)
    print(f"engine create+start: {base:.3f} s p50, {percentile(engine, 95):.3f} s p95")
    print(_line("pickup (warm)", warm, 0.0, "a running runner"))
    print(_line("pickup (cold)", cold, base, "engine create+start"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="jobs per scale set")
    parser.add_argument("--quick", action="store_true", help="4 rounds (CI smoke)")
    args = parser.parse_args()
    if args.quick:
        args.rounds = 4
    build_runner_image()
    return run_benchmark("pickup", lambda work, processes: run(args, work, processes))


if __name__ == "__main__":
    sys.exit(main())
