"""What `load_manifest` returns for valid input, and the YAML rules it reads by."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from runscaler.errors import ManifestError
from runscaler.manifest import LoadedManifest, load_manifest, load_manifest_text
from runscaler.manifest.models import DockerTemplate

FLEET = """\
apiVersion: runscaler/v1
kind: Fleet
metadata:
  name: acme-ci
defaults:
  github:
    url: https://github.com/acme
    auth:
      token: env:GITHUB_TOKEN
scaleSets:
  - name: linux
    drainTimeout: 1h30m
    docker:
      memory: 4GiB
"""


def load_yaml(text: str, **options: bool) -> LoadedManifest:
    return load_manifest_text(
        text, source="fleet.yaml", fmt="yaml", base_dir=Path("/srv"), **options
    )


def errors_of(text: str, **options: bool) -> list[str]:
    with pytest.raises(ManifestError) as caught:
        load_yaml(text, **options)
    return [d.located() for d in caught.value.diagnostics]


def test_a_file_loads_with_its_path_directory_and_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "fleet.yaml").write_text(FLEET)
    monkeypatch.chdir(tmp_path)
    loaded = load_manifest(Path("fleet.yaml"))
    assert loaded.path == Path("fleet.yaml")
    assert loaded.base_dir == tmp_path
    assert loaded.sha256 == hashlib.sha256(FLEET.encode()).hexdigest()
    assert loaded.warnings == ()
    (scale_set,) = loaded.fleet.scale_sets
    assert scale_set.name == "linux"
    assert scale_set.github.url == "https://github.com/acme"
    assert scale_set.drain_timeout == 5400
    assert scale_set.docker.memory == 4 * 1024**3
    assert scale_set.docker.image == DockerTemplate().image


def test_text_and_bytes_load_alike_and_name_their_source() -> None:
    from_text = load_yaml(FLEET)
    from_bytes = load_manifest_text(
        FLEET.encode(), source="git:main:fleet.yaml", fmt="yaml", base_dir=Path("/srv")
    )
    assert from_text.fleet == from_bytes.fleet
    assert from_bytes.path == Path("git:main:fleet.yaml")
    assert from_bytes.base_dir == Path("/srv")
    with pytest.raises(ManifestError) as caught:
        load_manifest_text(
            FLEET.replace("acme-ci", "ACME"),
            source="git:main:fleet.yaml",
            fmt="yaml",
            base_dir=Path("/srv"),
        )
    assert (
        caught.value.diagnostics[0].located().startswith("git:main:fleet.yaml:4:9: metadata.name:")
    )


def test_yaml_and_toml_spell_the_same_fleet() -> None:
    toml = """\
apiVersion = "runscaler/v1"
kind = "Fleet"
metadata = { name = "acme-ci" }

[defaults.github]
url = "https://github.com/acme"
auth = { token = "env:GITHUB_TOKEN" }

