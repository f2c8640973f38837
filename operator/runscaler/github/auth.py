"""Credentials, and the JWT arithmetic of the auth bootstrap (protocol.md §1.3, §4).

Credentials come from a callable, not a value: the manifest's secrets may be `file:` refs that
an operator rotates on disk, so the client asks again on every admin-token refresh and once
more after GitHub refuses them. Every secret seen here is registered for log redaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import jwt

from runscaler.github.errors import AuthError
from runscaler.logs import secrets

# GitHub rejects App JWTs issued in the future or living longer than 10 minutes; back-dating by a
# minute absorbs clock drift (protocol.md §1.3).
APP_JWT_BACKDATE = 60
APP_JWT_LIFETIME = 9 * 60


@dataclass(frozen=True)
class TokenCredentials:
    """A personal access token (classic or fine-grained)."""

    token: str = field(repr=False)


@dataclass(frozen=True)
class AppCredentials:
    """A GitHub App installation: the client id (or app id), installation id and PEM key."""

    client_id: str
    installation_id: int
    private_key: str = field(repr=False)


Credentials = TokenCredentials | AppCredentials
CredentialsSource = Callable[[], Credentials]


def register_credentials(credentials: Credentials) -> None:
    """Make sure the secrets of these credentials never reach a log line."""
    if isinstance(credentials, TokenCredentials):
        secrets.add(credentials.token)
    else:
        secrets.add(credentials.private_key)


def create_app_jwt(credentials: AppCredentials, *, now: float | None = None) -> str:
    """An RS256 JWT for the App: `iss` = client id, issued a minute ago, valid 9 minutes."""
    issued = int(now if now is not None else time.time()) - APP_JWT_BACKDATE
    claims = {"iat": issued, "exp": issued + APP_JWT_LIFETIME, "iss": credentials.client_id}
    try:
        token = jwt.encode(claims, credentials.private_key, algorithm="RS256")
    except (ValueError, TypeError, jwt.PyJWTError) as exc:
        # The key's text is never part of the message: only what is wrong with it.
        raise AuthError(
            f"cannot sign a JWT for GitHub App {credentials.client_id}: the private key is not "
            "a valid PEM RSA key; check the app's privateKey secret"
        ) from exc
    secrets.add(token)
    return token


def jwt_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT as a Unix time, read without verifying; None if unreadable."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    return float(exp)
