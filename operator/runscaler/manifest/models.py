"""The fleet manifest v1 as frozen models: the effective shape of a fleet after `defaults` merge.

Everything downstream (planning, the controller, the backends) reads these models and nothing
else, so a field exists here exactly once, with its default and its meaning. The document as
written (where a scale set may leave out what `defaults` gives it) is described by the JSON
Schema that `schema.py` derives from these same models.

Values are normalised on the way in: durations become seconds, sizes become bytes. Secret refs
stay as written (`env:NAME`, `file:PATH`, or a literal) and are resolved only where they are
used, so a rotated `file:` secret is read again on every reload. Relative paths also stay as
written: they are relative to the manifest's directory, which the loader knows.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel

from runscaler.manifest.values import (
    DURATION_PATTERN,
    SIZE_PATTERN,
    check_secret_ref,
    check_url,
    format_duration,
    normalize_url,
    parse_duration,
    parse_size,
)

API_VERSION = "runscaler/v1"
SUPPORTED_API_VERSIONS = (API_VERSION,)
KIND = "Fleet"

FLEET_NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"
SCALE_SET_NAME_PATTERN = r"^[A-Za-z0-9._-]{1,45}$"

DEFAULT_DOCKER_IMAGE = "ghcr.io/actions/actions-runner:latest"
DEFAULT_TART_IMAGE = "ghcr.io/cirruslabs/macos-tahoe-xcode:latest"


class Model(BaseModel):
    """Frozen, camelCase on the outside, unknown keys refused."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=False,
        serialize_by_alias=True,
    )


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "pattern": DURATION_PATTERN}, {"const": 0}],
            "description": "Go-style duration: 90s, 10m, 6h, 1h30m, or 0",
        }
    ),
]
"""Seconds. Written as a Go-style duration (`90s`, `1h30m`) or `0`."""

Size = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": SIZE_PATTERN},
                {"type": "integer", "minimum": 1},
            ],
            "description": "512MiB, 4GiB, 4g, or an integer meaning MiB",
        }
    ),
]
"""Bytes. Written as `512MiB`, `4GiB`, `4g`, or an integer meaning MiB."""

SecretRef = Annotated[
    str,
    AfterValidator(check_secret_ref),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "description": "env:NAME, file:PATH, or a literal (a warning: manifests live in git)",
        }
    ),
]
"""A secret as written: `env:NAME`, `file:PATH`, or a literal value."""

GitHubURL = Annotated[
    str,
    AfterValidator(check_url),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^https?://",
            "description": "https://HOST/ORG, https://HOST/ORG/REPO or https://HOST/enterprises/SLUG",
        }
    ),
]


class AppAuth(Model):
    """GitHub App credentials (preferred over a token)."""

    client_id: str = Field(min_length=1, description="the App's client id (or app id)")
    installation_id: int = Field(ge=1, description="the App installation id")
    private_key: SecretRef = Field(description="the App's PEM private key, as a secret ref")


class Auth(Model):
    """Exactly one of `token` or `app`."""

    token: SecretRef | None = Field(default=None, description="personal access token")
    app: AppAuth | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Auth:
        if (self.token is None) == (self.app is None):
            raise ValueError("set exactly one of `token` or `app`")
        return self


class GitHub(Model):
    url: GitHubURL = Field(description="the organization, repository or enterprise URL")
    auth: Auth
    ca_bundle: str | None = Field(
        default=None, description="extra CA certificates (PEM file) for GHES with a private CA"
    )
    proxy: str | None = Field(default=None, description="HTTP(S) proxy URL")


class DockerTLS(Model):
    ca: str | None = None
    cert: str | None = None
    key: str | None = None


class SharedVolume(Model):
    path: str | None = Field(default=None, description="where the shared volume is mounted")
    ttl: Duration = Field(default=0, description="files older than this are swept; 0 keeps all")
    cleanup_interval: Duration = Field(default=6 * 3600)


class BuildxCleanup(Model):
    enabled: bool = True
    ttl: Duration = 24 * 3600
    interval: Duration = 6 * 3600


