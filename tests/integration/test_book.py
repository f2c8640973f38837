"""The book of runners alone: every transition, and the ones it refuses.

The book is plain data with no I/O, so these tests drive it directly; what they pin down is
what the scaler relies on: a late or duplicated event never moves a runner backwards, a record
in a transient state always names the operation that owns it, and what may outlive a record
(a container, a registration) is kept until it is confirmed removed.
"""

from __future__ import annotations

import time

import pytest

from runscaler.engine.book import TRANSIENT, Book, Leftover, RunnerState
from runscaler.engine.runners import plan_pass


def started(book: Book, name: str = "r1") -> None:
    book.starting(name, "t1")
    book.registered(name, 7)
    assert book.online(name) is not None


def test_a_runner_goes_starting_idle_busy_finishing_gone() -> None:
    changes: list[int] = []
    book = Book("linux", on_change=lambda: changes.append(1))
    record = book.starting("r1", "t1")
    assert (record.state, record.op, record.runner_id) == (RunnerState.STARTING, "start", None)
    assert book.registered("r1", 7) is not None
    idle = book.online("r1")
    assert idle is not None and (idle.state, idle.op, idle.runner_id) == (
        RunnerState.IDLE,
        None,
        7,
    )
    busy = book.job_started("r1", job_id="j1")
    assert busy is not None and (busy.state, busy.job_id, busy.took_job) == (
        RunnerState.BUSY,
        "j1",
        True,
    )
    assert busy.since >= idle.since and busy.job_since is not None
    done = book.job_ended("r1", completed=True)
    assert done is not None and done.state is RunnerState.FINISHING and done.completed
    assert not done.counts  # its completion was seen: desired has dropped already
    gone = book.gone("r1")
    assert gone is not None and "r1" not in book
    # The container and the registration may still exist until they are confirmed removed.
    assert book.leftovers == {"r1": Leftover("r1", 7, container=True)}
    book.cleaned("r1", container=True, registration=False)
    assert book.leftovers == {"r1": Leftover("r1", 7, container=False)}
    book.cleaned("r1", container=False, registration=True)
    assert book.leftovers == {}
    assert len(changes) == book.version >= 5


def test_a_runner_that_exited_with_its_job_counts_until_the_completion_or_the_hold() -> None:
    book = Book()
    started(book)
    book.job_started("r1")
    ended = book.job_ended("r1", completed=False, hold=60, exit_code=0)
    assert ended is not None and ended.state is RunnerState.FINISHING and ended.counts
    assert plan_pass(book, desired=1, max_runners=3, template_hash="t1", may_start=True).start == 0
    completed = book.job_ended("r1", completed=True)
    assert completed is not None and not completed.counts
    assert plan_pass(book, desired=1, max_runners=3, template_hash="t1", may_start=True).start == 1

    book.starting("r2", "t1")
    book.online("r2")
    book.job_started("r2")
    held = book.job_ended("r2", completed=False, hold=0.0, exit_code=0)
    assert held is not None and held.hold <= time.monotonic() and not held.counts


def test_late_and_duplicate_events_never_move_a_runner_backwards() -> None:
    book = Book()
    started(book)
    book.job_started("r1")
    book.job_ended("r1", completed=True)
    before = book.get("r1")
    assert book.job_started("r1") is None  # a JobStarted that arrives after JobCompleted
    assert book.online("r1") is None
    assert book.removing("r1") is None
    assert book.kept("r1") is None
    assert book.failed("r1", reason="exited_early") is None
    assert book.get("r1") == before
    # Unknown runners: nothing happens, nothing is created.
    assert book.job_started("nobody") is None
    assert book.job_ended("nobody", completed=True) is None
    assert book.gone("nobody") is None
    assert len(book) == 1


def test_busy_runners_are_never_taken_by_a_scale_down() -> None:
    book = Book()
    started(book)
    book.job_started("r1")
    assert book.removing("r1") is None
    assert book.get("r1").state is RunnerState.BUSY  # type: ignore[union-attr]
    # A starting runner is not idle yet either.
    book.starting("r2", "t1")
    assert book.removing("r2") is None


