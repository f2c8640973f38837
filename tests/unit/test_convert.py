"""Go original configs to v1 manifests: the pure conversion, table by table."""

from __future__ import annotations

import copy
import tomllib
from typing import Any

import pytest

from runscaler.converting import (
    ConversionError,
    check_fleet_name,
    convert,
    fleet_name_from,
    fleet_name_of,
)
from runscaler.manifest.models import Fleet

HEAD = {"apiVersion": "runscaler/v1", "kind": "Fleet", "metadata": {"name": "acme"}}


def converted(toml: str) -> Any:
    return convert(tomllib.loads(toml), fleet_name="acme", source="config.toml")


def effective(manifest: dict[str, Any]) -> Fleet:
    """The manifest's fleet with `defaults` merged as manifest.md says (auth replaced whole)."""

    def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(base)
        for key, value in over.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "auth":
                out[key] = merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
        return out

    defaults = manifest.get("defaults", {})
    document = {k: v for k, v in manifest.items() if k != "defaults"}
    document["scaleSets"] = [merge(defaults, s) for s in manifest["scaleSets"]]
    return Fleet.model_validate(document)


CASES = [
    pytest.param(
        """
        url = "https://github.com/acme"
        name = "linux"
        token = "env:GH_TOKEN"
        """,
        {
            "scaleSets": [
                {
                    "name": "linux",
                    "github": {"url": "https://github.com/acme", "auth": {"token": "env:GH_TOKEN"}},
                    "docker": {"dind": True},
                }
            ]
        },
        id="single-minimal",
    ),
    pytest.param(
        """
        url = "https://github.com/acme/app"
        name = "ci"
        token = "env:T"
        labels = ["ci", "self-hosted", "linux"]
        runner-group = "builders"
        min-runners = 1
        max-runners = 8
        runner-image = "ghcr.io/acme/runner:2"
        [docker]
        socket = "/run/user/1000/docker.sock"
        dind = false
        shared-volume = "/shared"
        shared-volume-ttl = "48h0m0s"
        shared-volume-cleanup-interval = "30m"
        memory = 4096
        cpu = 2
        platform = "linux/arm64"
        buildx-cleanup = false
        buildx-cleanup-ttl = "12h"
        buildx-cleanup-interval = "1h"
        """,
        {
            "scaleSets": [
                {
                    "name": "ci",
                    "github": {"url": "https://github.com/acme/app", "auth": {"token": "env:T"}},
                    "runnerGroup": "builders",
                    "labels": ["self-hosted", "linux"],
                    "minRunners": 1,
                    "maxRunners": 8,
                    "docker": {
                        "image": "ghcr.io/acme/runner:2",
                        "host": "unix:///run/user/1000/docker.sock",
                        "dind": False,
                        "sharedVolume": {"path": "/shared", "ttl": "48h", "cleanupInterval": "30m"},
                        "cpus": 2,
                        "memory": "4GiB",
                        "platform": "linux/arm64",
                        "buildxCleanup": {"enabled": False, "ttl": "12h", "interval": "1h"},
                    },
                }
            ]
        },
        id="single-every-docker-key",
    ),
    pytest.param(
        """
        backend = "docker"
        runner-image = "ghcr.io/actions/actions-runner:latest"
        max-runners = 10
        url = "https://github.com/acme"
        token = "env:ORG_TOKEN"
        [docker]
        memory = 8192
        [[scaleset]]
        name = "small"
        max-runners = 2
        [[scaleset]]
        name = "big"
        url = "https://github.com/other"
        token = "env:OTHER_TOKEN"
        runner-image = "big:1"
        [scaleset.docker]
        dind = false
        memory = 16384
        """,
        {
            "defaults": {
                "github": {"url": "https://github.com/acme", "auth": {"token": "env:ORG_TOKEN"}},
                "maxRunners": 10,
                "backend": "docker",
                "docker": {
                    "image": "ghcr.io/actions/actions-runner:latest",
                    "dind": True,
                    "memory": "8GiB",
                },
            },
            "scaleSets": [
                {"name": "small", "maxRunners": 2},
                {
                    "name": "big",
                    "github": {
                        "url": "https://github.com/other",
                        "auth": {"token": "env:OTHER_TOKEN"},
                    },
                    "docker": {"image": "big:1", "dind": False, "memory": "16GiB"},
                },
            ],
        },
        id="multi-defaults-and-overrides",
    ),
    pytest.param(
        """
        url = "https://github.com/acme"
        name = "mac"
        token = "env:T"
        backend = "tart"
        max-runners = 2
        runner-image = "ghcr.io/cirruslabs/macos-sequoia-xcode:latest"
        [tart]
        cpu = 4
        memory = 0
        runner-dir = "/Users/admin/runner"
        pool-size = 1
        home = "/Volumes/tart"
        cache-max-age = "72h"
        cache-space-budget = 100
        cache-cleanup-interval = "12h"
        """,
        {
            "scaleSets": [
                {
                    "name": "mac",
                    "github": {"url": "https://github.com/acme", "auth": {"token": "env:T"}},
                    "maxRunners": 2,
                    "backend": "tart",
                    "tart": {
                        "image": "ghcr.io/cirruslabs/macos-sequoia-xcode:latest",
                        "cpu": 4,
                        "runnerDir": "/Users/admin/runner",
                        "home": "/Volumes/tart",
                        "poolSize": 1,
                        "cacheMaxAge": "72h",
                        "cacheBudgetGB": 100,
                        "cacheCleanupInterval": "12h",
                    },
                }
            ]
        },
        id="single-tart-no-dind",
    ),
    pytest.param(
        """
        url = "https://github.com/acme"
        token = "env:T"
        [tart]
        cache-cleanup = false
        [[scaleset]]
        name = "linux"
        [[scaleset]]
        name = "mac"
        backend = "tart"
        [scaleset.tart]
        image = "mac:1"
        """,
        {
            "defaults": {
                "github": {"url": "https://github.com/acme", "auth": {"token": "env:T"}},
                "docker": {"dind": True},
                "tart": {"cacheMaxAge": 0},
            },
            "scaleSets": [
                {"name": "linux"},
                {"name": "mac", "backend": "tart", "tart": {"image": "mac:1"}},
            ],
        },
        id="mixed-backends-cache-cleanup-off",
    ),
]


