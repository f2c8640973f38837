"""The state file as durable intent: what the fleet owns and what it is deleting survive."""

from __future__ import annotations

import json
from pathlib import Path

from runscaler.engine.statefile import StateFile


def test_ownership_and_deleting_survive_a_reread_and_session_updates(tmp_path: Path) -> None:
    state = StateFile.for_fleet(tmp_path, "acme")
    state.own("k1", spec={"name": "linux"}, base_dir=tmp_path / "fleet")
    state.update("k1", scale_set_id=7, session_id="s-1")  # the listener's writes merge
    state.mark_deleting("k1", deadline=1234.5)
    state.update("k1", scale_set_id=7, session_id=None)

    [owned] = StateFile.for_fleet(tmp_path, "acme").owned()

    assert (owned.key, owned.spec, owned.base_dir) == ("k1", {"name": "linux"}, tmp_path / "fleet")
    assert (owned.scale_set_id, owned.deleting_deadline) == (7, 1234.5)
    assert StateFile.for_fleet(tmp_path, "acme").get("k1").session_id is None


def test_owning_again_clears_deleting_and_forgetting_removes_it(tmp_path: Path) -> None:
    state = StateFile.for_fleet(tmp_path, "acme")
    state.own("k1", spec={"name": "linux"}, base_dir=tmp_path)
    state.mark_deleting("k1", deadline=10.0)
    state.own("k1", spec={"name": "linux"}, base_dir=tmp_path)
    assert StateFile.for_fleet(tmp_path, "acme").owned()[0].deleting_deadline is None
    state.forget("k1")
    assert StateFile.for_fleet(tmp_path, "acme").owned() == []


def test_a_scale_set_never_owned_is_not_marked_and_memos_alone_are_not_ownership(
    tmp_path: Path,
) -> None:
    state = StateFile.for_fleet(tmp_path, "acme")
    state.update("k2", scale_set_id=3, session_id=None)  # written by an older version
    state.mark_deleting("k2", deadline=10.0)
    assert state.owned() == []


def test_writes_leave_no_temp_file_and_a_private_file(tmp_path: Path) -> None:
    state = StateFile.for_fleet(tmp_path, "acme")
    state.own("k1", spec={"name": "linux"}, base_dir=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acme.json"]
    assert (tmp_path / "acme.json").stat().st_mode & 0o077 == 0
    assert json.loads((tmp_path / "acme.json").read_text())["version"] == 1


def test_malformed_entries_are_ignored_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "acme.json").write_text(
        json.dumps(
            {
                "version": 1,
                "scaleSets": {
                    "a": {"owned": True, "spec": "not a dict"},
                    "b": {"owned": True, "spec": {"name": "x"}, "deleting": {"deadline": "soon"}},
                },
            }
        )
    )
    [owned] = StateFile.for_fleet(tmp_path, "acme").owned()
    assert (owned.key, owned.deleting_deadline) == ("b", None)
