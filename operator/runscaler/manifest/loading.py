"""Load a manifest: file → text → data → the two validation layers → a `Fleet`.

This is the one way into a manifest for every command and for the running operator, so
whatever is wrong with the input (a missing file, bad syntax, wrong types, a semantic rule)
comes out as a `ManifestError` of located one-line diagnostics, never another exception.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from runscaler.errors import Diagnostic, ManifestError
from runscaler.manifest.findings import Findings
from runscaler.manifest.models import Fleet
from runscaler.manifest.positions import Mark, SourceMap
from runscaler.manifest.schema_check import check_schema, check_version
from runscaler.manifest.semantics import ScaleSetChecker
from runscaler.manifest.toml_reading import TOMLProblem, read_toml
from runscaler.manifest.yaml_reading import YAMLProblem, read_yaml

MAX_BYTES = 1024 * 1024
"""A manifest larger than this is refused before it is parsed."""

Format = Literal["yaml", "toml"]
_SUFFIXES: dict[str, Format] = {".yaml": "yaml", ".yml": "yaml", ".toml": "toml"}


@dataclass(frozen=True)
class LoadedManifest:
    fleet: Fleet
    path: Path  # as given
    base_dir: Path  # the manifest's directory: relative paths in it resolve against it
    sha256: str  # of the raw bytes
    warnings: tuple[Diagnostic, ...]


def load_manifest(path: Path, *, strict: bool = False, check_env: bool = False) -> LoadedManifest:
    """Read, parse and validate the manifest at `path`; `ManifestError` on any problem."""
    name = str(path)
    try:
        fmt = format_of(path)
        raw = _read(path)
    except ValueError:  # os calls refuse a NUL in a file name
        raise _error(name, "not a valid file name") from None
    return load_manifest_text(
        raw,
        source=name,
        fmt=fmt,
        base_dir=path.absolute().parent,
        strict=strict,
        check_env=check_env,
    )


def load_manifest_text(
    text: str | bytes,
    *,
    source: str,
    fmt: Literal["yaml", "toml"],
    base_dir: Path,
    strict: bool = False,
    check_env: bool = False,
) -> LoadedManifest:
    """Validate manifest text that did not come from a file (`plan --against git:REF`)."""
    raw = text.encode("utf-8") if isinstance(text, str) else text
    if len(raw) > MAX_BYTES:
        raise _error(source, _too_large(len(raw)))
    decoded = _decode(raw, source)
    data, positions = _parse(decoded, source=source, fmt=fmt)
    findings = Findings(source, positions, data)
    fleet = _validate(data, findings, base_dir=base_dir, strict=strict, check_env=check_env)
    return LoadedManifest(
        fleet=fleet,
        path=Path(source),
        base_dir=base_dir,
        sha256=hashlib.sha256(raw).hexdigest(),
        warnings=findings.warnings,
    )


def format_of(path: Path) -> Format:
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        if path.is_dir():
            raise _error(str(path), _IS_A_DIRECTORY)
        raise _error(
            str(path), "not a manifest file name: use .yaml, .yml or .toml (e.g. fleet.yaml)"
        )
    return fmt


_IS_A_DIRECTORY = "is a directory; give the manifest file inside it (e.g. fleet.yaml)"


def _read(path: Path) -> bytes:
    name = str(path)
    try:
        if path.is_dir():
            raise _error(name, _IS_A_DIRECTORY)
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise _error(name, _too_large(size))
        with path.open("rb") as handle:
            raw = handle.read(MAX_BYTES + 1)  # a special file may not know its size
    except FileNotFoundError:
        raise _error(name, "no such file (create one with `runscaler init`)") from None
    except IsADirectoryError:
        raise _error(name, _IS_A_DIRECTORY) from None
    except OSError as exc:
        raise _error(name, f"cannot read the manifest: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:
        raise _error(name, _too_large(len(raw)))
    return raw


def _too_large(size: int) -> str:
    return (
        f"the manifest is {size / MAX_BYTES:.1f} MiB, over the 1 MiB limit "
        "(is this the right file?)"
    )


def _decode(raw: bytes, source: str) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        line_start = raw.rfind(b"\n", 0, exc.start) + 1
        col = len(raw[line_start : exc.start].decode("utf-8", errors="replace")) + 1
        byte = raw[exc.start]
        raise ManifestError(
            [
                Diagnostic(
                    file=source,
                    message=f"not UTF-8 text (byte 0x{byte:02x}); save the manifest as UTF-8",
                    line=line,
                    col=col,
                )
            ]
        ) from None
    return text.removeprefix("\ufeff")


def _parse(text: str, *, source: str, fmt: Format) -> tuple[Any, SourceMap]:
    try:
        data, positions = read_yaml(text) if fmt == "yaml" else read_toml(text)
    except (YAMLProblem, TOMLProblem) as problem:
        raise _error(source, problem.message, problem.mark) from None
    if data is None or data == {}:
        raise _error(
            source,
            "the manifest is empty: it needs apiVersion, kind, metadata and scaleSets "
            "(`runscaler init` writes one)",
        )
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else "a single value"
        raise _error(
            source,
            f"the top level must be a mapping (apiVersion, kind, metadata, scaleSets), got {kind}",
            positions.locate(()),
        )
    return data, positions


def _validate(
    data: dict[str, Any],
    findings: Findings,
    *,
    base_dir: Path,
    strict: bool,
    check_env: bool,
) -> Fleet:
    if not check_version(data, findings):
        raise ManifestError(findings.errors, warnings=findings.warnings)
    bad = check_schema(data, findings)
    checker = ScaleSetChecker(data, findings, schema_errors=bad)
    valid = checker.validate()
    checker.warn(valid)
    if check_env:
        checker.check_env(valid, base_dir=base_dir)
    errors = findings.errors
    if strict:
        errors = tuple(
            sorted(
                (*errors, *(_as_error(w) for w in findings.warnings)),
                key=lambda d: (d.line or 0, d.col or 0),
            )
        )
    if errors:
        raise ManifestError(errors, warnings=() if strict else findings.warnings)
    try:
        return Fleet.model_validate(
            {
                "apiVersion": data["apiVersion"],
                "kind": data["kind"],
                "metadata": data["metadata"],
                "scaleSets": [valid[i] for i in sorted(valid)],
            }
        )
    except ValidationError as exc:  # the schema accepted it: only a model rule can be left
        for error in exc.errors(include_url=False, include_input=False):
            findings.add(tuple(error["loc"]), str(error["msg"]).removeprefix("Value error, "))
        raise ManifestError(findings.errors, warnings=findings.warnings) from None


def _as_error(warning: Diagnostic) -> Diagnostic:
    return Diagnostic(
        file=warning.file,
        message=f"{warning.message} (an error with --strict)",
        path=warning.path,
        line=warning.line,
        col=warning.col,
    )


def _error(source: str, message: str, mark: Mark | None = None) -> ManifestError:
    return ManifestError(
        [
            Diagnostic(
                file=source,
                message=message,
                line=mark.line if mark else None,
                col=mark.col if mark else None,
            )
        ]
    )
