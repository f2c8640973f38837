"""Request and response helpers shared by the simulator's route modules.

Handlers raise `ApiError` (the Actions service's exception JSON) or `GitHubApiError` (the REST
API's `{"message"}` JSON); the middleware here turns either into a response, and renders
unknown routes as JSON 404s, so no handler builds an error response by hand.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from runscaler.simulator.records import ApiError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class GitHubApiError(Exception):
    """A REST API refusal: GitHub answers `{"message", "documentation_url"}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ControlError(Exception):
    """A bad control API request (`/_sim/...`): answered `{"error": ...}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def json_response(data: Any, *, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(data, separators=(",", ":")).encode(),
        content_type="application/json",
    )


def text_response(text: str, *, status: int = 200) -> web.Response:
    return web.Response(status=status, text=text, content_type="text/plain")


async def read_json(request: web.Request, *, error: type[Exception] = ApiError) -> Any:
    """The request's JSON body (None when empty), or a 400 in the caller's error style."""
    raw = await request.read()
    if not raw.strip():
        return None
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError):
        if error is ApiError:
            raise ApiError(
                400, "ArgumentException", "The request body is not valid JSON."
            ) from None
        raise ControlError(400, "the request body is not valid JSON") from None


def field(body: Any, name: str, default: Any = None) -> Any:
    """A JSON field by exact name, then case-insensitively (as the service's binder reads)."""
    if not isinstance(body, dict):
        return default
    if name in body:
        return body[name]
    lowered = name.lower()
    for key, value in body.items():
        if key.lower() == lowered:
            return value
    return default


def path_int(request: web.Request, name: str) -> int:
    try:
        return int(request.match_info[name])
    except ValueError:
        raise web.HTTPNotFound() from None


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return json_response(exc.body(), status=exc.status)
    except GitHubApiError as exc:
        body = {"message": exc.message, "documentation_url": "https://docs.github.com/rest"}
        return json_response(body, status=exc.status)
    except ControlError as exc:
        return json_response({"error": exc.message}, status=exc.status)
    except web.HTTPNotFound:
        return json_response({"message": "Not Found"}, status=404)
    except web.HTTPMethodNotAllowed:
        return json_response({"message": "Method Not Allowed"}, status=405)
