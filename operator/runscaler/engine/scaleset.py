"""One scale set at run time: its GitHub client, listener and scaler, supervised together.

The controller creates one `ScaleSetRuntime` per scale set in the manifest and tells it about
changes; the runtime decides which of its parts a change touches, so a resize never reconnects
and a credential change never touches a runner. A failure inside is logged with the scale set's
name, backed off and restarted; it never reaches the controller or another scale set.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from runscaler.backends.base import Backend
from runscaler.engine.listener import Backoff, Listener, ListenerSettings, ListenerTiming
from runscaler.engine.runnerops import RegisteredRunner
from runscaler.engine.runners import RunnerState
from runscaler.engine.scaler import Scaler, ScalerMetrics, ScalerTiming, Template
from runscaler.engine.statefile import StateFile
from runscaler.engine.status import FailureStatus, RunnerStatus, ScaleSetStatus
from runscaler.engine.tasks import stop_task
from runscaler.errors import UserError
from runscaler.github.auth import AppCredentials, Credentials, TokenCredentials
from runscaler.github.client import RetryPolicy, ScaleSetClient
from runscaler.github.errors import (
    GitHubError,
    RunnerNotFoundError,
    ScaleSetNotFoundError,
    TransportError,
)
from runscaler.github.models import JitConfig, JobCompleted, JobStarted
from runscaler.manifest.models import ScaleSet
from runscaler.manifest.secrets import resolve_secret
from runscaler.manifest.values import parse_config_url

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RuntimeTiming:
    listener: ListenerTiming = field(default_factory=ListenerTiming)
    scaler: ScalerTiming = field(default_factory=ScalerTiming)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    restart_initial: float = 1.0
    restart_max: float = 60.0
    delete_retry: float = 5.0


class FleetMetrics(Protocol):
    """What the runtime reports as it happens (gauges are read from snapshots instead)."""

    def job_started(self, scale_set: ScaleSet, job: JobStarted) -> None: ...

    def job_completed(self, scale_set: ScaleSet, job: JobCompleted) -> None: ...

    def runner_started(self, scale_set: ScaleSet, seconds: float) -> None: ...

    def runner_failed(self, scale_set: ScaleSet, reason: str) -> None: ...


class NoMetrics:
    def job_started(self, scale_set: ScaleSet, job: JobStarted) -> None:
        del scale_set, job

    def job_completed(self, scale_set: ScaleSet, job: JobCompleted) -> None:
        del scale_set, job

    def runner_started(self, scale_set: ScaleSet, seconds: float) -> None:
        del scale_set, seconds

    def runner_failed(self, scale_set: ScaleSet, reason: str) -> None:
        del scale_set, reason


class _ScalerMetrics(ScalerMetrics):
    """The fleet's metrics, bound to one runtime's current scale set."""

    def __init__(self, runtime: ScaleSetRuntime, metrics: FleetMetrics) -> None:
        self._runtime = runtime
        self._metrics = metrics

    def runner_started(self, seconds: float) -> None:
        self._metrics.runner_started(self._runtime.scale_set, seconds)

    def runner_failed(self, reason: str) -> None:
        self._metrics.runner_failed(self._runtime.scale_set, reason)


def resolve_credentials(scale_set: ScaleSet, base_dir: Path) -> Credentials:
    """Resolve the scale set's auth secret refs now (re-read on every call)."""
    auth = scale_set.github.auth
    if auth.token is not None:
        return TokenCredentials(token=resolve_secret(auth.token, base_dir=base_dir))
    assert auth.app is not None
    return AppCredentials(
        client_id=auth.app.client_id,
        installation_id=auth.app.installation_id,
        private_key=resolve_secret(auth.app.private_key, base_dir=base_dir),
    )


def credentials_fingerprint(scale_set: ScaleSet, base_dir: Path) -> str:
    """A hash of everything the GitHub connection depends on, secrets resolved."""
    creds = resolve_credentials(scale_set, base_dir)
    parts = [
        scale_set.normalized_url,
        scale_set.github.proxy or "",
        scale_set.github.ca_bundle or "",
    ]
    if isinstance(creds, TokenCredentials):
        parts.append(creds.token)
    else:
        parts += [creds.client_id, str(creds.installation_id), creds.private_key]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def template_of(scale_set: ScaleSet, base_dir: Path) -> Template:
    spec = scale_set.template
    dumped = json.dumps(spec.model_dump(mode="json"), sort_keys=True)
    env: dict[str, str] = {}
    if scale_set.backend == "docker":
        env = {k: resolve_secret(v, base_dir=base_dir) for k, v in scale_set.docker.env.items()}
    return Template(spec=spec, hash=hashlib.sha256(dumped.encode()).hexdigest()[:12], env=env)


