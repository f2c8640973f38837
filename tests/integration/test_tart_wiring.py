"""How the operator picks the Tart backend: one per TART_HOME, degraded without `tart`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from runscaler.backends.base import BackendUnavailable
from runscaler.backends.tart import TartBackend
from runscaler.engine.backendpool import BackendPool, UnavailableBackend
from runscaler.manifest.models import ScaleSet
from tests.integration import tartkit
from tests.integration.tartkit import IMAGE, FakeTart

fake_tart = tartkit.fake_tart


def mac(name: str, **tart: Any) -> ScaleSet:
    return ScaleSet.model_validate(
        {
            "name": name,
            "github": {"url": "https://github.com/acme", "auth": {"token": "env:T"}},
            "maxRunners": 2,
            "backend": "tart",
            "tart": {"image": IMAGE, **tart},
        }
    )


async def test_tart_scale_sets_on_one_tart_home_share_one_backend(
    fake_tart: FakeTart, tmp_path: Path
) -> None:
    pool = BackendPool()
    try:
        first = pool.backend_for("macfleet", mac("a"), tmp_path)
        second = pool.backend_for("macfleet", mac("b", poolSize=1), tmp_path)
        other = pool.backend_for("macfleet", mac("c", home="other-home"), tmp_path)
        assert isinstance(first, TartBackend) and first is second
        assert isinstance(other, TartBackend) and other is not first
        assert other.home == tmp_path / "other-home"
        assert first.home == fake_tart.home  # TART_HOME from the environment
        assert first.slots.limit == 2
    finally:
        await pool.close()


async def test_without_tart_on_path_a_tart_scale_set_is_degraded_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    pool = BackendPool()
    try:
        backend = pool.backend_for("macfleet", mac("a"), tmp_path)
        assert isinstance(backend, UnavailableBackend)
        with pytest.raises(BackendUnavailable, match="needs the `tart` CLI on this host"):
            await backend.check(mac("a").tart)
    finally:
        await pool.close()
    assert os.environ["PATH"] == str(tmp_path)