@pytest.mark.parametrize(("toml", "expected"), CASES)
def test_a_go_config_becomes_the_expected_manifest(toml: str, expected: dict[str, Any]) -> None:
    result = converted(toml)

    assert result.manifest == {**HEAD, **expected}
    effective(result.manifest)  # and it is a valid fleet


def test_the_top_level_name_names_the_fleet_and_is_no_default() -> None:
    toml = """
        name = "Acme Runners"
        url = "https://github.com/acme"
        token = "env:T"
        [[scaleset]]
        name = "one"
        """
    result = converted(toml)

    assert "name" not in result.manifest["defaults"]
    assert not [w for w in result.warnings if "warning: name" in w]
    assert fleet_name_of(tomllib.loads(toml), stem="config") == ("acme-runners", False)


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('name = "linux"\nurl = "https://github.com/a"\n', ("linux", False)),
        ('url = "https://github.com/a"\n[[scaleset]]\nname = "x"\n', ("old-config", True)),
        ('name = "___"\nurl = "https://github.com/a"\n', ("old-config", True)),
    ],
    ids=["single-form", "no-top-level-name", "name-with-no-letters"],
)
def test_the_fleet_name_falls_back_to_the_file_name(toml: str, expected: tuple[str, bool]) -> None:
    assert fleet_name_of(tomllib.loads(toml), stem="Old Config") == expected


def test_a_literal_token_is_never_copied_and_becomes_runner_token() -> None:
    result = converted(
        """
        url = "https://github.com/acme"
        name = "linux"
        token = "ghp_0123456789abcdefghij"
        """
    )

    assert result.manifest["scaleSets"][0]["github"]["auth"] == {"token": "env:RUNNER_TOKEN"}
    assert "ghp_0123456789abcdefghij" not in repr(result)
    assert result.warnings[0] == (
        "config.toml: warning: token: a literal token is not copied into the manifest "
        "(it lives in git): it reads env:RUNNER_TOKEN instead; set RUNNER_TOKEN in the "
        "operator's environment"
    )


