"""Runners as Docker containers: the `Backend` protocol on one Docker engine, for one fleet.

One `DockerBackend` serves every scale set of a fleet that uses one engine (`unix://` socket or
`tcp://` with client TLS). Starting a runner is exactly two engine calls (create, start), because
start latency is what a waiting job feels; everything slower (pulls, the shared volume) happens
once in `prepare`. Everything we create carries the fleet label, so a restarted operator finds
its runners and never touches anything else. Exits come from the engine's event stream
(`docker_events`), housekeeping lives in `docker_sweep`, and no transport error or engine error
answer leaves this package untranslated (`docker_client.engine_calls`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import Iterator, Mapping

from runscaler.backends.base import (
    JIT_CONFIG_ENV,
    LABEL_FLEET,
    LABEL_RUNNER,
    BackendError,
    BackendUnavailable,
    OwnedRunner,
    RunnerNotFound,
    RunnerSpec,
)
from runscaler.backends.docker_api import DockerAPI, EngineError
from runscaler.backends.docker_client import (
    DockerTLSPaths,
    LazyClient,
    default_host,
    default_tls,
    engine_calls,
    engine_message,
    parse_host,
)
from runscaler.backends.docker_containers import (
    LABEL_ROLE,
    create_container,
    force_remove,
    output_lines,
    run_helper,
)
from runscaler.backends.docker_events import ExitSubscription, ExitWatch
from runscaler.backends.docker_pull import REFRESH_INTERVAL, ImagePuller, PullProgress
from runscaler.backends.docker_spec import (
    container_name,
    docker_template,
    runner_container,
    shared_volume_name,
)
from runscaler.logs import REDACTED, secrets
from runscaler.manifest.models import DockerTemplate, RunnerTemplate

__all__ = ["DockerBackend", "DockerTLSPaths", "container_name", "shared_volume_name"]

log = logging.getLogger(__name__)

_EXITED = re.compile(r"^Exited \((-?\d+)\)")
_RUNNING_STATES = frozenset({"running", "restarting", "paused"})
# Where helpers mount the shared volume (any path works: they only sweep or chmod it).
HELPER_MOUNT = "/runscaler-shared"


class DockerBackend:
    """Runs one fleet's runners on one Docker engine.

    `host` defaults to `$DOCKER_HOST` (with `$DOCKER_TLS_VERIFY`/`$DOCKER_CERT_PATH`, as the
    docker CLI reads them), else the local socket. `tls` paths must already be absolute.
    """

    def __init__(
        self,
        *,
        fleet: str,
        host: str | None = None,
        tls: DockerTLSPaths | None = None,
        pull_progress: PullProgress | None = None,
        image_refresh: float = REFRESH_INTERVAL,
    ) -> None:
        self.fleet = fleet
        self.host = host or default_host()
        # Like the docker CLI: an engine named by the environment brings its TLS settings.
        self._tls = tls if tls is not None or host is not None else default_tls(self.host)
        self._endpoint = parse_host(self.host, tls=self._tls)
        self._client = LazyClient(self._endpoint, self._tls)
        self._socket_gid: int | None = None
        self._puller = ImagePuller(
            docker=self.api, host=self.host, progress=pull_progress, refresh_interval=image_refresh
        )
        self._exits = ExitWatch(
            docker=self.api, host=self.host, fleet=fleet, on_outdated=self._puller.mark_stale
        )
        self._shared_ready = False
        self._shared_lock = asyncio.Lock()
        self._jit_configs: dict[str, str] = {}

    # -- plumbing shared with the housekeeping module -------------------------------------

    def api(self) -> DockerAPI:
        """The engine's API client (created on first use); wrap calls in `engine_calls`."""
        return self._client.get()

    async def close(self) -> None:
        await self._exits.close()
        await self._puller.close()
        await self._client.close()

    # -- Backend ---------------------------------------------------------------------------

    async def check(self, template: RunnerTemplate) -> str:
        docker = docker_template(template)
        with engine_calls(self.host, "cannot query the engine"):
            version = await self.api().query_json("version")
        engine = f"Docker {version.get('Version', '?')} at {self.host}"
        image = docker.image
        present = await self._puller.present(image)
        if docker.pull == "never" or (docker.pull == "missing" and present):
            if not present:
                await self._puller.ensure(image, policy="never", platform=docker.platform)
            return f"{engine}: image {image} present (pull: {docker.pull})"
        try:
            digest = await self._puller.pullable(image)
        except BackendUnavailable:
            raise
        except BackendError as exc:
            why = engine_message(exc)
            if present:
                return f"{engine}: image {image} present; the registry check failed ({why})"
            raise BackendError(
                f"image {image} is not on Docker at {self.host} and cannot be pulled: {why}"
            ) from exc
        where = "present, and" if present else "not present;"
        return f"{engine}: image {image} {where} pullable ({digest or 'no digest'})"

    async def prepare(self, template: RunnerTemplate) -> None:
        docker = docker_template(template)
        await self._puller.ensure(docker.image, policy=docker.pull, platform=docker.platform)
        if docker.shared_volume is not None and docker.shared_volume.path:
            await self._ensure_shared_volume(docker)

    async def start(self, spec: RunnerSpec) -> None:
        template = docker_template(spec.template)
        name = container_name(self.fleet, spec.name)
        body = runner_container(
            spec,
            fleet=self.fleet,
            engine_socket=self._endpoint.socket_path,
            socket_gid=self._engine_socket_gid() if template.dind else None,
        )
        secrets.add(spec.jit_config)
        self._jit_configs[spec.name] = spec.jit_config
        log.debug("starting container %s from %s", name, template.image)
        docker = self.api()
        try:
            with _backend_errors(f"cannot create container {name}"):
                with engine_calls(self.host, f"cannot create container {name}"):
                    container_id = await create_container(
                        docker, body, name=name, platform=template.platform
                    )
        except BaseException:
            # Failed or cancelled while the engine was creating it: it may exist, but it
            # never started. Remove it by name so no created-but-dead container is left.
            await self._remove_unstarted(name, spec.name)
            raise
        try:
            with _backend_errors(f"cannot start container {name}"):
                with engine_calls(self.host, f"cannot start container {name}"):
                    await docker.query(f"containers/{container_id}/start", method="POST")
        except BackendError:
            # The engine said no: it did not start.
            await self._remove_unstarted(container_id, spec.name)
            raise
        # Cancelled while the engine was starting it: it may be running and may take a job,
        # so it stays (the caller tracks it, or the next start adopts it; a container that
        # did not start lists as not running and is removed then).

    async def _remove_unstarted(self, ref: str, runner: str) -> None:
        try:
            await asyncio.shield(force_remove(self.api(), ref))
        except Exception as exc:
            # Adoption (or the scaler's resync) removes it later: it lists as not running.
            log.debug("could not remove %s after a failed start: %r", ref, exc)
        self._forget(runner)

    async def remove(self, name: str) -> None:
        cname = container_name(self.fleet, name)
        with engine_calls(self.host, f"cannot remove container {cname}"):
            removed = await force_remove(self.api(), cname)
        self._forget(name)
        if not removed:
            raise RunnerNotFound(f"runner {name}: no container {cname} on Docker at {self.host}")

    async def list_owned(self, selector: Mapping[str, str]) -> list[OwnedRunner]:
        labels = [f"{LABEL_FLEET}={self.fleet}", LABEL_RUNNER]
        labels += [f"{key}={value}" for key, value in selector.items()]
        with engine_calls(self.host, "cannot list containers"):
            found = await self.api().list_containers(label=labels)
        return [_owned(summary) for summary in found]

    def exits(self, selector: Mapping[str, str]) -> ExitSubscription:
        """Exits of our runners matching `selector`; see `docker_events` (subscribed at once,
        even before iteration starts)."""
        return self._exits.subscribe(selector)

    async def logs_tail(self, name: str, lines: int = 20) -> list[str]:
        cname = container_name(self.fleet, name)
        docker = self.api()
        with engine_calls(self.host, f"cannot read the output of container {cname}"):
            try:
                info = await docker.query_json(f"containers/{cname}/json")
                tail = await output_lines(docker, cname, tail=lines)
            except EngineError as exc:
                if exc.status == 404:
                    raise RunnerNotFound(f"runner {name}: no container {cname}") from exc
                raise
        hidden = [self._jit_configs.get(name), _env_value(info, JIT_CONFIG_ENV)]
        return [_scrub(line, hidden) for line in tail]

    # -- internals -------------------------------------------------------------------------

    def _forget(self, name: str) -> None:
        secrets.discard(self._jit_configs.pop(name, None))

    def _engine_socket_gid(self) -> int | None:
        path = self._endpoint.socket_path
        if path is None:
            return None
        if self._socket_gid is None:
            try:
                self._socket_gid = os.stat(path).st_gid
            except OSError:
                return None
        return self._socket_gid

    async def _ensure_shared_volume(self, template: DockerTemplate) -> None:
        async with self._shared_lock:
            if self._shared_ready:
                return
            name = shared_volume_name(self.fleet)
            docker = self.api()
            with engine_calls(self.host, f"cannot create volume {name}"):
                try:
                    await docker.query_json(f"volumes/{name}")
                    created = False
                except EngineError as exc:
                    if exc.status != 404:
                        raise
                    labels = {LABEL_FLEET: self.fleet, LABEL_ROLE: "shared"}
                    body = {"Name": name, "Labels": labels}
                    await docker.query_json("volumes/create", method="POST", body=body)
                    created = True
            if created:
                # A new volume's root belongs to root; every runner user must be able to write.
                result = await run_helper(
                    docker,
                    host=self.host,
                    fleet=self.fleet,
                    role="volume-setup",
                    image=template.image,
                    script=f"chmod 1777 {HELPER_MOUNT}",
                    binds=[f"{name}:{HELPER_MOUNT}:nocopy"],
                    platform=template.platform,
                )
                if result.exit_code != 0:
                    log.warning(
                        "shared volume %s: could not open it to all users (exit %d): %s",
                        name,
                        result.exit_code,
                        " / ".join(result.output[-3:]),
                    )
            self._shared_ready = True


