"""The simulator's credentials: what it issues, for how long, and what it accepts.

GitHub hands out four kinds of token on the way to a message session (registration token,
App installation token, the Actions service admin JWT, the message-queue token). Each has a
lifetime the clients must cope with, so this registry keeps the expiry of every token it
issued and answers "valid or not" at a given `now`. The admin and message-queue tokens are
real JWTs with a real `exp`, because the client reads `exp` to decide when to refresh.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import Literal

import jwt

Kind = Literal["registration", "installation", "admin", "queue"]


@dataclass
class Issued:
    kind: Kind
    expires_at: float
    scope: str = ""  # registration: the scope it registers in; admin: the tenant
    session_id: str = ""  # queue: the session it reads
    scale_set_id: int = 0  # queue: the session's scale set


class Tokens:
    """Every token issued, by value; expired ones are pruned as new ones are issued."""

    def __init__(self) -> None:
        self._issued: dict[str, Issued] = {}
        self._key = secrets.token_bytes(32)
        self._issues = 0

    def _keep(self, token: str, issued: Issued, now: float) -> str:
        self._issues += 1
        if self._issues % 256 == 0:
            # Old tokens answer 401 either way; forgetting them keeps memory flat.
            self._issued = {t: i for t, i in self._issued.items() if i.expires_at > now - 3600}
        self._issued[token] = issued
        return token

    def _jwt(self, claims: dict[str, object], now: float, ttl: float) -> str:
        body = {
            "iss": "runscaler-simulator",
            "iat": int(now),
            "nbf": int(now) - 1,
            "exp": math.ceil(now + ttl),
            "jti": secrets.token_hex(8),
            **claims,
        }
        return jwt.encode(body, self._key, algorithm="HS256")

    def registration(self, scope: str, *, now: float, ttl: float) -> str:
        token = "AR" + secrets.token_hex(14).upper()
        return self._keep(token, Issued("registration", now + ttl, scope=scope), now)

    def installation(self, *, now: float, ttl: float = 3600.0) -> str:
        token = "ghs_" + secrets.token_urlsafe(27)
        return self._keep(token, Issued("installation", now + ttl), now)

    def admin(self, tenant: str, *, now: float, ttl: float) -> str:
        token = self._jwt({"aud": "actions", "tenant": tenant, "scp": "Actions.Runner"}, now, ttl)
        return self._keep(token, Issued("admin", now + ttl, scope=tenant), now)

    def queue(self, session_id: str, scale_set_id: int, *, now: float, ttl: float) -> str:
        claims: dict[str, object] = {"aud": "broker", "sid": session_id}
        token = self._jwt(claims, now, ttl)
        issued = Issued("queue", now + ttl, session_id=session_id, scale_set_id=scale_set_id)
        return self._keep(token, issued, now)

    def check(self, token: str, kind: Kind, *, now: float) -> Issued | None:
        """The token's record when it is of `kind` and not expired, else None."""
        issued = self._issued.get(token)
        if issued is None or issued.kind != kind or now >= issued.expires_at:
            return None
        return issued

    def expire(self, kinds: tuple[Kind, ...], *, now: float) -> int:
        """Expire every live token of these kinds now (POST /_sim/expire-tokens)."""
        expired = 0
        for issued in self._issued.values():
            if issued.kind in kinds and issued.expires_at > now:
                issued.expires_at = now
                expired += 1
        return expired


def bearer(header: str | None) -> str:
    """The credential of an `Authorization: Bearer X` (or GitHub's `token X`) header, or ''."""
    if not header:
        return ""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() in ("bearer", "token"):
        return value.strip()
    return ""


def app_jwt_issuer(token: str, public_key: str | None, *, now: float) -> str | None:
    """The `iss` of a well-formed RS256 App JWT (signature checked when a key is given)."""
    try:
        header = jwt.get_unverified_header(token)
        if header.get("alg") != "RS256":
            return None
        if public_key is None:
            claims = jwt.decode(token, options={"verify_signature": False})
        else:
            claims = jwt.decode(
                token,
                public_key,
                algorithms=["RS256"],
                leeway=60,
                options={"require": ["iss", "exp", "iat"]},
            )
    except jwt.PyJWTError:
        return None
    issuer = claims.get("iss")
    if issuer in (None, ""):
        return None
    if public_key is None and "exp" in claims and float(claims["exp"]) + 60 < now:
        return None
    return str(issuer)