def test_scale_set_literal_tokens_map_to_their_own_variables() -> None:
    result = converted(
        """
        url = "https://github.com/acme"
        token = "ghp_shared_secret_1"
        [[scaleset]]
        name = "same"
        token = "ghp_shared_secret_1"
        [[scaleset]]
        name = "other.org"
        url = "https://github.com/other"
        token = "ghp_other_secret_22"
        """
    )

    same, other = result.manifest["scaleSets"]
    assert result.manifest["defaults"]["github"]["auth"] == {"token": "env:RUNNER_TOKEN"}
    assert "github" not in same  # the top level's literal: inherits env:RUNNER_TOKEN
    assert other["github"]["auth"] == {"token": "env:RUNNER_TOKEN_OTHER_ORG"}
    assert "ghp_" not in repr(result)
    assert any("set RUNNER_TOKEN_OTHER_ORG in" in w for w in result.warnings)


def test_without_a_token_the_manifest_reads_runner_token_like_the_original() -> None:
    result = converted(
        """
        url = "https://github.com/acme"
        [[scaleset]]
        name = "a"
        [[scaleset]]
        name = "b"
        token = "env:B_TOKEN"
        """
    )

    assert result.manifest["defaults"]["github"] == {
        "url": "https://github.com/acme",
        "auth": {"token": "env:RUNNER_TOKEN"},
    }
    assert any("older RUNSCALER_TOKEN" in w for w in result.warnings)
    assert [s.github.auth.token for s in effective(result.manifest).scale_sets] == [
        "env:RUNNER_TOKEN",
        "env:B_TOKEN",
    ]


def test_no_fallback_token_when_every_scale_set_has_its_own() -> None:
    result = converted(
        """
        url = "https://github.com/acme"
        [[scaleset]]
        name = "a"
        token = "env:A"
        """
    )

    assert "auth" not in result.manifest["defaults"]["github"]
    assert not any("RUNNER_TOKEN" in w for w in result.warnings)


def test_dind_true_is_kept_explicit_with_a_warning() -> None:
    result = converted('url = "https://github.com/a"\nname = "x"\ntoken = "env:T"\n')

    assert result.manifest["scaleSets"][0]["docker"] == {"dind": True}
    assert any(w.startswith("config.toml: warning: docker.dind: true") for w in result.warnings)


def test_dind_false_everywhere_warns_nothing() -> None:
    result = converted(
        'url = "https://github.com/a"\nname = "x"\ntoken = "env:T"\n[docker]\ndind = false\n'
    )

    assert result.manifest["scaleSets"][0]["docker"] == {"dind": False}
    assert result.warnings == ()


def test_process_settings_become_run_flags() -> None:
    result = converted(
        """
        log-level = "debug"
        log-format = "json"
        health-port = 9090
        dry-run = true
        url = "https://github.com/a"
        name = "x"
        token = "env:T"
        """
    )

    assert result.run_flags == (
        "--log-level",
        "debug",
        "--log-format",
        "json",
        "--listen",
        "127.0.0.1:9090",
        "--dry-run",
    )
    assert "log-level" not in repr(result.manifest)


def test_keys_without_a_v1_equivalent_are_dropped_with_a_warning() -> None:
    result = converted(
        """
        url = "https://github.com/a"
        token = "env:T"
        log-file = "/var/log/x"
        [docker]
        network-mode = "host"
        [cache]
        enabled = true
        [[scaleset]]
        name = "x"
        health-port = 1
        [scaleset.tart]
        vnc = true
        """
    )

    assert [w.removeprefix("config.toml: warning: ") for w in result.warnings[:5]] == [
        "log-file: has no v1 equivalent: dropped",
        "cache: has no v1 equivalent: dropped",
        "docker.network-mode: has no v1 equivalent: dropped",
        "scaleset[0].health-port: a process setting belongs at the top level: dropped",
        "scaleset[0].tart.vnc: has no v1 equivalent: dropped",
    ]


