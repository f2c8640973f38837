"""Where each request goes: config URL → GitHub API base, and Actions service URLs.

The rules are the Go client's (protocol.md §1.1, §1.4), so a manifest that works with ARC
reaches the same endpoints here: github.com and GHE.com cloud hosts get `api.` prefixed, any
other host is GitHub Enterprise Server with `/api/v3`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from runscaler.manifest.values import ConfigURL

API_VERSION = "6.0-preview"
FORCE_GHES_ENV = "GITHUB_ACTIONS_FORCE_GHES"

_HOSTED = ("github.com", "www.github.com", "github.localhost")


def _hostname(host: str) -> str:
    """`github.localhost:8080` → `github.localhost`; `[::1]:80` → `[::1]`."""
    if host.startswith("["):
        return host[: host.index("]") + 1]
    return host.rsplit(":", 1)[0] if ":" in host else host


def is_hosted(host: str, *, environ: Mapping[str, str] | None = None) -> bool:
    """True for github.com and GHE.com cloud hosts, unless GITHUB_ACTIONS_FORCE_GHES is set."""
    env = os.environ if environ is None else environ
    if FORCE_GHES_ENV in env:
        return False
    name = _hostname(host).lower()
    return name in _HOSTED or name.endswith(".ghe.com")


def api_base(config: ConfigURL, *, environ: Mapping[str, str] | None = None) -> str:
    """The GitHub REST API root for a config URL, without a trailing slash."""
    if is_hosted(config.host, environ=environ):
        host = config.host
        if _hostname(host).lower() == "www.github.com":
            host = "github.com" + host[len("www.github.com") :]
        return f"{config.scheme}://api.{host}"
    return f"{config.scheme}://{config.host}/api/v3"


def registration_token_path(config: ConfigURL) -> str:
    """The G1 path for the config URL's scope."""
    if config.scope == "enterprise":
        return f"/enterprises/{config.enterprise}/actions/runners/registration-token"
    if config.scope == "repository":
        return (
            f"/repos/{config.organization}/{config.repository}/actions/runners/registration-token"
        )
    return f"/orgs/{config.organization}/actions/runners/registration-token"


def actions_url(base: str, path: str, query: Mapping[str, str] | None = None) -> str:
    """Join an endpoint path onto the Actions service URL, keeping the tenant prefix.

    The base's own query is kept, the endpoint's query wins on a clash, `api-version` is added
    when absent, and keys come out sorted (as Go's `url.Values.Encode` writes them).
    """
    parts = urlsplit(base)
    joined = parts.path.rstrip("/") + "/" + path.lstrip("/")
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    params.update(query or {})
    params.setdefault("api-version", API_VERSION)
    encoded = urlencode(sorted(params.items()))
    return urlunsplit((parts.scheme, parts.netloc, joined, encoded, ""))


def with_query(url: str, extra: Mapping[str, str]) -> str:
    """Add (or replace) query parameters on a URL, keeping the rest as it was."""
    if not extra:
        return url
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    params.update(extra)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(params), ""))


def with_path_suffix(url: str, suffix: str) -> str:
    """`https://h/q?x=1` + `42` → `https://h/q/42?x=1` (the query is kept)."""
    parts = urlsplit(url)
    path = parts.path.rstrip("/") + "/" + suffix.lstrip("/")
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))
