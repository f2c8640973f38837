"""The simulator's stand-in runner: the `run.sh` script, and its image built without a registry.

`run.sh` lives the life of an ephemeral runner against the simulator (see `broker.py` for the
endpoints it speaks). `build-image` turns it into `runscaler-sim-runner:latest`, `FROM scratch`
with Debian's static busybox; `build_runner_image()` runs that script only when the image is
missing or was built from other files, so callers may call it every time.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from runscaler.errors import UserError

RUNNER_IMAGE = "runscaler-sim-runner:latest"
DIGEST_LABEL = "dev.runscaler.sim-runner.digest"
_HERE = Path(__file__).parent
_BUSYBOX = Path("/bin/busybox")


def runner_script() -> Path:
    """The packaged `run.sh`."""
    return _HERE / "run.sh"


def build_script() -> Path:
    """The packaged `build-image` script."""
    return _HERE / "build-image"


def _digest(busybox: Path) -> str:
    digest = hashlib.sha256()
    for path in (runner_script(), build_script(), busybox):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:32]


def _built_digest(docker: str) -> str | None:
    label = f'{{{{index .Config.Labels "{DIGEST_LABEL}"}}}}'
    probe = subprocess.run(
        [docker, "image", "inspect", "--format", label, RUNNER_IMAGE],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return probe.stdout.strip() if probe.returncode == 0 else None


def build_runner_image(*, docker: str = "docker") -> None:
    """Build `RUNNER_IMAGE` from /bin/busybox unless it is already built from these files."""
    busybox = Path(os.environ.get("BUSYBOX", _BUSYBOX))
    if not busybox.is_file():
        raise UserError(
            f"cannot build {RUNNER_IMAGE}: no static busybox at {busybox}: "
            "install busybox-static (apt-get install busybox-static)"
        )
    digest = _digest(busybox)
    try:
        if _built_digest(docker) == digest:
            return
        env = {**os.environ, "DOCKER": docker, "RUNNER_SCRIPT_DIGEST": digest}
        build = subprocess.run(
            ["/bin/sh", str(build_script()), RUNNER_IMAGE],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
            check=False,
        )
    except FileNotFoundError as exc:
        raise UserError(f"cannot build {RUNNER_IMAGE}: {exc.filename} not found") from None
    if build.returncode != 0:
        lines = [line for line in build.stderr.splitlines() if line.strip()]
        why = lines[-1] if lines else f"exit status {build.returncode}"
        raise UserError(f"cannot build {RUNNER_IMAGE}: {why}: is the Docker engine running?")
