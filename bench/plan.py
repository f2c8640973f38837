"""Benchmark: `runscaler validate` and `runscaler plan` on a 1,000-scale-set manifest.

Times whole processes, as a user (or CI) feels them, against a bare `runscaler version` in the
same run, because absolute times on shared machines are not comparable across runs.

    python bench/plan.py [--scale-sets 1000] [--quick]

The last lines are `name: value unit (ratio R vs runscaler version)` (testing.md, Benchmarks).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ORGS = 25


def generate(count: int, *, changed: bool) -> str:
    """A realistic manifest: several orgs, both backends, env, labels, resources, overrides.

    The changed copy resizes every 10th scale set, bumps the image of every 25th, drops the
    last five and adds five new ones: a plan with every kind of action.
    """
    lines = [
        "# yaml-language-server: $schema=schemas/fleet-v1.schema.json",
        "apiVersion: runscaler/v1",
        "kind: Fleet",
        "metadata:",
        "  name: bench-fleet",
        "defaults:",
        "  github:",
        "    auth:",
        "      token: env:GITHUB_TOKEN",
        "  maxRunners: 10",
        "  drainTimeout: 2h",
        "  docker:",
        "    image: ghcr.io/actions/actions-runner:2.330.0",
        "    memory: 4GiB",
        "    cpus: 2",
        "    env:",
        "      RUNNER_ALLOW_RUNASROOT: '0'",
        "scaleSets:",
    ]
    indices = list(range(count - 5 if changed else count))
    if changed:
        indices += range(count, count + 5)
    for i in indices:
        lines += _scale_set(i, changed=changed)
    return "\n".join(lines) + "\n"


def _scale_set(i: int, *, changed: bool) -> list[str]:
    tart = i % 50 == 49
    max_runners = 2 if tart else 5 + i % 20
    if changed and i % 10 == 0:
        max_runners += 1
    lines = [
        f"  - name: runners-{i:04d}",
        "    github:",
        f"      url: https://github.com/org-{i % ORGS:02d}",
        f"    labels: [self-hosted, {'macos' if tart else 'linux'}, pool-{i % 7}]",
        f"    minRunners: {i % 3}",
        f"    maxRunners: {max_runners}",
    ]
    if i % 5 == 0:
        lines.append("    runnerGroup: heavy")
    if tart:
        lines += ["    backend: tart", "    tart:", "      poolSize: 1", "      cpu: 4"]
        return lines
    image = "ghcr.io/acme/runner:2" if changed and i % 25 == 0 else "ghcr.io/acme/runner:1"
    lines += [
        "    docker:",
        f"      image: {image}",
        f"      memory: {2 + i % 4}GiB",
        "      env:",
        f"        POOL: pool-{i % 7}",
        "        NPM_TOKEN: env:NPM_TOKEN",
    ]
    if i % 4 == 0:
        lines += ["      volumes: ['/srv/cache:/cache:ro']", "      network: host"]
    return lines


def runscaler_command() -> list[str]:
    script = Path(sys.executable).parent / "runscaler"
    if script.exists():
        return [str(script)]
    found = shutil.which("runscaler")
    return [found] if found else [sys.executable, "-m", "runscaler"]


def timed(argv: list[str], *, repetitions: int, ok: tuple[int, ...] = (0,)) -> float:
    """The median wall time of `repetitions` runs; a failing run stops the benchmark."""
    times = []
    for _ in range(repetitions):
        start = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - start)
        if done.returncode not in ok:
            sys.exit(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale-sets", type=int, default=1000, help="manifest size")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (CI)")
    args = parser.parse_args()
    repetitions = 3 if args.quick else 7
    runscaler = runscaler_command()
    with tempfile.TemporaryDirectory(prefix="runscaler-bench-") as tmp:
        big = Path(tmp) / "big.yaml"
        big2 = Path(tmp) / "big2.yaml"
        big.write_text(generate(args.scale_sets, changed=False))
        big2.write_text(generate(args.scale_sets, changed=True))
        print(f"manifest: {args.scale_sets} scale sets, {big.stat().st_size // 1024} KiB")
        print(f"repetitions: {repetitions} (median)")
        baseline = timed([*runscaler, "version"], repetitions=repetitions)
        validate = timed([*runscaler, "validate", str(big)], repetitions=repetitions)
        plan = timed(
            [*runscaler, "plan", str(big2), "--against", str(big)], repetitions=repetitions
        )
    print(f"version: {baseline:.3f} s")
    print(f"validate: {validate:.3f} s (ratio {validate / baseline:.1f} vs runscaler version)")
    print(f"plan: {plan:.3f} s (ratio {plan / baseline:.1f} vs runscaler version)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
