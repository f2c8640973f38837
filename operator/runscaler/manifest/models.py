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
import re
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
    check_engine_address,
    check_proxy_url,
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
# Apple's Virtualization.framework runs at most 2 macOS VMs per host.
TART_VMS_PER_HOST = 2


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
            "pattern": r"^[Hh][Tt][Tt][Pp][Ss]?://",
            "description": "https://HOST/ORG, https://HOST/ORG/REPO or https://HOST/enterprises/SLUG",
        }
    ),
]


ProxyURL = Annotated[str, AfterValidator(check_proxy_url)]
"""A proxy URL as written (it may carry credentials: never shown in messages)."""

EngineAddress = Annotated[str, AfterValidator(check_engine_address)]
"""`docker.host`: `unix:///path` or `tcp://HOST:PORT`, as the Docker backend accepts."""


class AppAuth(Model):
    """GitHub App credentials (preferred over a token)."""

    client_id: str = Field(min_length=1, description="the App's client id (or app id)")
    installation_id: int = Field(ge=1, description="the App installation id")
    private_key: SecretRef = Field(description="the App's PEM private key, as a secret ref")


class Auth(Model):
    """Exactly one of `token` or `app`."""

    token: SecretRef | None = Field(default=None, description="personal access token")
    app: AppAuth | None = Field(default=None, description="GitHub App credentials (preferred)")

    @model_validator(mode="after")
    def _exactly_one(self) -> Auth:
        if (self.token is None) == (self.app is None):
            raise ValueError("set exactly one of `token` or `app`")
        return self


class GitHub(Model):
    """Where the scale set lives on GitHub and how runscaler signs in."""

    url: GitHubURL = Field(description="the organization, repository or enterprise URL")
    auth: Auth = Field(
        description="exactly one of `token` or `app`; replaced as a whole, never merged"
    )
    ca_bundle: str | None = Field(
        default=None, description="extra CA certificates (PEM file) for GHES with a private CA"
    )
    proxy: ProxyURL | None = Field(
        default=None,
        description="HTTP(S) proxy URL; otherwise HTTPS_PROXY/NO_PROXY from the environment",
    )


class DockerTLS(Model):
    """Client TLS for a `tcp://` engine; paths relative to the manifest's directory."""

    ca: str | None = Field(default=None, description="CA certificate (PEM file)")
    cert: str | None = Field(default=None, description="client certificate (PEM file)")
    key: str | None = Field(default=None, description="client private key (PEM file)")


class SharedVolume(Model):
    """A named volume shared by the fleet's runners, swept of old files."""

    path: str | None = Field(default=None, description="where the shared volume is mounted")
    ttl: Duration = Field(default=0, description="files older than this are swept; 0 keeps all")
    cleanup_interval: Duration = Field(default=6 * 3600, description="how often to sweep")


class BuildxCleanup(Model):
    """Removal of leftover BuildKit builders and their state volumes."""

    enabled: bool = Field(default=True, description="sweep leftover BuildKit builders")
    ttl: Duration = Field(default=24 * 3600, description="builders idle longer are removed")
    interval: Duration = Field(default=6 * 3600, description="how often to sweep")


class DockerTemplate(Model):
    """How a runner container is made. Changing any of it rolls idle runners, but for its
    housekeeping settings (HOUSEKEEPING_FIELDS)."""

    image: str = Field(
        default=DEFAULT_DOCKER_IMAGE,
        min_length=1,
        description="runner image (the official image's layout: user runner, run.sh)",
    )
    pull: Literal["always", "missing", "never"] = Field(
        default="missing", description="when to pull the image"
    )
    host: EngineAddress | None = Field(
        default=None, description="engine endpoint; $DOCKER_HOST or the local socket when unset"
    )
    tls: DockerTLS | None = Field(default=None, description="client TLS for tcp:// engines")
    dind: bool = Field(
        default=False,
        description="mount the engine's socket into runners (root on the host for any job)",
    )
    shared_volume: SharedVolume | None = Field(
        default=None, description="a named volume shared by the fleet's runners"
    )
    cpus: float | None = Field(default=None, gt=0, description="CPU limit in cores")
    memory: Size | None = Field(default=None, description="memory limit: 512MiB, 4GiB, 4g")
    platform: str | None = Field(default=None, description="image platform, e.g. linux/arm64")
    network: str | None = Field(
        default=None, description="network mode or name (host, bridge, my-net)"
    )
    env: dict[str, SecretRef] = Field(
        default_factory=dict, description="extra environment (values may be secret refs)"
    )
    volumes: tuple[str, ...] = Field(default=(), description="extra binds, SRC:DST[:ro]")
    user: str = Field(default="runner", description="the user the runner runs as")
    command: tuple[str, ...] = Field(
        default=("/home/runner/run.sh",), description="how the runner starts in the image"
    )
    buildx_cleanup: BuildxCleanup = Field(
        default=BuildxCleanup(), description="remove leftover BuildKit builders"
    )