def test_cache_cleanup_off_ignores_the_budget_with_a_warning() -> None:
    result = converted(
        """
        url = "https://github.com/a"
        name = "m"
        token = "env:T"
        backend = "tart"
        [tart]
        cache-cleanup = false
        cache-space-budget = 50
        """
    )

    assert result.manifest["scaleSets"][0]["tart"] == {"cacheMaxAge": 0}
    assert "config.toml: warning: tart.cache-space-budget: ignored: cache-cleanup is off" in (
        result.warnings
    )


ERRORS = [
    pytest.param(
        'url = "https://github.com/a"\ntoken = "env:T"\n',
        "config.toml: top level: name is required (a string)",
        id="no-name",
    ),
    pytest.param(
        'name = "x"\ntoken = "env:T"\n',
        "config.toml: top level: url is required (here or at the top level)",
        id="no-url",
    ),
    pytest.param(
        'token = "env:T"\n[[scaleset]]\nname = "x"\n',
        "config.toml: scaleset[0]: url is required (here or at the top level)",
        id="no-url-in-scale-set",
    ),
    pytest.param(
        'url = "https://github.com/a"\nname = "x"\nmax-runners = "ten"\n',
        "config.toml: max-runners: must be an integer >= 0, not 'ten'",
        id="max-runners-string",
    ),
    pytest.param(
        'url = "https://github.com/a"\n[[scaleset]]\nname = "x"\nmin-runners = -1\n',
        "config.toml: scaleset[0].min-runners: must be an integer >= 0, not -1",
        id="negative-min",
    ),
    pytest.param(
        'url = "https://github.com/a"\nname = "x"\nbackend = "podman"\n',
        'config.toml: backend: must be "docker" or "tart", not \'podman\'',
        id="backend",
    ),
    pytest.param(
        'url = "https://github.com/a"\nname = "x"\nlabels = "linux"\n',
        "config.toml: labels: must be a list of strings",
        id="labels",
    ),
    pytest.param(
        'url = "https://github.com/a"\nname = "x"\n[docker]\nshared-volume-ttl = "3d"\n',
        "config.toml: docker.shared-volume-ttl: invalid duration '3d': use units ms, s, m, h "
        "(90s, 10m, 1h30m)",
        id="duration",
    ),
    pytest.param(
        'url = "https://github.com/a"\nname = "x"\ndocker = 3\n',
        "config.toml: docker: must be a table",
        id="docker-not-table",
    ),
    pytest.param(
        'url = "https://github.com/a"\nname = "x"\n[docker]\ndind = "yes"\n',
        "config.toml: docker.dind: must be true or false, not 'yes'",
        id="dind",
    ),
    pytest.param(
        'url = "https://github.com/a"\nscaleset = ["x"]\n',
        "config.toml: scaleset: must be [[scaleset]] tables",
        id="scaleset-not-tables",
    ),
    pytest.param(
        'url = "https://github.com/a"\nname = "x"\nhealth-port = 70000\n',
        "config.toml: health-port: must be a port number, not 70000",
        id="port",
    ),
    pytest.param(
        'url = "https://github.com/a"\nname = "x"\ntoken = "env:1BAD"\n',
        "config.toml: token: env: needs a variable name like env:TOKEN",
        id="env-name",
    ),
    pytest.param(
        'url = "https://github.com/a"\nname = "x"\ntoken = 5\n',
        "config.toml: token: must be a string",
        id="token-type",
    ),
]


@pytest.mark.parametrize(("toml", "message"), ERRORS)
def test_bad_input_is_one_line_naming_the_file_and_key(toml: str, message: str) -> None:
    with pytest.raises(ConversionError) as caught:
        converted(toml)

    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("stem", "name"),
    [
        ("config", "config"),
        ("My Runners.v2", "my-runners-v2"),
        ("--prod--", "prod"),
        ("___", "fleet"),
        ("a" * 60, "a" * 40),
        ("x" * 39 + "-y", "x" * 39),
    ],
)
def test_the_fleet_name_comes_from_the_file_name_sanitised(stem: str, name: str) -> None:
    assert fleet_name_from(stem) == name
    check_fleet_name(name)


@pytest.mark.parametrize("name", ["Acme", "-a", "a_b", "a" * 41, ""])
def test_an_invalid_name_flag_is_refused(name: str) -> None:
    with pytest.raises(ConversionError, match="--name"):
        check_fleet_name(name)
