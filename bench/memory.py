"""Benchmark: the operator's resident memory with 100 scale sets listening.

A real `runscaler run` process with N scale sets (no warm runners, so no containers) against a
`runscaler simulator` process; once every scale set's message session is open, its RSS
(`VmRSS` in /proc/PID/status) is sampled for a few seconds and the highest sample kept. The
baseline is a bare `runscaler version`'s peak RSS, measured in the same run.

    python bench/memory.py [--scale-sets 100] [--quick]

The last line is `memory: M MiB RSS (ratio R vs runscaler version)`.
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


def run(args: argparse.Namespace, work: Path, processes: Processes) -> None:
    sim = start_simulator(processes)
    fleet = f"bench-{secrets.token_hex(4)}"
    scale_sets = [{"name": f"pool-{i:03d}", "maxRunners": 5} for i in range(args.scale_sets)]
    path = work / "fleet.yaml"
    path.write_text(manifest(fleet, url=sim, scale_sets=scale_sets))
    operator, _ = start_operator(
        processes, path, state_dir=work / "state", token=secrets.token_hex(16)
    )
    wait_for(
        lambda: sessions_open(sim, args.scale_sets),
        timeout=120,
        what=f"{args.scale_sets} sessions",
        interval=0.2,
    )
    samples = []
    deadline = time.monotonic() + SAMPLE_SECONDS
    while time.monotonic() < deadline:
        samples.append(rss_kib(operator.pid))
        time.sleep(0.2)
    peak = rss_kib(operator.pid, "VmHWM")
    baseline = min(version_rss_kib() for _ in range(3))
    operator_mib, baseline_mib = max(samples) / 1024, baseline / 1024
    print(f"scale sets listening: {args.scale_sets}")
    print(f"operator peak (VmHWM): {peak / 1024:.0f} MiB")
    print(f"runscaler version: {baseline_mib:.0f} MiB RSS")
    ratio = operator_mib / baseline_mib
    print(f"memory: {operator_mib:.0f} MiB RSS (ratio {ratio:.1f} vs runscaler version)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale-sets", type=int, default=100, help="scale sets listening")
    parser.add_argument("--quick", action="store_true", help="20 scale sets (CI smoke)")
    args = parser.parse_args()
    if args.quick:
        args.scale_sets = 20
    return run_benchmark("memory", lambda work, processes: run(args, work, processes))


if __name__ == "__main__":
    sys.exit(main())
