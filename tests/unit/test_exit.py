"""The operator's exit skips the interpreter's teardown but nothing an exit must do."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _exit_in_child(body: str) -> subprocess.CompletedProcess[str]:
    script = textwrap.dedent(
        """
        import atexit, logging, sys, threading, time
        from runscaler.cli import exit_without_teardown
        logging.basicConfig(stream=sys.stderr, format="%(message)s")
        atexit.register(lambda: print("atexit ran", file=sys.stderr))
        """
    ) + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )


def test_the_exit_code_buffered_output_logs_and_atexit_functions_survive() -> None:
    done = _exit_in_child(
        """
        sys.stdout.write("buffered, no newline")
        logging.getLogger("x").warning("stopped")
        exit_without_teardown(3)
        print("not reached")
        """
    )
    assert done.returncode == 3
    assert done.stdout == "buffered, no newline"
    assert done.stderr.splitlines() == ["stopped", "atexit ran"]


def test_a_thread_still_running_is_waited_for_as_by_an_ordinary_exit() -> None:
    done = _exit_in_child(
        """
        def late() -> None:
            time.sleep(0.3)
            print("thread finished", flush=True)
        threading.Thread(target=late).start()
        exit_without_teardown(0)
        """
    )
    assert done.returncode == 0
    assert done.stdout == "thread finished\n"
    assert "atexit ran" in done.stderr
