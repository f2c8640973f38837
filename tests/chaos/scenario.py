"""Seeded chaos plans: which scenarios run, what happens in each, and when.

Everything here comes from `random.Random(seed)` and nothing else, so a seed names one plan:
the same scenarios, events, offsets, manifests and job arrivals every time (runtime races may
still differ). The planner tracks the fleet's shape as it would be after each manifest commit,
so every generated manifest is a real transition from the previous one (add, remove, resize,
template change, suspend, short drain timeouts) or a deliberately invalid one.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

POOL = ("chaos-a", "chaos-b", "chaos-c")
THEMES = ("manifest-churn", "operator-crash", "github-outage", "engine-restart", "mixed")
# The event kinds each theme draws from (mixed draws from all).
THEME_EVENTS: dict[str, tuple[str, ...]] = {
    "manifest-churn": ("add", "remove", "resize", "template", "suspend", "drain", "invalid"),
    "operator-crash": ("kill9", "sigterm", "resize", "template"),
    "github-outage": (
        "fault-5xx", "fault-429", "fault-401-polls", "fault-drop", "delete-scale-set",
        "session-conflict", "expire-tokens",
    ),
    "engine-restart": ("engine-restart", "resize", "kill9"),
}  # fmt: skip
THEME_EVENTS["mixed"] = tuple(sorted({k for kinds in THEME_EVENTS.values() for k in kinds}))
INVALID = ("yaml", "min-above-max", "unknown-key")


@dataclass(frozen=True)
class Shape:
    """One scale set as the manifest declares it."""

    name: str
    min_runners: int
    max_runners: int
    suspended: bool = False
    drain_timeout: int = 60  # seconds
    template: int = 0  # bumped by a template change (an env value), which rolls idle runners

    def manifest_entry(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "minRunners": self.min_runners,
            "maxRunners": self.max_runners,
            "suspended": self.suspended,
            "drainTimeout": f"{self.drain_timeout}s",
            "docker": {"env": {"CHAOS_TEMPLATE": f"v{self.template}"}},
        }


@dataclass(frozen=True)
class Event:
    at: float  # seconds after the scenario's start
    kind: str
    detail: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        shown = {k: v for k, v in self.detail.items() if k not in ("fleet",)}
        return f"+{self.at:5.1f}s {self.kind} {shown}" if shown else f"+{self.at:5.1f}s {self.kind}"


@dataclass(frozen=True)
class JobArrival:
    at: float
    scale_set: str
    duration: float


@dataclass(frozen=True)
class Scenario:
    index: int
    theme: str
    window: float  # seconds of chaos and job flow
    events: tuple[Event, ...]
    jobs: tuple[JobArrival, ...]
    base: tuple[Shape, ...]  # the fleet restored when the window ends

    @property
    def name(self) -> str:
        return f"{self.index + 1}:{self.theme}"


@dataclass(frozen=True)
class Profile:
    """How long and how busy: the long run and the short one inside `make test`."""

    total: float  # seconds of chaos windows, summed over the scenarios
    windows: tuple[float, float]  # a scenario's window, drawn from this range
    job_duration: tuple[float, float]
    job_gap: float  # mean seconds between job arrivals
    event_gap: float  # mean seconds between chaos events
    drain_timeouts: tuple[int, int]  # the short drain timeouts a "drain" event sets


LONG = Profile(
    total=240.0, windows=(45.0, 75.0), job_duration=(5.0, 30.0), job_gap=2.5, event_gap=5.0,
    drain_timeouts=(3, 12),
)  # fmt: skip
SHORT = Profile(
    total=60.0, windows=(20.0, 25.0), job_duration=(2.0, 6.0), job_gap=1.2, event_gap=3.0,
    drain_timeouts=(1, 4),
)  # fmt: skip


def scaled(profile: Profile, minutes: float) -> Profile:
    return replace(profile, total=minutes * 60.0)


def plan(seed: int, profile: Profile) -> list[Scenario]:
    """The scenarios of `seed`, until their windows add up to the profile's total."""
    rng = random.Random(seed)
    base = tuple(
        Shape(name, min_runners=rng.randint(0, 1), max_runners=rng.randint(2, 3)) for name in POOL
    )
    scenarios: list[Scenario] = []
    spent = 0.0
    while spent < profile.total:
        window = min(rng.uniform(*profile.windows), max(profile.total - spent, profile.windows[0]))
        if profile.total < len(THEMES) * profile.windows[0]:
            theme = "mixed"  # too short to visit every theme: every scenario mixes them all
        elif len(scenarios) < len(THEMES):
            theme = THEMES[len(scenarios)]
        else:
            theme = rng.choice(THEMES)
        scenarios.append(_scenario(rng, len(scenarios), theme, window, base, profile))
        spent += window
    return scenarios


def _scenario(
    rng: random.Random,
    index: int,
    theme: str,
    window: float,
    base: tuple[Shape, ...],
    profile: Profile,
) -> Scenario:
    shapes = {s.name: s for s in base}
    events: list[Event] = []
    at = rng.uniform(1.0, profile.event_gap)
    kinds = THEME_EVENTS[theme]
    # The last few seconds stay quiet so the last fault's effect is inside the window.
    while at < window - 3.0:
        kind = rng.choice(kinds)
        events.extend(_event(rng, kind, at, shapes, profile, window))
        at += rng.expovariate(1.0 / profile.event_gap) + 0.5
    events.sort(key=lambda e: e.at)
    jobs = []
    at = rng.uniform(0.0, profile.job_gap)
    while at < window:
        name = rng.choice(POOL)
        duration = round(rng.uniform(*profile.job_duration), 1)
        jobs.append(JobArrival(at=round(at, 2), scale_set=name, duration=duration))
        at += rng.expovariate(1.0 / profile.job_gap)
    return Scenario(index, theme, window, tuple(events), tuple(jobs), base)


