"""The admin token: how the client gets one (G1 → G2 → G3) and when it gets a new one.

The Actions service is reached with a short-lived admin JWT that GitHub hands out in exchange
for a runner registration token (protocol.md §1.3, §4). It is refreshed a minute before its
`exp`, or at once when the service refuses it. A refresh that fails keeps the old token while
it is still valid, so a GitHub hiccup near expiry does not fail every call.

Scale sets of one fleet mostly use one credential for one organization: their clients share
one admin connection (`share_key`, which the caller derives from the credentials and the config
URL), so 100 scale sets make one token exchange, not 100, and refresh it once. Each exchange
still runs on the asking client's own connection pool and credentials, so a client closed in the
middle of one only fails its own call; the next asker exchanges again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

from runscaler.errors import RunscalerError
from runscaler.github.auth import (
    AppCredentials,
    Credentials,
    CredentialsSource,
    create_app_jwt,
    jwt_expiry,
    register_credentials,
)
from runscaler.github.errors import (
    AuthError,
    CredentialsUnavailableError,
    GitHubError,
    ServiceError,
    classify_response,
)
from runscaler.github.transport import Response, Sender
from runscaler.github.urls import registration_token_path
from runscaler.logs import secrets
from runscaler.manifest.values import ConfigURL

log = logging.getLogger("runscaler.github")

# Refresh this long before `exp` (the Go client's margin).
REFRESH_MARGIN = 60.0

_SCOPE_HINTS = {
    "organization": (
        "the token needs the admin:org scope (classic) or 'Self-hosted runners: read and "
        "write' on the organization (fine-grained token or App)"
    ),
    "repository": (
        "the token needs the repo scope (classic) or 'Administration: read and write' on "
        "the repository (fine-grained token or App)"
    ),
    "enterprise": "the token needs the manage_runners:enterprise scope (classic token)",
}


@dataclass(frozen=True)
class AdminConnection:
    """The Actions service URL and the admin token for it."""

    url: str
    token: str = field(repr=False)
    expires_at: float | None

    def fresh(self, now: float) -> bool:
        return self.expires_at is not None and now + REFRESH_MARGIN < self.expires_at

    def usable(self, now: float) -> bool:
        return self.expires_at is not None and now < self.expires_at


class _Holder:
    """The current admin connection and the lock its replacement is made under."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.loop = loop
        self.current: AdminConnection | None = None
        self.lock = asyncio.Lock()


# Alive while a client uses it: the last client gone, the next one starts afresh.
_HOLDERS: weakref.WeakValueDictionary[tuple[object, ...], _Holder] = weakref.WeakValueDictionary()


def _holder(key: tuple[object, ...] | None) -> _Holder:
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if key is None or loop is None:
        return _Holder(loop)  # an asyncio.Lock is bound to one loop: no sharing outside one
    key = (id(loop), *key)
    holder = _HOLDERS.get(key)
    if holder is None or holder.loop is not loop:
        holder = _HOLDERS[key] = _Holder(loop)
    return holder


