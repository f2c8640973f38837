"""A real two-node Docker Swarm on loopback for tests, started and removed by the suite.

Registered as a pytest plugin (`tests/conftest.py`). `swarm_cluster` (session) starts two
dedicated engines beside the developer's (never that one: it must not become a swarm node), each
with its own socket, data root, exec root and pidfile, no bridge and no iptables: node 1 runs
`swarm init` advertising 127.0.0.1, node 2 joins advertising 127.0.0.2. The `ingress` network is
removed right after init (it opens a VXLAN port on 0.0.0.0; host-networked runners need neither
it nor `docker_gwbridge`). The busybox runner image goes through the local registry (bound to
127.0.0.1), so each node pulls it as a real swarm would. At the end every service is removed,
both engines leave the swarm and are stopped by PID, and their directories are deleted.

Both engines run on this one machine, so a path such as /var/run/docker.sock cannot mean "this
node's engine" to a task: `SwarmCluster.engine_socket` is a Swarm template
(`<dir>/{{.Node.ID}}.sock`, a link per node to its engine's socket), which is what the
operator's `swarm.engineSocket` takes. `hygiene_image` (session) is busybox with the host's
docker CLI, in the local registry, for the per-node hygiene job.

`SwarmCluster.stop_worker()` is a node failure (its engine stops); `start_worker()` brings the
node back (same data root: it rejoins), so later tests find two nodes again.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.dockerkit import (
    BUSYBOX,
    Dockerd,
    LocalRegistry,
    build_image,
    docker,
    free_port,
    start_dockerd,
)
from tests.waiting import eventually_sync

RUNNER_LABEL = "dev.runscaler.runner"
HEARTBEAT = "2s"  # the manager marks a silent node down after a few heartbeats


@dataclass
class SwarmCluster:
    manager: Dockerd
    worker: Dockerd
    manager_id: str
    worker_id: str
    image: str  # the busybox image, as every node pulls it from the local registry
    worker_root: Path
    worker_port: int
    sockets: Path  # <node id>.sock -> that node's engine socket

    @property
    def engine_socket(self) -> str:
        """Each node's own engine socket, as a Swarm template tasks expand on their node."""
        return f"{self.sockets}/{{{{.Node.ID}}}}.sock"

    def engines(self) -> dict[str, Dockerd]:
        """Node id -> its engine."""
        return {self.manager_id: self.manager, self.worker_id: self.worker}

    @property
    def host(self) -> str:
        """What the code under test talks to: the manager's socket."""
        return self.manager.host

    def nodes(self) -> dict[str, dict[str, str]]:
        """Node id -> {state, availability} as the manager reports them."""
        out = self.manager.docker("node", "ls", "--format", "{{json .}}").stdout
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        return {
            row["ID"]: {"state": row["Status"], "availability": row["Availability"]} for row in rows
        }

    def stop_worker(self) -> None:
        self.worker.stop()

    def start_worker(self) -> None:
        if self.worker.process.poll() is None:
            return
        self.worker = start_dockerd(self.worker_root)
        eventually_sync(
            lambda: self.nodes().get(self.worker_id, {}).get("state") == "Ready",
            timeout=60,
            interval=0.2,
            message="node 2 to rejoin the swarm",
        )

    def services(self, label: str) -> list[str]:
        out = self.manager.docker("service", "ls", "-q", "--filter", f"label={label}").stdout
        return out.split()

    def containers(self, label: str, *, running: bool = False) -> list[str]:
        """Containers carrying `label` on either node (only a running engine can say)."""
        found = []
        for engine in (self.manager, self.worker):
            if engine.process.poll() is None:
                listing = "-q" if running else "-aq"
                out = engine.docker("ps", listing, "--filter", f"label={label}").stdout
                found += out.split()
        return found

    def runner_tasks(self, label: str) -> dict[str, tuple[str, str]]:
        """Runner name -> (node id, task state) for the latest task of each service."""
        found: dict[str, tuple[str, str]] = {}
        for service in self.services(label):
            tasks = self.manager.docker("service", "ps", "-q", service, check=False).stdout.split()
            if not tasks:
                continue
            fmt = f'{{{{index .Spec.ContainerSpec.Labels "{RUNNER_LABEL}"}}}} {{{{.NodeID}}}} '
            fmt += "{{.Status.State}}"
            out = self.manager.docker("inspect", "--format", fmt, tasks[0], check=False).stdout
            parts = out.split()
            if len(parts) == 3:
                found[parts[0]] = (parts[1], parts[2])
        return found

    def worker_containers(self, label: str) -> list[str]:
        return self.worker.docker("ps", "-aq", "--filter", f"label={label}").stdout.split()

    def remove_services(self, label: str) -> None:
        ids = self.services(label)
        if ids:
            self.manager.docker("service", "rm", *ids, check=False)