SWARM_SPREAD_PATTERN = r"^(node|engine)\.[A-Za-z0-9_.-]+$"
# `node.labels.pool==big`, `node.platform.arch!=x86_64`: what `docker service create
# --constraint` takes (moby/swarmkit's constraint grammar: a key, == or !=, a value).
SWARM_CONSTRAINT_PATTERN = r"^\s*[A-Za-z0-9_.-]+\s*(==|!=)\s*\S.*$"


def _check_constraint(value: str) -> str:
    if not re.match(SWARM_CONSTRAINT_PATTERN, value):
        raise ValueError(
            f"invalid placement constraint {value!r}: write KEY==VALUE or KEY!=VALUE, "
            "e.g. node.labels.pool==big"
        )
    return value


SwarmConstraint = Annotated[
    str,
    AfterValidator(_check_constraint),
    WithJsonSchema({"type": "string", "pattern": SWARM_CONSTRAINT_PATTERN}),
]


class SwarmPreference(Model):
    """A placement preference: spread tasks evenly over the values of a node attribute."""

    spread: str = Field(
        pattern=SWARM_SPREAD_PATTERN, description="a node attribute, e.g. node.labels.zone"
    )


class SwarmHygiene(Model):
    """Housekeeping on every node the runners may use, run by the operator as a global-mode
    job: the fleet's exited containers go and, with `dind`, BuildKit builders jobs left."""

    enabled: bool = Field(default=True, description="run the per-node clean-up")
    image: str | None = Field(
        default=None,
        min_length=1,
        description="an image with sh and the docker CLI, pullable by every node "
        "(default: the runner image; the official one has both)",
    )
    interval: Duration = Field(default=3600, gt=0, description="how often it runs on every node")
    buildx_ttl: Duration = Field(
        default=24 * 3600,
        gt=0,
        description="with dind: BuildKit builders older than this (or stopped) are removed",
    )


class SwarmTemplate(Model):
    """How a runner service is made on a Docker Swarm. Changing any of it but `hygiene` rolls
    idle runners.

    The `docker:` fields a Swarm service supports, plus where Swarm may place it and how each
    node is kept clean. There is no `pull` (every node pulls the image when a task lands
    there), `platform` (write it as a constraint), `sharedVolume` or `buildxCleanup` (per-node
    housekeeping is `hygiene`: see docs/swarm.md)."""

    image: str = Field(
        default=DEFAULT_DOCKER_IMAGE,
        min_length=1,
        description="runner image, pullable by every node (a registry, never a local tag)",
    )
    host: str | None = Field(
        default=None,
        description="a manager's engine endpoint; $DOCKER_HOST or the local socket when unset",
    )
    tls: DockerTLS | None = Field(default=None, description="client TLS for tcp:// managers")
    dind: bool = Field(
        default=False,
        description="mount the node's engine socket into runners (root on that node for any job)",
    )
    engine_socket: str = Field(
        default="/var/run/docker.sock",
        pattern=r"^/",
        description="the engine's Unix socket on every node, for dind and hygiene "
        "(Swarm's templates work: /run/{{.Node.Hostname}}/docker.sock)",
    )
    cpus: float | None = Field(
        default=None, gt=0, description="CPU cores, reserved for placement and the limit"
    )
    memory: Size | None = Field(
        default=None, description="memory reserved for placement and the limit: 512MiB, 4GiB"
    )
    network: str | None = Field(
        default=None,
        description="host, or an attachable overlay network's name (default: none needed)",
    )
    env: dict[str, SecretRef] = Field(
        default_factory=dict, description="extra environment (values may be secret refs)"
    )
    volumes: tuple[str, ...] = Field(
        default=(), description="extra binds, SRC:DST[:ro]; SRC must exist on every node"
    )
    user: str = Field(default="runner", description="the user the runner runs as")
    command: tuple[str, ...] = Field(
        default=("/home/runner/run.sh",), description="how the runner starts in the image"
    )
    constraints: tuple[SwarmConstraint, ...] = Field(
        default=(),
        description="placement constraints, all must hold: node.labels.pool==big, "
        "node.platform.arch==aarch64, node.role!=manager",
    )
    preferences: tuple[SwarmPreference, ...] = Field(
        default=(),
        description="placement preferences, e.g. [{spread: node.labels.zone}] (a hint: "
        "Swarm does not spread one-task services by it; see the README)",
    )
    hygiene: SwarmHygiene = Field(
        default=SwarmHygiene(), description="clean-up on every node the runners may use"
    )


