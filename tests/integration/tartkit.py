"""The fake `tart` (tests/faketart/tart) first on PATH, on a TART_HOME of the test's own.

- `fake_tart` (function): sets PATH and TART_HOME for the test (the backend passes its
  environment to every `tart` it runs), offers the fake's knobs (`control`, read at every
  call), an independent view of its state (VM directories, running VMs, the argv of every call)
  and `tart()` to act as the user would. Afterwards every fake `tart run` still alive is killed
  with its guest's processes, so no test leaves a process behind.
- `tart_spec()`: a `RunnerSpec` for a Tart template, with a JIT-looking secret.
- `ArgvWatch`: samples /proc/*/cmdline while a start runs, to prove a secret is never in any
  process's arguments.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from runscaler.backends.base import (
    LABEL_FLEET,
    LABEL_RUNNER,
    LABEL_SCALE_SET,
    LABEL_SCALE_SET_KEY,
    LABEL_TEMPLATE,
    RunnerSpec,
)
from runscaler.backends.tart_vm import DETACHED
from runscaler.manifest.models import TartTemplate

FAKE_DIR = Path(__file__).resolve().parent.parent / "faketart"
IMAGE = "ghcr.io/cirruslabs/macos-sequoia-base:latest"


@dataclass
class FakeTart:
    home: Path
    env: dict[str, str] = field(default_factory=dict)

    def control(self, **knobs: object) -> None:
        """Set the fake's knobs (FAKE_TART_* without the prefix, e.g. `CRASH_AFTER=0`)."""
        path = self.home / "fake-control.json"
        current: dict[str, object] = {}
        with contextlib.suppress(OSError, ValueError):
            current = json.loads(path.read_text())
        for key, value in knobs.items():
            name = f"FAKE_TART_{key}"
            if value is None:
                current.pop(name, None)
            else:
                current[name] = value
        self.home.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(current))
        os.replace(tmp, path)

    def state(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.home / "fake-state.json").read_text())
        except (OSError, ValueError):
            return {"running": {}, "oci": [], "prune": []}
        return data

    def calls(self) -> list[list[str]]:
        try:
            text = (self.home / "fake-argv.log").read_text()
        except OSError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def vms(self) -> set[str]:
        vms = self.home / "vms"
        return (
            {p.name for p in vms.iterdir() if (p / "config.json").is_file()}
            if vms.is_dir()
            else set()
        )

    def running(self) -> set[str]:
        alive = set()
        for name, entry in self.state().get("running", {}).items():
            try:
                os.kill(int(entry["pid"]), 0)
            except ProcessLookupError:
                continue
            alive.add(name)
        return alive

    def config(self, vm: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.home / "vms" / vm / "config.json").read_text())
        return data

    def tart(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(FAKE_DIR / "tart"), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=check,
        )

    def run_vm(self, name: str) -> subprocess.Popen[bytes]:
        """`tart run NAME` as the user would start their own VM."""
        process = subprocess.Popen(
            [str(FAKE_DIR / "tart"), "run", name, "--no-graphics"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while name not in self.running():
            assert time.monotonic() < deadline, f"fake VM {name} did not start"
            time.sleep(0.02)
        return process

    def kill_everything(self) -> None:
        for entry in self.state().get("running", {}).values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry["pid"]), signal.SIGTERM)
        deadline = time.monotonic() + 10
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.02)
        for entry in self.state().get("running", {}).values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry["pid"]), signal.SIGKILL)
        for groups in self.home.glob("vms/*/fake-groups"):
            for line in groups.read_text().split():
                with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
                    os.killpg(int(line), signal.SIGKILL)


@pytest.fixture
def fake_tart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTart]:
    home = tmp_path / "tart-home"
    home.mkdir()
    monkeypatch.setenv("TART_HOME", str(home))
    monkeypatch.setenv("PATH", f"{FAKE_DIR}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_TART_IMAGES", IMAGE)
    for key in [k for k in os.environ if k.startswith("FAKE_TART_") and k != "FAKE_TART_IMAGES"]:
        monkeypatch.delenv(key)
    fake = FakeTart(home)
    try:
        yield fake
    finally:
        fake.kill_everything()
        # VMs a closed backend left running (as it does for adoption) were killed just now:
        # reap their `tart run` processes so none lingers as a zombie.
        for process in list(DETACHED):
            if process.poll() is not None:
                DETACHED.remove(process)


def template(**fields: Any) -> TartTemplate:
    return TartTemplate.model_validate({"image": IMAGE, **fields})


def tart_spec(
    name: str,
    *,
    fleet: str = "macfleet",
    key: str = "aaaaaaaaaaaa",
    jit: str | None = None,
    **fields: Any,
) -> RunnerSpec:
    return RunnerSpec(
        name=name,
        jit_config=jit or f"eyJKSVQtc2VjcmV0LWZvci0{name}-cnVubmVyIjoia2V5In0=",
        labels={
            LABEL_FLEET: fleet,
            LABEL_SCALE_SET: "mac",
            LABEL_SCALE_SET_KEY: key,
            LABEL_RUNNER: name,
            LABEL_TEMPLATE: "t1",
        },
        template=template(**fields),
    )


class ArgvWatch:
    """Every process's command line, sampled in a thread while it runs (`seen`)."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.samples = 0
        self.leaks: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ArgvWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        needle = self.secret.encode()
        while not self._stop.is_set():
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                with contextlib.suppress(OSError):
                    data = cmdline.read_bytes()
                    if needle in data:
                        self.leaks.append(data.replace(b"\0", b" ").decode(errors="replace"))
            self.samples += 1
            time.sleep(0.005)
