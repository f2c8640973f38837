"""The GitHub client's error tree, and the one function that turns a failed response into it.

Callers react by class, never by parsing text: a session conflict means standby, a deleted
scale set means re-create, a busy runner means keep it. The classification follows the Go
client (protocol.md §3): the Actions service names its exception in `typeName`, qualified with
a namespace and an assembly, so types are matched by substring.

    GitHubError(RunscalerError)
    ├── TransportError          cannot reach the service (after retries)
    ├── ClientClosedError       the client was closed while a call was on its way
    ├── AuthError               401/403: bad token, missing scope, wrong App key
    │   └── CredentialsUnavailableError  the token or App key cannot be read now
    ├── RateLimitedError        429 after retries
    ├── TokenExpiredError       message-queue 401 that survived one session refresh
    ├── SessionConflictError    409: another listener holds the scale set's session
    ├── ScaleSetNotFoundError   the scale set is gone on GitHub's side
    ├── RunnerExistsError       a runner with that name is already registered
    ├── RunnerNotFoundError     no runner with that id
    ├── JobStillRunningError    the runner to remove has just taken a job
    └── ServiceError            anything else (with the service's typeName and message)
        └── RunnerGroupNotFoundError

`str(error)` is one line: what failed, the status, the service's message, what to check.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from http import HTTPStatus

from runscaler.errors import RunscalerError

ACTIVITY_ID_HEADER = "ActivityId"
REQUEST_ID_HEADER = "X-GitHub-Request-Id"
# A service message longer than this is cut: error text is one line people read.
_MAX_SERVER_MESSAGE = 300


class GitHubError(RunscalerError):
    """A request to GitHub or the Actions service failed."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        activity_id: str | None = None,
        request_id: str | None = None,
        type_name: str | None = None,
        server_message: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.activity_id = activity_id
        self.request_id = request_id
        self.type_name = type_name
        self.server_message = server_message


class TransportError(GitHubError):
    """The service could not be reached, or the connection broke, on every attempt."""


class ClientClosedError(GitHubError):
    """The client was closed (its scale set stopped) while a call was on its way."""


class AuthError(GitHubError):
    """The credentials were refused (401/403): a bad or expired token, or a missing scope."""


class CredentialsUnavailableError(AuthError):
    """The credentials could not be read (e.g. a `file:` secret went missing)."""


class RateLimitedError(GitHubError):
    """GitHub kept answering 429 after every retry."""


class TokenExpiredError(GitHubError):
    """The message-queue token was refused again right after a session refresh."""


class SessionConflictError(GitHubError):
    """Another listener holds the scale set's message session (409)."""


class ScaleSetNotFoundError(GitHubError):
    """The scale set no longer exists on GitHub."""


class RunnerExistsError(GitHubError):
    """A runner with this name is already registered."""


class RunnerNotFoundError(GitHubError):
    """No runner with this id is registered."""


class JobStillRunningError(GitHubError):
    """The runner cannot be removed: it is running a job."""


class ServiceError(GitHubError):
    """Any other failure the service reported."""


class RunnerGroupNotFoundError(ServiceError):
    """No runner group has the requested name."""


class MessageUnparseableError(ServiceError):
    """A message arrived with an id but a body we cannot read. Acknowledge it by its id, or
    the broker redelivers it after every reconnect and the listener never gets past it."""

    def __init__(self, message: str, *, message_id: int) -> None:
        super().__init__(message, status=200)
        self.message_id = message_id


# Substrings of `typeName`, first match wins (protocol.md §3.2 step 6, plus the two the
# listener and controller must tell apart).
_TYPE_CLASSES: tuple[tuple[str, type[GitHubError]], ...] = (
    ("AgentExistsException", RunnerExistsError),
    ("AgentNotFoundException", RunnerNotFoundError),
    ("JobStillRunningException", JobStillRunningError),
    ("RunnerScaleSetSessionConflictException", SessionConflictError),
    ("RunnerScaleSetNotFoundException", ScaleSetNotFoundError),
)

