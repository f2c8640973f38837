"""The Prometheus exposition: ARC's `gha_*` series and runscaler's own, by table.

Job events carry the timestamps GitHub sends; the durations, counts and label values are
checked in the text a scrape returns, and `promtool check metrics` lints a scrape with every
series present.
"""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from runscaler.engine.status import FleetStatus, ReloadStatus, RunnerStatus
from runscaler.github.models import JobCompleted, JobStarted
from runscaler.manifest.models import ScaleSet
from runscaler.metrics import DURATION_BUCKETS, SCALE_SET_STATES, Metrics
from tests.fakeoperator import fleet_status, scale_set_status

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def scale_set(name: str = "linux", url: str = "https://github.com/acme") -> ScaleSet:
    return ScaleSet.model_validate(
        {"name": name, "github": {"url": url, "auth": {"token": "env:T"}}}
    )


def started(
    *, assigned: float | None = 0.0, taken: float | None = 7.0, **fields: Any
) -> JobStarted:
    values: dict[str, Any] = {
        "owner_name": "acme",
        "repository_name": "web",
        "job_display_name": "build (linux)",
        "event_name": "push",
        "scale_set_assign_time": None if assigned is None else T0 + timedelta(seconds=assigned),
        "runner_assign_time": None if taken is None else T0 + timedelta(seconds=taken),
    }
    values.update(fields)
    return JobStarted(**values)


def completed(
    *, taken: float | None = 0.0, finished: float | None = 70.0, result: str = "succeeded"
) -> JobCompleted:
    return JobCompleted(
        owner_name="acme",
        repository_name="web",
        job_display_name="build (linux)",
        event_name="push",
        result=result,
        runner_assign_time=None if taken is None else T0 + timedelta(seconds=taken),
        finish_time=None if finished is None else T0 + timedelta(seconds=finished),
    )


def scrape(metrics: Metrics) -> str:
    return generate_latest(metrics.registry).decode()


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample called `name` in a scrape: sorted label pairs -> value."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def labels(**values: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(values.items()))


SCALE_SET = {"name": "linux", "organization": "acme", "repository": "", "enterprise": ""}
JOB = {
    "name": "linux",
    "organization": "acme",
    "repository": "web",
    "enterprise": "",
    "job_name": "build (linux)",
    "event_name": "push",
}


@pytest.mark.parametrize(
    ("metric", "field", "value"),
    [
        ("gha_assigned_jobs", "assigned_jobs", 5),
        ("gha_running_jobs", "running_jobs", 4),
        ("gha_registered_runners", "registered_runners", 6),
        ("gha_busy_runners", "busy", 4),
        ("gha_idle_runners", "idle", 2),
        ("gha_min_runners", "min_runners", 1),
        ("gha_max_runners", "max_runners", 20),
        ("gha_desired_runners", "desired", 6),
    ],
)
def test_scale_set_gauges_read_the_current_status(metric: str, field: str, value: int) -> None:
    metrics = Metrics(lambda: fleet_status(scale_set_status("linux", **{field: value})))

    assert samples(scrape(metrics), metric) == {labels(**SCALE_SET): value}


def test_gauges_are_computed_at_scrape_time_so_a_removed_scale_set_disappears() -> None:
    current = [fleet_status(scale_set_status("linux"), scale_set_status("arm", desired=2))]
    metrics = Metrics(lambda: current[0])

    first = samples(scrape(metrics), "gha_desired_runners")
    current[0] = fleet_status(scale_set_status("linux", desired=9))
    second = samples(scrape(metrics), "gha_desired_runners")

    assert first == {labels(**SCALE_SET): 3, labels(**{**SCALE_SET, "name": "arm"}): 2}
    assert second == {labels(**SCALE_SET): 9}


@pytest.mark.parametrize(
    ("url", "scope"),
    [
        ("https://github.com/acme", {"organization": "acme", "repository": "", "enterprise": ""}),
        (
            "https://github.com/acme/web",
            {"organization": "acme", "repository": "web", "enterprise": ""},
        ),
        (
            "https://ghe.example.com/enterprises/big",
            {"organization": "", "repository": "", "enterprise": "big"},
        ),
    ],
)
def test_job_counters_take_the_scope_of_the_scale_set_url(url: str, scope: dict[str, str]) -> None:
    metrics = Metrics(fleet_status)
    job = started(owner_name="", repository_name="")

    metrics.job_started(scale_set("linux", url), job)

    expected = {**JOB, **scope}
    assert samples(scrape(metrics), "gha_started_jobs_total") == {labels(**expected): 1}


