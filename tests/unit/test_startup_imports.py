"""`runscaler run` imports at start only what it needs: every heavy module made lazy stays out.

An operator with 100 scale sets must fit in 60 MiB, and a third of that used to be modules it
never used (rich's progress bars under a service manager, httpx's command-line client with
click and pygments, PyJWT and cryptography for token credentials). One import at module level
brings any of them back without a failing test elsewhere, so this one checks, in a fresh
interpreter, what the startup path of `run` (the CLI's parser, the command, the operator with
its backends, server and GitHub client) leaves in `sys.modules`.
"""

from __future__ import annotations

import json
import subprocess
import sys

# Imported only where they are used: drawing a terminal display, signing a GitHub App JWT,
# validating against the JSON schema (`runscaler schema`/editors), httpx's CLI (never).
LAZY = (
    "rich",
    "pygments",
    "click",
    "markdown_it",
    "jwt",
    "cryptography",
    "jsonschema",
    "plistlib",  # and its XML parser: for a launchd unit (`runscaler service`)
    "aiohttp",  # the simulator's web framework: the operator's server and engine client are not
    "aiodocker",
)

STARTUP = """
import json, sys
from runscaler import cli
cli.build_parser(only="run")  # as `runscaler run ...` does: no other command's module
import runscaler.commands.run
# What `runscaler.commands.run.main` imports before the operator starts.
from runscaler.engine.running import Operator, RunSettings, run_operator
from runscaler.engine.timing import scaled_timing
from runscaler.logs import setup_logging
from runscaler.manifest.loading import load_manifest
from runscaler.github.client import ScaleSetClient
from runscaler.github.tokens import AdminTokens
# What the first Docker or Swarm scale set loads.
import runscaler.backends.docker, runscaler.backends.swarm, runscaler.backends.docker_sweep
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules} | set(sys.modules))))
"""


def startup_modules(code: str = STARTUP) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(done.stdout))


def test_run_startup_imports_none_of_the_lazy_heavy_modules() -> None:
    loaded = startup_modules()
    assert "runscaler" in loaded and "httpx" in loaded  # the probe did import the operator
    assert sorted(loaded.intersection(LAZY)) == []
    # Tart's backend is loaded for the first Tart scale set, not by every Docker fleet.
    assert "runscaler.backends.tart" not in loaded
    assert sorted(m for m in loaded if m.startswith("runscaler.commands.")) == [
        "runscaler.commands.run"
    ]


def test_the_lazy_modules_still_load_where_they_are_needed() -> None:
    loaded = startup_modules(
        "import json, sys\n"
        "from runscaler.github.auth import AppCredentials, create_app_jwt\n"
        "from runscaler.console.pulls import RichPullProgress\n"
        "from rich.console import Console\n"
        "import io\n"
        "p = RichPullProgress(Console(file=io.StringIO()))\n"
        "p.pull_started('alpine:3'); p.pull_finished('alpine:3', error='refused')\n"
        "try:\n"
        "    create_app_jwt(AppCredentials('Iv1.x', 1, 'not a key'))\n"
        "except Exception as exc:\n"
        "    assert 'not a valid PEM RSA key' in str(exc), exc\n"
        "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))\n"
    )
    assert {"rich", "jwt", "cryptography"} <= loaded
