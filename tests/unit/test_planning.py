"""The planner: every kind of change, what it means for runners, and the order of a plan."""

from __future__ import annotations

from typing import Any

import pytest

from runscaler.planning import (
    ABSENT,
    NOTE_CREDENTIALS,
    NOTE_DRAIN_TIMEOUT,
    NOTE_GITHUB,
    NOTE_REPLACE,
    NOTE_RESUME,
    NOTE_ROLLING,
    NOTE_SCALE_DOWN,
    NOTE_SCALE_DOWN_DELAY,
    NOTE_SCALE_UP,
    REPLACE_NOTE,
    Effects,
    Plan,
    ScaleSetChange,
    plan,
)
from tests.unit.planfleets import URL, fleet, scale_set


def only(result: Plan) -> ScaleSetChange:
    assert len(result.changes) == 1, result.changes
    return result.changes[0]


def fields(change: ScaleSetChange) -> dict[str, tuple[Any, Any]]:
    return {c.path: (c.before, c.after) for c in change.changes}


# (before fields, after fields, expected changes, notes, effects)
UPDATES = [
    pytest.param(
        {"maxRunners": 10},
        {"maxRunners": 4},
        {"maxRunners": (10, 4)},
        [NOTE_SCALE_DOWN],
        Effects(resize=True),
        id="max-down",
    ),
    pytest.param(
        {"maxRunners": 4},
        {"maxRunners": 10},
        {"maxRunners": (4, 10)},
        [NOTE_SCALE_UP],
        Effects(resize=True),
        id="max-up",
    ),
    pytest.param(
        {},
        {"minRunners": 2},
        {"minRunners": (0, 2)},
        [NOTE_SCALE_UP],
        Effects(resize=True),
        id="min-up",
    ),
    pytest.param(
        {"minRunners": 3},
        {"minRunners": 1},
        {"minRunners": (3, 1)},
        [NOTE_SCALE_DOWN],
        Effects(resize=True),
        id="min-down",
    ),
    pytest.param(
        {"docker": {"image": "a:1"}},
        {"docker": {"image": "a:2", "memory": "4g", "cpus": 2}},
        {
            "docker.image": ("a:1", "a:2"),
            "docker.cpus": (None, 2.0),
            "docker.memory": (None, "4GiB"),
        },
        [NOTE_ROLLING],
        Effects(template=True),
        id="template",
    ),
    pytest.param(
        {},
        {"backend": "tart"},
        {"backend": ("docker", "tart")},
        [NOTE_ROLLING],
        Effects(template=True),
        id="backend",
    ),
    pytest.param(
        {"docker": {"sharedVolume": {"path": "/cache"}}},
        {"docker": {"sharedVolume": {"path": "/data"}}},
        {"docker.sharedVolume.path": ("/cache", "/data")},
        [NOTE_ROLLING],
        Effects(template=True),
        id="nested-template-block",
    ),
    pytest.param(
        {},
        {"tart": {"image": "mac:2"}},
        {"tart.image": ("ghcr.io/cirruslabs/macos-tahoe-xcode:latest", "mac:2")},
        ["no effect: backend is docker"],
        Effects(),
        id="inactive-backend",
    ),
    pytest.param(
        {},
        {"runnerGroup": "ci"},
        {"runnerGroup": ("default", "ci")},
        [NOTE_GITHUB],
        Effects(github_settings=True),
        id="runner-group",
    ),
    pytest.param(
        {},
        {"github": {"url": URL, "auth": {"token": "file:/run/token"}}},
        {"github.auth.token": ("env:GITHUB_TOKEN", "file:/run/token")},
        [NOTE_CREDENTIALS],
        Effects(credentials=True),
        id="token-ref",
    ),
    pytest.param(
        {},
        {"github": {"url": URL, "auth": {"token": "env:GITHUB_TOKEN"}, "caBundle": "ca.pem"}},
        {"github.caBundle": (None, "ca.pem")},
        [NOTE_CREDENTIALS],
        Effects(credentials=True),
        id="ca-bundle",
    ),
    pytest.param(
        {},
        {"github": {"url": URL, "auth": {"token": "env:T"}, "proxy": "http://proxy:3128"}},
        {
            "github.auth.token": ("env:GITHUB_TOKEN", "env:T"),
            "github.proxy": (None, "http://proxy:3128"),
        },
        [NOTE_CREDENTIALS],
        Effects(credentials=True),
        id="proxy",
    ),
    pytest.param(
        {},
        {
            "github": {
                "url": URL,
                "auth": {"app": {"clientId": "Iv1", "installationId": 7, "privateKey": "env:K"}},
            }
        },
        {
            "github.auth.token": ("env:GITHUB_TOKEN", None),
            "github.auth.app.clientId": (ABSENT, "Iv1"),
            "github.auth.app.installationId": (ABSENT, 7),
            "github.auth.app.privateKey": (ABSENT, "env:K"),
        },
        [NOTE_CREDENTIALS],
        Effects(credentials=True),
        id="token-to-app",
    ),
    pytest.param(
        {},
        {"suspended": True},
        {"suspended": (False, True)},
        ["drained: idle runners removed, busy runners get up to 6h"],
        Effects(suspend=True),
        id="suspend",
    ),
    pytest.param(
        {"drainTimeout": "0"},
        {"suspended": True, "drainTimeout": "0"},
        {"suspended": (False, True)},
        ["drained: idle runners removed, busy runners force-removed at once"],
        Effects(suspend=True),
        id="suspend-no-timeout",
    ),
    pytest.param(
        {"suspended": True},
        {},
        {"suspended": (True, False)},
        [NOTE_RESUME],
        Effects(resume=True),
        id="resume",
    ),
    pytest.param(
        {},
        {"drainTimeout": "1h30m"},
        {"drainTimeout": ("6h", "1h30m")},
        [NOTE_DRAIN_TIMEOUT],
        Effects(drain_timeout=True),
        id="drain-timeout",
    ),
    pytest.param(
        {},
        {"scaleDownDelay": "2m"},
        {"scaleDownDelay": ("30s", "2m")},
        [NOTE_SCALE_DOWN_DELAY],
        Effects(scale_down_delay=True),
        id="scale-down-delay",
    ),
    pytest.param(
        {},
        {"name": "LINUX"},
        {"name": ("linux", "LINUX")},
        [NOTE_GITHUB],
        Effects(github_settings=True),
        id="name-case",
    ),
]


