"""The runners' side of the simulator's state machine: registration, taking a job, reporting.

Split from `state.py` (same rules: pure, no clock, `ApiError` for what the service refuses).
A runner taking a job lives the live service's window between assignment and start
(`Realism.start_delay`): the job is handed over, and started only when the window has passed;
removing the runner inside it bounces the job, as GitHub does.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from runscaler.simulator import records as r
from runscaler.simulator.realism import Dice, Realism
from runscaler.simulator.records import ApiError, Job, Runner, ScaleSet


class RunnerTransitions:
    """Mixed into `SimState`, whose records these methods change."""

    runners: dict[int, Runner]
    jobs: dict[int, Job]
    _open: dict[int, Job]
    realism: Realism
    dice: Dice

    if TYPE_CHECKING:

        def _id(self, kind: str) -> int: ...

        def get_scale_set(self, tenant: str, scale_set_id: int) -> ScaleSet: ...

        def _emit(
            self,
            job: Job,
            kind: str,
            now: float,
            *,
            result: str | None = None,
            finished: float | None = None,
        ) -> None: ...

        def _finish(self, job: Job, result: str, now: float) -> None: ...

    def generate_jit_config(
        self, tenant: str, scale_set_id: int, *, name: str, work_folder: str, now: float
    ) -> Runner:
        self.get_scale_set(tenant, scale_set_id)
        if not name:
            raise ApiError(400, "ArgumentException", "The runner name is required.")
        if any(
            x.tenant == tenant and x.name.lower() == name.lower() for x in self.runners.values()
        ):
            raise ApiError(
                409, "AgentExistsException", f"A runner named {name} already exists in the pool."
            )
        runner = Runner(
            id=self._id("runner"),
            name=name,
            scale_set_id=scale_set_id,
            tenant=tenant,
            client_id=secrets.token_hex(16),
            work_folder=work_folder or "_work",
            registered_at=now,
        )
        self.runners[runner.id] = runner
        return runner

    def get_runner(self, tenant: str, runner_id: int) -> Runner:
        runner = self.runners.get(runner_id)
        if runner is None or runner.tenant != tenant:
            raise ApiError(
                404, "AgentNotFoundException", f"No runner found with identifier {runner_id}."
            )
        return runner

    def find_runners(self, tenant: str, *, name: str | None) -> list[Runner]:
        return [
            x
            for x in self.runners.values()
            if x.tenant == tenant and (not name or x.name.lower() == name.lower())
        ]

    def remove_runner(self, tenant: str, runner_id: int, *, now: float = 0.0) -> None:
        """Deregister a runner; absent is fine, busy is refused (400), as the service does."""
        runner = self.runners.get(runner_id)
        if runner is None or runner.tenant != tenant:
            return
        if runner.job is not None:
            raise ApiError(
                400,
                "JobStillRunningException",
                f"The runner {runner.name} is running job {runner.job} and cannot be removed.",
            )
        del self.runners[runner_id]
        for job in self._open.values():
            if job.reserved_for == runner_id:
                # Removed between assignment and start: the job bounces, as on GitHub.
                self._bounce(job, now)

    def runner_by_credential(self, runner_id: int, client_id: str) -> Runner | None:
        runner = self.runners.get(runner_id)
        if runner is None or not secrets.compare_digest(runner.client_id, client_id):
            return None
        return runner

    def take_job(self, runner: Runner, *, now: float) -> Job | None:
        """A connected runner takes the oldest acquired job of its scale set (one, ever)."""
        runner.last_seen = now
        if runner.job is not None:
            return self.jobs[runner.job]
        if runner.finished:
            return None
        for job in self._open.values():
            if job.state == r.ACQUIRED and job.reserved_for == runner.id:
                assert job.start_at is not None
                return self._start(job, runner, now) if now >= job.start_at else None
        for job in self._open.values():
            if (
                job.scale_set_id == runner.scale_set_id
                and job.state == r.ACQUIRED
                and job.reserved_for is None
            ):
                delay = self.dice.delay(self.realism.start_delay)
                if delay <= 0:
                    return self._start(job, runner, now)
                # Assigned to this runner, not started yet: the window of ARC #4000.
                job.reserved_for = runner.id
                runner.reserved = job.id
                job.start_at = now + delay
                job.start_due_seen = False
                return None
        return None

    def _start(self, job: Job, runner: Runner, now: float) -> Job:
        runner.reserved = None
        job.state = r.RUNNING
        job.reserved_for = job.start_at = None
        job.runner_id = runner.id
        job.runner_name = runner.name
        job.started_at = now
        job.due_at = now + job.duration
        runner.job = job.id
        self._emit(job, "JobStarted", now)
        return job

    def _unreserve(self, job: Job) -> None:
        runner = self.runners.get(job.reserved_for) if job.reserved_for is not None else None
        if runner is not None and runner.reserved == job.id:
            runner.reserved = None
        job.reserved_for = job.start_at = None

    def _bounce(self, job: Job, now: float) -> None:
        """GitHub cancels the assignment and assigns the job again."""
        self._emit(job, "JobCompleted", now, result="canceled", finished=now)
        job.acquired_at = now
        job.redispatches += 1
        job.reserved_for = job.start_at = None
        self._emit(job, "JobAssigned", now)

    def job_progress(self, runner: Runner, job_id: int, *, now: float) -> tuple[str, str]:
        """What a runner running `job_id` hears: (`running`|`finished`|`canceled`, result)."""
        runner.last_seen = now
        job = self.jobs.get(job_id)
        if job is None or job.runner_id != runner.id or job.state != r.RUNNING:
            return ("gone", "")
        if job.cancel_requested:
            return ("canceled", "canceled")
        assert job.due_at is not None
        if now >= job.due_at:
            return ("finished", job.planned_result)
        return ("running", "")

    def report_result(self, runner: Runner, job_id: int, result: str, *, now: float) -> bool:
        """The runner is done: JobCompleted, and the ephemeral runner's registration is removed."""
        job = self.jobs.get(job_id)
        if job is None or job.runner_id != runner.id or job.state != r.RUNNING:
            return False
        self._finish(job, result, now)
        return True
