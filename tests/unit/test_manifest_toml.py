"""TOML manifests are located as precisely as YAML ones, though tomllib gives no positions."""

from __future__ import annotations

from pathlib import Path

import pytest

from runscaler.errors import ManifestError
from runscaler.manifest import load_manifest_text
from runscaler.manifest.toml_positions import scan_positions

HEAD = """\
apiVersion = "runscaler/v1"
kind = "Fleet"

[metadata]
name = "acme-ci"

[defaults.github]
url = "https://github.com/acme"
auth.token = "env:GITHUB_TOKEN"
"""


def first_error(text: str) -> str:
    with pytest.raises(ManifestError) as caught:
        load_manifest_text(text, source="fleet.toml", fmt="toml", base_dir=Path("."))
    return caught.value.diagnostics[0].located()


def test_a_value_in_the_second_array_of_tables_item() -> None:
    text = HEAD + '\n[[scaleSets]]\nname = "a"\n\n[[scaleSets]]\nname = "b"\nmaxRunners = 0\n'
    assert first_error(text) == "fleet.toml:16:14: scaleSets[1] (b).maxRunners: must be >= 1, got 0"


def test_a_sub_table_of_the_last_array_item() -> None:
    text = (
        HEAD + '\n[[scaleSets]]\nname = "a"\n\n[[scaleSets]]\nname = "b"\n\n'
        '[scaleSets.docker]\nimage = "x"\npull = "sometimes"\n'
    )
    assert first_error(text) == (
        "fleet.toml:19:8: scaleSets[1] (b).docker.pull: "
        "must be one of always, missing, never; got 'sometimes'"
    )


def test_a_dotted_key_inside_a_table() -> None:
    text = HEAD + '\n[[scaleSets]]\nname = "a"\ndocker.memory = "4 GB"\n'
    assert first_error(text) == (
        "fleet.toml:13:17: scaleSets[0] (a).docker.memory: "
        "invalid size '4 GB': use 512MiB, 4GiB, 4g, or an integer (MiB)"
    )


def test_a_value_inside_an_inline_table_inside_an_array() -> None:
    text = (
        'apiVersion = "runscaler/v1"\n'
        'kind = "Fleet"\n'
        "scaleSets = [\n"
        '  { name = "a" },\n'
        '  { name = "b", docker = { cpus = -1 } },\n'
        "]\n"
    ) + HEAD.split("\n", 2)[2]
    assert first_error(text) == "fleet.toml:5:35: scaleSets[1] (b).docker.cpus: must be > 0, got -1"


def test_an_unknown_quoted_key_after_a_multiline_string() -> None:
    text = (
        HEAD.replace(
            "[metadata]",
            "[metadata]\n# the fleet\n",
        )
        + '\n[[scaleSets]]\nname = "a"\nlabels = [\n  "x",\n'
        + '  """multi\nline""",\n]\n"maxRuners" = 3\n'
    )
    assert first_error(text) == (
        "fleet.toml:20:1: scaleSets[0] (a).maxRuners: "
        "unknown key 'maxRuners' (did you mean 'maxRunners'?)"
    )


def test_an_error_inherited_from_defaults_is_located_at_defaults() -> None:
    text = HEAD.replace('auth.token = "env:GITHUB_TOKEN"', 'auth.token = "env:9LIVES"')
    text += '\n[[scaleSets]]\nname = "a"\n'
    assert first_error(text) == (
        "fleet.toml:9:14: defaults.github.auth.token: "
        "invalid secret ref 'env:9LIVES': env: needs a variable name like env:GITHUB_TOKEN"
    )


def test_syntax_errors_keep_tomllibs_position() -> None:
    assert first_error(HEAD + "\n[[scaleSets]]\nname = \n") == (
        "fleet.toml:12:8: invalid TOML: invalid value"
    )


def test_the_scanner_maps_headers_keys_and_array_items() -> None:
    text = (
        "a = 1\n"
        '"b.c" = { d = [1, 2], e = "x" }\n'
        "[t]\n"
        "u.v = 'w'  # comment\n"
        "[[arr]]\n"
        "x = 1\n"
        "[[arr]]\n"
        "x = 2\n"
        "[arr.sub]\n"
        "y = [\n  3,\n  4,\n]\n"
    )
    entries = scan_positions(text)

    def at(*path: str | int) -> tuple[int, int]:
        mark = entries[path].value
        return mark.line, mark.col

    assert at("a") == (1, 5)
    assert at("b.c", "d", 1) == (2, 19)
    assert at("b.c", "e") == (2, 27)
    assert at("t", "u", "v") == (4, 7)
    assert at("arr", 1, "x") == (8, 5)
    assert at("arr", 1, "sub", "y", 1) == (12, 3)
    assert entries[("arr", 1)].value.line == 7
