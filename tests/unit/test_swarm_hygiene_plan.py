"""Which per-node clean-ups the swarm templates ask for, and what each node's script does.

The script itself runs on real nodes in tests/integration/test_swarm_hygiene.py; here, the
grouping that decides where and how often it runs, and the manifest's checks on `hygiene`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runscaler.backends.swarm_hygiene import node_sweep_script, node_sweeps
from runscaler.errors import ManifestError
from runscaler.manifest.loading import load_manifest_text
from runscaler.manifest.models import DockerTemplate, SwarmTemplate


def swarm(**fields: Any) -> SwarmTemplate:
    return SwarmTemplate.model_validate({"image": "registry.example/runner:1", **fields})


def test_templates_placed_alike_share_one_sweep_with_the_strictest_settings() -> None:
    sweeps = node_sweeps(
        [
            swarm(constraints=["node.labels.pool==big"], hygiene={"interval": "2h"}),
            swarm(
                constraints=["node.labels.pool==big"],
                dind=True,
                hygiene={"interval": "30m", "buildxTtl": "12h", "image": "docker:cli"},
            ),
            swarm(hygiene={"image": "docker:cli"}),
            swarm(constraints=["node.labels.pool==gpu"], hygiene={"enabled": False}),
            DockerTemplate(),  # another backend's template: not a swarm's business
        ]
    )

    assert [(s.constraints, s.interval, s.buildx_ttl, s.image) for s in sweeps] == [
        (("node.labels.pool==big",), 1800.0, 12 * 3600.0, "registry.example/runner:1"),
        ((), 3600.0, None, "docker:cli"),
    ]
    assert {s.engine_socket for s in sweeps} == {"/var/run/docker.sock"}


def test_the_script_touches_only_the_fleets_containers_and_builders_only_with_dind() -> None:
    plain = node_sweep_script("acme", buildx_ttl=None, prune_after="10m")
    assert "--filter label=dev.runscaler.fleet=acme --filter until=10m" in plain
    assert "buildx_buildkit_" not in plain
    with_dind = node_sweep_script("acme", buildx_ttl=90.5, prune_after="10m")
    assert "buildx_buildkit_" in with_dind and "-gt 90 ]" in with_dind


@pytest.mark.parametrize(
    ("hygiene", "message"),
    [
        ('{interval: "0"}', "hygiene.interval"),
        ("{buildxTtl: 0}", "hygiene.buildxTtl"),
        ("{image: ''}", "hygiene.image"),
        ("{every: 1h}", "hygiene.every"),
    ],
)
def test_a_bad_hygiene_setting_is_a_located_error(
    tmp_path: Path, hygiene: str, message: str
) -> None:
    text = (
        "apiVersion: runscaler/v1\nkind: Fleet\nmetadata: {name: acme}\n"
        "defaults: {github: {url: https://github.com/acme, auth: {token: env:T}}}\n"
        f"scaleSets:\n  - name: linux\n    backend: swarm\n    swarm:\n      hygiene: {hygiene}\n"
    )
    with pytest.raises(ManifestError) as raised:
        load_manifest_text(text, source="fleet.yaml", fmt="yaml", base_dir=tmp_path)
    [line] = str(raised.value).splitlines()
    assert line.startswith("fleet.yaml:9:"), line
    assert f"scaleSets[0] (linux).swarm.{message}" in line, line
