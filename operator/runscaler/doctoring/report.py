"""What `runscaler doctor` found, as plain data: checks, leftovers, and what fixing did.

The examination produces these; `console.doctor` renders them and the exit code is read from
them, so the checks can be tested without a terminal and the rendering without an engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Status = Literal["ok", "warn", "fail"]

LeftoverKind = Literal[
    "exited runner",
    "unregistered runner",
    "orphaned runner",
    "removed scale set",
    "helper container",
    "shared volume",
    "stale session",
    "buildx builder",
    "buildx volume",
    "tart VM",
    "swarm service",
    "swarm hygiene job",
]


@dataclass(frozen=True)
class Check:
    """One line: what was checked, how it went, and (when not ok) what to do."""

    status: Status
    subject: str  # python, manifest, docker, image, tart, scale set, state dir, operator
    detail: str


@dataclass(frozen=True)
class Leftover:
    """Something of ours that nothing uses any more, and what fixing it needs."""

    fleet: str
    kind: LeftoverKind
    name: str  # container or volume name, or the session id
    where: str  # the engine's address, or the scale set (`linux (https://github.com/acme)`)
    reason: str
    engine: str = ""  # the engine's address (containers, volumes, services) or TART_HOME
    ref: str = ""  # container id
    runner: str = ""  # the runner's name (its GitHub registration has the same name)
    scale_set_key: str = ""  # `dev.runscaler.scale-set-key`, to find the GitHub client
    scale_set_id: int | None = None  # for sessions


@dataclass(frozen=True)
class Outcome:
    """What `--fix` did to one leftover."""

    leftover: Leftover
    removed: bool
    detail: str


@dataclass
class DoctorReport:
    checks: list[Check] = field(default_factory=list)
    leftovers: list[Leftover] = field(default_factory=list)  # found before any fix
    outcomes: list[Outcome] = field(default_factory=list)  # with --fix
    remaining: list[Leftover] = field(default_factory=list)  # still there at the end
    notes: list[str] = field(default_factory=list)  # what could not be judged, and why
    fixing: bool = False
    from_manifest: bool = False  # the fleet is a manifest's; without one --fix needs --fleet

    def add(self, status: Status, subject: str, detail: str) -> Check:
        check = Check(status, subject, detail)
        self.checks.append(check)
        return check

    def count(self, status: Status) -> int:
        return sum(1 for c in self.checks if c.status == status)

    @property
    def exit_code(self) -> int:
        """0 when every check passed (warnings allowed) and no leftover remains, else 1."""
        return 1 if self.count("fail") or self.remaining else 0