@contextlib.contextmanager
def _backend_errors(what: str) -> Iterator[None]:
    """Whatever else the client raises (a closed session's RuntimeError, an answer without
    an id) leaves as a `BackendError`, the cause chained."""
    try:
        yield
    except BackendError:
        raise
    except Exception as exc:
        raise BackendError(f"{what}: {exc!r}") from exc


def _owned(summary: Mapping[str, object]) -> OwnedRunner:
    labels = summary.get("Labels")
    labels = dict(labels) if isinstance(labels, dict) else {}
    state = str(summary.get("State", ""))
    exited = _EXITED.match(str(summary.get("Status", "")))
    created = summary.get("Created")
    return OwnedRunner(
        name=labels.get(LABEL_RUNNER, ""),
        labels=labels,
        running=state in _RUNNING_STATES,
        exit_code=int(exited.group(1)) if exited and state not in _RUNNING_STATES else None,
        created_at=float(created) if isinstance(created, int | float) else None,
    )


def _env_value(info: Mapping[str, object], key: str) -> str | None:
    config = info.get("Config")
    env = config.get("Env") if isinstance(config, dict) else None
    for item in env or ():
        if isinstance(item, str) and item.startswith(f"{key}="):
            return item[len(key) + 1 :]
    return None


def _scrub(line: str, hidden: list[str | None]) -> str:
    for value in hidden:
        if value:
            line = line.replace(value, REDACTED)
    return secrets.redact(line)
