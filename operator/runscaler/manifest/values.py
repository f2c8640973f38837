"""Parsers for the manifest's value syntaxes: durations, sizes, secret refs and GitHub URLs.

They live apart from the models so the GitHub client can share the one URL parser, and so
each rule is a small pure function tests can table. Every parser raises `ValueError` with a
message that reads well after `FILE:LINE:COL: path:`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

DURATION_PATTERN = r"^(0|([0-9]+(\.[0-9]+)?(ms|s|m|h))+)$"
SIZE_PATTERN = r"^[0-9]+(\.[0-9]+)?([KMGT]iB|B|[kmgtKMGT])?$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([KMGT]iB|B|[kmgtKMGT])?$")
_SIZE_FACTOR = {
    "B": 1,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "TiB": 1024**4,
    "k": 1024,
    "m": 1024**2,
    "g": 1024**3,
    "t": 1024**4,
}
MIB = 1024**2


def parse_duration(value: object) -> float:
    """`90s`, `10m`, `1h30m`, `250ms`, `0` → seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is a string like 90s, 10m or 1h30m, or 0")
    if isinstance(value, int | float) and value == 0:
        return 0.0
    if isinstance(value, float | int):
        raise ValueError(f"{value} needs a unit: write {value}s, {value}m or {value}h")
    if not isinstance(value, str):
        raise ValueError("a duration is a string like 90s, 10m or 1h30m, or 0")
    text = value.strip()
    if text == "0":
        return 0.0
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"invalid duration {value!r}: use units ms, s, m, h (90s, 10m, 1h30m)")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))


def format_duration(seconds: float) -> str:
    """Seconds → the shortest Go-style duration: 5400 → `1h30m`, 0 → `0`."""
    if seconds == 0:
        return "0"
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    parts = []
    if hours:
        parts.append(f"{hours}h")
    if minutes:
        parts.append(f"{minutes}m")
    if secs:
        parts.append(f"{secs}s")
    if millis:
        parts.append(f"{millis}ms")
    return "".join(parts)


def parse_size(value: object) -> int:
    """`512MiB`, `4GiB`, `4g`, or an integer meaning MiB → bytes."""
    if isinstance(value, bool):
        raise ValueError("a size is like 512MiB, 4GiB, 4g, or an integer meaning MiB")
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"size must be positive, got {value}")
        return value * MIB
    if not isinstance(value, str):
        raise ValueError("a size is like 512MiB, 4GiB, 4g, or an integer meaning MiB")
    match = _SIZE.fullmatch(value.strip())
    if not match:
        raise ValueError(f"invalid size {value!r}: use 512MiB, 4GiB, 4g, or an integer (MiB)")
    number, unit = match.groups()
    factor = MIB if unit is None else _SIZE_FACTOR[unit if len(unit) > 1 else unit.lower()]
    size = int(float(number) * factor)
    if size < 1:
        raise ValueError(f"size must be positive, got {value!r}")
    return size


def format_size(size: int) -> str:
    """Bytes → the largest binary unit that divides it: 4294967296 → `4GiB`."""
    for unit, factor in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", MIB), ("KiB", 1024)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


SecretKind = Literal["env", "file", "literal"]


@dataclass(frozen=True)
class SecretRefParts:
    kind: SecretKind
    value: str  # the variable name, the path as written, or the literal itself


def split_secret_ref(ref: str) -> SecretRefParts:
    if ref.startswith("env:"):
        return SecretRefParts("env", ref[4:])
    if ref.startswith("file:"):
        return SecretRefParts("file", ref[5:])
    return SecretRefParts("literal", ref)


def check_secret_ref(ref: str) -> str:
    parts = split_secret_ref(ref)
    if parts.kind == "env" and not re.fullmatch(ENV_NAME_PATTERN, parts.value):
        raise ValueError(
            f"invalid secret ref {ref!r}: env: needs a variable name like env:GITHUB_TOKEN"
        )
    if parts.kind == "file" and not parts.value.strip():
        raise ValueError(f"invalid secret ref {ref!r}: file: needs a path like file:/run/token")
    if parts.kind == "literal" and not ref:
        raise ValueError("a secret must not be empty")
    return ref


