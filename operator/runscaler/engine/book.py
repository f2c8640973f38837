"""The book of runners: the one owner of a scale set's runner records.

Every runner's life is a state machine, `starting → idle → busy → finishing → gone`, with
`removing` (a scale-down unregistering it), `failed` (it exited early or could not start) and
`lost` (its node failed) on the side. Records are frozen; only the named transitions below
replace them, and a transition the machine does not allow is refused (it returns None and
changes nothing), so a late or duplicated event can never move a runner backwards.

A record may carry the name of the operation that owns it (`op`: start, remove, discard).
The transient states (`removing`, `failed`, `lost`, and `starting` under a start) exist only
while their operation runs; each operation settles its record in a `finally`, so a cancelled
one leaves nothing half done. Names whose container or registration still has to go after the
record is gone are kept as `leftovers` until the resync confirms they are removed. The last
lost runners are kept (`recently_lost`) for status: a lost runner's record ends at once, but a
user must still see which job and node it took with it.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


class RunnerState(enum.Enum):
    STARTING = "starting"  # being registered and started, or started but not online yet
    IDLE = "idle"  # running, registered, no job
    BUSY = "busy"  # running a job: never removed by scaling or template changes
    FINISHING = "finishing"  # its job ended; waiting for the process to exit or be removed
    REMOVING = "removing"  # being unregistered and removed (a scale-down or a drain)
    FAILED = "failed"  # exited early or could not start; being cleaned up
    LOST = "lost"  # out of reach for good (its node failed); being cleaned up


# States whose record only an operation in progress may hold.
TRANSIENT = frozenset({RunnerState.REMOVING, RunnerState.FAILED, RunnerState.LOST})

# The operations judging an exited runner (see `RunnerOps.judge_exit`).
JUDGES = frozenset({"judge", "grace", "grace-clean"})

_ALLOWED: dict[RunnerState, frozenset[RunnerState]] = {
    RunnerState.STARTING: frozenset(
        {RunnerState.IDLE, RunnerState.BUSY, RunnerState.FINISHING, RunnerState.REMOVING}
        | {RunnerState.FAILED, RunnerState.LOST}
    ),
    RunnerState.IDLE: frozenset(
        {RunnerState.BUSY, RunnerState.FINISHING, RunnerState.REMOVING}
        | {RunnerState.FAILED, RunnerState.LOST}
    ),
    RunnerState.BUSY: frozenset({RunnerState.FINISHING, RunnerState.FAILED, RunnerState.LOST}),
    RunnerState.FINISHING: frozenset({RunnerState.LOST}),
    RunnerState.REMOVING: frozenset(
        {RunnerState.IDLE, RunnerState.BUSY, RunnerState.FINISHING, RunnerState.LOST}
    ),
    RunnerState.FAILED: frozenset(),
    RunnerState.LOST: frozenset(),
}


@dataclass(frozen=True)
class RunnerRecord:
    """One runner of the scale set, as the book last saw it."""

    name: str
    template_hash: str
    state: RunnerState = RunnerState.STARTING
    since: float = field(default_factory=time.time)  # epoch seconds of the last transition
    changed: float = field(default_factory=time.monotonic)  # the same, for comparisons
    op: str | None = None  # the operation that owns the record now
    runner_id: int | None = None  # GitHub's agent id, once known
    job_id: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    node: str | None = None
    created_at: float = field(default_factory=time.time)
    adopted: bool = False
    took_job: bool = False
    job_since: float | None = None  # epoch seconds its job started
    # Finishing: JobCompleted was seen (else it still counts against desired until `hold`).
    completed: bool = False
    hold: float = 0.0  # monotonic deadline while a finished runner still counts

    @property
    def counts(self) -> bool:
        """Whether the runner counts as capacity against the desired count."""
        if self.op == "grace":
            return False  # its process failed: it waits for late job events, not for a job
        # "grace-clean": it exited 0, as a runner does after its job, so it most likely ran
        # one whose events are late; it keeps counting (a completion must not start a spare
        # that is removed moments later) until the events come or the grace ends.
        if self.state in (RunnerState.STARTING, RunnerState.IDLE, RunnerState.BUSY):
            return True
        if self.state is RunnerState.FINISHING:
            return not self.completed and time.monotonic() < self.hold
        return False


@dataclass(frozen=True)
class Leftover:
    """What must still be removed for a runner whose record is gone."""

    name: str
    runner_id: int | None
    container: bool = True


RECENTLY_LOST = 10  # lost runners kept for status after their records end


class Book:
    """One scale set's runner records; the only writer of them."""

    def __init__(
        self, scale_set_name: str = "", *, on_change: Callable[[], None] | None = None
    ) -> None:
        self._name = scale_set_name
        self._on_change = on_change
        self._records: dict[str, RunnerRecord] = {}
        self.leftovers: dict[str, Leftover] = {}
        self.recently_lost: deque[RunnerRecord] = deque(maxlen=RECENTLY_LOST)
        self.version = 0  # bumped on every change (drain waits for changes)

    # -- reading ---------------------------------------------------------------------------

    def get(self, name: str) -> RunnerRecord | None:
        return self._records.get(name)

    def __iter__(self) -> Iterator[RunnerRecord]:
        return iter(list(self._records.values()))

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, name: object) -> bool:
        return name in self._records

    def count(self, state: RunnerState) -> int:
        return sum(1 for r in self._records.values() if r.state is state)

    # -- births ----------------------------------------------------------------------------

    def starting(self, name: str, template_hash: str, *, op: str = "start") -> RunnerRecord:
        """A runner the scaler is about to register and start."""
        if name in self._records:
            raise ValueError(f"runner {name} is already in the book")
        record = RunnerRecord(name=name, template_hash=template_hash, op=op)
        return self._put(record)

    def adopt(
        self,
        name: str,
        template_hash: str,
        *,
        state: RunnerState,
        runner_id: int | None = None,
        created_at: float | None = None,
        node: str | None = None,
    ) -> RunnerRecord | None:
        """A running runner found on the backend (after a restart, or kept by a cancelled
        start): idle, busy, starting (never came online) or finishing (unregistered)."""
        if name in self._records or state in TRANSIENT:
            return None
        self.leftovers.pop(name, None)
        record = RunnerRecord(
            name=name,
            template_hash=template_hash,
            state=state,
            runner_id=runner_id,
            created_at=created_at or time.time(),
            node=node,
            adopted=True,
            took_job=state is RunnerState.BUSY,
            completed=state is RunnerState.FINISHING,
        )
        return self._put(record)

    # -- transitions -----------------------------------------------------------------------

    def placed(self, name: str, node: str) -> RunnerRecord | None:
        """The backend says where the runner runs (Swarm places runners on its nodes)."""
        record = self._records.get(name)
        if record is None or record.node == node:
            return None
        return self._put(dataclasses.replace(record, node=node))

    def registered(self, name: str, runner_id: int) -> RunnerRecord | None:
        record = self._records.get(name)
        if record is None:
            return None
        return self._put(dataclasses.replace(record, runner_id=runner_id))

    def online(self, name: str, *, runner_id: int | None = None) -> RunnerRecord | None:
        """Started (or seen online): idle, and no operation owns it any more."""
        record = self._records.get(name)
        if record is None or record.state is not RunnerState.STARTING:
            return None
        return self._move(
            record,
            RunnerState.IDLE,
            op=None,
            runner_id=runner_id if runner_id is not None else record.runner_id,
        )

    def job_started(
        self, name: str, *, job_id: str | None = None, runner_id: int | None = None
    ) -> RunnerRecord | None:
        record = self._records.get(name)
        if record is None:
            return None
        # A starting runner can take a job before its start call returns; a removal that
        # GitHub refused (JobStillRunning) hands the runner back busy; an exit being judged
        # stays with its judge.
        op = record.op if record.state is RunnerState.STARTING or record.op in JUDGES else None
        return self._move(
            record,
            RunnerState.BUSY,
            op=op,
            job_id=job_id or record.job_id,
            runner_id=runner_id or record.runner_id,
            took_job=True,
            job_since=record.job_since or time.time(),
        )

    def job_ended(
        self,
        name: str,
        *,
        completed: bool,
        hold: float = 0.0,
        exit_code: int | None = None,
        job_id: str | None = None,
    ) -> RunnerRecord | None:
        """Its job completed (`completed`), or its process exited while it had a job: then it
        counts against desired for `hold` more seconds, until the completion is seen."""
        record = self._records.get(name)
        if record is None:
            return None
        if record.state is RunnerState.FINISHING:
            if completed and not record.completed:
                return self._put(dataclasses.replace(record, completed=True))
            if exit_code is not None and record.exit_code is None:
                return self._put(dataclasses.replace(record, exit_code=exit_code))
            return None
        return self._move(
            record,
            RunnerState.FINISHING,
            op=None,
            completed=completed,
            hold=time.monotonic() + hold,
            exit_code=exit_code,
            job_id=job_id or record.job_id,
            took_job=True,
        )

    def exited_while_starting(self, name: str, exit_code: int) -> RunnerRecord | None:
        """The process ended before its start call returned: the start judges it after."""
        record = self._records.get(name)
        if record is None or record.op != "start":
            return None
        return self._put(dataclasses.replace(record, exit_code=exit_code))

    def claim(self, name: str, op: str, *, held_by: str | None = None) -> RunnerRecord | None:
        """An operation takes a settled idle or starting record without moving it (or, with
        `held_by`, takes it over from that operation)."""
        record = self._records.get(name)
        if (
            record is None
            or record.op != held_by
            or record.state not in (RunnerState.IDLE, RunnerState.STARTING)
        ):
            return None
        return self._put(dataclasses.replace(record, op=op))

    def removing(self, name: str, *, op: str = "remove") -> RunnerRecord | None:
        """A scale-down takes an idle runner (unregistering it first)."""
        record = self._records.get(name)
        if record is None or record.state is not RunnerState.IDLE or record.op is not None:
            return None
        return self._move(record, RunnerState.REMOVING, op=op)

    def kept(self, name: str) -> RunnerRecord | None:
        """A removal that did not happen (GitHub refused, or it was cancelled): idle again."""
        record = self._records.get(name)
        if record is None or record.state is not RunnerState.REMOVING:
            return None
        return self._move(record, RunnerState.IDLE, op=None)

    def failed(
        self, name: str, *, reason: str, exit_code: int | None = None, op: str = "discard"
    ) -> RunnerRecord | None:
        record = self._records.get(name)
        if record is None:
            return None
        return self._move(record, RunnerState.FAILED, op=op, reason=reason, exit_code=exit_code)

    def lost(
        self, name: str, *, reason: str, op: str = "discard", node: str | None = None
    ) -> RunnerRecord | None:
        """Out of reach for good (its node failed): never capacity again."""
        record = self._records.get(name)
        if record is None:
            return None
        return self._move(record, RunnerState.LOST, op=op, reason=reason, node=node or record.node)

    def released(self, name: str, *, by: frozenset[str] | None = None) -> RunnerRecord | None:
        """The operation that owned a settled record (one of `by`, if given) let go of it."""
        record = self._records.get(name)
        if record is None or record.op is None or record.state in TRANSIENT:
            return None
        if by is not None and record.op not in by:
            return None
        return self._put(dataclasses.replace(record, op=None))

    def gone(
        self,
        name: str,
        *,
        container: bool = True,
        registration: bool = True,
        runner_id: int | None = None,
    ) -> RunnerRecord | None:
        """The record ends. What may still exist (`container`, `registration`, under the
        record's runner id or `runner_id`) is kept as a leftover until confirmed removed."""
        record = self._records.pop(name, None)
        if record is None:
            return None
        if record.state is RunnerState.LOST:
            self.recently_lost.append(record)
        runner_id = (runner_id or record.runner_id) if registration else None
        if container or runner_id is not None:
            self.leftovers[name] = Leftover(name, runner_id, container=container)
        self._changed()
        log.debug("%s: runner %s gone (was %s)", self._name, name, record.state.value)
        return record

    def cleaned(self, name: str, *, container: bool = True, registration: bool = True) -> None:
        """Part of a leftover is confirmed removed."""
        leftover = self.leftovers.get(name)
        if leftover is None:
            return
        leftover = dataclasses.replace(
            leftover,
            container=leftover.container and not container,
            runner_id=None if registration else leftover.runner_id,
        )
        if leftover.container or leftover.runner_id is not None:
            self.leftovers[name] = leftover
        else:
            del self.leftovers[name]

    # -- internals -------------------------------------------------------------------------

    def _move(self, record: RunnerRecord, to: RunnerState, **changes: Any) -> RunnerRecord | None:
        if to is not record.state and to not in _ALLOWED[record.state]:
            log.debug(
                "%s: runner %s: %s -> %s refused",
                self._name,
                record.name,
                record.state.value,
                to.value,
            )
            return None
        moved = dataclasses.replace(
            record, state=to, since=time.time(), changed=time.monotonic(), **changes
        )
        return self._put(moved)

    def _put(self, record: RunnerRecord) -> RunnerRecord:
        self._records[record.name] = record
        self._changed()
        return record

    def _changed(self) -> None:
        self.version += 1
        if self._on_change is not None:
            self._on_change()
