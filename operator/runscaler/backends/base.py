"""The contract between the scaler and whatever runs runners (Docker containers, Tart VMs).

A backend starts a runner from a `RunnerSpec`, removes it, lists the runners it owns, and
reports their exits as a stream. It knows nothing of GitHub: the JIT config is an opaque
secret it hands to the runner's environment, and the labels are opaque ownership marks it
puts on everything it creates and filters by. One backend instance serves one fleet on one
engine, shared by every scale set that uses that engine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from runscaler.errors import RunscalerError
from runscaler.manifest.models import RunnerTemplate

# Ownership labels (architecture.md, Restart / adoption).
LABEL_FLEET = "dev.runscaler.fleet"
LABEL_SCALE_SET = "dev.runscaler.scale-set"
LABEL_SCALE_SET_KEY = "dev.runscaler.scale-set-key"
LABEL_RUNNER = "dev.runscaler.runner"
LABEL_TEMPLATE = "dev.runscaler.template"

JIT_CONFIG_ENV = "ACTIONS_RUNNER_INPUT_JITCONFIG"


class BackendError(RunscalerError):
    """A backend operation failed; the message says what and what to check."""


class BackendUnavailable(BackendError):
    """The engine (or the `tart` CLI) cannot be reached at all; retry later."""


class RunnerNotFound(BackendError):
    """No runner of that name exists (already removed)."""


@dataclass(frozen=True)
class RunnerSpec:
    """Everything needed to start one runner. `jit_config` is a secret: env only."""

    name: str
    jit_config: str = field(repr=False)
    labels: Mapping[str, str]
    template: RunnerTemplate
    # The template's `env` with secret refs resolved (a secret: never logged).
    env: Mapping[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class OwnedRunner:
    """A runner the backend found carrying our labels."""

    name: str
    labels: Mapping[str, str]
    running: bool
    exit_code: int | None = None
    created_at: float | None = None  # epoch seconds
    node: str | None = None  # where it runs, for backends that place runners (Swarm)
    # The backend lost sight of it (its node is down): not capacity, whatever `running` says.
    lost: bool = False


@dataclass(frozen=True)
class RunnerExit:
    """A runner's process ended (job done, crashed, killed)."""

    name: str
    exit_code: int
    at: float  # epoch seconds
    # The runner did not end but is out of reach for good (its node failed): the scaler
    # treats it as gone and removes its registration; the backend removes it when it can.
    lost: bool = False
    detail: str | None = None  # the backend's own words, for logs and status
    node: str | None = None  # where it ran, for backends that place runners (Swarm)


class ExitStream(Protocol):
    """An async iterator of exits that must be closed (`contextlib.aclosing`)."""

    def __aiter__(self) -> AsyncIterator[RunnerExit]: ...

    async def __anext__(self) -> RunnerExit: ...

    async def aclose(self) -> None: ...


class Backend(Protocol):
    async def check(self, template: RunnerTemplate) -> str:
        """Prove the engine answers and the template's image is present or obtainable
        under its pull policy, without creating anything; return a one-line summary.
        Raise `BackendError` saying what is wrong and what to check."""
        ...

    async def prepare(self, template: RunnerTemplate) -> None:
        """Make the template usable (pull its image per policy, create shared volumes).
        Idempotent and cheap when already done; concurrent callers share one pull."""
        ...

    async def start(self, spec: RunnerSpec) -> None:
        """Create and start the runner; return once it is running.

        Cancellation-safe: cancelled before the runner could have started, it removes what it
        created; once the runner may have started, a cancellation leaves it in place (it is a
        live runner that may hold a job: the caller tracks it or the next start adopts it).
        Raises only `BackendError` subclasses, the cause chained."""
        ...

    async def remove(self, name: str) -> None:
        """Remove the runner now (force); `RunnerNotFound` if it is already gone."""
        ...

    async def list_owned(self, selector: Mapping[str, str]) -> list[OwnedRunner]:
        """Runners whose labels include every `selector` item (running or exited). A runner
        that was created but never started is listed as not running, without an exit code."""
        ...

    def exits(self, selector: Mapping[str, str]) -> ExitStream:
        """Exits of runners matching `selector`, as they happen (watched, not polled).

        The subscription starts when `exits` is called, not at the first iteration: call it
        before starting runners and no exit is missed. An exit may be reported for a runner
        the caller no longer tracks (or twice across a resubscription): ignore unknown names.
        Raises `BackendUnavailable` when the engine goes away; subscribe again later and
        reconcile with `list_owned` (exits while unsubscribed are not replayed)."""
        ...

    async def logs_tail(self, name: str, lines: int = 20) -> list[str]:
        """The runner's last output lines (for a runner that failed), secrets excluded."""
        ...

    async def close(self) -> None: ...

    # A backend that places runners itself (Swarm) may also offer `node_of(name) -> str | None`:
    # the node a runner was placed on once its start returned. The scaler records it.
