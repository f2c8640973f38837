"""The live service's inconvenient habits, which the simulator has by default.

A client written against an idealised GitHub loses jobs against the real one, so the simulator
behaves like the real one unless a focused test turns a habit off (protocol-notes.md):

- message ids are numbered per session and restart near 1e8 in every new session (ARC #4470);
- a job's assignment to a runner and its start are apart in time (ARC #4000);
- JobStarted and JobCompleted arrive late (tens of seconds at worst, ARC #3534);
- an ephemeral runner's registration lingers a while after its job ended;
- label PATCHes are answered 200 and discarded (ARC #4424, #4579), and a GHES without
  `DistributedTask.AllowRunnerScaleSetCustomLabels` keeps only the name as a label.

Every delay is a (low, high) range in seconds, drawn uniformly and multiplied by `scale`, so
tests keep each habit on but short. A range of (0, 0) turns the habit off.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

Range = tuple[float, float]

MESSAGE_ID_BASE = 100_000_000
MESSAGE_ID_SPREAD = 1_000
OFF: Range = (0.0, 0.0)


@dataclass(frozen=True)
class Realism:
    """How far the simulator is from an ideal service; the defaults are the live one's."""

    per_session_message_ids: bool = True
    start_delay: Range = (0.5, 2.0)  # a runner is handed its job this long after taking it
    event_delay: Range = (0.5, 2.0)  # JobStarted / JobCompleted reach the queue this late
    registration_linger: Range = (2.0, 5.0)  # a finished ephemeral runner stays registered
    ignore_label_updates: bool = True  # a PATCH of labels is answered 200 and discarded
    custom_labels: bool = True  # False: GHES without the feature flag (only the name)
    scale: float = 1.0  # multiplies every delay, so tests keep each habit but short
    seed: int | None = None
    message_id_offsets: Sequence[int] | None = None  # per new session, in order (tests)

    def __post_init__(self) -> None:
        for name in ("start_delay", "event_delay", "registration_linger"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"{name} must be a range (low, high) with 0 <= low <= high")
        if self.scale < 0:
            raise ValueError("scale must not be negative")


IDEAL = Realism(
    per_session_message_ids=False,
    start_delay=OFF,
    event_delay=OFF,
    registration_linger=OFF,
    ignore_label_updates=False,
)


class Dice:
    """Draws the random parts of `Realism` (seeded, so a failing run can be replayed)."""

    def __init__(self, realism: Realism) -> None:
        self.realism = realism
        self._random = random.Random(realism.seed)
        self._offsets = list(realism.message_id_offsets or ())

    def delay(self, span: Range) -> float:
        low, high = span
        if high <= 0:
            return 0.0
        return self._random.uniform(low, high) * self.realism.scale

    def first_message_id(self) -> int:
        """Where a new session's message ids start (the one before its first message)."""
        if self._offsets:
            return MESSAGE_ID_BASE + self._offsets.pop(0)
        return MESSAGE_ID_BASE + self._random.randrange(MESSAGE_ID_SPREAD)
