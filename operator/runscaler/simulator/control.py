"""The control API (`/_sim/...`): what GitHub's users and outages would do, on demand.

Not part of GitHub's surface: tests, the demo and benchmarks enqueue jobs, read the whole
state, schedule faults, expire tokens, delete a scale set "on GitHub's side" and make a phantom
owner hold a session. `GET /` describes it all in plain text.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from aiohttp import web

from runscaler.simulator.core import Core
from runscaler.simulator.records import RESULT, ApiError
from runscaler.simulator.wire import ControlError, json_response, read_json, text_response

log = logging.getLogger(__name__)

MAX_JOBS_PER_REQUEST = 10_000

USAGE = """\
runscaler simulator: GitHub's runner scale set API on loopback, for tests and demos.

Point a manifest at it: github.url: {url}/ORG (any non-empty token, unless --token).

Control API (JSON):
  POST /_sim/jobs {{"labels": [...], "count": 1, "duration": 5, "result": "succeeded"}}
       optional "repository": "ORG/REPO", "name", "event"          -> {{"ids": [...]}}
  POST /_sim/cancel-jobs {{"ids": [...]}}                          -> {{"canceled": [...]}}
  GET  /_sim/state                                                  the whole state
  POST /_sim/faults {{"method", "path" (regex), "times" (-1: always), "status",
                    "retryAfter", "delay", "bom", "drop"}}          -> {{"id"}}
  GET  /_sim/faults, DELETE /_sim/faults                            list, clear
  POST /_sim/expire-tokens                                          expire admin + queue tokens
  POST /_sim/delete-scale-set {{"name"}}                            delete on GitHub's side
  POST /_sim/hold-session {{"name"}}, POST /_sim/release-session {{"name"}}
  POST /_sim/runner-groups {{"name"}}                               -> {{"id"}}
"""


def _name(body: Any) -> str:
    name = body.get("name") if isinstance(body, dict) else None
    if not isinstance(name, str) or not name:
        raise ControlError(400, 'give the scale set as {"name": "..."}')
    return name


def _job_spec(body: Any) -> dict[str, Any]:
    """Validate a `POST /_sim/jobs` body into `SimState.add_jobs` keyword arguments."""
    if not isinstance(body, dict):
        raise ControlError(400, 'give the jobs as {"labels": [...], "count": N}')
    labels = body.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise ControlError(400, "labels must be a non-empty list of strings")
    count = body.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 10_000:
        raise ControlError(400, f"count must be an integer from 1 to {MAX_JOBS_PER_REQUEST}")
    duration = body.get("duration", 0)
    if (
        isinstance(duration, bool)
        or not isinstance(duration, int | float)
        or duration < 0
        or not math.isfinite(duration)
    ):
        raise ControlError(400, "duration must be a number of seconds >= 0")
    spec: dict[str, Any] = {"labels": labels, "count": count, "duration": float(duration)}
    for key, target in (
        ("result", "result"),
        ("repository", "repository"),
        ("name", "display_name"),
        ("event", "event_name"),
    ):
        value = body.get(key)
        if value is not None:
            if not isinstance(value, str) or not value:
                raise ControlError(400, f"{key} must be a non-empty string")
            spec[target] = value
    if not RESULT.match(spec.get("result", "succeeded")):
        raise ControlError(400, "result must be a word in lower case, like succeeded or failed")
    return spec


class Control:
    def __init__(self, core: Core) -> None:
        self.core = core

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/", self.usage),
            web.get("/_sim/state", self.state),
            web.post("/_sim/jobs", self.add_jobs),
            web.post("/_sim/cancel-jobs", self.cancel_jobs),
            web.get("/_sim/faults", self.list_faults),
            web.post("/_sim/faults", self.add_fault),
            web.delete("/_sim/faults", self.clear_faults),
            web.post("/_sim/expire-tokens", self.expire_tokens),
            web.post("/_sim/delete-scale-set", self.delete_scale_set),
            web.post("/_sim/hold-session", self.hold_session),
            web.post("/_sim/release-session", self.release_session),
            web.post("/_sim/runner-groups", self.add_runner_group),
        ]

    async def usage(self, request: web.Request) -> web.Response:
        return text_response(USAGE.format(url=f"{request.scheme}://{request.host}"))

    async def state(self, request: web.Request) -> web.Response:
        return json_response(self.core.state.snapshot())

    async def add_jobs(self, request: web.Request) -> web.Response:
        spec = _job_spec(await read_json(request, error=ControlError))
        ids = self.core.state.add_jobs(now=self.core.now(), **spec)
        self.core.changed()
        log.info("%d job(s) queued for %s", len(ids), spec["labels"])
        return json_response({"ids": ids})

    async def cancel_jobs(self, request: web.Request) -> web.Response:
        body = await read_json(request, error=ControlError)
        ids = body.get("ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
            raise ControlError(400, 'give the jobs as {"ids": [...]}')
        canceled = self.core.state.cancel_jobs(ids, now=self.core.now())
        self.core.changed()
        return json_response({"canceled": canceled})

    async def list_faults(self, request: web.Request) -> web.Response:
        return json_response({"faults": [f.view() for f in self.core.faults.items]})

    async def add_fault(self, request: web.Request) -> web.Response:
        try:
            fault = self.core.faults.add(await read_json(request, error=ControlError))
        except ValueError as exc:
            raise ControlError(400, str(exc)) from None
        return json_response({"id": fault.id})

    async def clear_faults(self, request: web.Request) -> web.Response:
        self.core.faults.clear()
        return web.Response(status=204)

    async def expire_tokens(self, request: web.Request) -> web.Response:
        expired = self.core.tokens.expire(("admin", "queue"), now=self.core.now())
        return json_response({"expired": expired})

    def _scale_set_id(self, name: str) -> int:
        try:
            return self.core.state.scale_set_named(name).id
        except ApiError as exc:
            raise ControlError(404, f"no scale set named {name}") from exc

    async def delete_scale_set(self, request: web.Request) -> web.Response:
        scale_set_id = self._scale_set_id(_name(await read_json(request, error=ControlError)))
        self.core.state.delete_scale_set(scale_set_id, now=self.core.now())
        self.core.changed()
        return json_response({"id": scale_set_id})

    async def hold_session(self, request: web.Request) -> web.Response:
        scale_set_id = self._scale_set_id(_name(await read_json(request, error=ControlError)))
        session = self.core.state.hold_session(scale_set_id, now=self.core.now())
        self.core.changed()
        return json_response({"sessionId": session.id})

    async def release_session(self, request: web.Request) -> web.Response:
        scale_set_id = self._scale_set_id(_name(await read_json(request, error=ControlError)))
        released = self.core.state.release_session(scale_set_id)
        self.core.changed()
        return json_response({"released": released})

    async def add_runner_group(self, request: web.Request) -> web.Response:
        body = await read_json(request, error=ControlError)
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name:
            raise ControlError(400, 'give the runner group as {"name": "..."}')
        try:
            group_id = self.core.state.add_runner_group(name)
        except ApiError as exc:
            raise ControlError(409, exc.message) from None
        return json_response({"id": group_id})
