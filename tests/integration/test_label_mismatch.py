"""A GitHub Enterprise Server without custom scale set labels keeps only the name: `/status`,
`runscaler status`, `run --dry-run` and `doctor` each say so, naming the feature flag.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from rich.console import Console

from runscaler.console.dryrun import render_dry_run
from runscaler.console.status import errors
from runscaler.doctoring.checks import scale_set_check
from runscaler.engine.backendpool import BackendPool
from runscaler.engine.dryrun import check_scale_set
from runscaler.github.client import RetryPolicy
from runscaler.simulator.realism import Realism
from runscaler.simulator.server import Simulator, SimulatorOptions, serve_simulator
from tests.integration.runtimekit import Runtimes, scale_set
from tests.integration.simkit import QUICK
from tests.waiting import eventually

pytestmark = pytest.mark.docker

FLAG = "DistributedTask.AllowRunnerScaleSetCustomLabels"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    """A GHES without the custom labels feature flag."""
    realism = Realism(scale=QUICK.scale, custom_labels=False)
    options = SimulatorOptions(poll_wait=0.3, session_timeout=1.0, realism=realism)
    async with serve_simulator(options) as simulator:
        yield simulator


async def test_status_dry_run_and_doctor_report_labels_ghes_dropped(
    runtimes: Runtimes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = scale_set(runtimes.sim, minRunners=0, maxRunners=1, labels=["gpu"])
    runtime = runtimes.make(spec)
    runtime.start()
    await eventually(
        lambda: runtime.snapshot().label_mismatch, timeout=20, message="the mismatch seen"
    )
    shown = runtime.snapshot().to_json()
    assert "GitHub has the labels linux but the manifest wants gpu, linux" in shown["labelMismatch"]
    assert FLAG in shown["labelMismatch"]
    console = Console(width=400, record=True)
    rendered = errors([{"name": "linux", **shown}])
    assert rendered is not None
    console.print(rendered)
    assert FLAG in console.export_text()

    # run --dry-run: the scale set exists, with the name as its only label.
    pool = BackendPool()
    try:
        result = await check_scale_set(
            spec, fleet=runtimes.fleet, base_dir=tmp_path, pool=pool, retry=RetryPolicy()
        )
    finally:
        await pool.close()
    assert result.ok and result.labels is not None and FLAG in result.labels
    render_dry_run([result])
    err = capsys.readouterr().err
    assert f"linux ({spec.github.url}): warning: GitHub has the labels linux" in err
    assert FLAG in err

    # doctor: a warning, not a failure (the scale set works for jobs asking for its name).
    loaded = SimpleNamespace(fleet=SimpleNamespace(metadata=SimpleNamespace(name=runtimes.fleet)))
    loaded.base_dir = tmp_path
    check = await scale_set_check(loaded, spec, retry=RetryPolicy())  # type: ignore[arg-type]
    assert check.status == "warn"
    assert FLAG in check.detail and "scale set exists" in check.detail


async def test_matching_labels_are_not_reported(runtimes: Runtimes, tmp_path: Path) -> None:
    spec = scale_set(runtimes.sim, minRunners=0, maxRunners=1)  # only the name as a label
    runtime = runtimes.make(spec)
    runtime.start()
    await eventually(
        lambda: runtime.snapshot().state == "listening", timeout=20, message="listening"
    )
    assert runtime.snapshot().to_json()["labelMismatch"] is None
    loaded = SimpleNamespace(fleet=SimpleNamespace(metadata=SimpleNamespace(name=runtimes.fleet)))
    loaded.base_dir = tmp_path
    check = await scale_set_check(loaded, spec, retry=RetryPolicy())  # type: ignore[arg-type]
    assert check.status == "ok"