class DockerTemplate(Model):
    """How a runner container is made. Changing any of it rolls idle runners."""

    image: str = Field(default=DEFAULT_DOCKER_IMAGE, min_length=1)
    pull: Literal["always", "missing", "never"] = "missing"
    host: str | None = Field(
        default=None, description="engine endpoint; $DOCKER_HOST or the local socket when unset"
    )
    tls: DockerTLS | None = None
    dind: bool = Field(default=False, description="mount the engine's socket into runners")
    shared_volume: SharedVolume | None = None
    cpus: float | None = Field(default=None, gt=0)
    memory: Size | None = None
    platform: str | None = None
    network: str | None = None
    env: dict[str, SecretRef] = Field(default_factory=dict)
    volumes: tuple[str, ...] = ()
    user: str = "runner"
    command: tuple[str, ...] = ("/home/runner/run.sh",)
    buildx_cleanup: BuildxCleanup = BuildxCleanup()


class TartTemplate(Model):
    image: str = Field(default=DEFAULT_TART_IMAGE, min_length=1)
    cpu: int | None = Field(default=None, ge=1)
    memory: int | None = Field(default=None, ge=1, description="MiB")
    runner_dir: str = "/Users/admin/actions-runner"
    home: str | None = None
    pool_size: int = Field(default=0, ge=0)
    cache_max_age: Duration = 168 * 3600
    cache_budget_gb: int = Field(default=0, ge=0, alias="cacheBudgetGB")
    cache_cleanup_interval: Duration = 24 * 3600


def _dedupe_labels(labels: tuple[str, ...]) -> tuple[str, ...]:
    seen: set[str] = set()
    kept = []
    for label in labels:
        if label.lower() not in seen:
            seen.add(label.lower())
            kept.append(label)
    return tuple(kept)


Labels = Annotated[tuple[Annotated[str, Field(min_length=1)], ...], AfterValidator(_dedupe_labels)]


class ScaleSet(Model):
    """One runner scale set, with `defaults` already merged in."""

    name: str = Field(pattern=SCALE_SET_NAME_PATTERN, description="also the runs-on label")
    github: GitHub
    runner_group: str = Field(default="default", min_length=1)
    labels: Annotated[
        tuple[Annotated[str, Field(min_length=1)], ...], AfterValidator(_dedupe_labels)
    ] = ()
    min_runners: int = Field(default=0, ge=0)
    max_runners: int = Field(default=10, ge=1)
    suspended: bool = False
    drain_timeout: Duration = 6 * 3600
    backend: Literal["docker", "tart"] = "docker"
    docker: DockerTemplate = DockerTemplate()
    tart: TartTemplate = TartTemplate()

    @model_validator(mode="after")
    def _min_not_above_max(self) -> ScaleSet:
        if self.min_runners > self.max_runners:
            raise ValueError(
                f"minRunners ({self.min_runners}) must be <= maxRunners ({self.max_runners})"
            )
        return self

    @property
    def normalized_url(self) -> str:
        return normalize_url(self.github.url)

    @property
    def identity(self) -> tuple[str, str]:
        """(normalised URL, lowercased name): how GitHub tells scale sets apart."""
        return (self.normalized_url, self.name.lower())

    @property
    def key(self) -> str:
        """First 12 hex of the identity's sha256: the `dev.runscaler.scale-set-key` label."""
        raw = "\n".join(self.identity).encode()
        return hashlib.sha256(raw).hexdigest()[:12]

    @property
    def all_labels(self) -> tuple[str, ...]:
        """The labels GitHub matches `runs-on:` against: the name first, then `labels`."""
        return _dedupe_labels((self.name, *self.labels))

    @property
    def template(self) -> DockerTemplate | TartTemplate:
        return self.docker if self.backend == "docker" else self.tart


class Metadata(Model):
    name: str = Field(pattern=FLEET_NAME_PATTERN, description="the fleet's identity")


class Fleet(Model):
    """A whole fleet: what one operator keeps running."""

    api_version: Literal["runscaler/v1"]
    kind: Literal["Fleet"]
    metadata: Metadata
    scale_sets: tuple[ScaleSet, ...] = ()

    def by_identity(self) -> dict[tuple[str, str], ScaleSet]:
        return {s.identity: s for s in self.scale_sets}


def dump_scale_set(scale_set: ScaleSet) -> dict[str, Any]:
    """The scale set as a plain camelCase mapping (durations as `6h`, sizes as bytes)."""
    return scale_set.model_dump(mode="json", by_alias=True)
