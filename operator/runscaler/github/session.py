"""`MessageSession`: one listener's hold on a scale set's message queue (protocol.md §1.5).

The queue is reached with its own short-lived token. It is never refreshed ahead of time: a
401 from the queue (or from acquirejobs) refreshes the session and the call is tried exactly
once more; a second 401 is a `TokenExpiredError` and the listener opens a new session.

The message cursor (`lastMessageId`) belongs to one session: the broker numbers messages per
session (ids restart near 1e8 in a new one, ARC #4470), so a new session starts at 0 and a
cursor is never carried from one session to the next.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from runscaler.github.errors import (
    GitHubError,
    MessageUnparseableError,
    ScaleSetNotFoundError,
    ServiceError,
    TokenExpiredError,
    classify_response,
    describe,
)
from runscaler.github.models import (
    Message,
    ParseError,
    SessionInfo,
    Statistics,
    field_value,
    parse_message,
)
from runscaler.github.transport import Response
from runscaler.github.urls import with_path_suffix, with_query
from runscaler.logs import secrets

if TYPE_CHECKING:
    from runscaler.github.client import ScaleSetClient

log = logging.getLogger("runscaler.github")

T = TypeVar("T")
_QUEUE_ACCEPT = "application/json; api-version=6.0-preview"
_SCALE_SETS = "_apis/runtime/runnerscalesets"


class _QueueTokenRefused(Exception):
    """The queue said 401: the message-queue token expired."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.label)
        self.response = response