def test_job_labels_use_the_job_s_own_owner_and_repository_as_arc_does() -> None:
    metrics = Metrics(fleet_status)

    metrics.job_started(scale_set(url="https://github.com/acme"), started(repository_name="api"))

    assert samples(scrape(metrics), "gha_started_jobs_total") == {
        labels(**{**JOB, "repository": "api"}): 1
    }


def test_started_jobs_count_and_their_startup_time_is_runner_minus_scale_set_assign_time() -> None:
    metrics = Metrics(fleet_status)

    metrics.job_started(scale_set(), started(assigned=0, taken=7))
    metrics.job_started(scale_set(), started(assigned=10, taken=12.5))
    text = scrape(metrics)

    assert samples(text, "gha_started_jobs_total") == {labels(**JOB): 2}
    assert samples(text, "gha_job_startup_duration_seconds_count") == {labels(**JOB): 2}
    assert samples(text, "gha_job_startup_duration_seconds_sum") == {labels(**JOB): 9.5}
    buckets = samples(text, "gha_job_startup_duration_seconds_bucket")
    assert buckets[labels(**JOB, le="2.0")] == 0
    assert buckets[labels(**JOB, le="3.0")] == 1  # 2.5 s
    assert buckets[labels(**JOB, le="7.0")] == 2  # 7 s: a bound is inclusive
    assert buckets[labels(**JOB, le="+Inf")] == 2


@pytest.mark.parametrize(
    ("assigned", "taken"),
    [(None, 7.0), (0.0, None), (None, None), (10.0, 5.0)],
    ids=["no-scale-set-assign-time", "no-runner-assign-time", "neither", "out-of-order"],
)
def test_startup_time_is_skipped_without_both_timestamps_but_the_job_counts(
    assigned: float | None, taken: float | None
) -> None:
    metrics = Metrics(fleet_status)

    metrics.job_started(scale_set(), started(assigned=assigned, taken=taken))
    text = scrape(metrics)

    assert samples(text, "gha_started_jobs_total") == {labels(**JOB): 1}
    assert samples(text, "gha_job_startup_duration_seconds_count") == {}


@pytest.mark.parametrize("result", ["succeeded", "failed", "canceled"])
def test_completed_jobs_carry_the_result_and_their_execution_time(result: str) -> None:
    metrics = Metrics(fleet_status)

    metrics.job_completed(scale_set(), completed(taken=5, finished=65, result=result))
    text = scrape(metrics)

    key = labels(**JOB, job_result=result)
    assert samples(text, "gha_completed_jobs_total") == {key: 1}
    assert samples(text, "gha_job_execution_duration_seconds_sum") == {key: 60}
    assert samples(text, "gha_job_execution_duration_seconds_count") == {key: 1}


@pytest.mark.parametrize(("taken", "finished"), [(None, 60.0), (0.0, None)])
def test_execution_time_is_skipped_when_a_timestamp_is_missing(
    taken: float | None, finished: float | None
) -> None:
    metrics = Metrics(fleet_status)

    metrics.job_completed(scale_set(), completed(taken=taken, finished=finished))
    text = scrape(metrics)

    assert samples(text, "gha_completed_jobs_total") == {labels(**JOB, job_result="succeeded"): 1}
    assert samples(text, "gha_job_execution_duration_seconds_count") == {}


def test_histograms_use_arc_s_45_buckets_from_10ms_to_an_hour() -> None:
    metrics = Metrics(fleet_status)

    metrics.job_started(scale_set(), started())
    bounds = [
        dict(key)["le"]
        for key in samples(scrape(metrics), "gha_job_startup_duration_seconds_bucket")
    ]

    assert len(DURATION_BUCKETS) == 45
    assert DURATION_BUCKETS[0] == 0.01 and DURATION_BUCKETS[-1] == 3600
    assert list(DURATION_BUCKETS) == sorted(DURATION_BUCKETS)
    assert len(bounds) == 46 and bounds[-1] == "+Inf"


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("listening", {"starting": 1, "idle": 2, "busy": 3, "draining": 0}),
        ("degraded", {"starting": 1, "idle": 2, "busy": 3, "draining": 0}),
        ("draining", {"starting": 0, "idle": 0, "busy": 0, "draining": 6}),
    ],
)
def test_runners_by_state(state: str, expected: dict[str, int]) -> None:
    status = fleet_status(scale_set_status("linux", state=state, starting=1, idle=2, busy=3))
    metrics = Metrics(lambda: status)

    found = samples(scrape(metrics), "runscaler_runners")

    assert found == {labels(scale_set="linux", state=s): n for s, n in expected.items()}


