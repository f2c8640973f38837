"""The operator's HTTP server loads no aiohttp: it alone cost ~11 MiB of the operator's memory.

In a fresh interpreter, so modules other tests imported do not hide one brought back.
"""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
import runscaler.server
print(json.dumps(sorted(sys.modules)))
"""


def test_importing_the_server_loads_no_aiohttp() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(json.loads(done.stdout))

    assert "runscaler.server" in loaded and "h11" in loaded  # the probe did import the server
    assert sorted(m for m in loaded if m == "aiohttp" or m.startswith("aiohttp.")) == []
