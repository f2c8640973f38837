"""The Actions service endpoints A1-A14 of protocol.md, under a tenant's service URL.

Every request must carry `api-version=6.0-preview` (400 otherwise) and the tenant's admin
token (401 when wrong or expired) — except acquirejobs, which takes the message-queue token
as the real clients send it. Status codes are the real service's: 200 to create a scale set
or a session, 204 to delete, lists whose `count` is authoritative.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from runscaler.simulator.core import Core
from runscaler.simulator.jitconfig import encode_jit_config
from runscaler.simulator.records import ApiError, ScaleSet, Session, runner_wire
from runscaler.simulator.tokens import bearer
from runscaler.simulator.wire import field, json_response, path_int, read_json

log = logging.getLogger(__name__)

API_VERSION = "6.0-preview"


def _labels(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ApiError(400, "ArgumentException", "labels must be a list.")
    names = []
    for label in value:
        name = field(label, "name") if isinstance(label, dict) else label
        if not isinstance(name, str):
            raise ApiError(400, "ArgumentException", "Each label needs a name.")
        names.append(name)
    return names


def _int(value: Any, what: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, "ArgumentException", f"{what} must be an integer.")
    return value


def _disable_update(body: Any) -> bool | None:
    setting = field(body, "RunnerSetting")
    value = field(setting, "disableUpdate")
    return value if isinstance(value, bool) else None


class ActionsService:
    def __init__(self, core: Core) -> None:
        self.core = core

    def routes(self) -> list[web.RouteDef]:
        base = "/_services/pipelines/{tenant}/_apis"
        sets = f"{base}/runtime/runnerscalesets"
        agents = f"{base}/distributedtask/pools/{{pool}}/agents"
        return [
            web.get(f"{base}/runtime/runnergroups/", self.runner_groups),
            web.get(f"{base}/runtime/runnergroups", self.runner_groups),
            web.get(sets, self.list_scale_sets),
            web.post(sets, self.create_scale_set),
            web.get(f"{sets}/{{id}}", self.get_scale_set),
            web.patch(f"{sets}/{{id}}", self.update_scale_set),
            web.delete(f"{sets}/{{id}}", self.delete_scale_set),
            web.post(f"{sets}/{{id}}/sessions", self.create_session),
            web.patch(f"{sets}/{{id}}/sessions/{{session}}", self.refresh_session),
            web.delete(f"{sets}/{{id}}/sessions/{{session}}", self.delete_session),
            web.post(f"{sets}/{{id}}/generatejitconfig", self.generate_jit_config),
            web.post(f"{sets}/{{id}}/acquirejobs", self.acquire_jobs),
            web.get(f"{agents}/{{runner}}", self.get_runner),
            web.get(agents, self.list_runners),
            web.delete(f"{agents}/{{runner}}", self.delete_runner),
        ]

    def _tenant(self, request: web.Request, *, token_kind: str = "admin") -> str:
        if request.query.get("api-version") != API_VERSION:
            raise ApiError(
                400,
                "VssVersionNotSpecifiedException",
                f"The api-version query parameter is required: api-version={API_VERSION}.",
            )
        tenant = request.match_info["tenant"]
        if tenant not in self.core.state.tenants:
            raise web.HTTPNotFound()
        if token_kind == "admin":
            token = bearer(request.headers.get("Authorization"))
            issued = self.core.tokens.check(token, "admin", now=self.core.now())
            if issued is None or issued.scope != tenant:
                raise ApiError(401, "VssUnauthorizedException", "The access token is not valid.")
        return tenant

    def _scale_set(self, request: web.Request, tenant: str) -> ScaleSet:
        return self.core.state.get_scale_set(tenant, path_int(request, "id"))

    def _origin(self, request: web.Request) -> str:
        return f"{request.scheme}://{request.host}"

    # -- A1-A6: runner groups and scale sets ----------------------------------------------------

    async def runner_groups(self, request: web.Request) -> web.Response:
        self._tenant(request)
        name = request.query.get("groupName", "")
        groups = self.core.state.runner_groups_named(name) if name else []
        value = [
            {"id": i, "name": n, "size": 0, "isDefaultGroup": i == 1, "visibility": "all"}
            for i, n in groups
        ]
        return json_response({"count": len(value), "value": value})

    async def list_scale_sets(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        try:
            group = int(request.query.get("runnerGroupId") or 0)
        except ValueError:
            raise ApiError(400, "ArgumentException", "runnerGroupId must be an integer.") from None
        found = self.core.state.find_scale_sets(
            tenant, runner_group_id=group, name=request.query.get("name")
        )
        value = [self.core.state.scale_set_wire(s) for s in found]
        return json_response({"count": len(value), "value": value})

    async def create_scale_set(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        body = await read_json(request)
        name = field(body, "name")
        scale_set = self.core.state.create_scale_set(
            tenant,
            name=name if isinstance(name, str) else "",
            runner_group_id=_int(field(body, "runnerGroupId"), "runnerGroupId"),
            labels=_labels(field(body, "labels")),
            disable_update=bool(_disable_update(body)),
            now=self.core.now(),
        )
        self.core.changed()
        log.info("scale set %s (%d) created", scale_set.name, scale_set.id)
        return json_response(self.core.state.scale_set_wire(scale_set))

    async def get_scale_set(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        return json_response(self.core.state.scale_set_wire(self._scale_set(request, tenant)))

    async def update_scale_set(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        body = await read_json(request)
        name = field(body, "name")
        scale_set = self.core.state.update_scale_set(
            tenant,
            path_int(request, "id"),
            name=name if isinstance(name, str) else None,
            runner_group_id=_int(field(body, "runnerGroupId"), "runnerGroupId"),
            labels=_labels(field(body, "labels")),
            disable_update=_disable_update(body),
            now=self.core.now(),
        )
        self.core.changed()
        return json_response(self.core.state.scale_set_wire(scale_set))

    async def delete_scale_set(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        scale_set = self._scale_set(request, tenant)
        self.core.state.delete_scale_set(scale_set.id, now=self.core.now())
        self.core.changed()
        log.info("scale set %s (%d) deleted", scale_set.name, scale_set.id)
        return web.Response(status=204)

    # -- A7-A9: sessions ------------------------------------------------------------------------

    def _session_wire(
        self, request: web.Request, scale_set: ScaleSet, session: Session
    ) -> dict[str, Any]:
        token = self.core.tokens.queue(
            session.id,
            scale_set.id,
            now=self.core.now(),
            ttl=self.core.options.message_queue_token_ttl,
        )
        wire = self.core.state.scale_set_wire(scale_set)
        return {
            "sessionId": session.id,
            "ownerName": session.owner,
            "runnerScaleSet": wire,
            "messageQueueUrl": f"{self._origin(request)}/_broker/scalesets/message",
            "messageQueueAccessToken": token,
            "statistics": wire["statistics"],
        }

    async def create_session(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        body = await read_json(request)
        scale_set = self._scale_set(request, tenant)
        owner = field(body, "ownerName")
        session = self.core.state.create_session(
            tenant,
            scale_set.id,
            owner=owner if isinstance(owner, str) else "",
            now=self.core.now(),
        )
        self.core.changed()
        log.info("session %s opened on %s by %s", session.id, scale_set.name, session.owner)
        return json_response(self._session_wire(request, scale_set, session))

    async def refresh_session(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        scale_set = self._scale_set(request, tenant)
        session = self.core.state.refresh_session(
            tenant, scale_set.id, request.match_info["session"], now=self.core.now()
        )
        return json_response(self._session_wire(request, scale_set, session))

    async def delete_session(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        scale_set = self._scale_set(request, tenant)
        self.core.state.delete_session(tenant, scale_set.id, request.match_info["session"])
        self.core.changed()
        log.info("session %s on %s closed", request.match_info["session"], scale_set.name)
        return web.Response(status=204)

    # -- A10-A11: runners and jobs --------------------------------------------------------------

    async def generate_jit_config(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        body = await read_json(request)
        scale_set = self._scale_set(request, tenant)
        name, work_folder = field(body, "name"), field(body, "workFolder")
        runner = self.core.state.generate_jit_config(
            tenant,
            scale_set.id,
            name=name if isinstance(name, str) else "",
            work_folder=work_folder if isinstance(work_folder, str) else "",
            now=self.core.now(),
        )
        self.core.changed()
        origin = self._origin(request)
        encoded = encode_jit_config(
            runner_id=runner.id,
            runner_name=runner.name,
            pool_id=scale_set.id,
            server_url=f"{origin}/_services/pipelines/{tenant}/",
            broker_url=f"{origin}/_broker/",
            client_id=runner.client_id,
            work_folder=runner.work_folder,
        )
        return json_response({"runner": runner_wire(runner), "encodedJITConfig": encoded})

    async def acquire_jobs(self, request: web.Request) -> web.Response:
        """A11: with the message-queue token (the admin token answers 401 here)."""
        tenant = self._tenant(request, token_kind="queue")
        scale_set = self._scale_set(request, tenant)
        now = self.core.now()
        issued = self.core.tokens.check(
            bearer(request.headers.get("Authorization")), "queue", now=now
        )
        if issued is None or issued.scale_set_id != scale_set.id:
            raise ApiError(401, "VssUnauthorizedException", "The message queue token expired.")
        session = self.core.state.live_session(issued.session_id, issued.scale_set_id)
        body = await read_json(request)
        if not isinstance(body, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in body
        ):
            raise ApiError(400, "ArgumentException", "The body must be a list of request ids.")
        acquired = self.core.state.acquire_jobs(session.scale_set_id, body, now=now)
        self.core.changed()
        return json_response({"count": len(acquired), "value": acquired})

    # -- A12-A14: agents ------------------------------------------------------------------------

    async def get_runner(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        runner = self.core.state.get_runner(tenant, path_int(request, "runner"))
        return json_response(runner_wire(runner))

    async def list_runners(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        found = self.core.state.find_runners(tenant, name=request.query.get("agentName"))
        value = [runner_wire(x) for x in found]
        return json_response({"count": len(value), "value": value})

    async def delete_runner(self, request: web.Request) -> web.Response:
        tenant = self._tenant(request)
        self.core.state.remove_runner(tenant, path_int(request, "runner"), now=self.core.now())
        self.core.changed()
        return web.Response(status=204)