def test_a_removal_ends_gone_kept_idle_or_busy() -> None:
    book = Book()
    started(book)
    removing = book.removing("r1")
    assert removing is not None and (removing.state, removing.op) == (
        RunnerState.REMOVING,
        "remove",
    )
    assert book.removing("r1") is None  # no second removal while one runs
    kept = book.kept("r1")
    assert kept is not None and (kept.state, kept.op) == (RunnerState.IDLE, None)
    book.removing("r1")
    busy = book.job_started("r1")  # GitHub said JobStillRunning
    assert busy is not None and (busy.state, busy.op) == (RunnerState.BUSY, None)


def test_failed_and_lost_runners_only_go() -> None:
    book = Book()
    started(book, "r1")
    started(book, "r2")
    failed = book.failed("r1", reason="exited_early", exit_code=3)
    assert failed is not None and (failed.state, failed.exit_code, failed.reason) == (
        RunnerState.FAILED,
        3,
        "exited_early",
    )
    lost = book.lost("r2", reason="node n1 is down")
    assert lost is not None and lost.state is RunnerState.LOST
    for name in ("r1", "r2"):
        assert book.online(name) is None
        assert book.job_started(name) is None
        assert book.job_ended(name, completed=True) is None
        assert book.removing(name) is None
        assert book.kept(name) is None
        assert book.released(name) is None  # a transient record keeps its operation
        assert book.get(name).op == "discard"  # type: ignore[union-attr]
    assert book.gone("r1") is not None and book.gone("r2") is not None
    assert len(book) == 0


def test_a_start_that_sees_its_runner_take_a_job_releases_it_busy() -> None:
    book = Book()
    book.starting("r1", "t1")
    busy = book.job_started("r1")
    assert busy is not None and (busy.state, busy.op) == (RunnerState.BUSY, "start")
    assert book.online("r1") is None
    released = book.released("r1")
    assert released is not None and (released.state, released.op) == (RunnerState.BUSY, None)


def test_an_exit_during_a_start_is_noted_for_the_start_to_judge() -> None:
    book = Book()
    book.starting("r1", "t1")
    noted = book.exited_while_starting("r1", 3)
    assert noted is not None and noted.exit_code == 3 and noted.state is RunnerState.STARTING
    book.online("r1")
    assert book.exited_while_starting("r1", 4) is None  # only while the start owns it


def test_adoption_takes_the_state_github_reports_and_refuses_the_rest() -> None:
    book = Book()
    busy = book.adopt("r1", "t1", state=RunnerState.BUSY, runner_id=3, node="n1")
    assert busy is not None and busy.adopted and busy.took_job and busy.node == "n1"
    never_online = book.adopt("r2", "t1", state=RunnerState.STARTING)
    assert never_online is not None and never_online.op is None
    assert book.count(RunnerState.STARTING) == 1 and book.count(RunnerState.IDLE) == 0
    assert book.adopt("r1", "t1", state=RunnerState.IDLE) is None  # already in the book
    for state in TRANSIENT:
        assert book.adopt("r3", "t1", state=state) is None
    # Adopting a name that was a leftover (a kept start) clears the leftover.
    book.starting("r4", "t1")
    book.gone("r4")
    assert "r4" in book.leftovers
    assert book.adopt("r4", "t1", state=RunnerState.IDLE) is not None
    assert "r4" not in book.leftovers


def test_a_name_is_in_the_book_once() -> None:
    book = Book()
    book.starting("r1", "t1")
    with pytest.raises(ValueError, match="already in the book"):
        book.starting("r1", "t1")


def test_a_record_gone_without_container_or_registration_leaves_nothing() -> None:
    book = Book()
    book.starting("r1", "t1")
    book.gone("r1", container=False)
    assert book.leftovers == {}
    book.starting("r2", "t1")
    book.gone("r2", container=False, runner_id=9)  # a registration the record never learnt
    assert book.leftovers == {"r2": Leftover("r2", 9, container=False)}
