"""Secret refs resolve where they are used, and never show their value in a message."""

from __future__ import annotations

from pathlib import Path

import pytest

from runscaler.errors import UserError
from runscaler.logs import secrets
from runscaler.manifest.secrets import resolve_secret

VALUE = "s3cr3t-value-123456"


def test_an_env_ref_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNSCALER_TEST_TOKEN", VALUE)
    assert resolve_secret("env:RUNSCALER_TEST_TOKEN", base_dir=Path("/")) == VALUE
    assert secrets.redact(f"token={VALUE}") == "token=***"


def test_an_unset_env_ref_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNSCALER_TEST_TOKEN", raising=False)
    with pytest.raises(UserError) as caught:
        resolve_secret("env:RUNSCALER_TEST_TOKEN", base_dir=Path("/"))
    assert str(caught.value) == (
        "secret env:RUNSCALER_TEST_TOKEN: RUNSCALER_TEST_TOKEN is not set in the environment"
    )


def test_a_file_ref_is_relative_to_the_manifest_and_loses_its_newline(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "token").write_text(VALUE + "\n")
    assert resolve_secret("file:secrets/token", base_dir=tmp_path) == VALUE
    (tmp_path / "crlf").write_bytes(VALUE.encode() + b"\r\n")
    assert resolve_secret(f"file:{tmp_path / 'crlf'}", base_dir=Path("/elsewhere")) == VALUE


def test_a_pem_keeps_its_inner_newlines(tmp_path: Path) -> None:
    pem = "-----BEGIN KEY-----\nAAAABBBBCCCCDDDD\n-----END KEY-----\n"
    (tmp_path / "app.pem").write_text(pem)
    assert resolve_secret("file:app.pem", base_dir=tmp_path) == pem.rstrip("\n")


def test_an_unreadable_file_names_the_ref_and_not_the_value(tmp_path: Path) -> None:
    (tmp_path / "token").mkdir()  # unreadable as a file, even for root
    with pytest.raises(UserError) as caught:
        resolve_secret("file:token", base_dir=tmp_path)
    assert (
        str(caught.value) == f"secret file:token: cannot read {tmp_path / 'token'}: Is a directory"
    )


def test_a_missing_file_names_the_resolved_path(tmp_path: Path) -> None:
    with pytest.raises(UserError) as caught:
        resolve_secret("file:nope/token", base_dir=tmp_path)
    assert str(caught.value) == (
        f"secret file:nope/token: cannot read {tmp_path / 'nope' / 'token'}: "
        "No such file or directory"
    )


def test_an_empty_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("\n")
    with pytest.raises(UserError) as caught:
        resolve_secret("file:token", base_dir=tmp_path)
    assert str(caught.value) == f"secret file:token: {tmp_path / 'token'} is empty"


def test_a_literal_is_its_own_value() -> None:
    assert resolve_secret(VALUE, base_dir=Path("/")) == VALUE