class MessageSession:
    """An open message session; created by `ScaleSetClient.create_session`."""

    def __init__(self, *, client: ScaleSetClient, scale_set_id: int, info: SessionInfo) -> None:
        self._client = client
        self.scale_set_id = scale_set_id
        self.session_id = info.session_id
        self.owner = info.owner_name
        self._info = info
        self.statistics: Statistics = info.statistics or Statistics()
        self._closed = False
        self._last_message_id = 0

    def __repr__(self) -> str:
        return (
            f"MessageSession(scale_set_id={self.scale_set_id}, session_id={self.session_id!r}, "
            f"owner={self.owner!r})"
        )

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def last_message_id(self) -> int:
        """The id of the last message handled in this session (0 before the first)."""
        return self._last_message_id

    def seen(self, message: Message) -> bool:
        """True for a message this session already handled (redelivered: its ack was lost)."""
        return message.message_id <= self._last_message_id

    def mark_handled(self, message_id: int) -> None:
        """Move the cursor past a handled message; the next poll asks for what follows it."""
        self._last_message_id = max(self._last_message_id, message_id)

    async def get_message(
        self, *, max_capacity: int, last_message_id: int | None = None
    ) -> Message | None:
        """Long-poll the queue (Q1): the next message after this session's cursor (or after
        `last_message_id` when given), or None when the poll ended without one: a 202, or a
        200 with an empty body, which the live broker sends too (ARC #4470, #4285)."""
        if max_capacity < 0:
            raise ValueError("max_capacity must not be negative")
        cursor = self._last_message_id if last_message_id is None else last_message_id
        response = await self._with_refresh(
            lambda: self._poll(last_message_id=cursor, max_capacity=max_capacity),
            what="get a message",
        )
        if response.status == 202:
            return None
        if not response.body.strip():
            log.debug("%s: an empty 200 from the message queue; no message", self)
            return None
        what = f"cannot read a message of scale set {self.scale_set_id}"
        data = response.json(what)
        try:
            message = parse_message(data, fallback_statistics=self.statistics)
        except ParseError as exc:
            problem = f"{what} ({response.label}): {exc}"
            message_id = field_value(data, "messageId") if isinstance(data, dict) else None
            if isinstance(message_id, int) and not isinstance(message_id, bool):
                raise MessageUnparseableError(problem, message_id=message_id) from exc
            raise ServiceError(problem, status=200) from exc
        self.statistics = message.statistics
        return message

    async def delete_message(self, message_id: int) -> None:
        """Acknowledge a message (Q2) so it is not delivered again."""
        await self._with_refresh(lambda: self._delete(message_id), what="delete a message")

    async def acquire_jobs(self, request_ids: Sequence[int]) -> list[int]:
        """Claim available jobs for this scale set (A11); returns the ids actually acquired."""
        if not request_ids:
            return []
        what = f"cannot acquire jobs for scale set {self.scale_set_id}"
        response = await self._with_refresh(
            lambda: self._acquire(list(request_ids), what), what="acquire jobs"
        )
        data = response.json(what)
        values = field_value(data, "value") if isinstance(data, dict) else None
        if not isinstance(values, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in values
        ):
            raise ServiceError(f"{what} ({response.label}): the answer has no list of ids")
        return list(values)

    async def refresh(self) -> None:
        """Get a fresh message-queue token (A8)."""
        what = f"cannot refresh message session {self.session_id} of scale set {self.scale_set_id}"
        response = await self._client._call(
            "PATCH",
            f"{_SCALE_SETS}/{self.scale_set_id}/sessions/{self.session_id}",
            what=what,
            not_found=None,
        )
        info = self._client.parse_session(response, what)
        old = self._info.message_queue_access_token
        self._info = info
        if info.statistics is not None:
            self.statistics = info.statistics
        if old != info.message_queue_access_token:
            secrets.discard(old)
        log.debug("refreshed message session %s", self.session_id)

    async def close(self) -> None:
        """Close the session (A9) so another listener may open one. Idempotent; a failure is
        logged, not raised (the session then expires on GitHub's side)."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._client.delete_session(self.scale_set_id, self.session_id)
        except GitHubError as exc:
            log.warning("could not close message session %s: %s", self.session_id, exc)
        finally:
            secrets.discard(self._info.message_queue_access_token)

    # -- internals ---------------------------------------------------------------------------

    async def _with_refresh(self, call: Callable[[], Awaitable[T]], *, what: str) -> T:
        try:
            return await call()
        except _QueueTokenRefused:
            log.info("message queue token expired; refreshing session %s", self.session_id)
        await self.refresh()
        try:
            return await call()
        except _QueueTokenRefused as refused:
            response = refused.response
            raise TokenExpiredError(
                describe(
                    f"cannot {what} for scale set {self.scale_set_id} ({response.label})",
                    status=401,
                    detail="the message queue token was refused again after a session refresh",
                    hint="open a new session",
                ),
                status=401,
            ) from None

    def _queue_headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self._info.message_queue_access_token}",
            "User-Agent": str(self._client.user_agent),
        }

    async def _poll(self, *, last_message_id: int, max_capacity: int) -> Response:
        url = self._info.message_queue_url
        if last_message_id > 0:
            url = with_query(url, {"lastMessageId": str(last_message_id)})
        headers = self._queue_headers()
        headers["Accept"] = _QUEUE_ACCEPT
        headers["X-ScaleSetMaxCapacity"] = str(max_capacity)
        what = f"cannot get a message for scale set {self.scale_set_id}"
        response = await self._client.sender.send("GET", url, what=what, headers=headers)
        return self._judge(response, what, ok=(200, 202))

    async def _delete(self, message_id: int) -> Response:
        url = with_path_suffix(self._info.message_queue_url, str(message_id))
        headers = self._queue_headers()
        headers["Content-Type"] = "application/json"
        what = f"cannot delete message {message_id} of scale set {self.scale_set_id}"
        response = await self._client.sender.send("DELETE", url, what=what, headers=headers)
        return self._judge(response, what, ok=(204,))

    async def _acquire(self, request_ids: list[int], what: str) -> Response:
        response = await self._client._call(
            "POST",
            f"{_SCALE_SETS}/{self.scale_set_id}/acquirejobs",
            what=what,
            body=request_ids,
            not_found=ScaleSetNotFoundError,
            token=self._info.message_queue_access_token,
        )
        return self._judge(response, what, ok=(200,))

    @staticmethod
    def _judge(response: Response, what: str, *, ok: tuple[int, ...]) -> Response:
        if response.status in ok:
            return response
        if response.status == 401:
            raise _QueueTokenRefused(response)
        raise classify_response(
            f"{what} ({response.label})",
            status=response.status,
            headers=response.headers,
            body=response.body,
            not_found=ScaleSetNotFoundError,
        )
