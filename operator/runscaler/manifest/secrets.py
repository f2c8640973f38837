"""Secret refs resolved where they are used: `env:NAME`, `file:PATH`, or a literal.

The manifest keeps refs as written, so a rotated `file:` secret is read again on every
reload. Every value resolved here is registered for redaction before it is returned, and no
message names a value: only the ref.
"""

from __future__ import annotations

import os
from pathlib import Path

from runscaler.errors import UserError
from runscaler.logs import secrets
from runscaler.manifest.values import split_secret_ref


def resolve_path(path: str, *, base_dir: Path) -> Path:
    """A path as written in the manifest: `~` expanded, relative to the manifest's directory."""
    expanded = Path(path).expanduser()
    return expanded if expanded.is_absolute() else base_dir / expanded


def resolve_secret(ref: str, *, base_dir: Path) -> str:
    """The secret's value; a `UserError` naming the ref (never the value) when it has none."""
    value, problem = _resolve(ref, base_dir=base_dir)
    if problem is not None:
        raise UserError(problem)
    secrets.add(value)
    return value


def secret_problem(ref: str, *, base_dir: Path) -> str | None:
    """What keeps the ref from resolving (for `validate --check-env`), or None."""
    value, problem = _resolve(ref, base_dir=base_dir)
    if problem is None:
        secrets.add(value)
    return problem


def path_problem(path: str, *, base_dir: Path) -> str | None:
    """Why a file named in the manifest (caBundle, tls.*) cannot be read, or None."""
    where = resolve_path(path, base_dir=base_dir)
    try:
        with where.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        return f"cannot read {where}: {exc.strerror or exc}"
    return None


def _resolve(ref: str, *, base_dir: Path) -> tuple[str, str | None]:
    parts = split_secret_ref(ref)
    if parts.kind == "literal":
        return ref, None if ref else "a secret must not be empty"
    if parts.kind == "env":
        value = os.environ.get(parts.value)
        if value is None:
            return "", f"secret {ref}: {parts.value} is not set in the environment"
        if not value:
            return "", f"secret {ref}: {parts.value} is set but empty"
        return value, None
    where = resolve_path(parts.value, base_dir=base_dir)
    try:
        raw = where.read_bytes()
    except OSError as exc:
        return "", f"secret {ref}: cannot read {where}: {exc.strerror or exc}"
    try:
        value = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        return "", f"secret {ref}: {where} is not UTF-8 text"
    if not value:
        return "", f"secret {ref}: {where} is empty"
    return value, None