def _commit(shapes: dict[str, Shape], at: float, what: str) -> Event:
    entries = [s.manifest_entry() for s in sorted(shapes.values(), key=lambda s: s.name)]
    return Event(round(at, 2), "manifest", {"change": what, "scaleSets": entries})


# The simulator faults a "fault" event schedules (`POST /_sim/faults`): a name and a spec.
FAULTS: dict[str, tuple[str, Callable[[random.Random], dict[str, Any]]]] = {
    "fault-5xx": (
        "5xx burst",
        lambda rng: {
            "path": "^/_services/",
            "status": rng.choice([500, 502, 503]),
            "times": rng.randint(3, 12),
        },
    ),
    "fault-429": (
        "429 with Retry-After",
        lambda rng: {
            "path": "^/_services/",
            "status": 429,
            "retryAfter": rng.randint(1, 3),
            "times": rng.randint(2, 6),
        },
    ),
    "fault-401-polls": (
        "401 on polls",
        lambda rng: {
            "method": "GET",
            "path": "^/_broker/scalesets/message",
            "status": 401,
            "times": rng.randint(1, 4),
        },
    ),
    "fault-drop": (
        "dropped connections",
        lambda rng: {
            "path": "^/_services/|^/_broker/scalesets",
            "drop": True,
            "times": rng.randint(2, 8),
        },
    ),
}
MANIFEST_KINDS = ("add", "remove", "resize", "template", "suspend", "drain")


def _event(
    rng: random.Random,
    kind: str,
    at: float,
    shapes: dict[str, Shape],
    profile: Profile,
    window: float,
) -> list[Event]:
    at = round(at, 2)
    if kind in MANIFEST_KINDS:
        return _manifest_event(rng, kind, at, shapes, profile)
    if kind in FAULTS:
        what, spec = FAULTS[kind]
        return [Event(at, "fault", {"what": what, "fault": spec(rng)})]
    present = sorted(shapes)
    if kind == "invalid":
        return [Event(at, "invalid", {"how": rng.choice(INVALID)})]
    if kind in ("kill9", "sigterm"):
        return [Event(at, kind, {"restartAfter": round(rng.uniform(0.0, 2.0), 2)})]
    if kind == "engine-restart":
        return [Event(at, kind, {"downFor": round(rng.uniform(0.0, 3.0), 2)})]
    if kind == "delete-scale-set":
        return [Event(at, kind, {"name": rng.choice(present)})]
    if kind == "session-conflict":
        name = rng.choice(present)
        release = min(at + rng.uniform(1.0, 6.0), window - 1.0)
        return [
            Event(at, "hold-session", {"name": name}),
            Event(round(release, 2), "release-session", {"name": name}),
        ]
    if kind == "expire-tokens":
        return [Event(at, kind)]
    raise ValueError(f"unknown chaos event kind {kind!r}")


def _manifest_event(
    rng: random.Random, kind: str, at: float, shapes: dict[str, Shape], profile: Profile
) -> list[Event]:
    """A manifest commit (two for a drain), applied to `shapes` as the operator will see it."""
    present = sorted(shapes)
    absent = [n for n in POOL if n not in shapes]
    if kind == "add" and not absent:
        kind = "remove"  # the whole pool is declared: the transition on offer is a removal
    elif kind == "remove" and len(present) <= 1:
        kind = "add" if absent else "resize"
    if kind == "add":
        name = rng.choice(absent)
        shapes[name] = Shape(name, rng.randint(0, 1), rng.randint(1, 3))
        return [_commit(shapes, at, f"add {name}")]
    name = rng.choice(present)
    if kind == "remove":
        del shapes[name]
        return [_commit(shapes, at, f"remove {name}")]
    if kind == "resize":
        high = rng.randint(1, 4)
        low = rng.randint(0, min(high, 2))
        shapes[name] = replace(shapes[name], min_runners=low, max_runners=high)
        return [_commit(shapes, at, f"resize {name} to {low}..{high}")]
    if kind == "template":
        shapes[name] = replace(shapes[name], template=shapes[name].template + 1)
        return [_commit(shapes, at, f"template of {name}")]
    if kind == "suspend":
        suspended = not shapes[name].suspended
        shapes[name] = replace(shapes[name], suspended=suspended)
        return [_commit(shapes, at, f"{'suspend' if suspended else 'resume'} {name}")]
    # A drain: a short drain timeout, then the scale set is suspended or removed, so busy
    # runners past the timeout are force-removed and those jobs are killed with an explanation.
    timeout = rng.randint(*profile.drain_timeouts)
    shapes[name] = replace(shapes[name], drain_timeout=timeout)
    first = _commit(shapes, at, f"drainTimeout of {name} to {timeout}s")
    if len(present) > 1 and rng.random() < 0.5:
        del shapes[name]
        then = f"remove {name} (drain {timeout}s)"
    else:
        shapes[name] = replace(shapes[name], suspended=True)
        then = f"suspend {name} (drain {timeout}s)"
    return [first, _commit(shapes, round(at + rng.uniform(0.5, 2.0), 2), then)]
