"""The real operator's `/metrics`, after jobs ran, is what Prometheus and promtool accept."""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from tests.e2e.conftest import E2E
from tests.e2e.operatorkit import metric_value
from tests.waiting import eventually

pytestmark = pytest.mark.docker


async def promtool_check(text: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        ["promtool", "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_metrics_after_jobs_pass_promtool(e2e: E2E) -> None:
    path = e2e.write(
        e2e.manifest([{"name": "linux", "maxRunners": 3}, {"name": "arm64", "maxRunners": 1}])
    )
    operator = e2e.start(path)
    await operator.wait_ready()
    await eventually(lambda: e2e.session("arm64"), timeout=10, message="listening")
    ids = e2e.sim.add_jobs(["linux"], count=2, duration=0.2)
    ids += e2e.sim.add_jobs(["linux"], duration=0.2, result="failed")
    await eventually(
        lambda: all(j["state"] == "done" for j in e2e.jobs(ids)), timeout=30, message="jobs done"
    )

    async def counted() -> str | None:
        text = await operator.metrics()
        # Job events arrive late and in any order across messages: wait for all three.
        failed = metric_value(text, "gha_completed_jobs_total", name="linux", job_result="failed")
        succeeded = metric_value(
            text, "gha_completed_jobs_total", name="linux", job_result="succeeded"
        )
        return text if (failed, succeeded) == (1, 2) else None

    text = await eventually(counted, timeout=10, message="the completed jobs counted")
    checked = await promtool_check(text)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout + checked.stderr == ""
    labels = {"name": "linux", "organization": "acme"}
    assert metric_value(text, "gha_started_jobs_total", **labels) is not None
    assert metric_value(text, "gha_completed_jobs_total", **labels, job_result="succeeded") == 2
    assert metric_value(text, "gha_job_execution_duration_seconds_count", **labels) is not None
    assert metric_value(text, "gha_max_runners", name="arm64") == 1
    assert metric_value(text, "runscaler_runner_start_duration_seconds_count", scale_set="linux")
    assert metric_value(text, "runscaler_manifest_generation") == 1
