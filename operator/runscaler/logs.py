"""Logging setup (text or JSON lines) with secret redaction on every record.

Secrets (tokens, private keys, JIT configs) must never reach a log line, whoever logs them and
however (a message argument, an exception, a library's debug output). Code that resolves or
receives a secret registers it with `secrets.add()`; a filter on the root handler replaces every
registered value in the final text with `***`. Registering is cheap and forgetting is explicit
(a runner's JIT config is forgotten when the runner is gone), so the set stays small.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import Any, TextIO

REDACTED = "***"
# Values shorter than this are not secrets worth redacting (and would mangle ordinary text).
_MIN_SECRET_LENGTH = 8


class SecretRegistry:
    """The set of secret strings that must not appear in output."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, int] = {}

    def add(self, value: str | None) -> None:
        if not value or len(value) < _MIN_SECRET_LENGTH:
            return
        with self._lock:
            self._values[value] = self._values.get(value, 0) + 1
            # A PEM key is also logged line by line by some libraries.
            for line in value.splitlines():
                line = line.strip()
                if len(line) >= _MIN_SECRET_LENGTH and not line.startswith("-----"):
                    self._values.setdefault(line, 0)

    def discard(self, value: str | None) -> None:
        if not value:
            return
        with self._lock:
            count = self._values.get(value, 0) - 1
            if count > 0:
                self._values[value] = count
            else:
                self._values.pop(value, None)

    def redact(self, text: str) -> str:
        with self._lock:
            values = sorted(self._values, key=len, reverse=True)
        for value in values:
            if value in text:
                text = text.replace(value, REDACTED)
        return text


secrets = SecretRegistry()


class _Redacting(logging.Formatter):
    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self._inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return secrets.redact(self._inner.format(record))


class _JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("scale_set", "runner", "generation", "job_id", "result", "duration"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


_TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Configure the root logger once per process: one handler, redacting."""
    handler = logging.StreamHandler(stream or sys.stderr)
    inner: logging.Formatter = (
        _JSONFormatter() if fmt == "json" else logging.Formatter(_TEXT_FORMAT)
    )
    handler.setFormatter(_Redacting(inner))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Library chatter is useful only when asked for explicitly.
    quiet = logging.DEBUG if level.lower() == "debug" else logging.WARNING
    for name in ("httpx", "httpcore", "aiohttp.access", "watchfiles", "asyncio"):
        logging.getLogger(name).setLevel(max(quiet, logging.getLogger().level))