class TartTemplate(Model):
    """How a macOS VM is made (Tart on Apple Silicon)."""

    image: str = Field(default=DEFAULT_TART_IMAGE, min_length=1, description="base VM image")
    cpu: int | None = Field(default=None, ge=1, description="cores per VM (image default)")
    memory: int | None = Field(default=None, ge=1, description="MiB per VM (image default)")
    runner_dir: str = Field(
        default="/Users/admin/actions-runner", description="where the runner lives in the VM"
    )
    home: str | None = Field(default=None, description="TART_HOME (default ~/.tart)")
    pool_size: int = Field(
        default=0, ge=0, description="pre-booted VMs kept ready (they count against vmLimit)"
    )
    vm_limit: int = Field(
        default=TART_VMS_PER_HOST,
        ge=1,
        description="running VMs on this TART_HOME's host, shared by every Tart scale set on it "
        "(macOS allows 2)",
    )
    allow_over_limit: bool = Field(
        default=False,
        description="accept maxRunners above vmLimit (runners queue for a VM slot) and a "
        "vmLimit above 2",
    )
    mac_address: Literal["deterministic", "random"] = Field(
        default="deterministic",
        description="deterministic: one MAC per host slot (02:00:00:00:00:NN), so DHCP leases "
        "are reused; random: a new MAC per VM (tart set --random-mac)",
    )
    mac_offset: int = Field(
        default=0,
        ge=0,
        le=200,
        description="added to the slot number in deterministic MACs, to reserve another range",
    )
    ready_timeout: Duration = Field(
        default=120, description="how long a booting VM's guest agent may take to answer"
    )
    image_refresh: Duration = Field(
        default=24 * 3600,
        description="how often a mutable tag (not pinned by @sha256:) is pulled again; 0 never",
    )
    cache_max_age: Duration = Field(
        default=168 * 3600, description="prune cache entries older than this; 0 disables"
    )
    cache_budget_gb: int = Field(
        default=0, ge=0, alias="cacheBudgetGB", description="cap the cache size (GB); 0 disables"
    )
    cache_cleanup_interval: Duration = Field(
        default=24 * 3600, description="how often to prune the cache; 0 disables"
    )


# Fields of a backend's block that only tune its housekeeping (sweeps, refreshes, pruning), as
# camelCase paths inside the block: changing one replaces no runner (`plan` says so, and the
# template hash leaves them out), the next round of housekeeping reads the new value.
HOUSEKEEPING_FIELDS: dict[str, tuple[str, ...]] = {
    "docker": ("buildxCleanup", "sharedVolume.ttl", "sharedVolume.cleanupInterval"),
    "swarm": ("hygiene",),
    "tart": ("imageRefresh", "cacheMaxAge", "cacheBudgetGB", "cacheCleanupInterval"),
}