class AdminTokens:
    """Holds the current admin connection and replaces it when it is due."""

    def __init__(
        self,
        *,
        sender: Sender,
        config: ConfigURL,
        config_url: str,
        api_base: str,
        credentials: CredentialsSource,
        user_agent: Callable[[], str],
        clock: Callable[[], float] = time.time,
        share_key: str | None = None,
    ) -> None:
        self._sender = sender
        self._config = config
        self._config_url = config_url
        self._api_base = api_base
        self._credentials = credentials
        self._user_agent = user_agent
        self._clock = clock
        # Shared by every client with the same share key and config URL (in this loop).
        self._holder = _holder(None if share_key is None else (config_url, api_base, share_key))
        self._lock = self._holder.lock

    @property
    def _current(self) -> AdminConnection | None:
        return self._holder.current

    @_current.setter
    def _current(self, connection: AdminConnection | None) -> None:
        self._holder.current = connection

    async def get(self) -> AdminConnection:
        """A connection whose token is not about to expire, refreshing it if needed."""
        current = self._current
        if current is not None and current.fresh(self._clock()):
            return current
        async with self._lock:
            current = self._current
            if current is not None and current.fresh(self._clock()):
                return current
            try:
                return await self._replace()
            except GitHubError as exc:
                if current is None or not current.usable(self._clock()):
                    raise
                log.warning("admin token refresh failed, keeping the current one: %s", exc)
                return current

    async def renew(self, rejected: AdminConnection) -> AdminConnection:
        """A new connection after the service refused `rejected` (unless one already came)."""
        async with self._lock:
            if self._current is not None and self._current is not rejected:
                return self._current
            return await self._replace()

    async def force(self) -> AdminConnection:
        """A brand new connection whatever the state (to check credentials)."""
        async with self._lock:
            return await self._replace()

    async def _replace(self) -> AdminConnection:
        new = await self._exchange()
        old = self._current
        self._current = new
        if old is not None and old.token != new.token:
            secrets.discard(old.token)
        log.debug("new admin token for %s (expires %s)", self._config_url, new.expires_at)
        return new

    def _read_credentials(self) -> Credentials:
        try:
            credentials = self._credentials()
        except (RunscalerError, OSError) as exc:
            if isinstance(exc, GitHubError):
                raise
            # A `file:` secret that went missing: callers handle GitHubErrors only.
            raise CredentialsUnavailableError(str(exc)) from exc
        register_credentials(credentials)
        return credentials

    async def _exchange(self) -> AdminConnection:
        credentials = self._read_credentials()
        try:
            registration = await self._registration_token(credentials)
        except AuthError as exc:
            if isinstance(exc, CredentialsUnavailableError):
                raise
            # A rotated `file:` secret shows up as a refusal: read the credentials again.
            log.info("GitHub refused the credentials (%s); reading them again", exc.status)
            credentials = self._read_credentials()
            registration = await self._registration_token(credentials)
        try:
            return await self._admin_connection(registration)
        finally:
            secrets.discard(registration)

    async def _registration_token(self, credentials: Credentials) -> str:
        """G1 (after G2 for an App): a runner registration token."""
        app = isinstance(credentials, AppCredentials)
        if isinstance(credentials, AppCredentials):
            bearer = await self._installation_token(credentials)
            what_auth = "check the App's clientId, installationId and privateKey, and " + (
                "that the App is installed with the permission above"
            )
        else:
            bearer = credentials.token
            what_auth = "check that the token is valid and not expired or revoked"
        try:
            url = self._api_base + registration_token_path(self._config)
            response = await self._sender.send(
                "POST",
                url,
                what=f"cannot get a runner registration token for {self._config.path}",
                headers={
                    "Authorization": f"Bearer {bearer}",
                    "Content-Type": "application/vnd.github.v3+json",
                    "Accept": "application/vnd.github+json",
                    "User-Agent": self._user_agent(),
                },
                content=b"",
            )
        finally:
            if app:  # the installation token is used once; the PAT stays registered
                secrets.discard(bearer)
        if response.status != 201:
            raise self._refusal(
                response,
                f"cannot get a runner registration token for {self._config.path}",
                what_auth,
            )
        return self._token_from(response, "runner registration token")

    async def _installation_token(self, credentials: AppCredentials) -> str:
        """G2: an installation access token for the App."""
        app_jwt = create_app_jwt(credentials)
        try:
            response = await self._sender.send(
                "POST",
                f"{self._api_base}/app/installations/{credentials.installation_id}/access_tokens",
                what=f"cannot get an installation token for GitHub App {credentials.client_id}",
                headers={
                    "Authorization": f"Bearer {app_jwt}",
                    "Content-Type": "application/vnd.github+json",
                    "Accept": "application/vnd.github+json",
                    "User-Agent": self._user_agent(),
                },
                content=b"",
            )
        finally:
            secrets.discard(app_jwt)
        if response.status != 201:
            raise self._refusal(
                response,
                f"cannot get an installation token for GitHub App {credentials.client_id}",
                "check the App's clientId, installationId and privateKey",
            )
        return self._token_from(response, "installation token")

    async def _admin_connection(self, registration: str) -> AdminConnection:
        """G3: trade the registration token for the Actions service URL and admin token."""
        body = {"url": self._config_url, "runner_event": "register"}
        response = await self._sender.send(
            "POST",
            f"{self._api_base}/actions/runner-registration",
            what=f"cannot connect to the Actions service for {self._config.path}",
            headers={
                "Authorization": f"RemoteAuth {registration}",
                "Content-Type": "application/json",
                "User-Agent": self._user_agent(),
            },
            # json.Encoder's form: compact, no HTML escaping, a trailing newline.
            content=(json.dumps(body, separators=(",", ":"), ensure_ascii=False) + "\n").encode(),
            retry_statuses=(401, 403),
        )
        if not 200 <= response.status < 300:
            raise self._refusal(
                response,
                f"cannot connect to the Actions service for {self._config.path}",
                "the registration token was refused; check the credentials' permissions",
            )
        data = response.json("cannot connect to the Actions service")
        url = data.get("url") if isinstance(data, dict) else None
        token = data.get("token") if isinstance(data, dict) else None
        if not isinstance(url, str) or not url or not isinstance(token, str) or not token:
            raise ServiceError(
                f"cannot connect to the Actions service for {self._config.path} "
                f"({response.label}): the answer has no url or token; is github.url a "
                "GitHub host?",
                status=response.status,
            )
        secrets.add(token)
        return AdminConnection(url=url, token=token, expires_at=jwt_expiry(token))

    def _refusal(self, response: Response, what: str, auth_hint: str) -> GitHubError:
        if response.status in (401, 403):
            hint = f"{auth_hint}; {_SCOPE_HINTS[self._config.scope]}"
        elif response.status == 404:
            hint = (
                f"check github.url: {self._config.path} does not exist or these credentials "
                "cannot see it"
            )
        else:
            hint = None
        return classify_response(
            f"{what} ({response.label})",
            status=response.status,
            headers=response.headers,
            body=response.body,
            hint=hint,
        )

    @staticmethod
    def _token_from(response: Response, name: str) -> str:
        data = response.json(f"cannot read the {name}")
        token = data.get("token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise ServiceError(
                f"GitHub's answer to {response.label} has no {name}", status=response.status
            )
        secrets.add(token)
        return token
