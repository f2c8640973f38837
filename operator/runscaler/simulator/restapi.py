"""GitHub's REST API side of the bootstrap: registration token, App token, runner registration.

GHES-style paths (`/api/v3/...`), since the simulator is never github.com. The chain a client
walks is G1 (PAT or installation token → registration token, 201), optionally G2 (App JWT →
installation token, 201), then G3 (`RemoteAuth <registration token>` → the Actions service URL
of the scope's tenant and an admin JWT with a real `exp`).
"""

from __future__ import annotations

import logging
import secrets
from urllib.parse import urlsplit

from aiohttp import web

from runscaler.simulator.core import Core
from runscaler.simulator.records import rfc3339
from runscaler.simulator.tokens import app_jwt_issuer, bearer
from runscaler.simulator.wire import GitHubApiError, field, json_response, read_json

log = logging.getLogger(__name__)


class RestApi:
    def __init__(self, core: Core) -> None:
        self.core = core

    def routes(self) -> list[web.RouteDef]:
        base = "/api/v3"
        token = "actions/runners/registration-token"
        return [
            web.post(f"{base}/orgs/{{org}}/{token}", self.registration_token),
            web.post(f"{base}/repos/{{org}}/{{repo}}/{token}", self.registration_token),
            web.post(f"{base}/enterprises/{{enterprise}}/{token}", self.registration_token),
            web.post(f"{base}/app/installations/{{installation}}/access_tokens", self.app_token),
            web.post(f"{base}/actions/runner-registration", self.runner_registration),
        ]

    def _authenticate(self, request: web.Request) -> None:
        token = bearer(request.headers.get("Authorization"))
        if not token:
            raise GitHubApiError(401, "Requires authentication")
        expected = self.core.options.token
        if expected is None or secrets.compare_digest(token, expected):
            return
        if self.core.tokens.check(token, "installation", now=self.core.now()) is None:
            raise GitHubApiError(401, "Bad credentials")

    async def registration_token(self, request: web.Request) -> web.Response:
        """G1: 201 {"token", "expires_at"} for the org, repository or enterprise in the path."""
        self._authenticate(request)
        info = request.match_info
        if "enterprise" in info:
            scope = f"enterprises/{info['enterprise']}"
        elif "repo" in info:
            scope = f"{info['org']}/{info['repo']}"
        else:
            scope = info["org"]
        now = self.core.now()
        ttl = self.core.options.registration_token_ttl
        token = self.core.tokens.registration(scope.lower(), now=now, ttl=ttl)
        log.info("registration token issued for %s", scope)
        return json_response({"token": token, "expires_at": rfc3339(now + ttl)}, status=201)

    async def app_token(self, request: web.Request) -> web.Response:
        """G2: an installation token for any well-formed RS256 App JWT whose `iss` is set."""
        now = self.core.now()
        token = bearer(request.headers.get("Authorization"))
        issuer = app_jwt_issuer(token, self.core.options.app_public_key, now=now) if token else None
        if issuer is None:
            raise GitHubApiError(401, "A JSON web token could not be decoded")
        installation = self.core.tokens.installation(now=now)
        log.info("installation token issued to app %s", issuer)
        body = {
            "token": installation,
            "expires_at": rfc3339(now + 3600),
            "permissions": {"organization_self_hosted_runners": "write"},
            "repository_selection": "all",
        }
        return json_response(body, status=201)

    async def runner_registration(self, request: web.Request) -> web.Response:
        """G3: the scope's Actions service URL and an admin token, for a registration token."""
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        now = self.core.now()
        issued = None
        if scheme == "RemoteAuth" and value.strip():
            issued = self.core.tokens.check(value.strip(), "registration", now=now)
        if issued is None:
            raise GitHubApiError(401, "Bad credentials")
        body = await read_json(request, error=GitHubApiError)
        url = field(body, "url")
        if not isinstance(url, str) or not url:
            raise GitHubApiError(400, "url is required")
        scope = urlsplit(url).path.strip("/").lower()
        if scope != issued.scope:
            raise GitHubApiError(
                403, f"the registration token is for {issued.scope}, not {scope or url}"
            )
        state = self.core.state
        tenant = state.tenant_for(scope)
        admin = self.core.tokens.admin(tenant, now=now, ttl=self.core.options.admin_token_ttl)
        service = f"{request.scheme}://{request.host}/_services/pipelines/{tenant}/"
        return json_response(
            {
                "url": service,
                "token": admin,
                "token_schema": "OAuthAccessToken",
                "use_v2_flow": True,
            }
        )
