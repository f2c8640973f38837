"""Run every benchmark and print one table of their figures, each with its baseline and ratio.

Each benchmark is a script of its own that ends with summary lines of the form
`NAME: VALUE (ratio R vs BASELINE)` or `NAME: VALUE (overhead D over BASELINE)`; this runs them
one after the other (never at once: they would measure each other), keeps their full output in
a log, and collects those lines into a Markdown table for the README, with the machine it ran
on. A benchmark that fails is a row saying so, and makes the exit code 1.

    python bench/table.py [--quick] [--only scaleup memory] [--log bench.log]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
BENCHMARKS = (
    "plan", "scaleup", "pickup", "reload", "memory", "shutdown", "tart_pool", "swarm_scaleup"
)  # fmt: skip
SUMMARY = re.compile(r"^(?P<name>[a-z][\w ()=,.-]*): (?P<value>.+?) \((?P<against>.+)\)$")
FIGURE = re.compile(
    r"^(validate|plan|scaleup|pickup|reload|memory|shutdown|tart pickup|swarm_scaleup)"
    r"( \(.*\)| per scale set)?$"
)
AGAINST = re.compile(
    r"^(?:ratio (?P<ratio>[\d.]+) vs|overhead (?P<overhead>\S+ s) over) (?P<base>.+)$"
)


def machine() -> str:
    cores = os.cpu_count() or 0
    memory = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f", {int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    except OSError:
        pass
    engine = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return (
        f"{platform.system()} {platform.release()}, {cores} cores{memory}, "
        f"Python {platform.python_version()}, Docker engine {engine or 'unknown'}"
    )


def run_one(name: str, args: list[str], log: Path) -> tuple[list[tuple[str, ...]], bool]:
    """Run bench/NAME.py; its summary rows, and whether it succeeded."""
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(BENCH_DIR / f"{name}.py"), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    with log.open("a") as out:
        out.write(f"===== {name} {' '.join(args)} (exit {done.returncode}) =====\n")
        out.write(done.stdout)
        out.write(done.stderr)
    rows: list[tuple[str, ...]] = []
    for line in done.stdout.splitlines():
        found = SUMMARY.match(line.strip())
        if not found or not FIGURE.match(found["name"]):
            continue
        against = AGAINST.match(found["against"])
        if against is None:
            rows.append((found["name"], found["value"], "", found["against"]))
        elif against["ratio"]:
            rows.append((found["name"], found["value"], against["base"], against["ratio"]))
        else:
            rows.append((found["name"], found["value"], against["base"], against["overhead"]))
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
        rows.append((name, "failed", "", reason))
    print(f"{name}: {'ok' if done.returncode == 0 else 'FAILED'} in "
          f"{time.monotonic() - began:.0f} s", file=sys.stderr, flush=True)  # fmt: skip
    return rows, done.returncode == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="each benchmark's short variant")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, default=list(BENCHMARKS))
    parser.add_argument("--log", type=Path, default=Path("bench.log"), help="full output")
    args = parser.parse_args()
    args.log.write_text("")
    rows: list[tuple[str, ...]] = []
    ok = True
    for name in args.only:
        found, succeeded = run_one(name, ["--quick"] if args.quick else [], args.log)
        rows += found
        ok = ok and succeeded
    print(f"Measured {time.strftime('%Y-%m-%d')} on {machine()}.")
    print()
    print("| figure | value | baseline (same run) | ratio or overhead |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(cell.replace("|", "/") for cell in row) + " |")
    print(f"\nFull output: {args.log}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