_DEFAULT_HINTS: dict[type[GitHubError], str] = {
    RunnerExistsError: "use another runner name, or remove the old registration first",
    RunnerNotFoundError: "the runner is already gone",
    JobStillRunningError: "the runner is busy; remove it after its job ends",
    SessionConflictError: (
        "another runscaler or listener holds this scale set's session; stop it, or wait "
        "until its session expires"
    ),
    ScaleSetNotFoundError: "the scale set was deleted on GitHub; create it again",
    RateLimitedError: "GitHub is rate limiting these credentials; try again later",
    AuthError: "check the credentials and their permissions",
}


def status_text(status: int) -> str:
    """`404` → `404 Not Found` (just the number for codes Python does not know)."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def describe(
    what: str,
    *,
    status: int | None = None,
    server_message: str | None = None,
    activity_id: str | None = None,
    request_id: str | None = None,
    detail: str | None = None,
    hint: str | None = None,
) -> str:
    """The one-line text of every GitHubError: `what: status: message (ids); hint`."""
    parts = [what]
    if status is not None:
        parts.append(status_text(status))
    if server_message:
        parts.append(server_message.rstrip("."))
    if detail:
        parts.append(detail)
    text = ": ".join(parts)
    ids = [
        f"{label} {value}"
        for label, value in (("activity id", activity_id), ("request id", request_id))
        if value
    ]
    if ids:
        text += f" ({', '.join(ids)})"
    if hint:
        text += f"; {hint}"
    return text


def one_line(text: str) -> str:
    """Fold a service message onto one line and cut it to a readable length."""
    flat = " ".join(text.split())
    if len(flat) > _MAX_SERVER_MESSAGE:
        flat = flat[: _MAX_SERVER_MESSAGE - 1] + "…"
    return flat


def parse_exception_body(body: bytes, content_type: str) -> tuple[str | None, str | None]:
    """`(typeName, message)` from an error body, following protocol.md §3.2 steps 2 to 5.

    GitHub API errors (`{"message": …, "documentation_url": …}`) have no typeName; their
    `message` is still the most useful text.
    """
    if not body.strip():
        return None, "unknown error"
    text = body.decode("utf-8", errors="replace")
    if "text/plain" in content_type.lower():
        return None, one_line(text)
    try:
        data = json.loads(text)
    except ValueError:
        return None, f"unreadable error response: {one_line(text)}"
    if not isinstance(data, dict):
        return None, one_line(text)
    type_name = _lenient_str(data, "typeName")
    message = _lenient_str(data, "message")
    return type_name, one_line(message) if message else None


def _lenient_str(data: Mapping[str, object], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        folded = key.lower()
        value = next((v for k, v in data.items() if k.lower() == folded), None)
    return value if isinstance(value, str) and value else None


def error_class_for(
    status: int,
    type_name: str | None,
    *,
    not_found: type[GitHubError] | None = None,
    conflict: type[GitHubError] | None = None,
) -> type[GitHubError]:
    """Choose the class: the service's typeName first, then the status in this context.

    `not_found` is the class a bare 404 means for this request (the scale set it names), and
    `conflict` what a bare 409 means (a session conflict on session create).
    """
    if type_name:
        for needle, cls in _TYPE_CLASSES:
            if needle in type_name:
                return cls
    if status in (401, 403):
        return AuthError
    if status == 429:
        return RateLimitedError
    if status == 404 and not_found is not None:
        return not_found
    if status == 409 and conflict is not None:
        return conflict
    return ServiceError


def classify_response(
    what: str,
    *,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    not_found: type[GitHubError] | None = None,
    conflict: type[GitHubError] | None = None,
    hint: str | None = None,
    detail: str | None = None,
) -> GitHubError:
    """The error for a response that is not the expected success.

    `what` says what was attempted, with the method and URL; `hint` replaces the class's
    default advice when the caller knows better (which token scope a URL needs, say).
    """
    type_name, server_message = parse_exception_body(body, headers.get("content-type", ""))
    cls = error_class_for(status, type_name, not_found=not_found, conflict=conflict)
    activity_id = headers.get(ACTIVITY_ID_HEADER) or None
    request_id = headers.get(REQUEST_ID_HEADER) or None
    message = describe(
        what,
        status=status,
        server_message=server_message,
        activity_id=activity_id,
        request_id=request_id,
        detail=detail,
        hint=hint if hint is not None else _DEFAULT_HINTS.get(cls),
    )
    return cls(
        message,
        status=status,
        activity_id=activity_id,
        request_id=request_id,
        type_name=type_name,
        server_message=server_message,
    )