def listener_settings(scale_set: ScaleSet) -> ListenerSettings:
    return ListenerSettings(
        name=scale_set.name,
        runner_group=scale_set.runner_group,
        labels=scale_set.all_labels,
        min_runners=scale_set.min_runners,
        max_runners=scale_set.max_runners,
    )


class _Registry:
    """The scaler's view of GitHub: always the runtime's current client and scale set id.

    Only `GitHubError` leaves here: a client closed under an in-flight call (`RuntimeError`)
    or a `file:` secret gone missing during a token refresh (`UserError`) is translated."""

    def __init__(self, runtime: ScaleSetRuntime) -> None:
        self._runtime = runtime

    async def register(self, runner_name: str) -> JitConfig:
        with _github_only("register a runner"):
            scale_set_id = await self._scale_set_id()
            return await self._runtime.client.generate_jit_config(
                scale_set_id, runner_name=runner_name
            )

    async def _scale_set_id(self) -> int:
        # The listener can be replaced while this waits (a reconnect): follow the current one.
        while True:
            listener = self._runtime.listener
            if listener.scale_set_known.is_set() and listener.scale_set_id is not None:
                return listener.scale_set_id
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await listener.scale_set_known.wait()

    async def unregister(self, runner_id: int) -> None:
        with (
            _github_only(f"unregister runner {runner_id}"),
            contextlib.suppress(RunnerNotFoundError),
        ):
            await self._runtime.client.remove_runner(runner_id)

    async def lookup(self, runner_name: str) -> RegisteredRunner | None:
        with _github_only(f"look up runner {runner_name}"):
            return await _registered_runner(self._runtime.client, runner_name)


@contextlib.contextmanager
def _github_only(what: str) -> Iterator[None]:
    try:
        yield
    except GitHubError:
        raise
    except (RuntimeError, UserError) as exc:
        raise TransportError(f"cannot {what}: {exc}") from exc


async def _registered_runner(client: ScaleSetClient, name: str) -> RegisteredRunner | None:
    found = await client.get_runner_by_name(name)
    if found is None:
        return None
    return RegisteredRunner(id=found.id, busy=found.busy, online=found.online)


