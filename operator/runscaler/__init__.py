"""runscaler: auto-scaled ephemeral GitHub Actions runners from a git-committed fleet manifest."""

__version__ = "0.1.0.dev0"

import sys as _sys

# httpx imports its command-line client at import time when click, pygments and rich are
# installed (rich is, for our console): about 10 MiB in every process that only makes requests.
# runscaler never runs httpx's CLI; a None entry makes httpx fall back to its stub `main`.
_sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
