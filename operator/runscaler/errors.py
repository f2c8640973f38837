"""The error tree every command maps to an exit code.

People read these messages, so each says where, what, and what to do. The tree is small on
purpose: a caller decides how to react by the branch, never by parsing text.

    RunscalerError
    ├── UserError                 exit 1: bad input or usage; the message is the whole story
    │   ├── ManifestError         one or more located diagnostics (FILE:LINE:COL: path: message)
    │   └── ConfigurationError    a setting outside the manifest (flag, environment, server URL)
    └── (anything else)           exit 3: a bug; the traceback goes to <state dir>/crash-*.log

    KeyboardInterrupt             exit 130

The GitHub client's own tree (`runscaler.github.errors`) hangs under `RunscalerError` too, so
no httpx exception escapes that package.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

EXIT_OK = 0
EXIT_USER_ERROR = 1
EXIT_CHANGES = 2  # plan --detailed-exitcode: the plan has changes
EXIT_INTERNAL_ERROR = 3
EXIT_INTERRUPTED = 130


class RunscalerError(Exception):
    """Base of every error runscaler raises on purpose."""


class UserError(RunscalerError):
    """The user can fix this: the message says how. Exit 1, message only."""


class ConfigurationError(UserError):
    """A flag, environment variable or server address is wrong."""


@dataclass(frozen=True)
class Diagnostic:
    """One located finding in a manifest.

    `line` and `col` are 1-based; both are None when the input has no location for it (a
    missing file, an empty document). `path` is the field path as users read it:
    `scaleSets[2] (linux-x64).maxRunners`; empty for whole-document problems.
    """

    file: str
    message: str
    path: str = ""
    line: int | None = None
    col: int | None = None
    severity: str = "error"  # "error" | "warning"

    def located(self) -> str:
        """The one-line form: `FILE:LINE:COL: path: message` (parts without a value left out)."""
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.col is not None:
                where += f":{self.col}"
        parts = [where]
        if self.severity == "warning":
            parts.append("warning")
        if self.path:
            parts.append(self.path)
        parts.append(self.message)
        return ": ".join(parts)


class ManifestError(UserError):
    """A manifest that cannot be used, with every problem found in it."""

    def __init__(
        self, diagnostics: Sequence[Diagnostic], *, warnings: Sequence[Diagnostic] = ()
    ) -> None:
        self.diagnostics = tuple(diagnostics)
        self.warnings = tuple(warnings)  # found too; `validate` shows them beside the errors
        first = self.diagnostics[0].located() if self.diagnostics else "invalid manifest"
        more = len(self.diagnostics) - 1
        super().__init__(first if more <= 0 else f"{first} (and {more} more)")
