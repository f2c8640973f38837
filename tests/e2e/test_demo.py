"""`runscaler demo` as a user runs it: a real process, the real engine, and nothing left behind.

Each run's work directory goes under the test's own TMPDIR, so "no temp dir left" is checked by
that directory being empty afterwards; its fleet name comes from the demo's first line.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from runscaler.backends.base import LABEL_FLEET
from tests.waiting import eventually_sync

pytestmark = pytest.mark.docker

FLEET_LINE = re.compile(r"^demo fleet (demo-[0-9a-f]+): ", re.MULTILINE)
# The token the demo makes up for itself: it must never be printed.
DEMO_TOKEN = re.compile(r"demo_[0-9a-f]{32}")
RUNNING = re.compile(r"jobs: \d+ waiting, [1-9]\d* running")


def demo_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "runscaler", "demo", *args]


def demo_env(tmp: Path, **extra: str) -> dict[str, str]:
    """TMPDIR and the state directory (where a failed demo keeps its log) under `tmp`'s parent."""
    tmp.mkdir(exist_ok=True)
    state = tmp.parent / "state"
    return {**os.environ, "TMPDIR": str(tmp), "XDG_STATE_HOME": str(state), **extra}


def fleet_containers(fleet: str, *, running: bool = False) -> list[str]:
    """The fleet's containers (only the running ones with `running`)."""
    listed = subprocess.run(
        ["docker", "ps", "-q" if running else "-aq", "--filter", f"label={LABEL_FLEET}={fleet}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return listed.stdout.split()


@dataclass
class Demo:
    """A demo process whose stdout is read line by line as it comes."""

    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def stdout(self) -> str:
        return "".join(self.lines)


@pytest.fixture
def start_demo(runner_image: str) -> Iterator[list[Demo]]:
    demos: list[Demo] = []
    yield demos
    for demo in demos:
        if demo.process.poll() is None:
            demo.process.kill()
        demo.process.wait(timeout=30)
        if demo.reader is not None:
            demo.reader.join(timeout=30)
        for stream in (demo.process.stdout, demo.process.stderr):
            if stream is not None:
                stream.close()


def test_demo_runs_a_burst_scales_back_down_and_prints_a_summary(
    runner_image: str, tmp_path: Path
) -> None:
    done = subprocess.run(
        demo_command("--jobs", "4", "--duration", "0.5"),
        capture_output=True,
        text=True,
        env=demo_env(tmp_path / "tmp"),
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    found = FLEET_LINE.search(out)
    assert found, out
    assert "enqueued 4 jobs: 3 for linux, 1 for linux-big\n" in out
    assert "scaling down | linux: 0 busy, 1 idle, 0 starting | linux-big: 0 busy, 0 idle" in out
    summary = out[out.index("demo summary\n") :].splitlines()
    assert summary[1] == "  jobs run:        4 (4 succeeded)"
    assert re.fullmatch(
        r"  pickup latency:  p50 \d+\.\d\d s, p95 \d+\.\d\d s"
        r" \(from queued to started on a runner\)",
        summary[2],
    )
    peak = re.fullmatch(r"  peak runners:    (\d) \(linux (\d), linux-big (\d)\)", summary[3])
    assert peak, summary[3]
    assert 2 <= int(peak[1]) <= 5 and 1 <= int(peak[2]) <= 4 and int(peak[3]) == 1
    assert re.fullmatch(r"  total time:      \d+\.\d s", summary[4])
    assert not DEMO_TOKEN.search(out + done.stderr)
    assert fleet_containers(found[1]) == []
    assert list((tmp_path / "tmp").iterdir()) == []


def test_ctrl_c_ends_the_demo_with_130_and_removes_its_busy_runners(
    start_demo: list[Demo], tmp_path: Path
) -> None:
    process = subprocess.Popen(
        demo_command("--jobs", "3", "--duration", "60"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=demo_env(tmp_path / "tmp"),
    )
    demo = Demo(process)
    demo.reader = threading.Thread(target=demo.read, daemon=True)
    demo.reader.start()
    start_demo.append(demo)
    eventually_sync(
        lambda: RUNNING.search(demo.stdout), timeout=60, message="jobs running in the demo"
    )
    fleet = FLEET_LINE.search(demo.stdout)
    assert fleet
    assert fleet_containers(fleet[1]) != []

    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 130
    demo.reader.join(timeout=30)
    assert process.stderr is not None
    assert process.stderr.read().splitlines()[-1] == "runscaler: interrupted"
    assert "demo interrupted: what ran so far\n" in demo.stdout
    assert "  jobs run:        0, 3 not finished\n" in demo.stdout
    assert fleet_containers(fleet[1]) == []
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_demo_whose_runners_cannot_start_fails_in_one_line_and_keeps_its_log(
    runner_image: str, tmp_path: Path
) -> None:
    image = f"runscaler-test/no-such-image:{os.getpid()}"
    done = subprocess.run(
        demo_command("--jobs", "2", "--image", image),
        capture_output=True,
        text=True,
        env=demo_env(tmp_path / "tmp"),
        timeout=110,
        check=False,
    )
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    kept = re.fullmatch(
        rf"runscaler: runners of linux keep failing: image {re.escape(image)} is not on Docker"
        r" at \S+ and docker.pull is never: .* \(the demo's log: (\S+)\)",
        line,
    )
    assert kept, line
    log = Path(kept[1])
    assert log.parent == tmp_path / "state" / "runscaler"
    assert "could not start runner linux-" in log.read_text()
    fleet = FLEET_LINE.search(done.stdout)
    assert fleet
    assert "demo summary" not in done.stdout
    assert fleet_containers(fleet[1]) == []
    assert list((tmp_path / "tmp").iterdir()) == []


def test_without_an_engine_the_demo_says_how_to_start_one(tmp_path: Path) -> None:
    done = subprocess.run(
        demo_command(),
        capture_output=True,
        text=True,
        env=demo_env(tmp_path / "tmp", DOCKER_HOST=f"unix://{tmp_path}/no-engine.sock"),
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (
        "runscaler: the Docker engine does not answer: start it with scripts/ensure-docker, "
        "or run `make demo` in the runscaler checkout\n"
    )


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
RUNNING_LIVE = re.compile(r"jobs: \d+ waiting · [1-9]\d* running")  # the live view's line


def test_closing_the_demos_terminal_removes_everything_it_started(tmp_path: Path) -> None:
    """The demo on a real pseudo-terminal as its controlling terminal; closing the terminal's
    side hangs it up (SIGHUP, then EIO on every write), as closing a terminal window does."""
    import fcntl
    import pty
    import termios

    controller, terminal = pty.openpty()
    fcntl.ioctl(controller, termios.TIOCSWINSZ, b"\x18\x00\x78\x00\x00\x00\x00\x00")  # 24x120

    def take_the_terminal() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    process = subprocess.Popen(
        demo_command("--jobs", "3", "--duration", "60"),
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env=demo_env(tmp_path / "tmp", TERM="xterm"),
        start_new_session=True,
        preexec_fn=take_the_terminal,  # runs before exec, in the child alone
    )
    os.close(terminal)
    shown: list[str] = []

    def screen() -> str:
        try:
            shown.append(os.read(controller, 65536).decode(errors="replace"))
        except OSError:
            pass
        return ANSI.sub("", "".join(shown))

    try:
        os.set_blocking(controller, False)
        eventually_sync(
            lambda: RUNNING_LIVE.search(screen()) and FLEET_LINE.search(screen()),
            timeout=90,
            message="jobs running in the demo's live view",
        )
        found = FLEET_LINE.search(screen())
        assert found
        fleet = found[1]
        assert fleet_containers(fleet) != []
        assert f"runscaler doctor --fix --fleet {fleet}" in screen()

        os.close(controller)  # the terminal window closes
        controller = -1

        assert process.wait(timeout=90) == 130
        assert fleet_containers(fleet) == []
        assert list((tmp_path / "tmp").iterdir()) == []
    finally:
        if controller >= 0:
            os.close(controller)
        if process.poll() is None:
            process.terminate()  # the demo's own cleanup, not a kill -9 that leaves runners
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_after_kill_9_doctor_names_the_demo_fleet_and_fix_removes_its_runners(
    start_demo: list[Demo], tmp_path: Path
) -> None:
    env = demo_env(tmp_path / "tmp")
    process = subprocess.Popen(
        demo_command("--jobs", "2", "--duration", "60"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    demo = Demo(process)
    demo.reader = threading.Thread(target=demo.read, daemon=True)
    demo.reader.start()
    start_demo.append(demo)
    eventually_sync(
        lambda: RUNNING.search(demo.stdout), timeout=60, message="jobs running in the demo"
    )
    found = FLEET_LINE.search(demo.stdout)
    assert found
    fleet = found[1]
    assert f"if it is killed (kill -9): runscaler doctor --fix --fleet {fleet}\n" in demo.stdout

    process.kill()
    process.wait(timeout=30)
    assert fleet_containers(fleet) != []  # what only kill -9 may leave behind

    def doctor(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "runscaler", "doctor", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=120,
            check=False,
        )

    # Its runners lost their simulator; they give up after their retry time (15 s) and exit.
    eventually_sync(
        lambda: fleet_containers(fleet, running=True) == [],
        timeout=90,
        message="the runners to exit",
    )
    listed = doctor()
    assert (
        f"run `runscaler doctor --fix --fleet {fleet}` to remove them (a registered runner is kept)"
    ) in listed.stdout.splitlines(), listed.stdout
    fixed = doctor("--fix", "--fleet", fleet)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert fleet_containers(fleet) == [], fixed.stdout
