"""The command line's side of the operator's HTTP endpoints (`runscaler status`, `plan`).

One place turns "the operator at URL" into a JSON answer or a one-line `UserError` that says
what went wrong and what to try, so no httpx exception reaches a command.
"""

from __future__ import annotations

import json
import os
from typing import Any

import httpx

from runscaler.errors import ConfigurationError, UserError

DEFAULT_SERVER = "http://127.0.0.1:8080"
SERVER_ENV = "RUNSCALER_SERVER"
TIMEOUT = 5.0


def default_server() -> str:
    """`$RUNSCALER_SERVER` when set, else the operator's default `--listen` address."""
    return os.environ.get(SERVER_ENV) or DEFAULT_SERVER


def server_url(server: str | None) -> str:
    """The base URL to use: `--server`, else the default; `HOST:PORT` alone means http."""
    url = (server or default_server()).strip().rstrip("/")
    if "://" not in url:
        url = f"http://{url}"
    if not url.startswith(("http://", "https://")):
        raise ConfigurationError(f"--server {server!r}: use an http:// URL like {DEFAULT_SERVER}")
    return url


class OperatorUnreachable(ConfigurationError):
    """Nothing answered at the operator's address."""


class OperatorRefused(UserError):
    """The operator answered, but not with what was asked for."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


def unreachable_message(url: str) -> str:
    return f"cannot reach the operator at {url}: is runscaler run running? (pass --server)"


def fetch_json(
    url: str, path: str, *, transport: httpx.BaseTransport | None = None, timeout: float = TIMEOUT
) -> Any:
    """GET `url + path` and return its JSON; any failure is one-line `UserError`."""
    try:
        with httpx.Client(transport=transport, timeout=timeout, trust_env=False) as client:
            response = client.get(url + path)
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise OperatorUnreachable(unreachable_message(url)) from exc
    except httpx.HTTPError as exc:
        raise OperatorUnreachable(
            f"cannot read {path} from the operator at {url}: {exc or type(exc).__name__}"
        ) from exc
    if response.status_code != 200:
        raise OperatorRefused(_refusal(url, path, response), status=response.status_code)
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise OperatorRefused(
            f"the server at {url} answered {path} with something that is not JSON: "
            "is it a runscaler operator? (pass --server)",
            status=response.status_code,
        ) from None


def _refusal(url: str, path: str, response: httpx.Response) -> str:
    detail = ""
    try:
        body = response.json()
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            detail = f": {body['error']}"
    except (json.JSONDecodeError, UnicodeDecodeError):
        pass
    if response.status_code == 404:
        return (
            f"the server at {url} has no {path}: is it a runscaler operator (of this version)? "
            "(pass --server)"
        )
    return f"the operator at {url} answered {path} with HTTP {response.status_code}{detail}"
