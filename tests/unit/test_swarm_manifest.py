"""`backend: swarm` in the manifest: its block, its defaults, and how a plan classifies it;
and which backend settings are housekeeping only (they replace no runner)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runscaler.engine.resolving import template_of
from runscaler.manifest.models import SwarmTemplate
from runscaler.planning import NOTE_HOUSEKEEPING, NOTE_ROLLING, Effects, plan
from tests.unit.planfleets import fleet, scale_set


def test_a_swarm_scale_set_uses_its_swarm_block_with_sizes_and_placement_read() -> None:
    loaded = fleet(
        scale_set(
            backend="swarm",
            swarm={
                "image": "registry.example/runner:1",
                "memory": "2GiB",
                "cpus": 1.5,
                "constraints": ["node.labels.pool==big", "node.platform.arch != aarch64"],
                "preferences": [{"spread": "node.labels.zone"}],
            },
        )
    )

    template = loaded.scale_sets[0].template
    assert isinstance(template, SwarmTemplate)
    assert template.memory == 2 * 1024**3
    assert template.constraints == ("node.labels.pool==big", "node.platform.arch != aarch64")
    assert [p.spread for p in template.preferences] == ["node.labels.zone"]
    assert template.user == "runner" and template.command == ("/home/runner/run.sh",)


def test_a_constraint_change_is_a_template_change_that_rolls_idle_runners() -> None:
    before = fleet(scale_set(backend="swarm", swarm={"constraints": ["node.labels.pool==a"]}))
    after = fleet(scale_set(backend="swarm", swarm={"constraints": ["node.labels.pool==b"]}))

    (change,) = plan(before, after).changes

    assert [(c.path, c.after, c.note) for c in change.changes] == [
        ("swarm.constraints", ["node.labels.pool==b"], NOTE_ROLLING)
    ]
    assert change.effects == Effects(template=True)


def test_a_swarm_change_under_the_docker_backend_has_no_effect() -> None:
    (change,) = plan(fleet(scale_set()), fleet(scale_set(swarm={"memory": "1GiB"}))).changes

    assert [(c.path, c.effective, c.note) for c in change.changes] == [
        ("swarm.memory", False, "no effect: backend is docker")
    ]
    assert not change.effects.any


def test_moving_from_docker_to_swarm_rolls_runners() -> None:
    (change,) = plan(fleet(scale_set()), fleet(scale_set(backend="swarm"))).changes

    assert change.effects == Effects(template=True)


@pytest.mark.parametrize(
    ("backend", "block", "before", "after", "path"),
    [
        ("swarm", "swarm", {}, {"hygiene": {"interval": "15m"}}, "swarm.hygiene.interval"),
        ("docker", "docker", {}, {"buildxCleanup": {"ttl": "2h"}}, "docker.buildxCleanup.ttl"),
        (
            "docker",
            "docker",
            {"sharedVolume": {"path": "/cache", "ttl": "1h"}},
            {"sharedVolume": {"path": "/cache", "ttl": "2h"}},
            "docker.sharedVolume.ttl",
        ),
        ("tart", "tart", {}, {"imageRefresh": "6h"}, "tart.imageRefresh"),
    ],
)
def test_a_housekeeping_setting_changes_no_runner(
    backend: str, block: str, before: dict[str, Any], after: dict[str, Any], path: str
) -> None:
    old = fleet(scale_set(backend=backend, **{block: before}))
    new = fleet(scale_set(backend=backend, **{block: after}))

    (change,) = plan(old, new).changes

    assert [(c.path, c.note) for c in change.changes] == [(path, NOTE_HOUSEKEEPING)]
    assert change.effects == Effects(housekeeping=True)
    # Idle runners are kept: the template's hash does not cover housekeeping.
    base = Path("/")
    before_template = template_of(old.scale_sets[0], base)
    after_template = template_of(new.scale_sets[0], base)
    assert before_template.hash == after_template.hash
    assert after_template.spec == new.scale_sets[0].template  # the new value is in force


def test_a_shared_volume_path_change_still_rolls_runners() -> None:
    old = fleet(scale_set(docker={"sharedVolume": {"path": "/cache"}}))
    new = fleet(scale_set(docker={"sharedVolume": {"path": "/data"}}))

    (change,) = plan(old, new).changes

    assert change.effects == Effects(template=True)
    assert (
        template_of(old.scale_sets[0], Path("/")).hash
        != template_of(new.scale_sets[0], Path("/")).hash
    )
