"""Benchmark: N runners started through the Swarm backend, against N `docker service create`.

Both sides run in the same process run, on the same two-node swarm on loopback (two dedicated
engines, never the default one; `tests/integration/swarmkit.py`), with the same busybox image
pulled from a local registry on 127.0.0.1. The backend side is `SwarmBackend.start()` x N in
parallel (each returns once its task runs); the baseline is N `docker service create -d
--mode replicated-job` from the CLI in parallel (`--no-resolve-image`, as the backend does not
resolve digests either), then waiting for every task to run, observed by the same task listing.
Rounds alternate which side goes first; medians are compared.

    python bench/swarm_scaleup.py [--runners 12] [--rounds 3] [--quick]

Besides the time to N running, each side's "create" time (all create calls answered) is
printed: when it is most of the total, the manager's rate of accepting services is the limit.
The last line is `swarm_scaleup: T s (ratio R vs docker service create xN)`.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "operator")]

from tests.integration.dockerkit import (  # noqa: E402
    BUSYBOX,
    BUSYBOX_DOCKERFILE,
    build_image,
    docker,
    free_port,
)
from tests.integration.swarmkit import SwarmCluster, running_swarm  # noqa: E402

from runscaler.backends.base import LABEL_FLEET, LABEL_RUNNER, RunnerSpec  # noqa: E402
from runscaler.backends.swarm import SwarmBackend  # noqa: E402
from runscaler.backends.swarm_tasks import Phase  # noqa: E402
from runscaler.manifest.models import SwarmTemplate  # noqa: E402


class Registry:
    """Debian's docker-registry on 127.0.0.1 with the busybox image pushed; removed on exit."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        (root / "config.yml").write_text(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root / 'storage'}\n"
            f"http:\n  addr: 127.0.0.1:{self.port}\n"
        )
        self.log = (root / "registry.log").open("wb")
        self.process = subprocess.Popen(
            ["docker-registry", "serve", str(root / "config.yml")],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while not self._answers():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit("swarm_scaleup: the local registry did not start")
            time.sleep(0.1)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v2/", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def push(self, image: str, repo: str) -> str:
        ref = f"127.0.0.1:{self.port}/{repo}"
        docker("tag", image, ref)
        try:
            docker("push", ref)
        finally:
            docker("rmi", ref, check=False)
        return ref

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.log.close()


def _spec(name: str, template: SwarmTemplate) -> RunnerSpec:
    return RunnerSpec(
        name=name,
        jit_config=f"JIT-{secrets.token_hex(16)}",
        labels={LABEL_RUNNER: name},
        template=template,
    )


async def backend_side(cluster: SwarmCluster, n: int) -> tuple[float, float]:
    """(seconds to every create answered, seconds to every task running) via the backend."""
    fleet = f"bench-sw-{secrets.token_hex(3)}"
    template = SwarmTemplate.model_validate(
        {"image": cluster.image, "user": "0", "network": "host", "command": ["sleep", "600"]}
    )
    backend = SwarmBackend(fleet=fleet, host=cluster.host, poll_interval=0.2)
    names = [f"bench-{i:08x}" for i in range(n)]
    created: list[float] = []
    began = time.monotonic()
    try:

        async def one(name: str) -> None:
            await backend.start(_spec(name, template))
            created.append(time.monotonic() - began)

        await asyncio.gather(*(one(name) for name in names))
        total = time.monotonic() - began
        await asyncio.gather(*(backend.remove(name) for name in names))
    finally:
        await backend.close()
        cluster.remove_services(f"{LABEL_FLEET}={fleet}")
    # start() returns once its task runs, so its create call is not timed apart: the first
    # runner up is the floor of what one placement costs.
    return min(created), total


def _create_args(cluster: SwarmCluster, fleet: str, i: int) -> list[str]:
    # fmt: off
    return [
        "docker", "-H", cluster.manager.admin, "service", "create", "-d", "-q",
        "--no-resolve-image", "--name", f"runscaler-{fleet}-{i:08x}",
        "--mode", "replicated-job", "--restart-condition", "none",
        "--network", "host", "--user", "0",
        "--label", f"{LABEL_FLEET}={fleet}",
        "--container-label", f"{LABEL_FLEET}={fleet}",
        "--container-label", f"{LABEL_RUNNER}=cli-{i:08x}",
        cluster.image, "sleep", "600",
    ]
    # fmt: on


async def cli_side(cluster: SwarmCluster, n: int) -> tuple[float, float]:
    """(seconds to every `service create` returned, seconds to every task running)."""
    fleet = f"bench-cli-{secrets.token_hex(3)}"
    observer = SwarmBackend(fleet=fleet, host=cluster.host)
    began = time.monotonic()
    try:
        processes = [
            await asyncio.create_subprocess_exec(
                *_create_args(cluster, fleet, i),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            for i in range(n)
        ]
        for process in processes:
            _, err = await process.communicate()
            if process.returncode != 0:
                raise SystemExit(f"swarm_scaleup: docker service create failed: {err.decode()}")
        created = time.monotonic() - began
        while True:
            snapshot = await observer.snapshot()
            up = [r for r in snapshot.runners.values() if r.phase is Phase.RUNNING]
            if len(up) >= n:
                break
            if time.monotonic() - began > 300:
                raise SystemExit("swarm_scaleup: the CLI's services did not all run in 300s")
            await asyncio.sleep(0.2)
        total = time.monotonic() - began
    finally:
        await observer.close()
        cluster.remove_services(f"{LABEL_FLEET}={fleet}")
    return created, total


async def rounds(cluster: SwarmCluster, n: int, count: int) -> None:
    ours: list[float] = []
    theirs: list[float] = []
    # Untimed: both nodes pull the image once, so no side pays for the first pull.
    await cli_side(cluster, n)
    await asyncio.sleep(2)
    for round_no in range(count):
        order = ["backend", "cli"] if round_no % 2 == 0 else ["cli", "backend"]
        for side in order:
            if side == "backend":
                first, total = await backend_side(cluster, n)
                ours.append(total)
                print(f"round {round_no + 1} backend: first running {first:.2f}s, all {total:.2f}s")
            else:
                created, total = await cli_side(cluster, n)
                theirs.append(total)
                print(f"round {round_no + 1} cli: all created {created:.2f}s, all {total:.2f}s")
            await asyncio.sleep(2)  # let the removed tasks' containers go before the next side
    mine, base = statistics.median(ours), statistics.median(theirs)
    print(f"swarm_scaleup: {mine:.2f} s (ratio {mine / base:.2f} vs docker service create x{n})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runners", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one round")
    args = parser.parse_args()
    if args.quick:
        args.rounds = 1
    root = Path(tempfile.mkdtemp(prefix="runscaler-bench-swarm-"))
    tag = f"runscaler-bench/busybox:{secrets.token_hex(4)}"
    registry: Registry | None = None
    try:
        context = root / "image"
        context.mkdir()
        shutil.copy(BUSYBOX, context / "busybox")
        build_image(tag, dockerfile=BUSYBOX_DOCKERFILE, context=context)
        (root / "registry").mkdir()
        registry = Registry(root / "registry")
        image = registry.push(tag, "runscaler-bench/busybox:1")
        with running_swarm(image) as cluster:
            asyncio.run(rounds(cluster, args.runners, args.rounds))
    finally:
        if registry is not None:
            registry.close()
        docker("rmi", "-f", tag, check=False)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
