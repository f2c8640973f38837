"""Benchmark: from a manifest change to the new scale set's session open on "GitHub".

A real `runscaler run` process watches a clone of a bare git repository, against a
`runscaler simulator` process. Each git run pushes a commit that adds a scale set from a second
clone, then times from starting `git pull` in the watched clone to the new scale set's message
session being open in the simulator (`/_sim/state`, polled every few milliseconds). Each write
run then adds a scale set by writing the watched file in place, timed from the write. The new
scale sets keep no warm runners, so no container is involved: this is the reload path alone.

    python bench/reload.py [--runs 10] [--quick]

The last lines are `reload (git pull): T s p50 (…)` and `reload (write): T s p50 (…)`.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import httpx

from benchkit import (
    BenchError,
    Processes,
    manifest,
    percentile,
    run_benchmark,
    start_operator,
    start_simulator,
    wait_for,
)

GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}
POLL = 0.005


def git(*args: str, cwd: Path) -> None:
    done = subprocess.run(
        ["git", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_ENV},
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"git {args[0]} failed: {done.stderr.strip()}")


class Fleet:
    """The manifest's scale sets; each run adds one (no warm runners, one runner at most)."""

    def __init__(self, name: str, sim: str) -> None:
        self.name = name
        self.sim = sim
        self.scale_sets = ["base"]

    def text(self) -> str:
        scale_sets = [{"name": name, "maxRunners": 1} for name in self.scale_sets]
        return manifest(self.name, url=self.sim, scale_sets=scale_sets)


class SessionProbe:
    """Whether a scale set has its message session yet, from one kept-alive connection."""

    def __init__(self, sim: str) -> None:
        self._http = httpx.Client(base_url=sim, timeout=10)

    def open(self, name: str) -> bool:
        state = self._http.get("/_sim/state").json()
        ids = {s["id"] for s in state["scaleSets"] if s["name"] == name}
        return any(session["scaleSetId"] in ids for session in state["sessions"])

    def close(self) -> None:
        self._http.close()


def timed_until_open(probe: SessionProbe, name: str, change: Callable[[], None]) -> float:
    start = time.monotonic()
    change()
    wait_for(lambda: probe.open(name), timeout=60, what=f"a session for {name}", interval=POLL)
    return time.monotonic() - start


def run(args: argparse.Namespace, work: Path, processes: Processes) -> None:
    sim = start_simulator(processes)
    fleet = Fleet(f"bench-{secrets.token_hex(4)}", sim)
    bare, watched, author = work / "fleet.git", work / "watched", work / "author"
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=work)
    git("clone", "-q", str(bare), str(author), cwd=work)
    (author / "fleet.yaml").write_text(fleet.text())
    git("add", "fleet.yaml", cwd=author)
    git("commit", "-q", "-m", "a fleet", cwd=author)
    git("push", "-q", "origin", "main", cwd=author)
    git("clone", "-q", str(bare), str(watched), cwd=work)
    start_operator(
        processes, watched / "fleet.yaml", state_dir=work / "state", token=secrets.token_hex(16)
    )
    probe = SessionProbe(sim)
    try:
        wait_for(lambda: probe.open("base"), timeout=30, what="the first session")
        pulls = []
        for i in range(args.runs):
            fleet.scale_sets.append(f"git-{i}")
            (author / "fleet.yaml").write_text(fleet.text())
            git("commit", "-q", "-am", f"add git-{i}", cwd=author)
            git("push", "-q", "origin", "main", cwd=author)
            pulls.append(
                timed_until_open(
                    probe, f"git-{i}", lambda: git("pull", "-q", "--ff-only", cwd=watched)
                )
            )
            print(f"git pull {i + 1}: {pulls[-1]:.3f} s", flush=True)
        writes = []
        for i in range(args.runs):
            fleet.scale_sets.append(f"write-{i}")
            writes.append(
                timed_until_open(
                    probe, f"write-{i}", partial((watched / "fleet.yaml").write_text, fleet.text())
                )
            )
            print(f"write {i + 1}: {writes[-1]:.3f} s", flush=True)
    finally:
        probe.close()
    for name, times in (("git pull", pulls), ("write", writes)):
        print(
            f"reload ({name}): {statistics.median(times):.2f} s p50 "
            f"(p90 {percentile(times, 90):.2f} s, {len(times)} runs)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs of each kind (default 10)")
    parser.add_argument("--quick", action="store_true", help="3 runs of each kind (CI smoke)")
    args = parser.parse_args()
    if args.quick:
        args.runs = 3
    return run_benchmark("reload", lambda work, processes: run(args, work, processes))


if __name__ == "__main__":
    sys.exit(main())