def is_housekeeping(path: str) -> bool:
    """Whether `path` (`docker.buildxCleanup.ttl`) is one of HOUSEKEEPING_FIELDS."""
    block, _, inner = path.partition(".")
    return any(
        inner == field or inner.startswith(field + ".")
        for field in HOUSEKEEPING_FIELDS.get(block, ())
    )


def runner_shape(template: RunnerTemplate) -> dict[str, Any]:
    """The template as JSON data without its housekeeping fields: what shapes a runner."""
    block = {DockerTemplate: "docker", SwarmTemplate: "swarm", TartTemplate: "tart"}
    shape: dict[str, Any] = template.model_dump(mode="json")
    for field in HOUSEKEEPING_FIELDS[block[type(template)]]:
        *parents, leaf = field.split(".")
        node: Any = shape
        for parent in parents:
            node = node.get(parent) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return shape


def _dedupe_labels(labels: tuple[str, ...]) -> tuple[str, ...]:
    seen: set[str] = set()
    kept = []
    for label in labels:
        if label.lower() not in seen:
            seen.add(label.lower())
            kept.append(label)
    return tuple(kept)


Labels = Annotated[tuple[Annotated[str, Field(min_length=1)], ...], AfterValidator(_dedupe_labels)]


# What a scale set's runners are made from; each backend takes the one of its kind.
RunnerTemplate = DockerTemplate | TartTemplate | SwarmTemplate


class ScaleSet(Model):
    """One runner scale set, with `defaults` already merged in."""

    name: str = Field(
        pattern=SCALE_SET_NAME_PATTERN,
        description="the scale set's name on GitHub and its runs-on label",
    )
    github: GitHub = Field(description="where the scale set lives and how to sign in")
    runner_group: str = Field(default="default", min_length=1, description="runner group name")
    labels: Annotated[
        tuple[Annotated[str, Field(min_length=1)], ...], AfterValidator(_dedupe_labels)
    ] = Field(default=(), description="extra labels (the name is always a label too)")
    min_runners: int = Field(default=0, ge=0, description="idle runners kept warm")
    max_runners: int = Field(default=10, ge=1, description="hard cap; must be >= minRunners")
    suspended: bool = Field(
        default=False, description="take no new jobs: idle runners go, busy ones finish"
    )
    drain_timeout: Duration = Field(
        default=6 * 3600,
        description="how long busy runners may run on when the scale set is removed or suspended",
    )
    scale_down_delay: Duration = Field(
        default=30,
        description="how long demand must stay below the idle runners before surplus ones go",
    )
    backend: Literal["docker", "tart", "swarm"] = Field(
        default="docker", description="where runners run"
    )
    docker: DockerTemplate = Field(
        default=DockerTemplate(), description="used when backend is docker"
    )
    tart: TartTemplate = Field(default=TartTemplate(), description="used when backend is tart")
    swarm: SwarmTemplate = Field(default=SwarmTemplate(), description="used when backend is swarm")

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
    def template(self) -> RunnerTemplate:
        if self.backend == "swarm":
            return self.swarm
        return self.docker if self.backend == "docker" else self.tart


class Metadata(Model):
    """What identifies the fleet."""

    name: str = Field(
        pattern=FLEET_NAME_PATTERN,
        description="the fleet's identity, stamped on every container and VM it owns",
    )


class Fleet(Model):
    """A whole fleet: what one operator keeps running."""

    api_version: Literal["runscaler/v1"] = Field(description="selects schema and semantics")
    kind: Literal["Fleet"] = Field(description="always Fleet")
    metadata: Metadata = Field(description="the fleet's identity")
    scale_sets: tuple[ScaleSet, ...] = Field(
        default=(), description="the runner scale sets; names unique per github.url"
    )

    def by_identity(self) -> dict[tuple[str, str], ScaleSet]:
        return {s.identity: s for s in self.scale_sets}


def dump_scale_set(scale_set: ScaleSet) -> dict[str, Any]:
    """The scale set as a plain camelCase mapping (durations as `6h`, sizes as bytes)."""
    return scale_set.model_dump(mode="json", by_alias=True)
