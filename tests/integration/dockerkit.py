"""Real Docker parts for tests: a busybox image, fleets that clean up, a registry, more engines.

Registered for the whole suite as a pytest plugin (`tests/conftest.py`), so operator and e2e
tests reuse the same fixtures:

- `docker_engine` (session): the local engine answers (started by `scripts/ensure-docker`).
- `busybox_image` (session): a `FROM scratch` image with static busybox as every command; its
  tag. Built locally in under a second, removed at the end of the session.
- `fleet_name` (function): a fresh fleet name; everything labelled with it is removed after.
- `docker_backend` (function, async): a `DockerBackend` for `fleet_name` on the local engine.
- `local_registry` (session): Debian's `docker-registry` on 127.0.0.1:<free port>
  (`LocalRegistry.push(image, repo)` returns the pullable reference).
- `tls_engine` (session): a second dockerd with `--tlsverify` on 127.0.0.1:<free port>, with
  CA, server and client certificates made by openssl (`Dockerd.tls`, `Dockerd.load(image)`).
- `spare_engine` (function): a plain second dockerd on a Unix socket that a test may stop.

Fixtures talk to engines with the docker CLI (synchronous and independent of the code under
test). Nothing here pulls from the internet: images are built or loaded locally, and every
network address is loopback.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from runscaler.backends.docker import DockerBackend, DockerTLSPaths
from tests.waiting import eventually_sync

REPO_ROOT = Path(__file__).resolve().parents[2]
BUSYBOX = Path("/bin/busybox")
FLEET_LABEL = "dev.runscaler.fleet"
# Built next to a copy of BUSYBOX named `busybox`: a shell image with no base image at all.
BUSYBOX_DOCKERFILE = (
    'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
)


def docker(
    *args: str,
    host: str | None = None,
    input: str | None = None,
    check: bool = True,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run the docker CLI (against `host` when given); output as text."""
    cmd = ["docker", *(["-H", host] if host else []), *args]
    result = subprocess.run(
        cmd,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr}")
    return result


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def cleanup_fleet(fleet: str, *, host: str | None = None) -> None:
    """Remove every container and volume labelled with `fleet` (after a test)."""
    selector = f"label={FLEET_LABEL}={fleet}"
    containers = docker("ps", "-aq", "--filter", selector, host=host).stdout.split()
    if containers:
        docker("rm", "-fv", *containers, host=host, check=False)
    volumes = docker("volume", "ls", "-q", "--filter", selector, host=host).stdout.split()
    if volumes:
        docker("volume", "rm", "-f", *volumes, host=host, check=False)


def build_image(tag: str, *, dockerfile: str, context: Path, host: str | None = None) -> str:
    """Build `dockerfile` in `context` with the classic builder and no network; return `tag`."""
    (context / "Dockerfile").write_text(dockerfile)
    docker("build", "--network=none", "-q", "-t", tag, str(context), host=host)
    return tag