@pytest.mark.parametrize(("old", "new", "expected", "notes", "effects"), UPDATES)
def test_an_update_lists_its_fields_notes_and_effects(
    old: dict[str, Any],
    new: dict[str, Any],
    expected: dict[str, tuple[Any, Any]],
    notes: list[str],
    effects: Effects,
) -> None:
    name = new.pop("name", "linux")
    change = only(plan(fleet(scale_set(**old)), fleet(scale_set(name, **new))))

    assert change.action == "update"
    assert fields(change) == expected
    assert list(change.notes) == notes
    assert change.effects == effects


def test_a_new_scale_set_is_created_with_every_field_that_differs_from_the_default() -> None:
    desired = fleet(
        scale_set("x64", maxRunners=20, labels=["self-hosted", "linux"], docker={"dind": False})
    )

    change = only(plan(fleet(), desired))

    assert change.action == "create"
    assert change.before is None and change.after is desired.scale_sets[0]
    assert fields(change) == {
        "github.auth.token": (ABSENT, "env:GITHUB_TOKEN"),
        "labels": (ABSENT, ["self-hosted", "linux"]),
        "maxRunners": (ABSENT, 20),
    }


def test_a_create_marks_fields_of_the_unused_backend_as_without_effect() -> None:
    change = only(plan(None, fleet(scale_set(tart={"poolSize": 2}))))

    assert [(c.path, c.effective, c.note) for c in change.changes] == [
        ("github.auth.token", True, None),
        ("tart.poolSize", False, "no effect: backend is docker"),
    ]


def test_a_scale_set_gone_from_the_manifest_is_drained_then_deleted() -> None:
    change = only(plan(fleet(scale_set(drainTimeout="2h")), fleet()))

    assert change.action == "delete"
    assert change.after is None and change.name == "linux"
    assert change.notes == ("busy runners get up to 2h to finish",)


def test_a_delete_without_drain_timeout_says_busy_runners_are_removed_at_once() -> None:
    change = only(plan(fleet(scale_set(drainTimeout=0)), fleet()))

    assert change.notes == ("busy runners are force-removed at once",)


def test_an_identical_scale_set_is_a_no_op() -> None:
    same = fleet(scale_set(maxRunners=3))

    result = plan(same, fleet(scale_set(maxRunners=3)))

    assert only(result).action == "no-op"
    assert not result.has_changes


@pytest.mark.parametrize(
    "url",
    ["https://GitHub.com/ACME", "https://www.github.com/acme/", "HTTPS://github.com/Acme"],
)
def test_a_url_written_differently_for_the_same_org_is_a_no_op(url: str) -> None:
    desired = fleet(scale_set(github={"url": url, "auth": {"token": "env:GITHUB_TOKEN"}}))

    change = only(plan(fleet(scale_set()), desired))

    assert change.action == "no-op"
    assert change.url == url


