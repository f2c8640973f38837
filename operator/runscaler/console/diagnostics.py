"""Manifest errors and warnings for people (text), programs (JSON) and GitHub (annotations).

Text is one located line per finding, `FILE:LINE:COL: path: message`, at most 20 per file
and then a count, so a badly broken file does not bury the first problem. JSON carries every
finding. GitHub workflow commands are escaped as @actions/core escapes them, so a message
with a `%`, a newline, a `:` or a `,` in it arrives whole.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from runscaler.errors import Diagnostic

MAX_SHOWN = 20
JSON_FORMAT_VERSION = "1"


@dataclass(frozen=True)
class FileResult:
    """What `validate` found in one file."""

    file: str
    valid: bool
    scale_sets: int | None  # None when the file is invalid
    diagnostics: tuple[Diagnostic, ...]

    @property
    def errors(self) -> int:
        return sum(1 for d in self.diagnostics if d.severity == "error")

    @property
    def warnings(self) -> int:
        return sum(1 for d in self.diagnostics if d.severity == "warning")


def text_lines(diagnostics: Sequence[Diagnostic], *, limit: int = MAX_SHOWN) -> list[str]:
    """One line per finding, the first `limit` of them, then how many more there are."""
    lines = [d.located() for d in diagnostics[:limit]]
    hidden = diagnostics[limit:]
    if hidden:
        errors = sum(1 for d in diagnostics if d.severity == "error")
        in_all = f"{errors} error{'s' if errors != 1 else ''}"
        warnings = len(diagnostics) - errors
        if warnings:
            in_all += f" and {warnings} warning{'s' if warnings != 1 else ''}"
        lines.append(f"{hidden[0].file}: {len(hidden)} more not shown ({in_all} in all)")
    return lines


def summary_line(result: FileResult) -> str:
    if not result.valid:
        return f"{result.file}: invalid"
    count = result.scale_sets or 0
    line = f"{result.file}: valid ({count} scale set{'s' if count != 1 else ''})"
    if result.warnings:
        line += f", {result.warnings} warning{'s' if result.warnings != 1 else ''}"
    return line


def json_document(results: Sequence[FileResult]) -> str:
    """A stable document: every finding of every file, and whether each file is valid."""
    document = {
        "format_version": JSON_FORMAT_VERSION,
        "valid": all(r.valid for r in results),
        "files": [
            {
                "file": r.file,
                "valid": r.valid,
                "scaleSets": r.scale_sets,
                "errors": r.errors,
                "warnings": r.warnings,
            }
            for r in results
        ],
        "diagnostics": [
            {
                "file": d.file,
                "line": d.line,
                "col": d.col,
                "path": d.path,
                "message": d.message,
                "severity": d.severity,
            }
            for r in results
            for d in r.diagnostics
        ],
    }
    return json.dumps(document, indent=2, ensure_ascii=False)


def github_annotation(diagnostic: Diagnostic) -> str:
    """`::error file=F,line=L,col=C::path: message`, escaped for the runner."""
    command = "warning" if diagnostic.severity == "warning" else "error"
    properties = [f"file={escape_property(diagnostic.file)}"]
    if diagnostic.line is not None:
        properties.append(f"line={diagnostic.line}")
        if diagnostic.col is not None:
            properties.append(f"col={diagnostic.col}")
    message = f"{diagnostic.path}: {diagnostic.message}" if diagnostic.path else diagnostic.message
    return f"::{command} {','.join(properties)}::{escape_data(message)}"


def escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")