@pytest.fixture(scope="session")
def docker_engine() -> str:
    """The local engine's address, once it answers (starting it where that is ours to do)."""
    if docker("version", check=False, timeout=30).returncode != 0:
        started = subprocess.run(
            [str(REPO_ROOT / "scripts" / "ensure-docker")],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if started.returncode != 0:
            pytest.fail(f"no Docker engine for the docker tests: {started.stderr.strip()}")
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


@pytest.fixture(scope="session")
def busybox_image(docker_engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A tiny shell image: static busybox at /bin/busybox, every applet linked in /bin."""
    context = tmp_path_factory.mktemp("busybox")
    shutil.copy(BUSYBOX, context / "busybox")
    tag = f"runscaler-test/busybox:{secrets.token_hex(4)}"
    build_image(tag, dockerfile=BUSYBOX_DOCKERFILE, context=context)
    try:
        yield tag
    finally:
        docker("rmi", "-f", tag, check=False)
        shutil.rmtree(context, ignore_errors=True)


@pytest.fixture
def fleet_name(docker_engine: str) -> Iterator[str]:
    """A fleet name no other test uses; its containers and volumes are removed afterwards."""
    name = unique("t")
    try:
        yield name
    finally:
        cleanup_fleet(name)


@pytest.fixture
async def docker_backend(fleet_name: str) -> AsyncIterator[DockerBackend]:
    backend = DockerBackend(fleet=fleet_name)
    try:
        yield backend
    finally:
        await backend.close()


# -- a local registry --------------------------------------------------------------------------


@dataclass
class LocalRegistry:
    """`docker-registry` serving plain HTTP on loopback (the engine trusts 127.0.0.0/8)."""

    host: str
    process: subprocess.Popen[bytes]
    pushed: list[str] = field(default_factory=list)

    def push(self, image: str, repo: str) -> str:
        """Push local `image` as `<registry>/<repo>`; return that reference. The local tag
        made for the push is removed again, so the reference is not present locally."""
        ref = f"{self.host}/{repo}"
        docker("tag", image, ref)
        try:
            docker("push", ref)
        finally:
            docker("rmi", ref, check=False)
        self.pushed.append(ref)
        return ref


@pytest.fixture(scope="session")
def local_registry(
    docker_engine: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalRegistry]:
    root = tmp_path_factory.mktemp("registry")
    port = free_port()
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'storage'}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    log = (root / "registry.log").open("wb")
    process = subprocess.Popen(
        ["docker-registry", "serve", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    registry = LocalRegistry(host=f"127.0.0.1:{port}", process=process)
    try:
        eventually_sync(
            lambda: _answers(f"http://127.0.0.1:{port}/v2/", process),
            timeout=30,
            message="the local registry to answer",
        )
        yield registry
    finally:
        for ref in registry.pushed:
            docker("rmi", "-f", ref, check=False)
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def _answers(url: str, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"{process.args!r} exited with {process.returncode}")
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


# -- more engines ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TLSFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @property
    def client(self) -> DockerTLSPaths:
        return DockerTLSPaths(ca=self.ca, cert=self.client_cert, key=self.client_key)


def make_tls_files(directory: Path) -> TLSFiles:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all made by openssl."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, capture_output=True, check=True)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=runscaler test CA",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
    )
    for who, usage, san in (
        ("server", "serverAuth", "subjectAltName=IP:127.0.0.1\n"),
        ("client", "clientAuth", ""),
    ):
        (directory / f"{who}.ext").write_text(
            f"{san}extendedKeyUsage={usage}\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
        )
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN=runscaler test {who}",
            "-keyout",
            f"{who}-key.pem",
            "-out",
            f"{who}.csr",
        )
        openssl(
            "x509",
            "-req",
            "-in",
            f"{who}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            f"{who}.ext",
            "-out",
            f"{who}.pem",
        )
    return TLSFiles(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server-key.pem",
        client_cert=directory / "client.pem",
        client_key=directory / "client-key.pem",
    )


@dataclass
class Dockerd:
    """A dockerd we started, with its own data root, exec root, pidfile and sockets."""

    root: Path
    process: subprocess.Popen[bytes]
    admin: str  # unix:// socket for fixtures (the CLI), whatever `host` is
    host: str  # what the code under test connects to
    tls: DockerTLSPaths | None = None

    def docker(self, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return docker(*args, host=self.admin, **kwargs)  # type: ignore[arg-type]

    def load(self, image: str) -> None:
        """Copy a local image into this engine (`docker save | docker -H … load`)."""
        saved = subprocess.run(["docker", "save", image], capture_output=True, check=True)
        subprocess.run(
            ["docker", "-H", self.admin, "load"],
            input=saved.stdout,
            capture_output=True,
            check=True,
        )

    def stop(self) -> None:
        """SIGTERM by PID, then SIGKILL after a deadline; its containerd goes with it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        containerd_pid = self.root / "exec" / "containerd" / "containerd.pid"
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(containerd_pid.read_text().strip()), signal.SIGTERM)

    def remove_dirs(self) -> None:
        """Unmount what the engine mounted under its root (mounts can be stacked: until none
        is left), then delete the root."""
        prefix = str(self.root) + "/"
        for _ in range(5):
            with open("/proc/self/mounts") as mounts:
                ours = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
            if not ours:
                break
            for mount in sorted(ours, reverse=True):
                subprocess.run(["umount", "-l", mount], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def start_dockerd(root: Path, *, tls: TLSFiles | None = None) -> Dockerd:
    """Start a dockerd beside the main one: no bridge, no iptables, its own everything.

    With `tls`, it also listens on 127.0.0.1:<free port> with `--tlsverify`, and `host` is that
    `tcp://` address; otherwise `host` is its Unix socket."""
    (root / "daemon.json").write_text("{}\n")
    admin = f"unix://{root}/docker.sock"
    args = [
        "dockerd",
        "--config-file",
        str(root / "daemon.json"),
        "--host",
        admin,
        "--data-root",
        str(root / "data"),
        "--exec-root",
        str(root / "exec"),
        "--pidfile",
        str(root / "docker.pid"),
        "--bridge=none",
        "--iptables=false",
        "--ip6tables=false",
        "--shutdown-timeout",
        "2",
    ]
    host = admin
    if tls is not None:
        host = f"tcp://127.0.0.1:{free_port()}"
        args += [
            "--host",
            host,
            "--tlsverify",
            "--tlscacert",
            str(tls.ca),
            "--tlscert",
            str(tls.server_cert),
            "--tlskey",
            str(tls.server_key),
        ]
    log = (root / "dockerd.log").open("wb")
    process = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    engine = Dockerd(
        root=root,
        process=process,
        admin=admin,
        host=host,
        tls=tls.client if tls is not None else None,
    )

    def ready() -> bool:
        if process.poll() is not None:
            tail = (root / "dockerd.log").read_text(errors="replace")[-2000:]
            raise AssertionError(f"dockerd exited with {process.returncode}:\n{tail}")
        return docker("version", host=admin, check=False, timeout=10).returncode == 0

    try:
        eventually_sync(ready, timeout=60, interval=0.1, message="the second dockerd")
    except BaseException:
        engine.stop()
        engine.remove_dirs()
        raise
    return engine


@pytest.fixture(scope="session")
def tls_engine(docker_engine: str) -> Iterator[Dockerd]:
    # Not under pytest's temp root: pytest removes that at the end of the session before
    # session fixtures are torn down, which would move the engine's mounts out of reach of
    # `remove_dirs` (and fail the removal on them).
    root = Path(tempfile.mkdtemp(prefix="runscaler-tlsd-"))
    engine = start_dockerd(root, tls=make_tls_files(root))
    try:
        yield engine
    finally:
        engine.stop()
        engine.remove_dirs()


@pytest.fixture
def spare_engine(docker_engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dockerd]:
    engine = start_dockerd(tmp_path_factory.mktemp("spared"))
    try:
        yield engine
    finally:
        engine.stop()
        engine.remove_dirs()
