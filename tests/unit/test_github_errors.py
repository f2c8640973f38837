"""Error classification (protocol.md §3.2): typeName substrings first, then the status."""

from __future__ import annotations

import json

import pytest

from runscaler.errors import RunscalerError
from runscaler.github.errors import (
    AuthError,
    GitHubError,
    JobStillRunningError,
    RateLimitedError,
    RunnerExistsError,
    RunnerNotFoundError,
    ScaleSetNotFoundError,
    ServiceError,
    SessionConflictError,
    classify_response,
)

WHAT = "cannot do it (POST http://127.0.0.1:1/x)"
ASSEMBLY = ", GitHub.Actions.Runtime.WebApi"


def _exception(type_name: str, message: str = "boom") -> bytes:
    return json.dumps({"typeName": type_name, "message": message}).encode()


@pytest.mark.parametrize(
    ("status", "type_name", "expected"),
    [
        (409, "GitHub.DistributedTask.WebApi.AgentExistsException", RunnerExistsError),
        (404, "GitHub.DistributedTask.WebApi.AgentNotFoundException", RunnerNotFoundError),
        (400, "GitHub.DistributedTask.WebApi.JobStillRunningException", JobStillRunningError),
        # The Go client's test answers 409 for a busy runner: the type decides, not the status.
        (409, "JobStillRunningException", JobStillRunningError),
        (
            409,
            "GitHub.Actions.Runtime.WebApi.RunnerScaleSetSessionConflictException" + ASSEMBLY,
            SessionConflictError,
        ),
        (404, "RunnerScaleSetNotFoundException" + ASSEMBLY, ScaleSetNotFoundError),
        (400, "RunnerScaleSetSessionExpiredException" + ASSEMBLY, ServiceError),
        (500, "SomethingElseException", ServiceError),
    ],
)
def test_type_names_are_matched_by_substring(
    status: int, type_name: str, expected: type[GitHubError]
) -> None:
    error = classify_response(WHAT, status=status, headers={}, body=_exception(type_name))
    assert type(error) is expected
    assert error.type_name == type_name
    assert error.status == status


@pytest.mark.parametrize(
    ("status", "not_found", "conflict", "expected"),
    [
        (401, None, None, AuthError),
        (403, None, None, AuthError),
        (429, None, None, RateLimitedError),
        (404, None, None, ServiceError),
        (404, ScaleSetNotFoundError, None, ScaleSetNotFoundError),
        (409, None, None, ServiceError),
        (409, None, SessionConflictError, SessionConflictError),
        (400, ScaleSetNotFoundError, SessionConflictError, ServiceError),
        (502, None, None, ServiceError),
    ],
)
def test_without_a_type_name_the_status_decides_in_context(
    status: int,
    not_found: type[GitHubError] | None,
    conflict: type[GitHubError] | None,
    expected: type[GitHubError],
) -> None:
    error = classify_response(
        WHAT,
        status=status,
        headers={"content-type": "application/json"},
        body=b'{"message": "nope"}',
        not_found=not_found,
        conflict=conflict,
    )
    assert type(error) is expected


def test_every_github_error_is_a_runscaler_error() -> None:
    error = classify_response(WHAT, status=500, headers={}, body=b"")
    assert isinstance(error, RunscalerError)


def test_the_message_is_one_line_with_status_server_message_ids_and_advice() -> None:
    error = classify_response(
        "cannot open a message session for scale set 3 (POST http://127.0.0.1:1/s)",
        status=409,
        headers={"ActivityId": "act-1", "X-GitHub-Request-Id": "req-2"},
        body=_exception(
            "RunnerScaleSetSessionConflictException" + ASSEMBLY,
            "The actions runner scaleset dev already has an active session.",
        ),
    )
    assert str(error) == (
        "cannot open a message session for scale set 3 (POST http://127.0.0.1:1/s): "
        "409 Conflict: The actions runner scaleset dev already has an active session "
        "(activity id act-1, request id req-2); another runscaler or listener holds this "
        "scale set's session; stop it, or wait until its session expires"
    )
    assert error.activity_id == "act-1"
    assert error.request_id == "req-2"
    assert error.server_message == "The actions runner scaleset dev already has an active session."
    assert "\n" not in str(error)


def test_an_empty_body_is_an_unknown_error() -> None:
    error = classify_response(WHAT, status=500, headers={"Content-Length": "0"}, body=b"")
    assert error.server_message == "unknown error"
    assert str(error) == f"{WHAT}: 500 Internal Server Error: unknown error"


def test_a_plain_text_body_is_quoted_on_one_line() -> None:
    error = classify_response(
        WHAT,
        status=401,
        headers={"content-type": "text/plain; charset=utf-8"},
        body=b"Session expired\n",
    )
    assert isinstance(error, AuthError)
    assert error.server_message == "Session expired"


def test_a_body_that_is_not_json_says_so() -> None:
    error = classify_response(
        WHAT, status=502, headers={"content-type": "text/html"}, body=b"<html>bad gateway</html>"
    )
    assert error.server_message == "unreadable error response: <html>bad gateway</html>"


def test_field_names_are_read_case_insensitively() -> None:
    error = classify_response(
        WHAT,
        status=400,
        headers={},
        body=b'{"TypeName": "X.JobStillRunningException", "Message": "busy"}',
    )
    assert isinstance(error, JobStillRunningError)
    assert error.server_message == "busy"


def test_a_long_server_message_is_cut() -> None:
    error = classify_response(WHAT, status=500, headers={}, body=_exception("E", "x" * 1000))
    assert error.server_message is not None
    assert len(error.server_message) == 300


def test_a_caller_hint_replaces_the_default_advice() -> None:
    error = classify_response(WHAT, status=401, headers={}, body=b"", hint="check github.token")
    assert str(error).endswith("; check github.token")
