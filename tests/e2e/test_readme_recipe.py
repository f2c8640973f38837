"""The README's "Without GitHub" recipe, as written: `runscaler simulator --build-runner-image`,
its `sim-fleet.yaml`, a dry run, the operator, a job enqueued with the README's curl body, and
`runscaler status --runners` — real processes, the real engine, and only the port (and, on
this shared engine, the fleet's name) changed."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.operatorkit import OperatorProcess, containers, runscaler_command
from tests.waiting import eventually

pytestmark = [pytest.mark.docker, pytest.mark.slow]

README = Path(__file__).parents[2] / "README.md"
MARKER = "<!-- sim-fleet.yaml: checked by tests/e2e/test_readme_recipe.py -->"


def recipe_manifest() -> str:
    text = README.read_text()
    after = text[text.index(MARKER) + len(MARKER) :]
    found = re.search(r"```yaml\n(.*?)```", after, re.DOTALL)
    assert found, "no yaml block after the marker"
    return found.group(1)


def recipe_curl_body() -> dict[str, object]:
    found = re.search(r"curl -d '(\{.*?\})' http://127\.0\.0\.1:9000/_sim/jobs", README.read_text())
    assert found, "no curl line in the recipe"
    body: dict[str, object] = json.loads(found.group(1))
    return body


def _json(request: urllib.request.Request | str) -> dict[str, Any]:
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, Any] = json.load(response)
    return answer


@pytest.fixture
def simulator() -> Iterator[str]:
    process = subprocess.Popen(
        runscaler_command("simulator", "--listen", "127.0.0.1:0", "--build-runner-image"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline().strip()
        assert first.startswith("simulator listening on http://127.0.0.1:"), first
        yield first.rsplit(" ", 1)[1]
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
        assert "runner image: runscaler-sim-runner:latest is built" in err


async def test_the_simulator_recipe_runs_a_job_as_written(simulator: str, tmp_path: Path) -> None:
    fleet = f"try-it-{secrets.token_hex(3)}"
    text = recipe_manifest().replace("http://127.0.0.1:9000", simulator)
    text = text.replace("name: try-it\n", f"name: {fleet}\n", 1)
    manifest = tmp_path / "sim-fleet.yaml"
    manifest.write_text(text)
    env = {**os.environ, "GITHUB_TOKEN": "anything", "XDG_STATE_HOME": str(tmp_path / "state")}

    checked = await asyncio.to_thread(
        subprocess.run,
        runscaler_command("run", str(manifest), "--dry-run"),
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "(pull: never)" in checked.stdout  # the backend cell may wrap

    operator = OperatorProcess.start(
        [str(manifest), "--listen", "127.0.0.1:0", "--state-dir", str(tmp_path / "state")],
        log_path=tmp_path / "operator.log",
        env=env,
    )
    try:
        url = await operator.wait_ready()
        assert re.search(r"fleet try-it-\w+: running 1 scale set; serving ", operator.log_text())
        body = {**recipe_curl_body(), "duration": 1}  # the README's, one second long
        enqueue = urllib.request.Request(
            f"{simulator}/_sim/jobs",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        ids = (await asyncio.to_thread(_json, enqueue))["ids"]
        assert len(ids) == body["count"]

        async def jobs_done() -> bool:
            jobs = (await asyncio.to_thread(_json, f"{simulator}/_sim/state"))["jobs"]
            return all(job["state"] == "done" for job in jobs if job["id"] in ids)

        await eventually(jobs_done, timeout=90, message="the recipe's jobs to complete")
        shown = await asyncio.to_thread(
            subprocess.run,
            runscaler_command("status", "--server", url, "--runners"),
            capture_output=True,
            text=True,
            env={**env, "COLUMNS": "80"},
            timeout=30,
            check=True,
        )
        assert shown.stdout.startswith(f"fleet {fleet} · generation 1")
        assert re.search(r"^linux\s+listening\s", shown.stdout, re.MULTILINE), shown.stdout
    finally:
        operator.stop()
    assert operator.process.returncode == 0, operator.log_text()
    assert await containers(fleet) == []
