"""Whatever the input, the loader returns a fleet or raises ManifestError: never anything else.

Random text, random JSON-like documents written as YAML and TOML, and mutations of a real
manifest (keys deleted, values replaced or retyped). A document that parses has positions, so
every finding about it must be located.
"""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any, Literal

import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from runscaler.errors import ManifestError
from runscaler.manifest import load_manifest_text
from runscaler.manifest.schema import document_schema
from runscaler.manifest.yaml_reading import read_yaml

ROOT = Path(__file__).resolve().parents[2]
FLEET = ROOT / "fleet.yaml"
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
UNLOCATED_OK = ("the manifest is empty", "invalid TOML: nesting deeper")


def _schema_keys() -> list[str]:
    keys: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            keys.update(node.get("properties", {}))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document_schema())
    return sorted(keys)


KEYS = st.one_of(st.sampled_from(_schema_keys()), st.text(max_size=8))
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(
        [
            "runscaler/v1",
            "Fleet",
            "6h",
            "0",
            "4GiB",
            "env:TOKEN",
            "file:x",
            "docker",
            "tart",
            "https://github.com/acme",
            "http://127.0.0.1:9/acme",
            "linux",
            "always",
        ]
    ),
)
TREES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=5),
    max_leaves=25,
)
DOCUMENTS = st.fixed_dictionaries(
    {},
    optional={
        "apiVersion": st.sampled_from(["runscaler/v1", "runscaler/v1", "v2"]) | SCALARS,
        "kind": st.just("Fleet") | SCALARS,
        "metadata": st.fixed_dictionaries({"name": st.just("acme") | SCALARS}) | TREES,
        "defaults": st.dictionaries(KEYS, TREES, max_size=5),
        "scaleSets": st.lists(st.dictionaries(KEYS, TREES, max_size=6), max_size=3) | TREES,
    },
)


def dump_yaml(data: Any) -> str:
    out = io.StringIO()
    YAML(typ="safe", pure=True).dump(data, out)
    return out.getvalue()


def without_none(data: Any) -> Any:
    """TOML has no null: leave such values out."""
    if isinstance(data, dict):
        return {k: without_none(v) for k, v in data.items() if v is not None}
    if isinstance(data, list):
        return [without_none(v) for v in data if v is not None]
    return data


def outcome(text: str, fmt: Literal["yaml", "toml"], *, require_located: bool) -> None:
    try:
        load_manifest_text(text, source=f"fuzz.{fmt}", fmt=fmt, base_dir=Path("/nonexistent"))
    except ManifestError as exc:
        assert exc.diagnostics
        lines = text.count("\n") + 2
        for diagnostic in exc.diagnostics:
            assert diagnostic.file == f"fuzz.{fmt}"
            assert diagnostic.message
            assert diagnostic.severity == "error"
            if diagnostic.line is not None:
                assert 1 <= diagnostic.line <= lines and (diagnostic.col or 0) >= 1
            elif require_located:
                assert diagnostic.message.startswith(UNLOCATED_OK), diagnostic.located()


@FUZZ
@given(st.text(max_size=200))
def test_random_text_as_yaml(text: str) -> None:
    outcome(text, "yaml", require_located=False)


@FUZZ
@given(st.text(alphabet=st.sampled_from(list("[]{}\"'=.,#\n abc1-_:")), max_size=120))
def test_random_text_as_toml(text: str) -> None:
    outcome(text, "toml", require_located=False)


@FUZZ
@given(DOCUMENTS)
def test_random_documents_as_yaml(document: dict[str, Any]) -> None:
    outcome(dump_yaml(document), "yaml", require_located=True)


@FUZZ
@given(DOCUMENTS)
def test_random_documents_as_toml(document: dict[str, Any]) -> None:
    outcome(tomli_w.dumps(without_none(document)), "toml", require_located=True)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


BASE, _ = read_yaml(FLEET.read_text(encoding="utf-8"))
BASE_PATHS = _paths(BASE)
MUTATIONS = st.lists(
    st.tuples(
        st.sampled_from(BASE_PATHS),
        st.sampled_from(["delete", "replace", "retype", "rename"]),
        TREES,
        KEYS,
    ),
    min_size=1,
    max_size=3,
)


def mutate(plan: list[tuple[tuple[Any, ...], str, Any, str]]) -> dict[str, Any]:
    document = copy.deepcopy(BASE)
    for path, how, value, key in plan:
        parent: Any = document
        try:
            for part in path[:-1]:
                parent = parent[part]
            old = parent[path[-1]]
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or reshaped this path
        last = path[-1]
        if how == "delete":
            del parent[last]
        elif how == "replace":
            parent[last] = value
        elif how == "retype":
            parent[last] = [old] if not isinstance(old, list) else {"x": old}
        elif isinstance(parent, dict) and key not in parent:
            parent[key] = parent.pop(last)
    return document


@FUZZ
@given(MUTATIONS)
def test_mutated_manifests(plan: list[tuple[tuple[Any, ...], str, Any, str]]) -> None:
    document = mutate(plan)
    outcome(dump_yaml(document), "yaml", require_located=True)
    outcome(tomli_w.dumps(without_none(document)), "toml", require_located=True)
