"""A dockerd of the chaos suite's own, so restarting the engine disturbs nobody else.

It has its own socket, data root, exec root and pidfile, no bridge and no iptables (runners use
the host network), and `live-restore`: restarting it is an engine upgrade as operators meet it,
where running runner containers survive and the operator must reconnect. The stand-in runner
image is built on it with the simulator's own `build-image` script, pointed at this engine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from runscaler.simulator.runner import RUNNER_IMAGE, build_script

FLEET_LABEL = "dev.runscaler.fleet"


def _cli(host: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "-H", host, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class ChaosEngine:
    """One dedicated dockerd; `restart()` stops and starts it on the same directories."""

    root: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    @classmethod
    def create(cls) -> ChaosEngine:
        # Short: a Unix socket path must fit in 108 bytes.
        root = Path(tempfile.mkdtemp(prefix="rs-chaos-"))
        (root / "daemon.json").write_text('{"live-restore": true}\n')
        return cls(root=root)

    @property
    def host(self) -> str:
        return f"unix://{self.root}/docker.sock"

    def docker(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return _cli(self.host, *args, timeout=timeout)

    def start(self, *, timeout: float = 60) -> None:
        args = [
            "dockerd",
            "--config-file", str(self.root / "daemon.json"),
            "--host", self.host,
            "--data-root", str(self.root / "data"),
            "--exec-root", str(self.root / "exec"),
            "--pidfile", str(self.root / "docker.pid"),
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            "--shutdown-timeout", "2",
        ]  # fmt: skip
        with (self.root / "dockerd.log").open("ab") as log:
            self.process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while self.docker("version", timeout=10).returncode != 0:
            if self.process.poll() is not None:
                tail = (self.root / "dockerd.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the chaos dockerd exited ({self.process.returncode}):\n{tail}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the chaos dockerd did not answer within {timeout}s")
            time.sleep(0.1)  # a readiness poll, not a fixed wait

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop_daemon(self) -> None:
        """SIGTERM by PID (live-restore keeps containers running), SIGKILL past a deadline."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def restart(self) -> None:
        self.stop_daemon()
        self.start()
        self.restarts += 1

    def build_runner_image(self) -> None:
        """`runscaler-sim-runner:latest` on this engine, from the packaged build script."""
        env = {**os.environ, "DOCKER_HOST": self.host, "RUNNER_SCRIPT_DIGEST": "chaos"}
        done = subprocess.run(
            ["/bin/sh", str(build_script()), RUNNER_IMAGE],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"cannot build {RUNNER_IMAGE} on the chaos engine: {done.stderr}")

    def containers(self, fleet: str) -> list[dict[str, str]]:
        """The fleet's containers: id, name, state, scale set and runner labels."""
        fmt = (
            '{{.ID}}\t{{.Names}}\t{{.State}}\t{{.Label "dev.runscaler.scale-set"}}'
            '\t{{.Label "dev.runscaler.runner"}}'
        )
        out = self.docker(
            "ps", "-a", "--no-trunc", "--filter", f"label={FLEET_LABEL}={fleet}", "--format", fmt
        )
        if out.returncode != 0:
            raise RuntimeError(f"docker ps on the chaos engine failed: {out.stderr.strip()}")
        keys = ("id", "name", "state", "scale_set", "runner")
        return [dict(zip(keys, line.split("\t"), strict=True)) for line in out.stdout.splitlines()]

    def volumes(self, fleet: str) -> list[str]:
        out = self.docker("volume", "ls", "-q", "--filter", f"label={FLEET_LABEL}={fleet}")
        if out.returncode != 0:
            raise RuntimeError(f"docker volume ls on the chaos engine failed: {out.stderr.strip()}")
        return out.stdout.split()

    def remove_fleet(self, fleet: str) -> None:
        with contextlib.suppress(RuntimeError):
            ids = [c["id"] for c in self.containers(fleet)]
            if ids:
                self.docker("rm", "-fv", *ids)
            volumes = self.volumes(fleet)
            if volumes:
                self.docker("volume", "rm", "-f", *volumes)

    def destroy(self) -> None:
        """Stop the daemon (containers first: live-restore would leave them running) and
        remove its directories, mounts included."""
        if self.alive():
            ids = self.docker("ps", "-aq").stdout.split()
            if ids:
                self.docker("rm", "-fv", *ids, timeout=120)
        self.stop_daemon()
        containerd_pid = self.root / "exec" / "containerd" / "containerd.pid"
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(containerd_pid.read_text().strip()), signal.SIGTERM)
        prefix = str(self.root) + "/"
        with open("/proc/self/mounts") as mounts:
            ours = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
        for mount in sorted(ours, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)
