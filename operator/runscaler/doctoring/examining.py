"""One `runscaler doctor` run: the checks, the leftover search and, with `--fix`, the cleanup.

With a manifest, everything is about its fleet: its engines, its scale sets on GitHub, its
sessions. Without one, doctor checks the default engine and lists the leftovers of every fleet
found there by label (or of `--fleet`), which needs no credentials; `--fix` then needs
`--fleet` to say whose leftovers to remove. `--fix` holds the fleet's lock while it works, so
it refuses while an operator of the fleet runs and no operator can start underneath it.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from runscaler.backends.base import BackendError
from runscaler.backends.docker import DockerBackend
from runscaler.backends.swarm import SwarmBackend
from runscaler.doctoring import checks, placed
from runscaler.doctoring.fixing import FixContext, fix_leftovers
from runscaler.doctoring.leftovers import (
    FleetView,
    RunnerLookup,
    buildx_leftovers,
    container_leftovers,
    fleet_containers,
    session_is_open,
    shared_volume_leftovers,
)
from runscaler.doctoring.report import DoctorReport, Leftover
from runscaler.engine.backendpool import BackendPool
from runscaler.engine.fleetlock import FleetLock, holder
from runscaler.engine.resolving import resolve_credentials
from runscaler.engine.statefile import OwnedScaleSet, StateFile
from runscaler.errors import ManifestError, UserError
from runscaler.github.client import RetryPolicy, ScaleSetClient
from runscaler.github.errors import GitHubError
from runscaler.manifest.loading import LoadedManifest, load_manifest
from runscaler.manifest.models import FLEET_NAME_PATTERN, DockerTemplate, ScaleSet
from runscaler.paths import default_manifest_path


@dataclass(frozen=True)
class DoctorSettings:
    manifest: Path | None  # FILE as given; None: the default, when it exists
    state_dir: Path
    fix: bool = False
    fleet: str | None = None  # --fleet: whose leftovers, without a manifest
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(3, 1.0, 5.0))
    clock: Callable[[], float] = time.time


@dataclass
class _Engine:
    backend: DockerBackend
    templates: list[DockerTemplate] = field(default_factory=list)
    reachable: bool = False


async def examine(settings: DoctorSettings) -> DoctorReport:
    """Run every check, find the leftovers, fix them when asked; `UserError` for a refusal."""
    examination = _Examination(settings)
    try:
        return await examination.run()
    finally:
        await examination.close()


class _Examination:
    def __init__(self, settings: DoctorSettings) -> None:
        self.settings = settings
        self.report = DoctorReport(fixing=settings.fix)
        self.loaded: LoadedManifest | None = None
        self.fleet: str | None = settings.fleet
        self.engines: dict[str, _Engine] = {}
        self.clients: dict[str, ScaleSetClient] = {}
        self.lock: FleetLock | None = None
        self._pool = BackendPool()
        self._own_backends: list[DockerBackend] = []
        self._operators: dict[str, bool] = {}
        self.placed = placed.Placed()

    async def run(self) -> DoctorReport:
        self.report.checks.append(checks.python_check())
        self._load_manifest()
        self.report.from_manifest = self.loaded is not None
        self._settle_fleet()
        if self.settings.fix:
            self._take_lock()
        await self._check_engines()
        await self._check_scale_sets()
        self._owned_clients()
        self.report.checks.append(checks.state_dir_check(self.settings.state_dir))
        if self.fleet is not None:
            self.report.checks.append(
                checks.operator_check(
                    self.settings.state_dir, self.fleet, held_by_us=self.lock is not None
                )
            )
        self.report.leftovers = await self._find(self.report.notes)
        self.report.remaining = self.report.leftovers
        if self.settings.fix and self.report.leftovers:
            self.report.outcomes = await fix_leftovers(self.report.leftovers, self._fix_context())
            self.report.remaining = await self._find([])
        return self.report

    async def close(self) -> None:
        for client in self.clients.values():
            await client.aclose()
        for backend in self._own_backends:
            await backend.close()
        await self._pool.close()
        if self.lock is not None:
            self.lock.release()

    # -- what the run is about -------------------------------------------------------------

    def _load_manifest(self) -> None:
        path = self.settings.manifest
        if path is None:
            path = default_manifest_path()
            if not path.exists():
                whose = f"fleet {self.fleet}" if self.fleet else "every fleet found there"
                self.report.add(
                    "warn",
                    "manifest",
                    f"no manifest at {path}: checking the default engine and the leftovers of "
                    f"{whose} (give FILE to check a fleet completely)",
                )
                return
        try:
            self.loaded = load_manifest(path)
        except ManifestError as exc:
            hint = f" (runscaler validate {path} shows every problem)" if path.exists() else ""
            self.report.add("fail", "manifest", f"{exc}{hint}")
            return
        fleet = self.loaded.fleet
        count = len(fleet.scale_sets)
        self.report.add(
            "ok",
            "manifest",
            f"{path}: fleet {fleet.metadata.name}, {count} scale set{'s' if count != 1 else ''}",
        )
        for warning in self.loaded.warnings:
            self.report.add("warn", "manifest", warning.located())

    def _settle_fleet(self) -> None:
        wanted = self.settings.fleet
        if wanted is not None and not re.fullmatch(FLEET_NAME_PATTERN, wanted):
            raise UserError(f"--fleet {wanted!r}: not a fleet name (metadata.name)")
        if self.loaded is not None:
            name = self.loaded.fleet.metadata.name
            if wanted is not None and wanted != name:
                raise UserError(
                    f"--fleet {wanted} does not match the manifest's fleet {name}: "
                    "leave --fleet out, or give that fleet's manifest"
                )
            self.fleet = name
        if self.settings.fix and self.fleet is None:
            raise UserError(
                "--fix without a manifest needs --fleet NAME: say whose leftovers to remove "
                "(runscaler doctor lists them by fleet)"
            )

    def _take_lock(self) -> None:
        assert self.fleet is not None
        state_dir = self.settings.state_dir
        try:
            self.lock = FleetLock.acquire(state_dir, self.fleet)
            return
        except UserError:
            pid = holder(state_dir, self.fleet)
            if pid is None:
                raise  # the state directory itself is the problem: its message says so
        who = f" (pid {pid})" if pid and pid > 0 else ""
        raise UserError(
            f"refusing to fix: an operator of fleet {self.fleet} is running{who} with the "
            f"state directory {state_dir}; stop it first (runscaler doctor without --fix "
            "only lists)"
        )

    # -- checks ------------------------------------------------------------------------------

    async def _check_engines(self) -> None:
        loaded = self.loaded
        if loaded is None or not any(s.backend == "docker" for s in loaded.fleet.scale_sets):
            backend = DockerBackend(fleet=self.fleet or "doctor")
            self._own_backends.append(backend)
            self.engines[backend.host] = _Engine(backend)
        else:
            self._group_engines(loaded)
        for engine in self.engines.values():
            check = await checks.engine_check(engine.backend)
            self.report.checks.append(check)
            engine.reachable = check.status == "ok"
            if engine.reachable:
                found = await checks.image_checks(engine.backend, engine.templates)
                self.report.checks.extend(found)
        if loaded is not None:
            self._place(loaded)
            tart = checks.tart_check(loaded.fleet.scale_sets)
            if tart is not None:
                self.report.checks.append(tart)

    def _place(self, loaded: LoadedManifest) -> None:
        """The Tart homes and Swarm managers whose VMs and services are searched."""
        fleet = loaded.fleet.metadata.name
        self.placed.tart_homes = placed.homes_of(loaded.fleet.scale_sets, loaded.base_dir)
        for scale_set in loaded.fleet.scale_sets:
            if scale_set.backend != "swarm":
                continue
            try:
                swarm = self._pool.backend_for(fleet, scale_set, loaded.base_dir)
            except BackendError as exc:
                self.report.add("fail", "swarm", f"{scale_set.name}: {exc}")
                continue
            assert isinstance(swarm, SwarmBackend)
            self.placed.swarms[swarm.host] = swarm

    def _group_engines(self, loaded: LoadedManifest) -> None:
        for scale_set in loaded.fleet.scale_sets:
            if scale_set.backend != "docker":
                continue
            try:
                backend = self._pool.backend_for(
                    loaded.fleet.metadata.name, scale_set, loaded.base_dir
                )
            except BackendError as exc:
                self.report.add("fail", "docker", f"{scale_set.name}: {exc}")
                continue
            assert isinstance(backend, DockerBackend)
            engine = self.engines.setdefault(backend.host, _Engine(backend))
            engine.templates.append(scale_set.docker)

    async def _check_scale_sets(self) -> None:
        loaded = self.loaded
        if loaded is None:
            return
        scale_sets = loaded.fleet.scale_sets
        found = await asyncio.gather(
            *(checks.scale_set_check(loaded, s, retry=self.settings.retry) for s in scale_sets)
        )
        for scale_set, check in zip(scale_sets, found, strict=True):
            self.report.checks.append(check)
            if check.status == "ok":
                self.clients[scale_set.key] = _client(loaded, scale_set, self.settings.retry)

    # -- leftovers ---------------------------------------------------------------------------

    def _view(self, fleet: str) -> FleetView:
        if fleet not in self._operators:
            ours = self.lock is not None and fleet == self.fleet
            self._operators[fleet] = not ours and holder(self.settings.state_dir, fleet) is not None
        lookups: dict[str, RunnerLookup] = {}
        if self.loaded is not None and fleet == self.fleet:
            lookups.update(self.clients)
        return FleetView(fleet, operator_running=self._operators[fleet], lookups=lookups)

    async def _find(self, notes: list[str]) -> list[Leftover]:
        found: list[Leftover] = []
        for engine in self.engines.values():
            if not engine.reachable:
                continue
            try:
                found += await self._on_engine(engine, notes)
            except BackendError as exc:
                notes.append(f"leftovers on {engine.backend.host} not searched: {exc}")
        if self.loaded is not None and self.fleet is not None:
            operator = self._view(self.fleet).operator_running
            found += await placed.vm_leftovers(
                self.fleet, self.placed.tart_homes, operator_running=operator, notes=notes
            )
            found += await placed.service_leftovers(self.fleet, self.placed.swarms, notes=notes)
        if self.loaded is not None:
            found += await self._sessions(self.loaded, notes)
            found += await self._removed(self.loaded, notes)
        return found

    def _dropped(self, loaded: LoadedManifest) -> list[tuple[OwnedScaleSet, ScaleSet]]:
        """Scale sets this fleet owns (its state file says) that the manifest no longer names."""
        fleet = loaded.fleet.metadata.name
        named = {s.key for s in loaded.fleet.scale_sets}
        dropped = []
        for memo in StateFile.for_fleet(self.settings.state_dir, fleet).owned():
            if memo.key in named or memo.scale_set_id is None:
                continue
            try:
                dropped.append((memo, ScaleSet.model_validate(memo.spec)))
            except ValueError:
                continue
        return dropped

    def _owned_clients(self) -> None:
        """GitHub clients for the dropped scale sets, so their runners can be judged too."""
        if self.loaded is None:
            return
        for memo, scale_set in self._dropped(self.loaded):
            if memo.key not in self.clients:
                self.clients[memo.key] = _client_at(memo.base_dir, scale_set, self.settings.retry)

    async def _removed(self, loaded: LoadedManifest, notes: list[str]) -> list[Leftover]:
        fleet = loaded.fleet.metadata.name
        if self._view(fleet).operator_running:
            return []  # it is draining and deleting them itself
        found = []
        for memo, scale_set in self._dropped(loaded):
            where = f"{scale_set.name} ({scale_set.github.url})"
            assert memo.scale_set_id is not None
            try:
                exists = await self.clients[memo.key].get_scale_set_by_id(memo.scale_set_id)
            except (GitHubError, UserError) as exc:
                notes.append(f"scale set {where} not checked: {exc}")
                continue
            if exists is None:
                continue
            doing = (
                "was draining when its operator stopped"
                if memo.deleting_deadline is not None
                else "the manifest no longer names it"
            )
            found.append(
                Leftover(
                    fleet=fleet,
                    kind="removed scale set",
                    name=f"#{memo.scale_set_id}",
                    where=where,
                    reason=f"owned by this fleet and still on GitHub; {doing}",
                    scale_set_key=memo.key,
                    scale_set_id=memo.scale_set_id,
                )
            )
        return found

    async def _on_engine(self, engine: _Engine, notes: list[str]) -> list[Leftover]:
        backend = engine.backend
        summaries = await fleet_containers(backend, fleet=self.fleet)
        found = await container_leftovers(backend, summaries, view_for=self._view, notes=notes)
        if self.loaded is None or self.fleet is None:
            return found
        in_use = any(t.shared_volume and t.shared_volume.path for t in engine.templates)
        found += await shared_volume_leftovers(backend, fleet=self.fleet, in_use=in_use)
        ttl = _buildx_ttl(engine.templates)
        if ttl is not None:
            now = self.settings.clock()
            found += await buildx_leftovers(backend, fleet=self.fleet, ttl=ttl, now=now)
        return found

    async def _sessions(self, loaded: LoadedManifest, notes: list[str]) -> list[Leftover]:
        fleet = loaded.fleet.metadata.name
        if self._view(fleet).operator_running:
            return []  # the sessions it recorded are the ones it is listening on
        memory = StateFile.for_fleet(self.settings.state_dir, fleet)
        found = []
        for scale_set in loaded.fleet.scale_sets:
            memo = memory.get(scale_set.key)
            if memo.session_id is None or memo.scale_set_id is None:
                continue
            where = f"{scale_set.name} ({scale_set.github.url})"
            client = self.clients.get(scale_set.key)
            if client is None:
                notes.append(
                    f"session {memo.session_id} of {where} not checked: its GitHub check failed"
                )
                continue
            try:
                still_open = await session_is_open(client, memo.scale_set_id, memo.session_id)
            except GitHubError as exc:
                notes.append(f"session {memo.session_id} of {where} not checked: {exc}")
                continue
            if still_open:
                found.append(
                    Leftover(
                        fleet=fleet,
                        kind="stale session",
                        name=memo.session_id,
                        where=where,
                        reason="opened by an operator of this fleet that is gone; it holds the "
                        "scale set on GitHub until it expires",
                        scale_set_key=scale_set.key,
                        scale_set_id=memo.scale_set_id,
                    )
                )
        return found

    def _fix_context(self) -> FixContext:
        memory = None
        if self.fleet is not None:
            memory = StateFile.for_fleet(self.settings.state_dir, self.fleet)
        return FixContext(
            backends={host: e.backend for host, e in self.engines.items()},
            clients=self.clients,
            placed=self.placed,
            state_file=memory,
            buildx_ttl={
                host: ttl
                for host, e in self.engines.items()
                if (ttl := _buildx_ttl(e.templates)) is not None
            },
            now=self.settings.clock(),
        )


def _buildx_ttl(templates: list[DockerTemplate]) -> float | None:
    """The sweeper's ttl on an engine: only where jobs can reach the engine (`dind`)."""
    ttls = [t.buildx_cleanup.ttl for t in templates if t.dind and t.buildx_cleanup.enabled]
    return min(ttls) if ttls else None


def _client(loaded: LoadedManifest, scale_set: ScaleSet, retry: RetryPolicy) -> ScaleSetClient:
    return _client_at(loaded.base_dir, scale_set, retry)


def _client_at(base_dir: Path, scale_set: ScaleSet, retry: RetryPolicy) -> ScaleSetClient:
    github = scale_set.github
    return ScaleSetClient(
        config_url=github.url,
        credentials=lambda: resolve_credentials(scale_set, base_dir),
        proxy=github.proxy,
        ca_bundle=base_dir / github.ca_bundle if github.ca_bundle else None,
        retry=retry,
    )
