"""The operator's Prometheus metrics: ARC's `gha_*` series plus runscaler's own.

Dashboards and alerts built for actions-runner-controller's listener keep working: the `gha_*`
names, types, labels and histogram buckets are ARC's (`cmd/ghalistener/metrics`), with `name`
the scale set. Gauges are computed at scrape time from a fresh `FleetStatus` snapshot, so they
are never stale and a removed scale set disappears. Job and runner events are pushed as they
happen (`FleetMetrics`) into counters and histograms kept here.

Everything lives in this object's own `CollectorRegistry`, never the global one, so several
operators (or tests) in one process do not collide, and counters carry no `_created` series.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from runscaler.engine.status import FleetStatus, ScaleSetStatus
from runscaler.github.models import JobCompleted, JobMessage, JobStarted
from runscaler.manifest.models import ScaleSet
from runscaler.manifest.values import parse_config_url

# ARC's default buckets for job durations: 45 bounds from 10 ms to one hour.
DURATION_BUCKETS: tuple[float, ...] = (
    0.01, 0.05, 0.1, 0.5, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 15, 18, 20, 25, 30,
    40, 50, 60, 70, 80, 90, 100, 110, 120, 150, 180, 210, 240, 300, 360, 420, 480, 540, 600,
    900, 1200, 1800, 2400, 3000, 3600,
)  # fmt: skip

SCALE_SET_LABELS = ("name", "organization", "repository", "enterprise")
JOB_LABELS = (*SCALE_SET_LABELS, "job_name", "event_name")
COMPLETED_JOB_LABELS = (*JOB_LABELS, "job_result")
RUNNER_STATES = ("starting", "idle", "busy", "draining")
SCALE_SET_STATES = ("starting", "listening", "standby", "draining", "suspended", "degraded")
RELOAD_RESULTS = ("success", "failure")
FAILURE_REASONS = ("start_failed", "exited_early", "crash_loop", "drain_timeout")

# (name, help, what it reads from a scale set's snapshot)
_GAUGES: tuple[tuple[str, str, Callable[[ScaleSetStatus], int]], ...] = (
    ("gha_assigned_jobs", "Number of jobs assigned to this scale set.", lambda s: s.assigned_jobs),
    ("gha_running_jobs", "Number of jobs running (or about to run).", lambda s: s.running_jobs),
    (
        "gha_registered_runners",
        "Number of runners registered by the scale set.",
        lambda s: s.registered_runners,
    ),
    ("gha_busy_runners", "Number of registered runners running a job.", lambda s: s.busy),
    ("gha_idle_runners", "Number of registered runners not running a job.", lambda s: s.idle),
    ("gha_min_runners", "Minimum number of runners.", lambda s: s.min_runners),
    ("gha_max_runners", "Maximum number of runners.", lambda s: s.max_runners),
    ("gha_desired_runners", "Number of runners desired by the scale set.", lambda s: s.desired),
)

Labels = tuple[str, ...]


@dataclass
class _Histogram:
    """Observations per label set, bucketed as Prometheus wants them (cumulative at export)."""

    bounds: tuple[float, ...]
    series: dict[Labels, tuple[list[int], list[float]]] = field(default_factory=dict)

    def observe(self, labels: Labels, value: float) -> None:
        counts, total = self.series.setdefault(labels, ([0] * (len(self.bounds) + 1), [0.0]))
        counts[bisect.bisect_left(self.bounds, value)] += 1
        total[0] += value

    def family(self, name: str, documentation: str, label_names: Labels) -> Metric:
        family = HistogramMetricFamily(name, documentation, labels=label_names)
        for labels, (counts, total) in sorted(self.series.items()):
            cumulative, buckets = 0, []
            for bound, count in zip((*self.bounds, float("inf")), counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else _bound(bound), cumulative))
            family.add_metric(labels, buckets, total[0])
        return family


def _bound(value: float) -> str:
    return repr(float(value))


@functools.lru_cache(maxsize=1024)
def _scope(url: str) -> tuple[str, str, str]:
    """(organization, repository, enterprise) of a config URL; empty strings if unparsable."""
    try:
        parsed = parse_config_url(url)
    except ValueError:
        return ("", "", "")
    return (parsed.organization, parsed.repository, parsed.enterprise)


def scale_set_labels(scale_set: ScaleSet) -> Labels:
    """`name, organization, repository, enterprise` for a scale set of the manifest."""
    organization, repository, enterprise = _scope(scale_set.github.url)
    return (scale_set.name, organization, repository, enterprise)


def job_labels(scale_set: ScaleSet, job: JobMessage) -> Labels:
    """ARC's job labels: the job's own owner and repository (the scale set's when the job does
    not say), the scale set's enterprise, the job's display name and triggering event."""
    name, organization, repository, enterprise = scale_set_labels(scale_set)
    return (
        name,
        job.owner_name or organization,
        job.repository_name or repository,
        enterprise,
        job.job_display_name,
        job.event_name,
    )


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    """`end - start` in seconds; None when either is missing or they are out of order."""
    if start is None or end is None:
        return None
    seconds = (end - start).total_seconds()
    return seconds if seconds >= 0 else None


class Metrics:
    """`FleetMetrics` for the engine, and the registry `/metrics` serves."""

    def __init__(self, status: Callable[[], FleetStatus]) -> None:
        self._status = status
        self._started: dict[Labels, int] = {}
        self._completed: dict[Labels, int] = {}
        self._failures: dict[Labels, int] = {}
        self._startup = _Histogram(DURATION_BUCKETS)
        self._execution = _Histogram(DURATION_BUCKETS)
        self._runner_start = _Histogram(DURATION_BUCKETS)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    # -- FleetMetrics ----------------------------------------------------------------------

    def job_started(self, scale_set: ScaleSet, job: JobStarted) -> None:
        labels = job_labels(scale_set, job)
        self._started[labels] = self._started.get(labels, 0) + 1
        startup = _seconds(job.scale_set_assign_time, job.runner_assign_time)
        if startup is not None:
            self._startup.observe(labels, startup)

    def job_completed(self, scale_set: ScaleSet, job: JobCompleted) -> None:
        labels = (*job_labels(scale_set, job), job.result)
        self._completed[labels] = self._completed.get(labels, 0) + 1
        execution = _seconds(job.runner_assign_time, job.finish_time)
        if execution is not None:
            self._execution.observe(labels, execution)

    def runner_started(self, scale_set: ScaleSet, seconds: float) -> None:
        self._runner_start.observe((scale_set.name,), max(seconds, 0.0))

    def runner_failed(self, scale_set: ScaleSet, reason: str) -> None:
        labels = (scale_set.name, reason)
        self._failures[labels] = self._failures.get(labels, 0) + 1

    # -- the collector `prometheus_client` calls at scrape time ----------------------------

    def describe(self) -> Iterable[Metric]:
        # Without this the registry would call collect() (and so status()) at registration.
        return ()

    def collect(self) -> Iterator[Metric]:
        status = self._status()
        yield from _scale_set_gauges(status.scale_sets)
        yield _runner_states(status.scale_sets)
        yield _node_runners(status.scale_sets)
        yield _scale_set_states(status.scale_sets)
        yield from _reload_metrics(status)
        yield _counter(
            "gha_started_jobs", "Total number of jobs started.", JOB_LABELS, self._started
        )
        yield _counter(
            "gha_completed_jobs",
            "Total number of jobs completed.",
            COMPLETED_JOB_LABELS,
            self._completed,
        )
        yield self._startup.family(
            "gha_job_startup_duration_seconds",
            "Time from the job's assignment to the scale set to a runner taking it, in seconds.",
            JOB_LABELS,
        )
        yield self._execution.family(
            "gha_job_execution_duration_seconds",
            "Time spent executing jobs, from a runner taking the job to its end, in seconds.",
            COMPLETED_JOB_LABELS,
        )
        # Every reason of every current scale set, 0 until it happens: `increase()` then sees
        # the first failure too.
        failures: dict[Labels, int] = {
            (s.name, reason): 0 for s in status.scale_sets for reason in FAILURE_REASONS
        }
        yield _counter(
            "runscaler_runner_failures",
            "Runners that failed, by reason: "
            "start_failed, exited_early, crash_loop, drain_timeout.",
            ("scale_set", "reason"),
            {**failures, **self._failures},
        )
        yield _counter(
            "runscaler_messages_unparseable",
            "Messages from GitHub that could not be parsed (acknowledged and skipped).",
            ("scale_set",),
            _unparseable(status.scale_sets),
        )
        yield self._runner_start.family(
            "runscaler_runner_start_duration_seconds",
            "Time from deciding to start a runner to its container or VM running, in seconds.",
            ("scale_set",),
        )


def _unparseable(scale_sets: tuple[ScaleSetStatus, ...]) -> dict[Labels, int]:
    totals: dict[Labels, int] = {}
    for s in scale_sets:
        totals[(s.name,)] = totals.get((s.name,), 0) + s.messages_unparseable
    return totals


def _counter(
    name: str, documentation: str, label_names: Labels, values: dict[Labels, int]
) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=label_names)
    for labels, value in sorted(values.items()):
        family.add_metric(labels, value)
    return family


def _summed(rows: Iterable[tuple[Labels, float]]) -> list[tuple[Labels, float]]:
    """Rows with equal labels added up: two scale sets of one name on different hosts would
    otherwise make duplicate series, which Prometheus rejects whole."""
    totals: dict[Labels, float] = {}
    for labels, value in rows:
        totals[labels] = totals.get(labels, 0) + value
    return sorted(totals.items())


def _scale_set_gauges(scale_sets: tuple[ScaleSetStatus, ...]) -> Iterator[Metric]:
    for name, documentation, read in _GAUGES:
        family = GaugeMetricFamily(name, documentation, labels=SCALE_SET_LABELS)
        rows = (
            ((s.name, s.organization, s.repository, s.enterprise), float(read(s)))
            for s in scale_sets
        )
        for labels, value in _summed(rows):
            family.add_metric(labels, value)
        yield family


def _runner_counts(scale_set: ScaleSetStatus) -> dict[str, int]:
    """Runners by state; every runner of a draining scale set counts as draining."""
    counts = {"starting": scale_set.starting, "idle": scale_set.idle, "busy": scale_set.busy}
    if scale_set.state == "draining":
        return {"starting": 0, "idle": 0, "busy": 0, "draining": sum(counts.values())}
    return {**counts, "draining": 0}


def _runner_states(scale_sets: tuple[ScaleSetStatus, ...]) -> Metric:
    family = GaugeMetricFamily(
        "runscaler_runners",
        "Runners this operator owns, by scale set and state.",
        labels=("scale_set", "state"),
    )
    rows = (
        ((s.name, state), float(count))
        for s in scale_sets
        for state, count in _runner_counts(s).items()
    )
    for labels, value in _summed(rows):
        family.add_metric(labels, value)
    return family


def _node_runners(scale_sets: tuple[ScaleSetStatus, ...]) -> Metric:
    """Runners per node, for backends that place them (Swarm): a node failure shows as its
    runners turning `lost`. Only nodes with runners are listed."""
    family = GaugeMetricFamily(
        "runscaler_node_runners",
        "Runners by scale set, node and state, for backends that place runners on nodes.",
        labels=("scale_set", "node", "state"),
    )
    rows = (((s.name, r.node, r.state), 1.0) for s in scale_sets for r in s.runners if r.node)
    for labels, value in _summed(rows):
        family.add_metric(labels, value)
    return family


def _scale_set_states(scale_sets: tuple[ScaleSetStatus, ...]) -> Metric:
    """1 for each scale set's current state and 0 for the others, so an alert can ask for a
    scale set that has not been listening for a while."""
    family = GaugeMetricFamily(
        "runscaler_scale_sets",
        "Scale sets by name and state: "
        "starting, listening, standby, draining, suspended, degraded.",
        labels=("scale_set", "state"),
    )
    rows = (
        ((s.name, state), 1.0 if s.state == state else 0.0)
        for s in scale_sets
        for state in SCALE_SET_STATES
    )
    for labels, value in _summed(rows):
        family.add_metric(labels, value)
    return family


def _reload_metrics(status: FleetStatus) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "runscaler_manifest_last_reload_successful",
        "Whether the last manifest reload was applied (1) or rejected (0).",
        value=1.0 if status.reload.ok else 0.0,
    )
    success = GaugeMetricFamily(
        "runscaler_manifest_last_reload_success_timestamp_seconds",
        "Unix time of the last manifest reload that was applied.",
    )
    if status.reload.success_at is not None:
        success.add_metric((), status.reload.success_at)
    yield success
    reloads = CounterMetricFamily(
        "runscaler_manifest_reloads",
        "Manifest reloads by result: success (applied) or failure (rejected).",
        labels=("result",),
    )
    for result in RELOAD_RESULTS:
        reloads.add_metric((result,), status.reloads.get(result, 0))
    yield reloads
    yield GaugeMetricFamily(
        "runscaler_manifest_generation",
        "The generation of the manifest being applied; it grows by one per applied reload.",
        value=float(status.generation),
    )