def test_moving_a_scale_set_to_another_org_deletes_it_and_creates_a_new_one() -> None:
    other = {"url": "https://github.com/other", "auth": {"token": "env:GITHUB_TOKEN"}}

    result = plan(fleet(scale_set()), fleet(scale_set(github=other)))

    assert [(c.action, c.url) for c in result.changes] == [
        ("create", "https://github.com/other"),
        ("delete", URL),
    ]
    assert (result.add, result.change, result.destroy) == (1, 0, 1)


def test_renaming_a_scale_set_deletes_it_and_creates_a_new_one() -> None:
    result = plan(fleet(scale_set("old")), fleet(scale_set("new")))

    assert [(c.action, c.name) for c in result.changes] == [("create", "new"), ("delete", "old")]


def test_an_inactive_backend_change_is_shown_but_needs_nothing_at_runtime() -> None:
    change = only(plan(fleet(scale_set()), fleet(scale_set(tart={"cpu": 4}))))

    assert change.action == "update"
    assert not change.effects.any
    assert [c.effective for c in change.changes] == [False]


def test_switching_backend_makes_the_new_block_effective_and_the_old_one_inert() -> None:
    change = only(
        plan(
            fleet(scale_set(docker={"image": "a:1"})),
            fleet(scale_set(backend="tart", docker={"image": "a:2"}, tart={"cpu": 4})),
        )
    )

    assert {c.path: c.effective for c in change.changes} == {
        "backend": True,
        "docker.image": False,
        "tart.cpu": True,
    }
    assert change.effects == Effects(template=True)


def test_several_kinds_of_change_in_one_scale_set_combine_their_effects() -> None:
    change = only(
        plan(
            fleet(scale_set()),
            fleet(scale_set(maxRunners=2, runnerGroup="gpu", docker={"image": "b:1"})),
        )
    )

    assert change.effects == Effects(resize=True, template=True, github_settings=True)
    assert change.notes == (NOTE_GITHUB, NOTE_SCALE_DOWN, NOTE_ROLLING)


def test_a_label_change_replaces_the_scale_set_since_github_ignores_label_patches() -> None:
    before, after = fleet(scale_set(labels=["a"])), fleet(scale_set(labels=["a", "b"]))

    result = plan(before, after)
    change = only(result)

    assert change.action == "replace"
    assert [(c.path, c.before, c.after, c.note) for c in change.changes] == [
        ("labels", ["a"], ["a", "b"], NOTE_REPLACE)
    ]
    assert change.notes[0] == REPLACE_NOTE
    assert (result.add, result.change, result.destroy) == (1, 0, 1)


def test_labels_differing_only_in_case_are_no_replace() -> None:
    change = only(plan(fleet(scale_set(labels=["GPU"])), fleet(scale_set(labels=["gpu"]))))

    assert change.action == "update"


def test_a_plan_lists_creates_then_updates_then_deletes_then_no_ops_each_by_url_and_name() -> None:
    org_b = {"url": "https://github.com/b-org", "auth": {"token": "env:T"}}
    before = fleet(
        scale_set("keep"),
        scale_set("zeta", maxRunners=1),
        scale_set("alpha", maxRunners=1),
        scale_set("gone-b"),
        scale_set("gone-a", github=org_b),
    )
    after = fleet(
        scale_set("keep"),
        scale_set("zeta", maxRunners=2),
        scale_set("alpha", maxRunners=2),
        scale_set("Beta"),
        scale_set("added", github=org_b),
        scale_set("apple"),
    )

    result = plan(before, after)

    assert [(c.action, c.name) for c in result.changes] == [
        ("create", "apple"),
        ("create", "Beta"),
        ("create", "added"),  # https://github.com/b-org sorts after https://github.com/acme
        ("update", "alpha"),
        ("update", "zeta"),
        ("delete", "gone-b"),
        ("delete", "gone-a"),
        ("no-op", "keep"),
    ]
    assert (result.add, result.change, result.destroy) == (3, 2, 2)


def test_a_fleet_name_change_is_reported_as_a_note_and_counts_as_a_change() -> None:
    result = plan(fleet(scale_set(), name="old-fleet"), fleet(scale_set(), name="new-fleet"))

    assert result.fleet_renamed
    assert result.has_changes
    assert result.notes == (
        'fleet name changes from "old-fleet" to "new-fleet": a running operator refuses this '
        "reload; stop it and start one with the new manifest",
    )


def test_planning_from_nothing_creates_everything_and_notes_no_rename() -> None:
    result = plan(None, fleet(scale_set("a"), scale_set("b")))

    assert [c.action for c in result.changes] == ["create", "create"]
    assert result.notes == () and not result.fleet_renamed
    assert result.previous_fleet is None
