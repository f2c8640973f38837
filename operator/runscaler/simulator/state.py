"""The simulator's state machine: GitHub's side of scale sets, sessions, runners and jobs.

Pure: no I/O and no clock of its own. Every transition takes `now` (seconds since the epoch)
and either changes the records or raises `ApiError` with the status and exception the real
service answers. The HTTP layer (`app.py`, `broker.py`) only translates; time-driven changes
(re-dispatch, session expiry, a runner's work being done) happen in `tick(now)`, which the
server calls at `next_deadline()`. That keeps every rule testable by tables.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from runscaler.simulator import records as r
from runscaler.simulator.realism import Dice, Realism
from runscaler.simulator.records import ApiError, Job, Runner, ScaleSet, Session, Statistics
from runscaler.simulator.runnerstate import RunnerTransitions
from runscaler.simulator.views import job_message, state_view


class SimState(RunnerTransitions):
    """Everything the simulated GitHub knows. Read freely in tests; change it through methods."""

    def __init__(
        self,
        *,
        base_url: str = "http://127.0.0.1",
        poll_wait: float = 50.0,
        session_timeout: float = 60.0,
        redispatch_interval: float = 300.0,
        runner_lost_timeout: float = 10.0,
        realism: Realism = Realism(),  # noqa: B008 (frozen)
    ) -> None:
        self.base_url = base_url
        self.realism = realism
        self.dice = Dice(realism)
        self.poll_wait = poll_wait
        self.session_timeout = session_timeout
        self.redispatch_interval = redispatch_interval
        self.runner_lost_timeout = runner_lost_timeout
        self.tenants: dict[str, str] = {}  # tenant id → scope ("acme", "acme/web", "enterprises/x")
        self.runner_groups: dict[int, str] = {r.DEFAULT_GROUP_ID: r.DEFAULT_GROUP_NAME}
        self.scale_sets: dict[int, ScaleSet] = {}
        self.deleted_scale_sets: dict[int, str] = {}
        self.sessions: dict[str, Session] = {}
        self.runners: dict[int, Runner] = {}
        self.jobs: dict[int, Job] = {}
        # Indexes over `jobs`, so the clock and dispatch never walk finished jobs.
        self._queued: dict[int, Job] = {}
        self._open: dict[int, Job] = {}
        self._next = {"scale_set": 0, "runner": 0, "job": 0, "message": 0, "group": 1}

    def _id(self, kind: str) -> int:
        self._next[kind] += 1
        return self._next[kind]

    # -- tenants and runner groups ------------------------------------------------------------

    def tenant_for(self, scope: str) -> str:
        """The Actions service tenant of a registration scope, made on first use."""
        scope = scope.strip("/").lower()
        for tenant, known in self.tenants.items():
            if known == scope:
                return tenant
        tenant = f"tenant-{len(self.tenants) + 1}"
        self.tenants[tenant] = scope
        return tenant

    def service_url(self, tenant: str) -> str:
        return f"{self.base_url}/_services/pipelines/{tenant}/"

    def add_runner_group(self, name: str) -> int:
        if any(known.lower() == name.lower() for known in self.runner_groups.values()):
            raise ApiError(409, "RunnerGroupExistsException", f"Runner group {name} exists.")
        group_id = self._id("group")
        self.runner_groups[group_id] = name
        return group_id

    def runner_groups_named(self, name: str) -> list[tuple[int, str]]:
        return [(i, n) for i, n in self.runner_groups.items() if n.lower() == name.lower()]

    # -- scale sets -----------------------------------------------------------------------------

    def statistics(self, scale_set_id: int) -> Statistics:
        stats = Statistics()
        for job in self._open.values():
            if job.scale_set_id != scale_set_id:
                continue
            stats.total_assigned_jobs += 1
            if job.state == r.AVAILABLE:
                stats.total_available_jobs += 1
            elif job.state == r.ACQUIRED:
                stats.total_acquired_jobs += 1
            elif job.state == r.RUNNING:
                stats.total_running_jobs += 1
        for runner in self.runners.values():
            if runner.scale_set_id == scale_set_id:
                stats.total_registered_runners += 1
                stats.total_busy_runners += runner.job is not None
        stats.total_idle_runners = stats.total_registered_runners - stats.total_busy_runners
        return stats

    def scale_set_wire(self, scale_set: ScaleSet) -> dict[str, Any]:
        jit = (
            f"{self.service_url(scale_set.tenant)}"
            f"_apis/runtime/runnerscalesets/{scale_set.id}/generatejitconfig"
        )
        return r.scale_set_wire(scale_set, self.statistics(scale_set.id), jit_url=jit)

    def get_scale_set(self, tenant: str, scale_set_id: int) -> ScaleSet:
        scale_set = self.scale_sets.get(scale_set_id)
        if scale_set is None or scale_set.tenant != tenant:
            raise self.gone(scale_set_id)
        return scale_set

    def find_scale_sets(
        self, tenant: str, *, runner_group_id: int | None, name: str | None
    ) -> list[ScaleSet]:
        return [
            s
            for s in self.scale_sets.values()
            if s.tenant == tenant
            and (not runner_group_id or s.runner_group_id == runner_group_id)
            and (not name or s.name.lower() == name.lower())
        ]

    def _group_name(self, group_id: int) -> str:
        name = self.runner_groups.get(group_id)
        if name is None:
            raise ApiError(
                404, "RunnerGroupNotFoundException", f"No runner group found with id {group_id}."
            )
        return name

    def _check_name_free(self, tenant: str, name: str, *, but: int | None = None) -> None:
        for other in self.scale_sets.values():
            if other.tenant == tenant and other.name.lower() == name.lower() and other.id != but:
                raise ApiError(
                    409,
                    "RunnerScaleSetExistsException",
                    f"A runner scale set named {name} already exists.",
                )

    def create_scale_set(
        self,
        tenant: str,
        *,
        name: str,
        runner_group_id: int,
        labels: Sequence[str],
        disable_update: bool,
        now: float,
    ) -> ScaleSet:
        if not name:
            raise ApiError(400, "ArgumentException", "The runner scale set name is required.")
        group_id = runner_group_id or r.DEFAULT_GROUP_ID
        group_name = self._group_name(group_id)
        self._check_name_free(tenant, name)
        scale_set = ScaleSet(
            id=self._id("scale_set"),
            tenant=tenant,
            name=name,
            runner_group_id=group_id,
            runner_group_name=group_name,
            # A GHES without custom labels silently keeps only the name (scaleset README).
            labels=(_dedupe(labels) if self.realism.custom_labels else []) or [name],
            disable_update=disable_update,
            created_at=now,
        )
        self.scale_sets[scale_set.id] = scale_set
        self._dispatch_queued(now)
        return scale_set

    def update_scale_set(
        self,
        tenant: str,
        scale_set_id: int,
        *,
        name: str | None = None,
        runner_group_id: int | None = None,
        labels: Sequence[str] | None = None,
        disable_update: bool | None = None,
        now: float,
    ) -> ScaleSet:
        """A partial update: empty or zero values leave the field as it is (as the service)."""
        scale_set = self.get_scale_set(tenant, scale_set_id)
        if name:
            self._check_name_free(tenant, name, but=scale_set.id)
            scale_set.name = name
        if runner_group_id:
            scale_set.runner_group_name = self._group_name(runner_group_id)
            scale_set.runner_group_id = runner_group_id
        if labels and not self.realism.ignore_label_updates:
            scale_set.labels = _dedupe(labels) if self.realism.custom_labels else [scale_set.name]
        if disable_update is not None:
            scale_set.disable_update = disable_update
        self._dispatch_queued(now)
        return scale_set

    def delete_scale_set(self, scale_set_id: int, *, now: float) -> ScaleSet:
        """Deletion on GitHub's side: sessions and runners go, unfinished jobs are queued again."""
        scale_set = self.scale_sets.pop(scale_set_id)
        self.deleted_scale_sets[scale_set_id] = scale_set.name
        for session in [s for s in self.sessions.values() if s.scale_set_id == scale_set_id]:
            del self.sessions[session.id]
        for runner in [x for x in self.runners.values() if x.scale_set_id == scale_set_id]:
            del self.runners[runner.id]
        for job in list(self._open.values()):
            if job.scale_set_id == scale_set_id:
                self._requeue(job)
        self._dispatch_queued(now)
        return scale_set

    def scale_set_named(self, name: str) -> ScaleSet:
        """The control API's lookup: by name in any tenant (the first created wins)."""
        for scale_set in self.scale_sets.values():
            if scale_set.name.lower() == name.lower():
                return scale_set
        raise ApiError(404, "RunnerScaleSetNotFoundException", f"No runner scale set named {name}.")

    def gone(self, scale_set_id: int) -> ApiError:
        return ApiError(
            404,
            "RunnerScaleSetNotFoundException",
            f"No runner scale set found with identifier {scale_set_id}.",
        )

    # -- sessions and the message queue -------------------------------------------------------

    def active_session(self, scale_set_id: int) -> Session | None:
        for session in self.sessions.values():
            if session.scale_set_id == scale_set_id:
                return session
        return None

    def create_session(self, tenant: str, scale_set_id: int, *, owner: str, now: float) -> Session:
        scale_set = self.get_scale_set(tenant, scale_set_id)
        if self.active_session(scale_set_id) is not None:
            raise ApiError(
                409,
                "RunnerScaleSetSessionConflictException",
                f"The actions runner scaleset {scale_set.name} already has an active session.",
            )
        session = Session(
            id=str(uuid.uuid4()),
            scale_set_id=scale_set_id,
            owner=owner,
            created_at=now,
            last_activity=now,
        )
        self.sessions[session.id] = session
        if self.realism.per_session_message_ids:
            # Ids restart in every session: what is still queued is numbered anew.
            session.last_message_id = self.dice.first_message_id()
            for message in scale_set.messages:
                message.id = self._message_id(session)
        self._offer_available_again(scale_set, now)
        return session

    def _message_id(self, session: Session) -> int:
        if not self.realism.per_session_message_ids:
            return self._id("message")
        session.last_message_id += 1
        return session.last_message_id

    def _offer_available_again(self, scale_set: ScaleSet, now: float) -> None:
        """A new session hears of every unacquired job whose JobAvailable is not still queued."""
        pending = {e["runnerRequestId"] for e in scale_set.events if _is_available(e)}
        for message in scale_set.messages:
            pending.update(message.available)
        for job in self._open.values():
            if job.scale_set_id == scale_set.id and job.state == r.AVAILABLE:
                if job.id not in pending:
                    self._emit(job, "JobAvailable", now)

    def _session(self, tenant: str, scale_set_id: int, session_id: str) -> Session | None:
        self.get_scale_set(tenant, scale_set_id)
        session = self.sessions.get(session_id)
        if session is None or session.scale_set_id != scale_set_id:
            return None
        return session

    def refresh_session(
        self, tenant: str, scale_set_id: int, session_id: str, *, now: float
    ) -> Session:
        session = self._session(tenant, scale_set_id, session_id)
        if session is None:
            raise ApiError(
                404,
                "RunnerAdminException",
                "runner referenced a session ID that doesn't exist in redis",
            )
        session.last_activity = now
        return session

    def delete_session(self, tenant: str, scale_set_id: int, session_id: str) -> None:
        session = self._session(tenant, scale_set_id, session_id)
        if session is None:
            raise ApiError(
                400,
                "RunnerScaleSetSessionExpiredException",
                f"The session identifier {session_id} is not valid.",
            )
        del self.sessions[session.id]

    def hold_session(self, scale_set_id: int, *, now: float) -> Session:
        """A phantom owner takes the scale set's session (dropping any other) until released."""
        for session in [s for s in self.sessions.values() if s.scale_set_id == scale_set_id]:
            del self.sessions[session.id]
        session = Session(
            id=str(uuid.uuid4()),
            scale_set_id=scale_set_id,
            owner="phantom",
            created_at=now,
            last_activity=now,
            held=True,
        )
        self.sessions[session.id] = session
        return session

    def release_session(self, scale_set_id: int) -> bool:
        for session in [s for s in self.sessions.values() if s.scale_set_id == scale_set_id]:
            if session.held:
                del self.sessions[session.id]
                return True
        return False

    def live_session(self, session_id: str, scale_set_id: int) -> Session:
        """The session a message-queue token names, or the answer its holder gets instead."""
        session = self.sessions.get(session_id)
        if session is not None:
            return session
        if scale_set_id in self.deleted_scale_sets:
            raise self.gone(scale_set_id)
        raise ApiError(401, "VssUnauthorizedException", "The session has expired.")

    def record_poll(
        self,
        session: Session,
        *,
        max_capacity: int | None,
        now: float,
        user_agent: str | None = None,
    ) -> None:
        session.polls += 1
        session.last_activity = now
        if max_capacity is not None:
            session.max_capacity = max_capacity
        if user_agent is not None:
            session.user_agent = user_agent

    def next_message(self, session: Session, *, last_message_id: int) -> dict[str, Any] | None:
        """The message to deliver: the first not deleted after the cursor, packing new events."""
        scale_set = self.scale_sets[session.scale_set_id]
        # Messages up to the cursor are acknowledged by it.
        scale_set.messages = [m for m in scale_set.messages if m.id > last_message_id]
        if not scale_set.messages and scale_set.events:
            batch = scale_set.events[: r.MAX_JOBS_PER_MESSAGE]
            del scale_set.events[: r.MAX_JOBS_PER_MESSAGE]
            scale_set.messages.append(
                r.QueueMessage(
                    id=self._message_id(session),
                    body=r.pack_events(batch),
                    jobs=len(batch),
                    available={e["runnerRequestId"] for e in batch if _is_available(e)},
                )
            )
        if not scale_set.messages:
            return None
        return r.message_wire(scale_set.messages[0], self.statistics(scale_set.id))

    def delete_message(self, session: Session, message_id: int) -> None:
        scale_set = self.scale_sets[session.scale_set_id]
        scale_set.messages = [m for m in scale_set.messages if m.id != message_id]

    # -- jobs -----------------------------------------------------------------------------------

    def add_jobs(
        self,
        labels: Sequence[str],
        *,
        count: int = 1,
        duration: float = 0.0,
        result: str = "succeeded",
        repository: str | None = None,
        display_name: str | None = None,
        event_name: str = "push",
        now: float,
    ) -> list[int]:
        ids = []
        for _ in range(count):
            job = Job(
                id=self._id("job"),
                labels=list(labels),
                duration=duration,
                planned_result=result,
                repository=repository,
                display_name=display_name,
                event_name=event_name,
                queued_at=now,
            )
            self.jobs[job.id] = job
            self._queued[job.id] = job
            ids.append(job.id)
        self._dispatch_queued(now)
        return ids

    def _matches(self, job: Job, scale_set: ScaleSet) -> bool:
        wanted = {label.lower() for label in job.labels}
        if not wanted <= scale_set.label_set():
            return False
        if job.repository is None:
            return True
        scope = self.tenants.get(scale_set.tenant, "")
        repository = job.repository.lower()
        return scope.startswith("enterprises/") or scope in (repository, repository.split("/")[0])

    def _dispatch_queued(self, now: float) -> None:
        for job in sorted(self._queued.values(), key=lambda j: j.id):
            for scale_set in self.scale_sets.values():  # creation order
                if self._matches(job, scale_set):
                    job.state = r.AVAILABLE
                    job.scale_set_id = scale_set.id
                    job.assigned_at = now
                    del self._queued[job.id]
                    self._open[job.id] = job
                    self._emit(job, "JobAvailable", now)
                    break

    def _requeue(self, job: Job) -> None:
        job.state = r.QUEUED
        job.scale_set_id = None
        job.assigned_at = job.acquired_at = job.started_at = job.due_at = None
        job.runner_id = None
        job.runner_name = None
        job.cancel_requested = job.work_done_seen = False
        self._unreserve(job)
        self._open.pop(job.id, None)
        self._queued[job.id] = job

    def acquire_jobs(
        self, scale_set_id: int, request_ids: Iterable[int], *, now: float
    ) -> list[int]:
        acquired = []
        for request_id in request_ids:
            job = self._open.get(request_id)
            if job is None or job.scale_set_id != scale_set_id:
                continue
            if job.state == r.AVAILABLE:
                job.state = r.ACQUIRED
                job.acquired_at = now
                self._emit(job, "JobAssigned", now)
            if job.state == r.ACQUIRED:
                acquired.append(job.id)
        return acquired

    def cancel_jobs(self, ids: Iterable[int], *, now: float) -> list[int]:
        """Cancel jobs as a workflow cancellation would; a running job's runner is told."""
        canceled = []
        for job_id in ids:
            job = self.jobs.get(job_id)
            if job is None or job.state == r.DONE or job.cancel_requested:
                continue
            canceled.append(job_id)
            if job.state == r.RUNNING:
                job.cancel_requested = True
                job.due_at = min(job.due_at or now, now)
            else:
                self._finish(job, "canceled", now)
        return canceled

    def _finish(self, job: Job, result: str, now: float) -> None:
        if job.scale_set_id is not None and job.state != r.QUEUED:
            self._emit(job, "JobCompleted", now, result=result, finished=now)
        runner = self.runners.get(job.runner_id) if job.runner_id is not None else None
        if runner is not None:
            runner.job = None
            linger = self.dice.delay(self.realism.registration_linger)
            if linger > 0:
                # GitHub removes an ephemeral runner's registration lazily.
                runner.finished = True
                runner.remove_at = now + linger
            else:
                del self.runners[runner.id]
        self._unreserve(job)
        job.state = r.DONE
        job.result = result
        job.finished_at = now
        self._open.pop(job.id, None)
        self._queued.pop(job.id, None)

    def _emit(
        self,
        job: Job,
        kind: str,
        now: float,
        *,
        result: str | None = None,
        finished: float | None = None,
    ) -> None:
        assert job.scale_set_id is not None
        scale_set = self.scale_sets[job.scale_set_id]
        acquire_url = (
            f"{self.service_url(scale_set.tenant)}"
            f"_apis/runtime/runnerscalesets/{scale_set.id}/acquirejobs"
        )
        scope = self.tenants.get(scale_set.tenant, "")
        event = job_message(
            job, kind, scope=scope, acquire_url=acquire_url, result=result, finished=finished
        )
        delay = self.dice.delay(self.realism.event_delay) if kind in _LATE_KINDS else 0.0
        if delay > 0 or scale_set.late:
            # Held back, in order: a late JobStarted is never overtaken by its JobCompleted.
            due = max([now + delay, *(d for d, _ in scale_set.late[-1:])])
            scale_set.late.append((due, event))
        else:
            scale_set.events.append(event)

    # -- the clock ------------------------------------------------------------------------------

    def tick(self, now: float) -> bool:
        """Apply every time-driven change due by `now`; True when something changed."""
        changed = False
        limit = self.poll_wait + self.session_timeout
        for session in list(self.sessions.values()):
            if not session.held and now > session.last_activity + limit:
                del self.sessions[session.id]
                changed = True
        changed = self._tick_lateness(now) or changed
        for job in list(self._open.values()):
            if job.state == r.ACQUIRED:
                assert job.acquired_at is not None
                if now >= job.acquired_at + self.redispatch_interval:
                    # Nobody took it in time: GitHub cancels the assignment and assigns again.
                    self._bounce(job, now)
                    changed = True
                elif job.start_at is not None and now >= job.start_at and not job.start_due_seen:
                    job.start_due_seen = True  # the waiting runner may take it now
                    changed = True
            elif job.state == r.RUNNING:
                assert job.due_at is not None
                if not job.work_done_seen and now >= job.due_at:
                    job.work_done_seen = True
                    changed = True
                if now >= job.due_at + self.runner_lost_timeout:
                    # The runner never reported: it was lost (killed, or its host went away).
                    self._finish(job, "canceled" if job.cancel_requested else "failed", now)
                    changed = True
        return changed

    def _tick_lateness(self, now: float) -> bool:
        """Late job events reach the queue; lingering registrations go."""
        changed = False
        for scale_set in self.scale_sets.values():
            while scale_set.late and scale_set.late[0][0] <= now:
                scale_set.events.append(scale_set.late.pop(0)[1])
                changed = True
        for runner in list(self.runners.values()):
            if runner.remove_at is not None and now >= runner.remove_at:
                del self.runners[runner.id]
                changed = True
        return changed

    def next_deadline(self) -> float | None:
        """The earliest moment `tick` has something to do, if any."""
        moments = [
            s.last_activity + self.poll_wait + self.session_timeout
            for s in self.sessions.values()
            if not s.held
        ]
        moments += [s.late[0][0] for s in self.scale_sets.values() if s.late]
        moments += [x.remove_at for x in self.runners.values() if x.remove_at is not None]
        for job in self._open.values():
            if job.state == r.ACQUIRED and job.acquired_at is not None:
                moments.append(job.acquired_at + self.redispatch_interval)
                if job.start_at is not None and not job.start_due_seen:
                    moments.append(job.start_at)
            elif job.state == r.RUNNING and job.due_at is not None:
                if not job.work_done_seen:
                    moments.append(job.due_at)
                moments.append(job.due_at + self.runner_lost_timeout)
        return min(moments, default=None)

    # -- the view for assertions ----------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The whole state as `GET /_sim/state` returns it."""
        return state_view(self)


def _dedupe(labels: Iterable[str]) -> list[str]:
    seen: dict[str, str] = {}
    for label in labels:
        if label and label.lower() not in seen:
            seen[label.lower()] = label
    return list(seen.values())


_LATE_KINDS = ("JobStarted", "JobCompleted")


def _is_available(event: dict[str, Any]) -> bool:
    return bool(event["messageType"] == "JobAvailable")