[[scaleSets]]
name = "linux"
drainTimeout = "1h30m"
docker.memory = "4GiB"
"""
    from_toml = load_manifest_text(toml, source="fleet.toml", fmt="toml", base_dir=Path("/srv"))
    assert from_toml.fleet == load_yaml(FLEET).fleet


def test_an_empty_fleet_is_valid() -> None:
    loaded = load_yaml(
        "apiVersion: runscaler/v1\nkind: Fleet\nmetadata: {name: x}\nscaleSets: []\n"
    )
    assert loaded.fleet.scale_sets == ()


def test_yaml_1_2_words_stay_strings() -> None:
    # `yes`/`no`/`on` are booleans only in YAML 1.1; the manifest reads YAML 1.2.
    loaded = load_yaml(FLEET + "    labels: [yes, no, on, off]\n")
    assert loaded.fleet.scale_sets[0].labels == ("yes", "no", "on", "off")


def test_anchors_and_merge_keys_work() -> None:
    # Unknown top-level keys are errors, so anchors live where they are first used.
    text = FLEET + (
        "  - name: mac\n    docker: &big\n      image: ghcr.io/acme/runner:1\n      cpus: 4\n"
        "  - name: big\n    docker:\n      <<: *big\n      cpus: 8\n"
        "  - name: same\n    docker: *big\n"
    )
    sets = {s.name: s for s in load_yaml(text).fleet.scale_sets}
    assert sets["big"].docker.image == "ghcr.io/acme/runner:1"
    assert sets["big"].docker.cpus == 8
    assert sets["same"].docker == sets["mac"].docker


def test_a_byte_order_mark_is_ignored() -> None:
    assert load_yaml("\ufeff" + FLEET).fleet == load_yaml(FLEET).fleet


def test_keys_must_be_strings() -> None:
    assert errors_of(FLEET + "      env:\n        1: one\n") == [
        "fleet.yaml:16:9: a key must be a string, got 1"
    ]
    assert errors_of(FLEET + "    ? [a, b]\n    : c\n") == [
        "fleet.yaml:15:7: a key must be a string, not a mapping or a list"
    ]


def test_a_recursive_alias_is_refused() -> None:
    assert errors_of(FLEET + "    labels: &l [a, *l]\n") == [
        "fleet.yaml:15:20: alias *l refers to a value that contains it"
    ]


def test_explicit_standard_tags_are_honoured_and_checked() -> None:
    loaded = load_yaml(FLEET + "    maxRunners: !!int '12'\n    labels: [!!str 12]\n")
    assert loaded.fleet.scale_sets[0].max_runners == 12
    assert loaded.fleet.scale_sets[0].labels == ("12",)
    assert errors_of(FLEET + "    maxRunners: !!int twelve\n") == [
        "fleet.yaml:15:17: 'twelve' is not a valid !!int"
    ]


def test_literal_secrets_warn_and_strict_makes_them_errors() -> None:
    text = FLEET.replace("env:GITHUB_TOKEN", "ghp_0123456789abcdef")
    loaded = load_yaml(text)
    assert [w.located() for w in loaded.warnings] == [
        "fleet.yaml:9:14: warning: defaults.github.auth.token: literal token in the manifest, "
        "which lives in git: use env:NAME or file:PATH"
    ]
    assert "ghp_0123456789abcdef" not in loaded.warnings[0].located()
    assert errors_of(text, strict=True) == [
        "fleet.yaml:9:14: defaults.github.auth.token: literal token in the manifest, "
        "which lives in git: use env:NAME or file:PATH (an error with --strict)"
    ]


def test_a_literal_private_key_warns_at_the_scale_set() -> None:
    text = FLEET + (
        "    github:\n      auth:\n        app:\n          clientId: Iv1.x\n"
        "          installationId: 7\n"
        "          privateKey: '-----BEGIN RSA PRIVATE KEY-----'\n"
    )
    (warning,) = load_yaml(text).warnings
    assert warning.located() == (
        "fleet.yaml:20:23: warning: scaleSets[0] (linux).github.auth.app.privateKey: "
        "literal private key in the manifest, which lives in git: use env:NAME or file:PATH"
    )


def test_more_tart_runners_than_the_host_allows_is_an_error() -> None:
    text = FLEET + "  - name: mac\n    backend: tart\n    maxRunners: 4\n"
    with pytest.raises(ManifestError) as caught:
        load_yaml(text)
    (error,) = caught.value.diagnostics
    assert error.located() == (
        "fleet.yaml:17:17: scaleSets[1] (mac).maxRunners: maxRunners is 4 with backend "
        "tart, but the host runs at most 2 VMs (tart.vmLimit): lower maxRunners, or set "
        "tart.allowOverLimit: true to let runners queue for a VM"
    )


def test_allow_over_limit_accepts_more_tart_runners() -> None:
    text = FLEET + (
        "  - name: mac\n    backend: tart\n    maxRunners: 4\n"
        "    tart:\n      allowOverLimit: true\n"
    )
    assert load_yaml(text).warnings == ()


def test_an_inherited_tart_maximum_is_reported_at_the_scale_set() -> None:
    text = FLEET.replace("defaults:\n", "defaults:\n  maxRunners: 3\n") + (
        "  - name: mac\n    backend: tart\n"
    )
    with pytest.raises(ManifestError) as caught:
        load_yaml(text)
    (error,) = caught.value.diagnostics
    assert error.located().startswith(
        "fleet.yaml:6:15: scaleSets[1] (mac).maxRunners: maxRunners is 3 with backend tart"
    )
    assert error.message.endswith("(inherited from defaults)")


def test_tart_pool_and_limit_checks() -> None:
    text = FLEET + (
        "  - name: mac\n    backend: tart\n    maxRunners: 1\n"
        "    tart:\n      vmLimit: 3\n      poolSize: 4\n"
        "  - name: mac2\n    backend: tart\n    maxRunners: 1\n"
        "    tart:\n      vmLimit: 1\n"
    )
    with pytest.raises(ManifestError) as caught:
        load_yaml(text)
    messages = [d.located() for d in caught.value.diagnostics]
    assert any("vmLimit is 3, but macOS allows 2 VMs per host" in m for m in messages)
    assert any("poolSize (4) must be <= tart.vmLimit (3)" in m for m in messages)
    assert any(
        "scaleSets[2] (mac2).tart.vmLimit: vmLimit is 1, but scaleSets[1] on the same "
        "TART_HOME (~/.tart) says 3" in m
        for m in messages
    ), messages


def test_invalid_manifest_errors_carry_the_warnings_too() -> None:
    text = FLEET.replace("env:GITHUB_TOKEN", "ghp_0123456789abcdef") + "    maxRunners: 0\n"
    with pytest.raises(ManifestError) as caught:
        load_yaml(text)
    assert [d.severity for d in caught.value.diagnostics] == ["error"]
    assert [w.path for w in caught.value.warnings] == ["defaults.github.auth.token"]


def test_flow_style_values_may_contain_colons() -> None:
    # YAML 1.2 allows `:` inside plain scalars in flow collections; libyaml (1.1) does not.
    text = (
        FLEET
        + "  - name: flow\n    github: {url: https://github.com/globex, auth: {token: env:T}}\n"
    )
    sets = {s.name: s for s in load_yaml(text).fleet.scale_sets}
    assert sets["flow"].github.url == "https://github.com/globex"
    assert sets["flow"].github.auth.token == "env:T"


def test_without_the_c_parser_the_results_are_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    import ruamel.yaml.main

    with_c = load_yaml(FLEET)
    bad = FLEET + "    maxRunners: [1\n"
    errors_with_c = errors_of(bad)
    monkeypatch.setattr(ruamel.yaml.main, "CParser", None)
    assert load_yaml(FLEET) == with_c
    assert errors_of(bad) == errors_with_c