def _swarm_init(manager: Dockerd) -> str:
    port = free_port()
    result = manager.docker(
        "swarm",
        "init",
        "--advertise-addr",
        "127.0.0.1",
        "--listen-addr",
        f"127.0.0.1:{port}",
        "--dispatcher-heartbeat",
        HEARTBEAT,
        check=False,
    )
    if result.returncode != 0:
        state = manager.docker("info", "--format", "{{.Swarm.LocalNodeState}}", check=False)
        if not state.stdout.strip() or "not supported" in result.stderr.lower():
            pytest.skip(f"the engine lacks swarm support: {result.stderr.strip()}")
        raise AssertionError(f"docker swarm init failed: {result.stderr}")
    manager.docker("network", "rm", "ingress", input="y\n")
    return f"127.0.0.1:{port}"


def _node_id(engine: Dockerd) -> str:
    return engine.docker("info", "--format", "{{.Swarm.NodeID}}").stdout.strip()


@contextlib.contextmanager
def running_swarm(image: str) -> Iterator[SwarmCluster]:
    """A two-node swarm on loopback for the duration of the block; `image` is a registry
    reference every node can pull. Used by the fixture and by `bench/swarm_scaleup.py`."""
    # Not under pytest's temp root: other pytest runs on the machine prune that one, and
    # these directories hold two live engines for the whole session.
    base = Path(tempfile.mkdtemp(prefix="runscaler-swarm-"))
    (base / "n1").mkdir()
    (base / "n2").mkdir()
    manager = start_dockerd(base / "n1")
    worker_root = base / "n2"
    worker: Dockerd | None = None
    cluster: SwarmCluster | None = None
    try:
        worker = start_dockerd(worker_root)
        address = _swarm_init(manager)
        token = manager.docker("swarm", "join-token", "-q", "worker").stdout.strip()
        port = free_port()
        worker.docker(
            "swarm",
            "join",
            "--token",
            token,
            "--advertise-addr",
            "127.0.0.2",
            "--listen-addr",
            f"127.0.0.2:{port}",
            address,
        )
        cluster = SwarmCluster(
            manager=manager,
            worker=worker,
            manager_id=_node_id(manager),
            worker_id=_node_id(worker),
            image=image,
            worker_root=worker_root,
            worker_port=port,
            sockets=base / "sockets",
        )
        cluster.sockets.mkdir()
        for node_id, engine in cluster.engines().items():
            (cluster.sockets / f"{node_id}.sock").symlink_to(engine.root / "docker.sock")
        eventually_sync(
            lambda: (
                all(n["state"] == "Ready" for n in cluster.nodes().values())
                and len(cluster.nodes()) == 2
            ),
            timeout=60,
            interval=0.2,
            message="both swarm nodes to be ready",
        )
        yield cluster
    finally:
        engines = [manager] + ([cluster.worker] if cluster else [worker] if worker else [])
        if cluster is not None:
            cluster.remove_services("dev.runscaler.fleet")
        for engine in reversed(engines):
            if engine.process.poll() is None:
                docker("swarm", "leave", "--force", host=engine.admin, check=False, timeout=60)
        for engine in engines:
            engine.stop()
            engine.remove_dirs()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def swarm_cluster(
    docker_engine: str,
    busybox_image: str,
    local_registry: LocalRegistry,
) -> Iterator[SwarmCluster]:
    image = local_registry.push(busybox_image, "runscaler-test/swarm-busybox:1")
    with running_swarm(image) as cluster:
        yield cluster


def pinned(cluster: SwarmCluster, node_id: str) -> str:
    """A placement constraint that pins tasks to one node."""
    return f"node.id=={node_id}"


@pytest.fixture(scope="session")
def hygiene_image(
    swarm_cluster: SwarmCluster,
    local_registry: LocalRegistry,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """busybox and this host's docker CLI (with the libraries it links), in the registry."""
    cli = shutil.which("docker")
    assert cli is not None
    context = tmp_path_factory.mktemp("hygiene-image")
    shutil.copy(BUSYBOX, context / "busybox")
    shutil.copy(cli, context / "docker")
    lines = ["FROM scratch", "COPY busybox /bin/busybox", "COPY docker /bin/docker"]
    # A static CLI links nothing (ldd then fails); Debian's links the C library.
    linked = subprocess.run(["ldd", cli], capture_output=True, text=True, check=False).stdout
    for index, path in enumerate(re.findall(r"(/\S+\.so[.\d]*)", linked)):
        shutil.copy(path, context / f"lib{index}")
        lines.append(f"COPY lib{index} {path}")
    lines.append('RUN ["/bin/busybox", "--install", "-s", "/bin"]')
    local = f"runscaler-test/hygiene-build:{secrets.token_hex(4)}"
    build_image(local, dockerfile="\n".join(lines) + "\n", context=context)
    try:
        yield local_registry.push(local, "runscaler-test/hygiene:1")
    finally:
        docker("rmi", "-f", local, check=False)
        shutil.rmtree(context, ignore_errors=True)
