"""The errors and warnings found in one manifest, each located and worded the same way.

Both validation layers report here; identical findings (the same inherited default found
wrong in every scale set) are kept once, and the final list reads top to bottom.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from runscaler.errors import Diagnostic
from runscaler.manifest.positions import FieldPath, SourceMap, format_path


class Findings:
    def __init__(self, file: str, source: SourceMap, document: Any) -> None:
        self.file = file
        self.source = source
        self.document = document
        self._items: dict[Diagnostic, None] = {}

    def add(
        self,
        path: FieldPath,
        message: str,
        *,
        severity: str = "error",
        where: FieldPath | None = None,
        at_key: bool = False,
    ) -> None:
        """Record a finding about `path`, located at `where` (default: `path` itself)."""
        mark = self.source.locate(path if where is None else where, at_key=at_key)
        diagnostic = Diagnostic(
            file=self.file,
            message=message,
            path=format_path(path, self.document),
            line=mark.line if mark else None,
            col=mark.col if mark else None,
            severity=severity,
        )
        self._items.setdefault(diagnostic, None)

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        return _ordered(d for d in self._items if d.severity == "error")

    @property
    def warnings(self) -> tuple[Diagnostic, ...]:
        return _ordered(d for d in self._items if d.severity == "warning")


def _ordered(diagnostics: Iterable[Diagnostic]) -> tuple[Diagnostic, ...]:
    return tuple(sorted(diagnostics, key=lambda d: (d.line or 0, d.col or 0)))


def _squash(key: str) -> str:
    return key.lower().replace("-", "").replace("_", "")


def suggest(word: str, known: Iterable[str]) -> str | None:
    """The known key `word` was probably meant to be: `max_runners` → `maxRunners`."""
    candidates = list(known)
    for candidate in candidates:
        if _squash(candidate) == _squash(word):
            return candidate
    by_squashed = {_squash(c): c for c in candidates}
    close = difflib.get_close_matches(_squash(word), list(by_squashed), n=1, cutoff=0.75)
    return by_squashed[close[0]] if close else None