def test_runners_by_node_count_placed_runners_and_show_the_lost_ones() -> None:
    def runner(name: str, state: str, node: str | None) -> RunnerStatus:
        return RunnerStatus(name, state, 0.0, None, "t1", node=node)

    placed = (
        runner("a", "busy", "node-1"),
        runner("b", "idle", "node-1"),
        runner("c", "idle", "node-1"),
        runner("d", "lost", "node-2"),
        runner("e", "idle", None),  # not placed by the backend (Docker): not listed
    )
    status = fleet_status(scale_set_status("linux", runners=placed))
    metrics = Metrics(lambda: status)

    found = samples(scrape(metrics), "runscaler_node_runners")

    assert found == {
        labels(scale_set="linux", node="node-1", state="busy"): 1,
        labels(scale_set="linux", node="node-1", state="idle"): 2,
        labels(scale_set="linux", node="node-2", state="lost"): 1,
    }


@pytest.mark.parametrize("state", ["listening", "standby", "degraded", "suspended"])
def test_scale_sets_by_state_mark_the_current_one(state: str) -> None:
    status = fleet_status(scale_set_status("linux", state=state))
    metrics = Metrics(lambda: status)

    found = samples(scrape(metrics), "runscaler_scale_sets")

    expected = {s: 1.0 if s == state else 0.0 for s in SCALE_SET_STATES}
    assert found == {labels(scale_set="linux", state=s): n for s, n in expected.items()}


def test_two_scale_sets_with_the_same_labels_are_added_up_not_duplicated() -> None:
    status = fleet_status(
        scale_set_status("linux", url="https://github.com/acme", desired=2),
        scale_set_status("linux", url="https://ghe.example.com/acme", desired=5),
    )
    metrics = Metrics(lambda: status)

    assert samples(scrape(metrics), "gha_desired_runners") == {labels(**SCALE_SET): 7}


@pytest.mark.parametrize(
    ("reload", "successful", "timestamp"),
    [
        (ReloadStatus(ok=True, at=100.0, error=None, success_at=100.0), 1, {(): 100.0}),
        (
            ReloadStatus(ok=False, at=200.0, error="f.yaml:1:1: bad", success_at=100.0),
            0,
            {(): 100.0},
        ),
        (ReloadStatus(ok=False, at=200.0, error="f.yaml:1:1: bad", success_at=None), 0, {}),
    ],
)
def test_manifest_reload_metrics(
    reload: ReloadStatus, successful: int, timestamp: dict[Any, float]
) -> None:
    status = fleet_status(reload=reload, generation=4, reloads={"success": 4, "failure": 2})
    metrics = Metrics(lambda: status)

    text = scrape(metrics)

    assert samples(text, "runscaler_manifest_last_reload_successful") == {(): successful}
    assert samples(text, "runscaler_manifest_last_reload_success_timestamp_seconds") == timestamp
    assert samples(text, "runscaler_manifest_reloads_total") == {
        labels(result="success"): 4,
        labels(result="failure"): 2,
    }
    assert samples(text, "runscaler_manifest_generation") == {(): 4}


def test_reload_results_are_present_before_any_reload() -> None:
    metrics = Metrics(lambda: fleet_status(reloads={}))

    assert samples(scrape(metrics), "runscaler_manifest_reloads_total") == {
        labels(result="success"): 0,
        labels(result="failure"): 0,
    }


def test_runner_failures_count_by_reason_and_every_reason_starts_at_zero() -> None:
    metrics = Metrics(lambda: fleet_status(scale_set_status("linux")))

    metrics.runner_failed(scale_set(), "exited_early")
    metrics.runner_failed(scale_set(), "exited_early")
    metrics.runner_failed(scale_set(), "crash_loop")

    assert samples(scrape(metrics), "runscaler_runner_failures_total") == {
        labels(scale_set="linux", reason="start_failed"): 0,
        labels(scale_set="linux", reason="exited_early"): 2,
        labels(scale_set="linux", reason="crash_loop"): 1,
        labels(scale_set="linux", reason="drain_timeout"): 0,
    }


