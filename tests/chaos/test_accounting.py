"""The chaos suite's own rules, without Docker: its plans, its manifests and its accounting.

A harness that miscounts hides losses or invents them, so each rule of `accounting.py` is
checked on the simulator's real state machine (`SimState`) driven through a job's life, with
the engine's container events fed as `docker events` prints them.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from runscaler.errors import ManifestError
from runscaler.manifest.loading import load_manifest_text
from runscaler.simulator.realism import IDEAL
from runscaler.simulator.state import SimState
from tests.chaos.accounting import Figures, churn, job_figures, log_findings
from tests.chaos.observe import ContainerEvents, Ledger, Sampler
from tests.chaos.scenario import LONG, SHORT, plan
from tests.chaos.world import break_manifest
from tests.e2e.operatorkit import manifest

LOST = 5.0  # the simulator's runner_lost_timeout in these tests


class Book:
    """One scale set on a `SimState`, jobs through their lives, and what the harness saw."""

    def __init__(self) -> None:
        # The ideal service: each job starts the moment its runner takes it, as the timelines
        # below assume (the live service's start and event delays are the suite's business).
        self.state = SimState(runner_lost_timeout=LOST, realism=IDEAL)
        self.tenant = self.state.tenant_for("acme")
        self.scale_set = self.state.create_scale_set(
            self.tenant, name="chaos-a", runner_group_id=1, labels=["chaos-a"],
            disable_update=True, now=0.0,
        )  # fmt: skip
        self.events = ContainerEvents(engine=None, fleet="f")  # type: ignore[arg-type]
        self.sampler = Sampler(sim=SimpleNamespace(state=self.state))  # type: ignore[arg-type]
        self.ledger = Ledger()
        self.ids: list[int] = []

    def job(self, duration: float = 10.0) -> int:
        [job_id] = self.state.add_jobs(["chaos-a"], duration=duration, now=0.0)
        self.ids.append(job_id)
        return job_id

    def run(self, job_id: int, runner: str, *, at: float) -> Any:
        self.state.acquire_jobs(self.scale_set.id, [job_id], now=at)
        record = self.state.generate_jit_config(
            self.tenant, self.scale_set.id, name=runner, work_folder="", now=at
        )
        self.container(runner, "create", at=at)
        assert self.state.take_job(record, now=at) is not None
        self.sampler.sample()
        return record

    def container(self, runner: str, action: str, *, at: float, exit_code: int = 0) -> None:
        attributes = {"dev.runscaler.runner": runner, "exitCode": str(exit_code)}
        line = {"Action": action, "id": f"c-{runner}", "timeNano": int(at * 1e9),
                "Actor": {"Attributes": attributes}}  # fmt: skip
        self.events._take(json.dumps(line).encode())

    def figures(self) -> Figures:
        return job_figures(
            self.ids,
            sim=SimpleNamespace(state=self.state),  # type: ignore[arg-type]
            events=self.events,
            ledger=self.ledger,
            sampler=self.sampler,
            scale_set_of=dict.fromkeys(self.ids, "chaos-a"),
        )


def test_a_job_its_runner_reported_is_completed() -> None:
    book = Book()
    job = book.job()
    runner = book.run(job, "chaos-a-r1", at=1.0)
    assert book.state.report_result(runner, job, "succeeded", now=11.0)
    book.container("chaos-a-r1", "die", at=11.2)
    figures = book.figures()
    assert (figures.enqueued, figures.completed, figures.losses) == (1, 1, 0)


def lost(book: Book, *, removed_at: float) -> None:
    """The runner of the book's only job is removed at `removed_at`; GitHub notices later."""
    job = book.ids[0]
    book.container("chaos-a-r1", "die", at=removed_at, exit_code=143)
    book.container("chaos-a-r1", "destroy", at=removed_at + 0.1)
    book.state.tick(1.0 + 10.0 + LOST + 1.0)
    assert book.state.jobs[job].result == "failed"


def test_a_runner_removed_mid_job_with_no_drain_is_a_killed_job() -> None:
    book = Book()
    book.run(book.job(), "chaos-a-r1", at=1.0)
    lost(book, removed_at=4.0)
    figures = book.figures()
    assert (figures.killed, figures.killed_by_drain, figures.completed) == (1, 0, 0)
    assert "container exit 143, 3.0s into the job" in figures.details[0]


def test_a_removal_after_the_drain_timeout_explains_the_kill() -> None:
    book = Book()
    book.run(book.job(), "chaos-a-r1", at=1.0)
    book.ledger.open_drain("chaos-a", at=2.0, timeout=1.0)
    lost(book, removed_at=3.2)
    figures = book.figures()
    assert (figures.killed, figures.killed_by_drain, figures.losses) == (0, 1, 0)


