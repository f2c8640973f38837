"""Benchmark: the operator's resident memory with 100 and 500 scale sets listening.

A real `runscaler run` process with N scale sets (no warm runners, so no containers) against a
`runscaler simulator` process; once every scale set's message session is open, its RSS
(`VmRSS` in /proc/PID/status) is sampled for a few seconds and the highest sample kept. The
baseline is a bare `runscaler version`'s peak RSS, measured in the same run. Measured at two
sizes, so the growth per scale set shows, and over HTTPS (the simulator with a certificate of
its own, trusted through the manifest's `caBundle`, as against github.com: every long poll is
a TLS connection) as well as plain HTTP.

    python bench/memory.py [--scale-sets 100 500] [--quick]

The last lines are `memory (https): M MiB RSS at N scale sets (ratio R vs runscaler version)`
per size, the same for http, and `memory per scale set: K KiB` (over HTTPS).
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Simulator:
    url: str
    ca: Path | None = None  # the certificate it serves, when HTTPS

    @property
    def transport(self) -> str:
        return "https" if self.ca else "http"

    def sessions(self) -> int:
        return len(sim_state(self.url, verify=str(self.ca) if self.ca else True)["sessions"])


def self_signed(work: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made by openssl."""
    cert, key = work / "sim-cert.pem", work / "sim-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-addext", "basicConstraints=critical,CA:TRUE", "-keyout", str(key), "-out", str(cert)],
        capture_output=True, check=True,
    )  # fmt: skip
    return cert, key


def measure(work: Path, processes: Processes, sim: Simulator, count: int) -> float:
    """The operator's RSS in MiB with `count` scale sets listening (the highest sample)."""
    fleet = f"bench-{secrets.token_hex(4)}"
    scale_sets = [{"name": f"pool-{i:03d}", "maxRunners": 5} for i in range(count)]
    path = work / f"fleet-{sim.transport}-{count}.yaml"
    path.write_text(manifest(fleet, url=sim.url, scale_sets=scale_sets, ca_bundle=sim.ca))
    before = sim.sessions()
    operator, _ = start_operator(
        processes,
        path,
        state_dir=work / f"state-{sim.transport}-{count}",
        token=secrets.token_hex(16),
        name=f"operator-{sim.transport}-{count}",
    )
    wait_for(
        lambda: sim.sessions() >= before + count,
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
    print(
        f"{count} scale sets over {sim.transport}: {max(samples) / 1024:.0f} MiB RSS, "
        f"peak {peak / 1024:.0f} MiB"
    )
    return max(samples) / 1024


def run(args: argparse.Namespace, work: Path, processes: Processes) -> None:
    cert, key = self_signed(work)
    tls = ["--tls-cert", str(cert), "--tls-key", str(key)]
    simulators = [
        Simulator(start_simulator(processes, args=tls, name="simulator-https"), ca=cert),
        Simulator(start_simulator(processes, name="simulator-http")),
    ]
    sizes = sorted(args.scale_sets)
    figures = {
        sim.transport: [measure(work, processes, sim, count) for count in sizes]
        for sim in simulators
    }
    baseline_mib = min(version_rss_kib() for _ in range(3)) / 1024
    print(f"runscaler version: {baseline_mib:.0f} MiB RSS")
    for transport, mibs in figures.items():
        for count, mib in zip(sizes, mibs, strict=True):
            ratio = mib / baseline_mib
            print(f"memory ({transport}): {mib:.0f} MiB RSS at {count} scale sets", end=" ")
            print(f"(ratio {ratio:.1f} vs runscaler version)")
    if len(sizes) > 1:
        https = figures["https"]
        per = (https[-1] - https[0]) * 1024 / (sizes[-1] - sizes[0])
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
