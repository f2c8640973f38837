"""How `defaults` merge under scale sets, and how scale sets are told apart."""

from __future__ import annotations

from pathlib import Path

import pytest

from runscaler.errors import ManifestError
from runscaler.manifest import load_manifest_text
from runscaler.manifest.merging import merge_defaults, source_of
from runscaler.manifest.models import Fleet, ScaleSet

HEAD = "apiVersion: runscaler/v1\nkind: Fleet\nmetadata: {name: acme}\n"


def fleet(text: str) -> Fleet:
    return load_manifest_text(HEAD + text, source="f.yaml", fmt="yaml", base_dir=Path(".")).fleet


def by_name(text: str) -> dict[str, ScaleSet]:
    return {s.name: s for s in fleet(text).scale_sets}


DEFAULTS = """\
defaults:
  github:
    url: https://github.com/acme
    auth:
      token: env:TOKEN
  labels: [self-hosted]
  maxRunners: 4
  docker:
    image: ghcr.io/acme/runner:1
    cpus: 2
    env: {A: a, B: b}
"""


def test_mappings_merge_key_by_key() -> None:
    sets = by_name(
        DEFAULTS + "scaleSets:\n  - name: s\n    docker:\n      cpus: 8\n      env: {B: x}\n"
    )
    docker = sets["s"].docker
    assert docker.image == "ghcr.io/acme/runner:1"
    assert docker.cpus == 8
    assert docker.env == {"A": "a", "B": "x"}


def test_lists_and_scalars_replace() -> None:
    sets = by_name(DEFAULTS + "scaleSets:\n  - name: s\n    labels: [gpu]\n    maxRunners: 9\n")
    assert sets["s"].labels == ("gpu",)
    assert sets["s"].max_runners == 9
    assert sets["s"].all_labels == ("s", "gpu")


def test_auth_is_replaced_as_a_whole() -> None:
    sets = by_name(
        DEFAULTS + "scaleSets:\n  - name: s\n    github:\n      auth:\n        app:\n"
        "          clientId: Iv1.x\n          installationId: 3\n          privateKey: env:KEY\n"
    )
    auth = sets["s"].github.auth
    assert auth.token is None
    assert auth.app is not None and auth.app.private_key == "env:KEY"
    assert sets["s"].github.url == "https://github.com/acme"  # the rest of github still merges


def test_the_inputs_are_not_changed_by_merging() -> None:
    defaults = {"docker": {"cpus": 2}, "github": {"auth": {"token": "t"}}}
    item = {"docker": {"memory": "1GiB"}}
    merged = merge_defaults(defaults, item)
    assert merged["docker"] == {"cpus": 2, "memory": "1GiB"}
    assert defaults == {"docker": {"cpus": 2}, "github": {"auth": {"token": "t"}}}
    assert item == {"docker": {"memory": "1GiB"}}


def test_a_merged_value_is_traced_to_where_it_was_written() -> None:
    defaults = {"github": {"url": "u", "auth": {"token": "t"}}, "labels": ["a"]}
    item = {"name": "s", "github": {"auth": {"app": {}}}, "labels": ["b", "c"]}

    def where(*path: str | int) -> tuple[tuple[str | int, ...], bool]:
        return source_of(3, path, defaults=defaults, scale_set=item)

    assert where("github", "url") == (("defaults", "github", "url"), True)
    assert where("github", "auth", "app") == (("scaleSets", 3, "github", "auth", "app"), False)
    # auth is the scale set's own: nothing under it is inherited, even what is missing.
    assert where("github", "auth", "token") == (("scaleSets", 3, "github", "auth"), False)
    assert where("labels", 1) == (("scaleSets", 3, "labels", 1), False)
    assert where("docker", "image") == (("scaleSets", 3), False)


@pytest.mark.parametrize(
    "other",
    [
        "https://www.github.com/acme",
        "https://GitHub.com/ACME",
        "https://github.com/acme/",
        "HTTPS://WWW.GITHUB.COM/Acme/",
    ],
)
def test_urls_are_compared_normalised(other: str) -> None:
    text = (
        "scaleSets:\n"
        "  - name: linux\n    github: {url: 'https://github.com/acme', auth: {token: 'env:T'}}\n"
        f"  - name: LINUX\n    github: {{url: '{other}', auth: {{token: 'env:T'}}}}\n"
    )
    with pytest.raises(ManifestError) as caught:
        fleet(text)
    (error,) = caught.value.diagnostics
    assert error.path == "scaleSets[1] (LINUX).name"
    assert error.message.startswith("duplicate scale set 'LINUX' for https://github.com/acme:")


def test_one_name_under_two_organizations_is_two_scale_sets() -> None:
    text = (
        "scaleSets:\n"
        "  - name: linux\n    github: {url: 'https://github.com/acme', auth: {token: 'env:T'}}\n"
        "  - name: linux\n    github: {url: 'https://github.com/globex', auth: {token: 'env:T'}}\n"
    )
    first, second = fleet(text).scale_sets
    assert first.identity == ("https://github.com/acme", "linux")
    assert second.identity == ("https://github.com/globex", "linux")
    assert first.key != second.key


def test_an_inherited_bad_value_is_reported_once_at_defaults() -> None:
    text = DEFAULTS.replace("cpus: 2", "cpus: -2") + "scaleSets:\n  - name: a\n  - name: b\n"
    with pytest.raises(ManifestError) as caught:
        fleet(text)
    assert [d.located() for d in caught.value.diagnostics] == [
        "f.yaml:13:11: defaults.docker.cpus: must be > 0, got -2"
    ]
