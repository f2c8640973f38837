"""The state file as durable intent: what the fleet owns and what it is deleting survive."""

from __future__ import annotations

import asyncio
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


async def test_memos_changed_in_one_loop_turn_are_written_together_by_its_end(
    tmp_path: Path,
) -> None:
    state = StateFile.for_fleet(tmp_path, "acme")
    state.own("k0", spec={"name": "linux"}, base_dir=tmp_path)  # intent: on disk at once
    on_disk = StateFile.for_fleet(tmp_path, "acme")
    assert [o.key for o in on_disk.owned()] == ["k0"]
    inode = (tmp_path / "acme.json").stat().st_ino
    for i in range(100):
        state.update(f"k{i}", scale_set_id=i, session_id=f"s-{i}")
    # Not one write per memo: the file is replaced once, when this turn of the loop ends.
    assert (tmp_path / "acme.json").stat().st_ino == inode
    await asyncio.sleep(0)
    reread = StateFile.for_fleet(tmp_path, "acme")
    assert [reread.get(f"k{i}").session_id for i in (0, 50, 99)] == ["s-0", "s-50", "s-99"]
    assert _names(tmp_path) == ["acme.json"]


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


async def test_flush_writes_memos_at_once_and_outside_a_loop_every_memo_is_written(
    tmp_path: Path,
) -> None:
    state = StateFile.for_fleet(tmp_path, "acme")
    state.update("k1", scale_set_id=7, session_id="s-1")
    state.flush()
    assert StateFile.for_fleet(tmp_path, "acme").get("k1").session_id == "s-1"

    def outside_a_loop() -> None:
        other = StateFile.for_fleet(tmp_path, "other")
        other.update("k2", scale_set_id=3, session_id="s-2")
        assert StateFile.for_fleet(tmp_path, "other").get("k2").session_id == "s-2"

    await asyncio.to_thread(outside_a_loop)


def test_a_memo_pending_in_a_closed_loop_does_not_stop_later_writes(tmp_path: Path) -> None:
    state = StateFile.for_fleet(tmp_path, "acme")

    async def remember(session: str) -> None:
        state.update("k1", scale_set_id=7, session_id=session)

    asyncio.run(remember("s-1"))  # the loop may close before its write is due
    asyncio.run(remember("s-2"))
    state.flush()
    assert StateFile.for_fleet(tmp_path, "acme").get("k1").session_id == "s-2"
