"""The loopback-only guard for the standalone entry, as `tests/conftest.py` installs it for
pytest: this process and every Python child (the operator) may reach loopback only."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

GUARD_DIR = Path(__file__).resolve().parents[1] / "guard"


def install_guard() -> Path:
    """Install it here, pass it on to children; the log where children report violations."""
    sys.path.insert(0, str(GUARD_DIR))
    import loopback_only

    loopback_only.install()
    log = Path(tempfile.mkstemp(prefix="runscaler-chaos-guard-", suffix=".log")[1])
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(GUARD_DIR), os.environ.get("PYTHONPATH", "")) if p
    )
    os.environ["RUNSCALER_TEST_LOOPBACK_ONLY"] = "1"
    os.environ["RUNSCALER_TEST_GUARD_LOG"] = str(log)
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        os.environ.pop(name, None)
    os.environ["NO_PROXY"] = "*"
    return log
