"""Benchmark: how long SIGTERM takes to stop an operator with 100 idle scale sets listening.

A real `runscaler run` process with N scale sets (no warm runners) against a `runscaler
simulator` process; once every message session is open, the operator gets SIGTERM and is timed
until it has exited (every session closed on the simulator). The baseline is the same with one
scale set, measured in the same run, so the ratio shows what each further scale set costs.

    python bench/shutdown.py [--scale-sets 100] [--rounds 3] [--quick]

The last line is `shutdown: T s (ratio R vs 1 scale set)`.
"""

from __future__ import annotations

import argparse
import secrets
import signal
import statistics
import sys
import time
from pathlib import Path

from benchkit import (
    BenchError,
    Processes,
    log_tail,
    manifest,
    run_benchmark,
    sim_state,
    start_operator,
    start_simulator,
    wait_for,
)


def _sessions(sim: str) -> int:
    return len(sim_state(sim)["sessions"])


def _stop_time(
    processes: Processes, sim: str, work: Path, *, scale_sets: int, round_no: int
) -> float:
    fleet = f"bench-{secrets.token_hex(4)}"
    path = work / f"fleet-{scale_sets}-{round_no}.yaml"
    specs = [{"name": f"pool-{i:03d}", "maxRunners": 5} for i in range(scale_sets)]
    path.write_text(manifest(fleet, url=sim, scale_sets=specs))
    before = _sessions(sim)
    operator, _ = start_operator(
        processes,
        path,
        state_dir=work / f"state-{round_no}-{scale_sets}",
        token=secrets.token_hex(16),
        name=f"operator-{scale_sets}-{round_no}",
    )
    wait_for(
        lambda: _sessions(sim) >= before + scale_sets,
        timeout=120,
        what=f"{scale_sets} sessions",
        interval=0.1,
    )
    t0 = time.monotonic()
    operator.send_signal(signal.SIGTERM)
    try:
        code = operator.wait(timeout=120)
    except Exception as exc:
        raise BenchError(f"the operator did not stop within 120 s: {exc}") from None
    elapsed = time.monotonic() - t0
    processes.stop(operator)
    if code != 0:
        log = processes.logs / f"operator-{scale_sets}-{round_no}.log"
        raise BenchError(f"the operator exited with {code}:\n{log_tail(log)}")
    left = _sessions(sim) - before
    if left:
        raise BenchError(f"{left} sessions still open after the operator stopped")
    return elapsed


def run(args: argparse.Namespace, work: Path, processes: Processes) -> None:
    sim = start_simulator(processes)
    many: list[float] = []
    one: list[float] = []
    for round_no in range(args.rounds):
        one.append(_stop_time(processes, sim, work, scale_sets=1, round_no=round_no))
        many.append(_stop_time(processes, sim, work, scale_sets=args.scale_sets, round_no=round_no))
        print(
            f"round {round_no + 1}: 1 scale set {one[-1]:.2f} s, "
            f"{args.scale_sets} scale sets {many[-1]:.2f} s",
            flush=True,
        )
    base, value = statistics.median(one), statistics.median(many)
    print(f"shutdown with 1 scale set: {base:.2f} s (median of {args.rounds})")
    print(
        f"shutdown: {value:.2f} s with {args.scale_sets} scale sets "
        f"(ratio {value / base:.1f} vs 1 scale set)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale-sets", type=int, default=100, help="scale sets listening")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (median)")
    parser.add_argument("--quick", action="store_true", help="20 scale sets, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.scale_sets, args.rounds = 20, 1
    return run_benchmark("shutdown", lambda work, processes: run(args, work, processes))


if __name__ == "__main__":
    sys.exit(main())
