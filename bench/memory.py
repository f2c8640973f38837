"""Benchmark: the operator's resident memory with 100 and 500 scale sets listening.

A real `runscaler run` process with N scale sets (no warm runners, so no containers) against a
`runscaler simulator` process; once every scale set's message session is open, its RSS
(`VmRSS` in /proc/PID/status) is sampled for a few seconds and the highest sample kept. The
baseline is a bare `runscaler version`'s peak RSS, measured in the same run. Measured at two
sizes, so the growth per scale set shows.

    python bench/memory.py [--scale-sets 100 500] [--quick]

The last lines are `memory: M MiB RSS at N scale sets (ratio R vs runscaler version)` per size
and `memory per scale set: K KiB`.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

from benchkit import (
    BenchError,
    Processes,
    manifest,
    run_benchmark,
    runscaler_command,
    sim_state,
    start_operator,
    start_simulator,
    wait_for,
)

SAMPLE_SECONDS = 3.0


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise BenchError(f"no {field} in /proc/{pid}/status")


def version_rss_kib() -> int:
    """The peak RSS of one `runscaler version` (from the kernel's accounting of the child)."""
    process = subprocess.Popen(
        [*runscaler_command(), "version"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise BenchError(f"runscaler version exited with {process.returncode}")
    return int(usage.ru_maxrss)  # KiB on Linux


def sessions_open(sim: str, count: int) -> bool:
    return len(sim_state(sim)["sessions"]) >= count


def measure(work: Path, processes: Processes, sim: str, count: int) -> float:
    """The operator's RSS in MiB with `count` scale sets listening (the highest sample)."""
    fleet = f"bench-{secrets.token_hex(4)}"
    scale_sets = [{"name": f"pool-{i:03d}", "maxRunners": 5} for i in range(count)]
    path = work / f"fleet-{count}.yaml"
    path.write_text(manifest(fleet, url=sim, scale_sets=scale_sets))
    before = len(sim_state(sim)["sessions"])
    operator, _ = start_operator(
        processes,
        path,
        state_dir=work / f"state-{count}",
        token=secrets.token_hex(16),
        name=f"operator-{count}",
    )
    wait_for(
        lambda: sessions_open(sim, before + count),
        timeout=300,
        what=f"{count} sessions",
        interval=0.2,
    )
    samples = []
    deadline = time.monotonic() + SAMPLE_SECONDS
    while time.monotonic() < deadline:
        samples.append(rss_kib(operator.pid))
        time.sleep(0.2)
    peak = rss_kib(operator.pid, "VmHWM")
    processes.stop(operator, timeout=120)
    print(f"{count} scale sets: {max(samples) / 1024:.0f} MiB RSS, peak {peak / 1024:.0f} MiB")
    return max(samples) / 1024


def run(args: argparse.Namespace, work: Path, processes: Processes) -> None:
    sim = start_simulator(processes)
    sizes = sorted(args.scale_sets)
    figures = [measure(work, processes, sim, count) for count in sizes]
    baseline_mib = min(version_rss_kib() for _ in range(3)) / 1024
    print(f"runscaler version: {baseline_mib:.0f} MiB RSS")
    for count, mib in zip(sizes, figures, strict=True):
        ratio = mib / baseline_mib
        print(f"memory: {mib:.0f} MiB RSS at {count} scale sets", end=" ")
        print(f"(ratio {ratio:.1f} vs runscaler version)")
    if len(sizes) > 1:
        per = (figures[-1] - figures[0]) * 1024 / (sizes[-1] - sizes[0])
        print(f"memory per scale set: {per:.0f} KiB (growth from {sizes[0]} to {sizes[-1]})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scale-sets", type=int, nargs="+", default=[100, 500], help="sizes to measure"
    )
    parser.add_argument("--quick", action="store_true", help="20 and 50 scale sets (CI smoke)")
    args = parser.parse_args()
    if args.quick:
        args.scale_sets = [20, 50]
    return run_benchmark("memory", lambda work, processes: run(args, work, processes))


if __name__ == "__main__":
    sys.exit(main())
