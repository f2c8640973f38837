"""The broker: the scale set message queue (Q1/Q2) and the stand-in runner's job endpoints.

The message queue is what a listener long-polls with its message-queue token: 200 with the
next message not deleted after `lastMessageId`, or 202 after `poll_wait`; `DELETE` acks.

The runner endpoints are the simulator's own design (the real runner's broker protocol is not
public): a runner presents `Authorization: Bearer <clientId from its JIT config>` and speaks
plain `key=value` lines, so a busybox shell script can read them with `sed`:

    GET  /_broker/runners/{id}/job?wait=S           state=waiting | state=assigned job= duration=
                                                    name= | state=gone | state=denied
    GET  /_broker/runners/{id}/jobs/{job}?wait=S    state=running | state=finished result= |
                                                    state=canceled result=canceled | state=gone
    POST /_broker/runners/{id}/jobs/{job}/result    body `result=succeeded` → state=completed

Taking a job emits JobStarted; the job's work is done `duration` seconds later (the simulator
keeps time); the runner then reports, which emits JobCompleted and removes its registration.
Every answer is 200, so a failed request always means the network (retry), never the runner.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qs

from aiohttp import web

from runscaler.simulator.core import Core
from runscaler.simulator.records import RESULT, ApiError, Runner
from runscaler.simulator.tokens import bearer
from runscaler.simulator.wire import json_response, path_int, text_response

log = logging.getLogger(__name__)

MAX_RUNNER_WAIT = 60.0


def _lines(**values: object) -> web.Response:
    return text_response("".join(f"{key}={value}\n" for key, value in values.items()))


class Broker:
    def __init__(self, core: Core) -> None:
        self.core = core

    def routes(self) -> list[web.RouteDef]:
        runner = "/_broker/runners/{runner}"
        return [
            web.get("/_broker/scalesets/message", self.get_message),
            web.delete("/_broker/scalesets/message/{message}", self.delete_message),
            web.get(f"{runner}/job", self.take_job),
            web.get(f"{runner}/jobs/{{job}}", self.job_progress),
            web.post(f"{runner}/jobs/{{job}}/result", self.report_result),
        ]

    # -- the message queue ----------------------------------------------------------------------

    def _session_id(self, request: web.Request) -> tuple[str, int]:
        token = bearer(request.headers.get("Authorization"))
        issued = self.core.tokens.check(token, "queue", now=self.core.now())
        if issued is None:
            raise web.HTTPUnauthorized(text="Session expired", content_type="text/plain")
        return issued.session_id, issued.scale_set_id

    async def get_message(self, request: web.Request) -> web.Response:
        """Q1: a message at once if one is queued, else wait up to poll_wait and answer 202."""
        session_id, scale_set_id = self._session_id(request)
        state = self.core.state
        session = state.live_session(session_id, scale_set_id)
        try:
            last = int(request.query.get("lastMessageId", "0"))
            capacity_header = request.headers.get("X-ScaleSetMaxCapacity")
            capacity = None if capacity_header is None else int(capacity_header)
        except ValueError:
            raise ApiError(
                400, "ArgumentException", "Malformed lastMessageId or capacity."
            ) from None
        if last < 0 or (capacity is not None and capacity < 0):
            raise ApiError(400, "ArgumentException", "lastMessageId and capacity must be >= 0.")
        state.record_poll(
            session,
            max_capacity=capacity,
            now=self.core.now(),
            user_agent=request.headers.get("User-Agent"),
        )
        deadline = self.core.now() + self.core.options.poll_wait
        while True:
            session = state.live_session(session_id, scale_set_id)
            message = state.next_message(session, last_message_id=last)
            if message is not None:
                session.last_activity = self.core.now()
                return json_response(message)
            remaining = deadline - self.core.now()
            if remaining <= 0 or self.core.closing:
                session.last_activity = self.core.now()
                return web.Response(status=202)
            await self.core.wait_change(remaining)

    async def delete_message(self, request: web.Request) -> web.Response:
        """Q2: 204, also for a message already gone (a retried delete must not fail)."""
        session_id, scale_set_id = self._session_id(request)
        session = self.core.state.live_session(session_id, scale_set_id)
        self.core.state.delete_message(session, path_int(request, "message"))
        return web.Response(status=204)

    # -- the stand-in runner --------------------------------------------------------------------

    def _runner(self, request: web.Request) -> Runner | web.Response:
        runner_id = path_int(request, "runner")
        credential = bearer(request.headers.get("Authorization"))
        runner = self.core.state.runner_by_credential(runner_id, credential)
        if runner is not None:
            return runner
        if runner_id in self.core.state.runners:
            return _lines(state="denied")
        return _lines(state="gone")

    def _wait(self, request: web.Request) -> float:
        try:
            wait = float(request.query.get("wait", "20"))
        except ValueError:
            wait = 20.0
        return min(max(wait, 0.0), MAX_RUNNER_WAIT)

    async def take_job(self, request: web.Request) -> web.Response:
        deadline = self.core.now() + self._wait(request)
        while True:
            runner = self._runner(request)
            if isinstance(runner, web.Response):
                return runner
            had_job = runner.job is not None
            job = self.core.state.take_job(runner, now=self.core.now())
            if job is not None:
                self.core.changed()
                if not had_job:
                    log.info("job %d started on runner %s", job.id, runner.name)
                return _lines(state="assigned", job=job.id, duration=job.duration, name=runner.name)
            remaining = deadline - self.core.now()
            if remaining <= 0 or self.core.closing:
                return _lines(state="waiting")
            await self.core.wait_change(remaining)

    async def job_progress(self, request: web.Request) -> web.Response:
        deadline = self.core.now() + self._wait(request)
        job_id = path_int(request, "job")
        while True:
            runner = self._runner(request)
            if isinstance(runner, web.Response):
                return runner
            status, result = self.core.state.job_progress(runner, job_id, now=self.core.now())
            if status != "running":
                return _lines(state=status, result=result)
            remaining = deadline - self.core.now()
            if remaining <= 0 or self.core.closing:
                return _lines(state="running")
            await self.core.wait_change(remaining)

    async def report_result(self, request: web.Request) -> web.Response:
        runner = self._runner(request)
        if isinstance(runner, web.Response):
            return runner
        form = parse_qs((await request.read()).decode("utf-8", "replace"))
        result = (form.get("result") or [""])[0].strip()
        if not RESULT.match(result):
            return _lines(state="invalid")
        job_id = path_int(request, "job")
        if not self.core.state.report_result(runner, job_id, result, now=self.core.now()):
            return _lines(state="gone")
        self.core.changed()
        log.info("job %d finished on runner %s: %s", job_id, runner.name, result)
        return _lines(state="completed")
