"""`ScaleSetClient`: the runner scale set API, one method per endpoint (protocol.md §1.4).

One client serves one config URL with one set of credentials. It owns the admin token and
leases the HTTP connection pool, shared with every client that reaches GitHub the same way
(transport.py); `MessageSession`s it opens share both. Results are frozen models,
failures are `GitHubError`s: nothing from httpx leaves this package.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx

from runscaler.errors import ConfigurationError
from runscaler.github.auth import CredentialsSource
from runscaler.github.errors import (
    GitHubError,
    RunnerExistsError,
    RunnerGroupNotFoundError,
    RunnerNotFoundError,
    ScaleSetNotFoundError,
    ServiceError,
    SessionConflictError,
    classify_response,
)
from runscaler.github.models import (
    GO_ZERO_TIME,
    JitConfig,
    ParseError,
    RunnerReference,
    RunnerScaleSet,
    SessionInfo,
    UserAgent,
    field_value,
    system_labels,
)
from runscaler.github.retrying import RetryPolicy
from runscaler.github.session import MessageSession
from runscaler.github.tokens import AdminTokens
from runscaler.github.transport import Response, Sender, lease_http_client
from runscaler.github.urls import actions_url, api_base
from runscaler.logs import secrets
from runscaler.manifest.values import ConfigURL, parse_config_url

__all__ = ["RetryPolicy", "ScaleSetClient"]

log = logging.getLogger("runscaler.github")

_SCALE_SETS = "_apis/runtime/runnerscalesets"
_AGENTS = "_apis/distributedtask/pools/0/agents"
NIL_UUID = "00000000-0000-0000-0000-000000000000"
DEFAULT_RUNNER_GROUP_ID = 1
_NO_BODY = object()
T = TypeVar("T")


class ScaleSetClient:
    """The runner scale set API for one GitHub config URL (org, repo or enterprise)."""

    def __init__(
        self,
        *,
        config_url: str,
        credentials: CredentialsSource,
        proxy: str | None = None,
        ca_bundle: Path | None = None,
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008 (frozen, so sharing is safe)
        timeout: float = 300.0,
        user_agent: UserAgent | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        share_tokens: str | None = None,
    ) -> None:
        """`share_tokens`: clients given the same value (a digest of their credentials) for
        the same config URL share one admin token; None keeps this client's own."""
        try:
            self.scope: ConfigURL = parse_config_url(config_url)
        except ValueError as exc:
            raise ConfigurationError(f"github.url: {exc}") from None
        self.config_url = config_url.strip().strip("/")
        self.api_base: str = api_base(self.scope)
        self.user_agent: UserAgent = user_agent or UserAgent()
        lease = lease_http_client(
            proxy=proxy, ca_bundle=ca_bundle, timeout=timeout, transport=transport
        )
        self._sender = Sender(http=lease.client, retry=retry, timeout=timeout, lease=lease)
        self._tokens = AdminTokens(
            sender=self._sender,
            config=self.scope,
            config_url=self.config_url,
            api_base=self.api_base,
            credentials=credentials,
            user_agent=lambda: str(self.user_agent),
            share_key=share_tokens,
        )

    async def aclose(self) -> None:
        await self._sender.aclose()

    async def __aenter__(self) -> ScaleSetClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"ScaleSetClient({self.config_url!r})"

    # -- credentials ---------------------------------------------------------------------

    async def check_credentials(self) -> None:
        """Run the whole token exchange now: raises AuthError (etc.) if it would fail."""
        await self._tokens.force()

    # -- runner groups and scale sets ------------------------------------------------------

    async def get_runner_group_id(self, name: str) -> int:
        """The id of a runner group by name; the default group is 1 without asking (A1)."""
        if not name or name.lower() == "default":
            return DEFAULT_RUNNER_GROUP_ID
        what = f"cannot look up runner group {name!r}"
        response = await self._call(
            "GET", "_apis/runtime/runnergroups/", what=what, query={"groupName": name}
        )
        count, values = self._list(response, what)
        if count == 0:
            raise RunnerGroupNotFoundError(
                f"no runner group named {name!r} in {self.scope.path}: create it on GitHub "
                "(Settings → Actions → Runner groups) or fix runnerGroup in the manifest"
            )
        if count > 1:
            raise ServiceError(f"{what}: GitHub lists {count} runner groups with that name")
        return self._parse(what, lambda: int(_require_int(values[0], "id")))

    async def get_scale_set(self, *, runner_group_id: int, name: str) -> RunnerScaleSet | None:
        """The scale set with this name in this group, or None (A2)."""
        what = f"cannot look up scale set {name!r}"
        response = await self._call(
            "GET",
            _SCALE_SETS,
            what=what,
            query={"runnerGroupId": str(runner_group_id), "name": name},
        )
        count, values = self._list(response, what)
        if count == 0:
            return None
        if count > 1:
            raise ServiceError(f"{what}: GitHub lists {count} scale sets with that name")
        return self._parse(what, lambda: RunnerScaleSet.from_json(values[0]))

    async def get_scale_set_by_id(self, scale_set_id: int) -> RunnerScaleSet | None:
        """The scale set with this id, or None when GitHub has none (A3)."""
        what = f"cannot get scale set {scale_set_id}"
        try:
            response = await self._call(
                "GET",
                f"{_SCALE_SETS}/{scale_set_id}",
                what=what,
                not_found=ScaleSetNotFoundError,
            )
        except ScaleSetNotFoundError:
            return None
        data = response.json(what)
        if data is None:
            return None
        return self._parse(what, lambda: RunnerScaleSet.from_json(data))

    async def create_scale_set(self, scale_set: RunnerScaleSet) -> RunnerScaleSet:
        """Create a scale set (A4). Without labels, its name is its one label."""
        what = f"cannot create scale set {scale_set.name!r}"
        response = await self._call("POST", _SCALE_SETS, what=what, body=scale_set.to_create_json())
        return self._parse(what, lambda: RunnerScaleSet.from_json(response.json(what)))

    async def update_scale_set(
        self,
        scale_set_id: int,
        *,
        name: str | None = None,
        runner_group_id: int | None = None,
        labels: Sequence[str] | None = None,
        disable_update: bool | None = None,
    ) -> RunnerScaleSet:
        """Change only the given fields of a scale set (A5)."""
        body: dict[str, Any] = {}
        if name is not None:
            body["name"] = name
        if runner_group_id is not None:
            body["runnerGroupId"] = runner_group_id
        if labels is not None:
            body["labels"] = system_labels(list(labels))
        body["RunnerSetting"] = {} if disable_update is None else {"disableUpdate": disable_update}
        body["createdOn"] = GO_ZERO_TIME
        what = f"cannot update scale set {scale_set_id}"
        response = await self._call(
            "PATCH",
            f"{_SCALE_SETS}/{scale_set_id}",
            what=what,
            body=body,
            not_found=ScaleSetNotFoundError,
        )
        return self._parse(what, lambda: RunnerScaleSet.from_json(response.json(what)))

    async def delete_scale_set(self, scale_set_id: int) -> None:
        """Delete a scale set (A6). One that is already gone counts as deleted."""
        try:
            await self._call(
                "DELETE",
                f"{_SCALE_SETS}/{scale_set_id}",
                what=f"cannot delete scale set {scale_set_id}",
                ok=(204,),
                not_found=ScaleSetNotFoundError,
            )
        except ScaleSetNotFoundError:
            log.info("scale set %d was already deleted on GitHub", scale_set_id)

    # -- sessions ----------------------------------------------------------------------------

    async def create_session(self, scale_set_id: int, *, owner: str) -> MessageSession:
        """Open the scale set's message session (A7); SessionConflictError if one is held."""
        what = f"cannot open a message session for scale set {scale_set_id}"
        response = await self._call(
            "POST",
            f"{_SCALE_SETS}/{scale_set_id}/sessions",
            what=what,
            body={"sessionId": NIL_UUID, "ownerName": owner},
            not_found=ScaleSetNotFoundError,
            conflict=SessionConflictError,
        )
        info = self.parse_session(response, what)
        if self.user_agent.scale_set_id != scale_set_id:
            self.user_agent = dataclasses.replace(self.user_agent, scale_set_id=scale_set_id)
        return MessageSession(client=self, scale_set_id=scale_set_id, info=info)

    async def delete_session(self, scale_set_id: int, session_id: str) -> None:
        """Close a session by id (A9), e.g. one a crashed run left; gone counts as closed."""
        try:
            await self._call(
                "DELETE",
                f"{_SCALE_SETS}/{scale_set_id}/sessions/{session_id}",
                what=f"cannot close message session {session_id} of scale set {scale_set_id}",
                ok=(204,),
            )
        except GitHubError as exc:
            if exc.status == 404 or "SessionExpiredException" in (exc.type_name or ""):
                log.debug("session %s was already gone: %s", session_id, exc)
                return
            raise

    # -- runners -----------------------------------------------------------------------------

    async def generate_jit_config(
        self, scale_set_id: int, *, runner_name: str, work_folder: str = ""
    ) -> JitConfig:
        """Register a just-in-time runner (A10).

        A 409 `AgentExists` usually means an earlier attempt of this very call registered the
        runner and its answer was lost (the request is retried on a 5xx or a broken
        connection). As ARC does, the runner of that name is looked up: if it belongs to this
        scale set it is ours, so it is removed and the registration made again; one of another
        scale set is never touched (RunnerExistsError).

        The encoded config is registered as a secret; forget it (`secrets.discard`) when the
        runner is gone.
        """
        try:
            return await self._generate_jit_config(scale_set_id, runner_name, work_folder)
        except RunnerExistsError as exc:
            existing = await self.get_runner_by_name(runner_name)
            if existing is not None and existing.runner_scale_set_id != scale_set_id:
                raise RunnerExistsError(
                    f"{exc}; it belongs to scale set {existing.runner_scale_set_id}, "
                    "so it is left alone: give each scale set its own runner names",
                    status=exc.status,
                ) from exc
            if existing is not None:
                log.info(
                    "runner %r (id %d) is already registered in scale set %d, most likely by "
                    "an earlier attempt whose answer was lost; removing it and registering again",
                    runner_name,
                    existing.id,
                    scale_set_id,
                )
                await self.remove_runner(existing.id)
        return await self._generate_jit_config(scale_set_id, runner_name, work_folder)

    async def _generate_jit_config(
        self, scale_set_id: int, runner_name: str, work_folder: str
    ) -> JitConfig:
        what = f"cannot register runner {runner_name!r} in scale set {scale_set_id}"
        response = await self._call(
            "POST",
            f"{_SCALE_SETS}/{scale_set_id}/generatejitconfig",
            what=what,
            body={"name": runner_name, "workFolder": work_folder},
            not_found=ScaleSetNotFoundError,
            conflict=RunnerExistsError,
        )
        data = response.json(what)
        encoded = field_value(data, "encodedJITConfig") if isinstance(data, dict) else None
        if isinstance(encoded, str):
            secrets.add(encoded)
        return self._parse(what, lambda: JitConfig.from_json(data, scale_set_id=scale_set_id))

    async def get_runner(self, runner_id: int) -> RunnerReference | None:
        """The registered runner with this id, or None (A12)."""
        what = f"cannot get runner {runner_id}"
        try:
            response = await self._call(
                "GET", f"{_AGENTS}/{runner_id}", what=what, not_found=RunnerNotFoundError
            )
        except RunnerNotFoundError:
            return None
        data = response.json(what)
        if data is None:
            return None
        return self._parse(what, lambda: RunnerReference.from_json(data))

    async def get_runner_by_name(self, name: str) -> RunnerReference | None:
        """The registered runner with this name, or None (A13)."""
        what = f"cannot look up runner {name!r}"
        response = await self._call("GET", _AGENTS, what=what, query={"agentName": name})
        count, values = self._list(response, what)
        if count == 0:
            return None
        if count > 1:
            raise ServiceError(f"{what}: GitHub lists {count} runners with that name")
        return self._parse(what, lambda: RunnerReference.from_json(values[0]))

    async def remove_runner(self, runner_id: int) -> None:
        """Unregister a runner (A14). JobStillRunningError if it has just taken a job; a
        runner that is already gone counts as removed (GitHub answers 204 for it too)."""
        try:
            await self._call(
                "DELETE",
                f"{_AGENTS}/{runner_id}",
                what=f"cannot remove runner {runner_id}",
                ok=(204,),
                not_found=RunnerNotFoundError,
            )
        except RunnerNotFoundError:
            log.debug("runner %d was already unregistered", runner_id)

    # -- the plumbing sessions share ---------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        what: str,
        query: Mapping[str, str] | None = None,
        body: Any = _NO_BODY,
        ok: Collection[int] = (200,),
        not_found: type[GitHubError] | None = None,
        conflict: type[GitHubError] | None = None,
        token: str | None = None,
    ) -> Response:
        """One Actions service request with the admin token (or `token`, the message-queue
        token of A11). A refused admin token is renewed and the request sent once more; a
        refused `token` comes back as a 401 response for the session to handle."""
        content = None if body is _NO_BODY else _json_bytes(body)
        connection = await self._tokens.get()
        for renewed in (False, True):
            response = await self._sender.send(
                method,
                actions_url(connection.url, path, query),
                what=what,
                headers={
                    "Authorization": f"Bearer {token or connection.token}",
                    "Content-Type": "application/json",
                    "User-Agent": str(self.user_agent),
                },
                content=content,
            )
            if response.status in ok:
                return response
            if response.status == 401 and token is not None:
                return response
            if response.status == 401 and not renewed:
                log.info("the Actions service refused the admin token; getting a new one")
                connection = await self._tokens.renew(connection)
                continue
            break
        raise classify_response(
            f"{what} ({response.label})",
            status=response.status,
            headers=response.headers,
            body=response.body,
            not_found=not_found,
            conflict=conflict,
        )

    def parse_session(self, response: Response, what: str) -> SessionInfo:
        info = self._parse(what, lambda: SessionInfo.from_json(response.json(what)))
        secrets.add(info.message_queue_access_token)
        return info

    @property
    def sender(self) -> Sender:
        return self._sender

    def _list(self, response: Response, what: str) -> tuple[int, list[Any]]:
        """`{"count": N, "value": [...]}` where `count` is authoritative."""
        data = response.json(what)

        def parse() -> tuple[int, list[Any]]:
            if not isinstance(data, dict):
                raise ParseError("the list is not a JSON object")
            count = _require_int(data, "count")
            values = field_value(data, "value") or []
            if not isinstance(values, list) or len(values) < min(count, 1):
                raise ParseError(f"count is {count} but value has {len(values)} entries")
            return count, values

        return self._parse(what, parse)

    @staticmethod
    def _parse(what: str, parse: Callable[[], T]) -> T:
        try:
            return parse()
        except ParseError as exc:
            raise ServiceError(
                f"{what}: GitHub's answer is not what the API returns: {exc}"
            ) from exc


def _require_int(data: Any, key: str) -> int:
    if not isinstance(data, dict):
        raise ParseError(f"expected an object with {key}")
    value = field_value(data, key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParseError(f"{key} is not an integer: {value!r}")
    return value


def _json_bytes(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