class ScaleSetRuntime:
    """Listener + scaler for one scale set, and what a plan can do to them."""

    def __init__(
        self,
        *,
        fleet: str,
        scale_set: ScaleSet,
        base_dir: Path,
        backend: Backend,
        state_file: StateFile,
        owner: str,
        start_limiter: asyncio.Semaphore,
        timing: RuntimeTiming = RuntimeTiming(),
        metrics: FleetMetrics | None = None,
    ) -> None:
        self.fleet = fleet
        self.scale_set = scale_set
        self.base_dir = base_dir
        self._state_file = state_file
        self._owner = owner
        self._timing = timing
        self._metrics: FleetMetrics = metrics or NoMetrics()
        self.credentials_fingerprint = credentials_fingerprint(scale_set, base_dir)
        self.client = self._new_client()
        self.scaler = Scaler(
            fleet=fleet,
            scale_set_name=scale_set.name,
            scale_set_key=scale_set.key,
            template=template_of(scale_set, base_dir),
            max_runners=scale_set.max_runners,
            backend=backend,
            registry=_Registry(self),
            start_limiter=start_limiter,
            timing=timing.scaler,
            metrics=_ScalerMetrics(self, self._metrics),
            scale_down_delay=lambda: self.scale_set.scale_down_delay,
        )
        self.listener = self._new_listener()
        self.phase = "suspended" if scale_set.suspended else "active"  # | draining | stopped
        self._listener_task: asyncio.Task[None] | None = None
        self._scaler_task: asyncio.Task[None] | None = None
        self._drain_task: asyncio.Task[None] | None = None

    # -- wiring ----------------------------------------------------------------------------

    def _new_client(self) -> ScaleSetClient:
        github = self.scale_set.github
        ca_bundle = self.base_dir / github.ca_bundle if github.ca_bundle else None
        return ScaleSetClient(
            config_url=github.url,
            credentials=lambda: resolve_credentials(self.scale_set, self.base_dir),
            proxy=github.proxy,
            ca_bundle=ca_bundle,
            retry=self._timing.retry,
        )

    def _new_listener(self) -> Listener:
        listener = Listener(
            client=self.client,
            settings=listener_settings(self.scale_set),
            hooks=self,
            owner=self._owner,
            state_file=self._state_file,
            key=self.scale_set.key,
            timing=self._timing.listener,
        )
        old = getattr(self, "listener", None)
        if old is not None and old.scale_set_id is not None:
            listener.scale_set_id = old.scale_set_id  # found again by id, without a search
        return listener

    # ScalerHooks, with metrics on the way through.
    def desired_runners(self, count: int) -> None:
        self.scaler.desired_runners(count)

    def job_started(self, job: JobStarted) -> None:
        self._metrics.job_started(self.scale_set, job)
        self.scaler.job_started(job)

    def job_completed(self, job: JobCompleted) -> None:
        self._metrics.job_completed(self.scale_set, job)
        self.scaler.job_completed(job)

    # -- life ------------------------------------------------------------------------------

    def start(self) -> None:
        self._scaler_task = self._supervise(self.scaler.run, "scaler")
        if self.phase == "active":
            self._start_listener()

    def _start_listener(self) -> None:
        self._listener_task = self._supervise(self.listener.run, "listener")

    def _supervise(
        self, run: Callable[[], Coroutine[Any, Any, None]], part: str
    ) -> asyncio.Task[None]:
        async def supervised() -> None:
            backoff = Backoff(self._timing.restart_initial, self._timing.restart_max)
            while True:
                try:
                    await run()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception:
                    delay = backoff.next()
                    log.exception(
                        "%s: the %s failed unexpectedly; restarting in %.1fs",
                        self.scale_set.name,
                        part,
                        delay,
                    )
                    await asyncio.sleep(delay)

        return asyncio.create_task(supervised(), name=f"{part}:{self.scale_set.name}")

    async def _stop_listener(self) -> None:
        """Close the session: GitHub assigns this scale set no new jobs through us."""
        task, self._listener_task = self._listener_task, None
        await stop_task(task)

    async def _stop_scaler(self) -> None:
        task, self._scaler_task = self._scaler_task, None
        await stop_task(task)

    # -- what plans do ---------------------------------------------------------------------

    async def update(self, new: ScaleSet, *, reconnect: bool) -> None:
        """Apply a changed scale set in place; only the parts that changed are touched."""
        old, self.scale_set = self.scale_set, new
        settings = listener_settings(new)
        self.scaler.set_max_runners(new.max_runners)
        self.scaler.set_template(template_of(new, self.base_dir))
        if reconnect:
            log.info("%s: credentials changed; reconnecting", new.name)
            await self._stop_listener()
            await self.client.aclose()
            self.credentials_fingerprint = credentials_fingerprint(new, self.base_dir)
            self.client = self._new_client()
            self.listener = self._new_listener()
        else:
            self.listener.update_settings(settings)
        github_settings_changed = (
            old.runner_group != new.runner_group or old.all_labels != new.all_labels
        )
        if github_settings_changed and not reconnect:
            try:
                await self.listener.sync_scale_set()
            except GitHubError as exc:
                log.warning("%s: cannot update the scale set on GitHub yet: %s", new.name, exc)
        if new.suspended and self.phase == "active":
            self.suspend()
        elif not new.suspended and self.phase in ("draining", "suspended"):
            await self.resume()
        elif reconnect and self.phase == "active":
            self._start_listener()

    def suspend(self) -> None:
        """Keep the scale set; take no new jobs; idle runners go, busy ones finish (up to
        `drainTimeout`). Runs in the background: a later change may resume it."""
        self.phase = "draining"
        self._drain_task = asyncio.create_task(self._suspend(), name=f"suspend:{self.name}")

    async def _suspend(self) -> None:
        await self._stop_listener()
        await self.scaler.drain(self.scale_set.drain_timeout)
        self.phase = "suspended"

    async def resume(self) -> None:
        """Undo a suspension (or a delete still draining): listen and scale again."""
        await self._cancel_drain()
        self.phase = "active"
        self.scaler.resume()
        if self._scaler_task is None:
            self._scaler_task = self._supervise(self.scaler.run, "scaler")
        if self._listener_task is None:
            self._start_listener()

    async def _cancel_drain(self) -> None:
        task, self._drain_task = self._drain_task, None
        await stop_task(task)

    async def delete(self) -> None:
        """Drain (up to `drainTimeout`), then delete the scale set on GitHub. The caller runs
        this as a task; cancelling it (the scale set came back) leaves the runtime usable."""
        self.phase = "draining"
        await self._cancel_drain()
        await self._stop_listener()
        await self.scaler.drain(self.scale_set.drain_timeout)
        await self._stop_scaler()
        await self._delete_on_github()
        self.phase = "stopped"
        await self.client.aclose()

    @property
    def name(self) -> str:
        return self.scale_set.name

    async def _delete_on_github(self) -> None:
        memo = self._state_file.get(self.scale_set.key)
        scale_set_id = self.listener.scale_set_id or memo.scale_set_id
        while scale_set_id is not None:
            try:
                await self.client.delete_scale_set(scale_set_id)
                log.info("%s: deleted the scale set on GitHub", self.name)
                break
            except ScaleSetNotFoundError:
                break
            except GitHubError as exc:
                log.warning(
                    "%s: GitHub refused to delete the scale set (%s); retrying in %.0fs",
                    self.name,
                    exc,
                    self._timing.delete_retry,
                )
                await asyncio.sleep(self._timing.delete_retry)
        self._state_file.forget(self.scale_set.key)

    async def shutdown(self) -> None:
        """Process exit: close the session, remove idle runners, leave busy ones running."""
        await self._cancel_drain()
        await self._stop_listener()
        with contextlib.suppress(Exception):
            await self.scaler.remove_idle_runners()
        await self._stop_scaler()
        await self.client.aclose()

    # -- status ----------------------------------------------------------------------------

    @property
    def state(self) -> str:
        if self.phase in ("draining", "suspended"):
            return self.phase
        if self.scaler.degraded is not None:
            return "degraded"
        return self.listener.state

    def _last_error(self) -> str | None:
        """What is wrong now: the backend, GitHub, or runners failing in a row."""
        if self.scaler.degraded is not None:
            return self.scaler.degraded
        if self.listener.last_error is not None:
            return self.listener.last_error
        failure = self.scaler.last_failure
        if failure is not None and self.scaler.failures_in_row > 0:
            return f"{failure.message} ({self.scaler.failures_in_row} in a row)"
        return None

    def snapshot(self) -> ScaleSetStatus:
        stats = self.listener.statistics
        scope = parse_config_url(self.scale_set.github.url)
        failure = self.scaler.last_failure
        return ScaleSetStatus(
            name=self.scale_set.name,
            url=self.scale_set.github.url,
            key=self.scale_set.key,
            state=self.state,
            desired=self.scaler.desired,
            idle=self.scaler.count(RunnerState.IDLE),
            busy=self.scaler.count(RunnerState.BUSY),
            starting=self.scaler.count(RunnerState.STARTING),
            assigned_jobs=stats.total_assigned_jobs if stats else 0,
            running_jobs=stats.total_running_jobs if stats else 0,
            registered_runners=stats.total_registered_runners if stats else 0,
            min_runners=self.scale_set.min_runners,
            max_runners=self.scale_set.max_runners,
            organization=scope.organization,
            repository=scope.repository,
            enterprise=scope.enterprise,
            last_error=self._last_error() or self.scaler.outdated,
            last_failure=None
            if failure is None
            else FailureStatus(
                failure.reason, failure.message, failure.exit_code, failure.log_tail, failure.at
            ),
            failures_in_row=self.scaler.failures_in_row,
            runners=tuple(
                RunnerStatus(
                    name=r.name,
                    state=r.state.value,
                    since=r.since,
                    job_id=r.job_id,
                    template_hash=r.template_hash,
                    exit_code=r.exit_code,
                    reason=r.reason,
                    node=r.node,
                )
                for r in sorted(self.scaler.records(), key=lambda r: r.created_at)
            ),
            messages_unparseable=self.listener.messages_unparseable,
        )
