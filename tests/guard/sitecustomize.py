"""Loaded by every Python subprocess a test starts (the directory is put on PYTHONPATH)."""

import os

if os.environ.get("RUNSCALER_TEST_LOOPBACK_ONLY") == "1":
    import loopback_only

    loopback_only.install()
