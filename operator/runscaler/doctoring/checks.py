"""The environment checks of `runscaler doctor`, each one line: ok, warn or fail.

Python and its dependencies, each Docker engine (reachable, its version, the images present or
pullable), `tart` on PATH, per scale set the GitHub credentials, runner group and scale set (the
dry run's own checks), the state directory, and whether an operator of the fleet runs. A
failing line says what to do; nothing here changes anything.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from runscaler.backends.base import Backend, BackendError
from runscaler.backends.docker import DockerBackend
from runscaler.backends.docker_client import engine_calls
from runscaler.doctoring.report import Check
from runscaler.engine.backendpool import BackendPool, UnavailableBackend
from runscaler.engine.dryrun import check_scale_set
from runscaler.engine.fleetlock import holder
from runscaler.github.client import RetryPolicy
from runscaler.manifest.loading import LoadedManifest
from runscaler.manifest.models import DockerTemplate, RunnerTemplate, ScaleSet

MIN_PYTHON = (3, 11)
# The distributions runscaler imports (`runscaler version` lists the same).
DEPENDENCIES = (
    ("pydantic", "pydantic"),
    ("ruamel.yaml", "ruamel.yaml"),
    ("tomli-w", "tomli_w"),
    ("jsonschema", "jsonschema"),
    ("httpx", "httpx"),
    ("h11", "h11"),
    ("aiohttp", "aiohttp"),
    ("watchfiles", "watchfiles"),
    ("rich", "rich"),
    ("PyJWT", "jwt"),
    ("prometheus-client", "prometheus_client"),
)
_ENGINE_ADVICE = "try runscaler doctor"


def python_check() -> Check:
    version = ".".join(str(n) for n in sys.version_info[:3])
    if sys.version_info[:2] < MIN_PYTHON:
        wanted = ".".join(str(n) for n in MIN_PYTHON)
        return Check("fail", "python", f"Python {version} is too old: runscaler needs {wanted}+")
    broken = []
    for distribution, module in DEPENDENCIES:
        try:
            metadata.version(distribution)
            __import__(module)
        except (metadata.PackageNotFoundError, ImportError) as exc:
            broken.append(f"{distribution} ({type(exc).__name__})")
    if broken:
        return Check(
            "fail",
            "python",
            f"cannot import {', '.join(broken)}: reinstall runscaler in this environment "
            f"({sys.executable} -m pip install --force-reinstall runscaler)",
        )
    return Check("ok", "python", f"Python {version}; {len(DEPENDENCIES)} dependencies import")


def engine_problem(message: str) -> str:
    """An unreachable engine's message with doctor's own advice instead of "try doctor"."""
    if message.endswith(_ENGINE_ADVICE):
        message = message.removesuffix(_ENGINE_ADVICE).rstrip("; ?")
        message += "? start it (systemctl start docker, or scripts/ensure-docker) or fix "
        message += "docker.host (or $DOCKER_HOST)"
    return message


async def engine_check(backend: DockerBackend) -> Check:
    try:
        with engine_calls(backend.host, "cannot query the engine"):
            version = await backend.api().query_json("version")
    except BackendError as exc:
        return Check("fail", "docker", engine_problem(str(exc)))
    api = version.get("ApiVersion", "?")
    return Check(
        "ok", "docker", f"Docker {version.get('Version', '?')} (API {api}) at {backend.host}"
    )


async def image_checks(backend: DockerBackend, templates: Iterable[DockerTemplate]) -> list[Check]:
    """One line per distinct image (with its pull policy and platform) on a reachable engine."""
    seen: set[tuple[str, str, str | None]] = set()
    checks = []
    for template in templates:
        key = (template.image, template.pull, template.platform)
        if key in seen:
            continue
        seen.add(key)
        try:
            summary = await backend.check(template)
        except BackendError as exc:
            checks.append(Check("fail", "image", engine_problem(str(exc))))
        else:
            checks.append(Check("ok", "image", summary))
    return checks


def tart_check(scale_sets: Iterable[ScaleSet]) -> Check | None:
    names = [s.name for s in scale_sets if s.backend == "tart"]
    if not names:
        return None
    found = shutil.which("tart")
    if found is None:
        return Check(
            "fail",
            "tart",
            f"scale sets {', '.join(names)} use backend tart, but `tart` is not on PATH: "
            "install Tart (brew install cirruslabs/cli/tart) on macOS on Apple Silicon",
        )
    return Check("ok", "tart", f"tart at {found}")


class _EnginesChecked(UnavailableBackend):
    """The dry run's backend step, skipped: engines and images are checked once per engine."""

    async def check(self, template: RunnerTemplate) -> str:
        return ""


class _GitHubOnlyPool(BackendPool):
    def backend_for(self, fleet: str, scale_set: ScaleSet, base_dir: Path) -> Backend:
        return _EnginesChecked("checked per engine")


async def scale_set_check(
    loaded: LoadedManifest, scale_set: ScaleSet, *, retry: RetryPolicy
) -> Check:
    """Credentials, runner group and the scale set on GitHub, as `run --dry-run` proves them."""
    result = await check_scale_set(
        scale_set,
        fleet=loaded.fleet.metadata.name,
        base_dir=loaded.base_dir,
        pool=_GitHubOnlyPool(),
        retry=retry,
    )
    subject = f"{scale_set.name} ({scale_set.github.url})"
    if not result.ok:
        return Check("fail", "scale set", f"{subject}: {result.problem}")
    if result.labels:
        # The scale set works, but jobs asking for the labels GitHub dropped never run on it.
        return Check(
            "warn", "scale set", f"{subject}: scale set {result.scale_set}; {result.labels}"
        )
    return Check(
        "ok",
        "scale set",
        f"{subject}: credentials ok, runner group {result.runner_group}, "
        f"scale set {result.scale_set}",
    )


def state_dir_check(state_dir: Path) -> Check:
    """Writable (or creatable), proven by writing a file when the directory exists."""
    if state_dir.is_dir():
        try:
            with tempfile.TemporaryFile(dir=state_dir, prefix=".doctor-"):
                pass
        except OSError as exc:
            return Check(
                "fail",
                "state dir",
                f"cannot write to {state_dir}: {exc.strerror or exc}: fix its permissions "
                "or pass --state-dir DIR",
            )
        return Check("ok", "state dir", f"{state_dir} is writable")
    if state_dir.exists():
        return Check("fail", "state dir", f"{state_dir} is not a directory: pass --state-dir DIR")
    parent = state_dir.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return Check(
            "fail", "state dir", f"{state_dir} cannot be created: {parent} is not a directory"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        return Check(
            "fail",
            "state dir",
            f"{state_dir} does not exist and {parent} is not writable: create it or pass "
            "--state-dir DIR",
        )
    return Check("ok", "state dir", f"{state_dir} does not exist yet; it will be created")


def operator_check(state_dir: Path, fleet: str, *, held_by_us: bool = False) -> Check:
    if held_by_us:
        return Check("ok", "operator", f"no operator of fleet {fleet} runs (doctor holds its lock)")
    pid = holder(state_dir, fleet)
    if pid is None:
        return Check("ok", "operator", f"no operator of fleet {fleet} runs with {state_dir}")
    who = f" (pid {pid})" if pid > 0 else ""
    return Check(
        "ok",
        "operator",
        f"an operator of fleet {fleet} runs{who} with {state_dir}: --fix refuses while it runs",
    )