def is_literal_secret(ref: str) -> bool:
    return split_secret_ref(ref).kind == "literal"


ScopeKind = Literal["organization", "repository", "enterprise"]


@dataclass(frozen=True)
class ConfigURL:
    """A parsed `github.url`: where the scale sets live on GitHub."""

    scheme: str
    host: str  # lowercased, `www.github.com` folded to `github.com`; with `:port` if given
    scope: ScopeKind
    organization: str = ""
    repository: str = ""
    enterprise: str = ""

    @property
    def path(self) -> str:
        if self.scope == "enterprise":
            return f"enterprises/{self.enterprise}"
        if self.scope == "repository":
            return f"{self.organization}/{self.repository}"
        return self.organization


def is_loopback_host(host: str) -> bool:
    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _shown(url: str) -> str:
    """The URL as a message may show it: any `user:password@` left out."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@", r"\1", url.strip())


def parse_config_url(url: str) -> ConfigURL:
    """Split a config URL into scope parts, enforcing the manifest's URL rules."""
    shown = _shown(url)
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"invalid URL {shown!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"invalid URL {shown!r}: use https://HOST/ORG (or /ORG/REPO)")
    if not parts.hostname:
        raise ValueError(f"invalid URL {shown!r}: no host")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"invalid URL {shown!r}: no query, fragment or credentials allowed")
    hostname = parts.hostname.lower()
    if scheme == "http" and not is_loopback_host(hostname):
        raise ValueError(f"invalid URL {shown!r}: http:// is allowed only for loopback hosts")
    if hostname == "www.github.com":
        hostname = "github.com"
    host = f"[{hostname}]" if ":" in hostname else hostname
    if port is not None:
        host = f"{host}:{port}"
    segments = [s for s in parts.path.strip("/").split("/")] if parts.path.strip("/") else []
    if any(not s for s in segments):
        raise ValueError(f"invalid URL {shown!r}: empty path segment")
    if len(segments) == 1:
        return ConfigURL(scheme, host, "organization", organization=segments[0])
    if len(segments) == 2 and segments[0].lower() == "enterprises":
        return ConfigURL(scheme, host, "enterprise", enterprise=segments[1])
    if len(segments) == 2:
        return ConfigURL(
            scheme, host, "repository", organization=segments[0], repository=segments[1]
        )
    raise ValueError(
        f"invalid URL {shown!r}: expected https://HOST/ORG, https://HOST/ORG/REPO "
        "or https://HOST/enterprises/SLUG"
    )


def check_url(url: str) -> str:
    parse_config_url(url)
    return url


PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")


def check_proxy_url(url: str) -> str:
    """A proxy URL: `http://HOST:PORT` (or https, socks5, socks5h), credentials allowed."""
    shown = _shown(url)
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError as exc:
        raise ValueError(f"invalid proxy URL {shown!r}: {exc}") from None
    if parts.scheme.lower() not in PROXY_SCHEMES or not parts.hostname:
        raise ValueError(
            f"invalid proxy URL {shown!r}: use http://HOST:PORT (or https, socks5, socks5h)"
        )
    return url


ENGINE_SCHEMES = ("unix", "tcp", "http", "https")


def check_engine_address(host: str) -> str:
    """A Docker engine address: `unix:///path` or `tcp://HOST:PORT` (http, https too), the
    same forms the backend accepts, so a typo is refused by `validate`, not by a reload."""
    try:
        parts = urlsplit(host.strip())
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError as exc:
        raise ValueError(f"{host!r} is not an engine address: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme == "unix" and parts.path and not parts.netloc:
        return host
    if scheme in ENGINE_SCHEMES[1:] and parts.hostname:
        return host
    raise ValueError(
        f"{host!r} is not an engine address: use unix:///var/run/docker.sock or tcp://HOST:PORT"
    )


def normalize_url(url: str) -> str:
    """The identity form: scheme and host lowercased, `www.` folded, path lowercased, no `/`."""
    parsed = parse_config_url(url)
    return f"{parsed.scheme}://{parsed.host}/{parsed.path.lower()}"
