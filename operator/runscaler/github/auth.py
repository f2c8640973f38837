"""Credentials, and the JWT arithmetic of the auth bootstrap (protocol.md §1.3, §4).

Credentials come from a callable, not a value: the manifest's secrets may be `file:` refs that
an operator rotates on disk, so the client asks again on every admin-token refresh and once
more after GitHub refuses them. Every secret seen here is registered for log redaction.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

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
    import jwt  # with cryptography, ~8 MiB that only GitHub App credentials need

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
    """The `exp` claim of a JWT as a Unix time, read without verifying; None if unreadable.

    Read by hand: PyJWT would bring in cryptography for every admin token, App or not."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(payload.encode("ascii")))
    except (ValueError, UnicodeError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    return float(exp)
