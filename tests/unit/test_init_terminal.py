"""`runscaler init` on a real pseudo-terminal: the prompts a person sees, answered one by one."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from runscaler.manifest.loading import load_manifest


class Terminal:
    """A child process on a pseudo-terminal; `expect` reads until text shows up (or fails)."""

    def __init__(self, args: list[str], *, cwd: Path) -> None:
        self.master, slave = pty.openpty()
        self.process = subprocess.Popen(
            args, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, close_fds=True
        )
        os.close(slave)
        self.seen = ""

    def expect(self, text: str, *, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{text!r} did not appear; the terminal shows:\n{self.seen}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:  # the child closed the terminal
                    chunk = b""
                if not chunk:
                    raise AssertionError(
                        f"{text!r} never appeared; the terminal shows:\n{self.seen}"
                    )
                self.seen += chunk.decode(errors="replace").replace("\r\n", "\n")

    def send(self, line: str) -> None:
        os.write(self.master, f"{line}\n".encode())

    def close(self) -> int:
        """Wait for the child to finish (a stuck one, waiting for input, is killed)."""
        try:
            return self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=10)
        finally:
            os.close(self.master)


def test_the_prompts_on_a_terminal_write_the_answers_into_a_valid_manifest(tmp_path: Path) -> None:
    target = tmp_path / "fleet.yaml"
    term = Terminal([sys.executable, "-m", "runscaler", "init", str(target)], cwd=tmp_path)
    try:
        term.expect("Fleet name [")
        term.send("acme-ci")
        term.expect("GitHub URL (https://HOST/ORG or /ORG/REPO): ")
        term.send("github.com/acme")
        term.expect("--url: invalid URL 'github.com/acme': use https://HOST/ORG (or /ORG/REPO)")
        term.expect("GitHub URL (https://HOST/ORG or /ORG/REPO): ")
        term.send("https://github.com/acme")
        term.expect("Sign in with a token or a GitHub App? (token/app) [token]: ")
        term.send("")
        term.expect("Environment variable holding the token [GITHUB_TOKEN]: ")
        term.send("RUNNER_TOKEN")
        term.expect("Scale set name (its runs-on label) [linux]: ")
        term.send("linux-x64")
        term.expect("Max runners at once [10]: ")
        term.send("")
        term.expect("Runner image [ghcr.io/actions/actions-runner:latest]: ")
        term.send("")
        term.expect(
            f"wrote {target}: fleet acme-ci, scale set linux-x64 on https://github.com/acme"
        )
    finally:
        code = term.close()
    assert code == 0, term.seen
    (scale_set,) = load_manifest(target).fleet.scale_sets
    assert (scale_set.name, scale_set.max_runners) == ("linux-x64", 10)
    assert scale_set.github.auth.token == "env:RUNNER_TOKEN"