@pytest.mark.parametrize(
    ("drain", "why"),
    [
        ((2.0, 10.0, None), "removed 8 s before the drain timeout ran out"),
        ((2.0, 1.0, 2.5), "removed after the drain ended (the scale set came back)"),
    ],
)
def test_a_removal_no_drain_timeout_covers_is_still_a_kill(
    drain: tuple[float, float, float | None], why: str
) -> None:
    book = Book()
    book.run(book.job(), "chaos-a-r1", at=1.0)
    started, timeout, ended = drain
    book.ledger.open_drain("chaos-a", at=started, timeout=timeout)
    if ended is not None:
        book.ledger.close_drain("chaos-a", at=ended)
    lost(book, removed_at=4.0)
    assert book.figures().killed == 1, why


def test_jobs_never_started_and_jobs_never_finished_are_counted_apart() -> None:
    book = Book()
    book.job()
    book.run(book.job(), "chaos-a-r1", at=1.0)
    figures = book.figures()
    assert (figures.never_picked_up, figures.stuck, figures.losses) == (1, 1, 2)


def test_a_job_run_by_two_runners_is_a_duplicate_unless_github_deleted_its_scale_set() -> None:
    book = Book()
    job = book.job()
    book.run(job, "chaos-a-r1", at=1.0)
    book.state.delete_scale_set(book.scale_set.id, now=2.0)  # the job is queued again
    book.scale_set = book.state.create_scale_set(
        book.tenant, name="chaos-a", runner_group_id=1, labels=["chaos-a"],
        disable_update=True, now=3.0,
    )  # fmt: skip
    runner = book.run(job, "chaos-a-r2", at=3.0)
    assert book.state.report_result(runner, job, "succeeded", now=13.0)
    figures = book.figures()
    assert (figures.completed, figures.duplicates) == (1, 1)
    assert "ran on ['chaos-a-r1'] before chaos-a-r2" in figures.details[0]
    book.ledger.deleted_while_running.add(job)
    assert book.figures().losses == 0


def test_logs_are_searched_for_tracebacks_and_every_secret() -> None:
    jit = "eyJ" + "A" * 200
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.sig"
    text = f"ok\nTraceback (most recent call last):\n  x\ntoken ghp_abc123 {jwt}\njit {jit}\n"
    tracebacks, secrets, found = log_findings(text, {"ghp_abc123", "not-there"})
    assert (tracebacks, secrets) == (1, 3)
    assert any("ghp_ab" in line for line in found)
    assert log_findings("runner chaos-a-1f2e started in 0.5s\n", {"ghp_abc123"})[:2] == (0, 0)


def test_a_seed_names_one_plan() -> None:
    assert plan(7, SHORT) == plan(7, SHORT)
    assert plan(7, LONG) != plan(8, LONG)
    kinds = {e.kind for s in plan(3, SHORT) for e in s.events}
    assert {"manifest", "fault", "kill9", "engine-restart", "invalid"} <= kinds


def _load(text: str) -> None:
    load_manifest_text(text, source="fleet.yaml", fmt="yaml", base_dir=Path("/"))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_planned_manifest_is_valid_and_every_broken_one_is_rejected(seed: int) -> None:
    def text(entries: list[dict[str, Any]]) -> str:
        return manifest(
            "chaos-x", url="http://127.0.0.1:1/acme", scale_sets=entries,
            docker={"host": "unix:///tmp/x.sock"},
        )  # fmt: skip

    for scenario in plan(seed, LONG):
        _load(text([s.manifest_entry() for s in scenario.base]))
        for event in scenario.events:
            if event.kind == "manifest":
                _load(text(event.detail["scaleSets"]))
    good = text([s.manifest_entry() for s in plan(seed, LONG)[0].base])
    for how in ("yaml", "min-above-max", "unknown-key"):
        with pytest.raises(ManifestError):
            _load(break_manifest(good, how))


def test_churn_counts_idle_runners_removed_within_seconds_of_their_start() -> None:
    book = Book()
    job = book.job()
    runner = book.run(job, "chaos-a-busy", at=1.0)
    assert book.state.report_result(runner, job, "succeeded", now=2.0)
    book.container("chaos-a-busy", "destroy", at=2.5)
    book.container("chaos-a-spare", "create", at=2.0)
    book.container("chaos-a-spare", "destroy", at=2.4)
    book.container("chaos-a-warm", "create", at=2.0)
    book.container("chaos-a-warm", "destroy", at=9.0)
    assert churn(book.events, book.sampler) == (3, 1)
