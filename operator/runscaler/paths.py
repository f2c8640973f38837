"""Where runscaler looks for things by default: the manifest and the state directory."""

from __future__ import annotations

import os
from pathlib import Path


def default_manifest_path() -> Path:
    """`$RUNSCALER_MANIFEST` when set, else `./fleet.yaml`."""
    return Path(os.environ.get("RUNSCALER_MANIFEST") or "fleet.yaml")


def default_state_dir() -> Path:
    """`$XDG_STATE_HOME/runscaler`, else `~/.local/state/runscaler`."""
    base = os.environ.get("XDG_STATE_HOME")
    root = Path(base) if base else Path.home() / ".local" / "state"
    return root / "runscaler"