def test_runner_start_durations_are_a_histogram_per_scale_set() -> None:
    metrics = Metrics(fleet_status)

    metrics.runner_started(scale_set("linux"), 1.5)
    metrics.runner_started(scale_set("linux"), 4.0)
    metrics.runner_started(scale_set("arm"), 30.0)
    text = scrape(metrics)

    assert samples(text, "runscaler_runner_start_duration_seconds_count") == {
        labels(scale_set="arm"): 1,
        labels(scale_set="linux"): 2,
    }
    assert samples(text, "runscaler_runner_start_duration_seconds_sum")[
        labels(scale_set="linux")
    ] == pytest.approx(5.5)


def test_label_values_with_quotes_and_newlines_are_escaped() -> None:
    metrics = Metrics(fleet_status)

    metrics.job_started(scale_set(), started(job_display_name='say "hi"\nthen \\ bye'))

    assert samples(scrape(metrics), "gha_started_jobs_total") == {
        labels(**{**JOB, "job_name": 'say "hi"\nthen \\ bye'}): 1
    }


def test_each_metrics_object_has_its_own_registry() -> None:
    one, two = Metrics(fleet_status), Metrics(fleet_status)

    one.job_started(scale_set(), started())

    assert samples(scrape(one), "gha_started_jobs_total") == {labels(**JOB): 1}
    assert samples(scrape(two), "gha_started_jobs_total") == {}


def test_counters_have_no_created_series() -> None:
    metrics = Metrics(fleet_status)
    metrics.job_started(scale_set(), started())

    assert "_created" not in scrape(metrics)


def test_unparseable_messages_count_per_scale_set_from_zero() -> None:
    status = fleet_status(
        scale_set_status("linux", messages_unparseable=2), scale_set_status("mac")
    )
    metrics = Metrics(lambda: status)

    found = samples(scrape(metrics), "runscaler_messages_unparseable_total")

    assert found == {labels(scale_set="linux"): 2, labels(scale_set="mac"): 0}


def full_status() -> FleetStatus:
    return fleet_status(
        scale_set_status("linux"),
        scale_set_status("mac", state="draining", url="https://github.com/acme/ios"),
        scale_set_status("big", url="https://ghe.example.com/enterprises/big", enterprise="big"),
    )


def every_series() -> Metrics:
    metrics = Metrics(full_status)
    for name in ("linux", "mac", "big"):
        metrics.job_started(scale_set(name), started())
        metrics.job_completed(scale_set(name), completed())
        metrics.job_completed(scale_set(name), completed(result="failed"))
        metrics.runner_started(scale_set(name), 3.0)
        for reason in ("start_failed", "exited_early", "crash_loop", "drain_timeout"):
            metrics.runner_failed(scale_set(name), reason)
    return metrics


EVERY_NAME = {
    "gha_assigned_jobs",
    "gha_running_jobs",
    "gha_registered_runners",
    "gha_busy_runners",
    "gha_idle_runners",
    "gha_min_runners",
    "gha_max_runners",
    "gha_desired_runners",
    "gha_started_jobs_total",
    "gha_completed_jobs_total",
    "gha_job_startup_duration_seconds_bucket",
    "gha_job_execution_duration_seconds_bucket",
    "runscaler_runners",
    "runscaler_scale_sets",
    "runscaler_manifest_last_reload_successful",
    "runscaler_manifest_last_reload_success_timestamp_seconds",
    "runscaler_manifest_reloads_total",
    "runscaler_manifest_generation",
    "runscaler_runner_failures_total",
    "runscaler_runner_start_duration_seconds_bucket",
    "runscaler_messages_unparseable_total",
}


def test_a_scrape_with_every_series_passes_promtool_check_metrics() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    text = scrape(every_series())
    present = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    assert EVERY_NAME <= present

    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )

    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout + check.stderr == ""


def test_gha_series_carry_exactly_arc_s_labels() -> None:
    text = scrape(every_series())
    expected = {
        "gha_desired_runners": {"name", "organization", "repository", "enterprise"},
        "gha_started_jobs_total": {*JOB},
        "gha_job_startup_duration_seconds_count": {*JOB},
        "gha_completed_jobs_total": {*JOB, "job_result"},
        "gha_job_execution_duration_seconds_count": {*JOB, "job_result"},
    }

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in expected:
                assert set(sample.labels) == expected[sample.name], sample.name
