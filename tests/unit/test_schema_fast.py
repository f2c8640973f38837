"""The compiled schema check answers exactly as jsonschema does, or refuses to compile."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from jsonschema import Draft7Validator

from runscaler.manifest.fast_schema import Unsupported, compile_schema
from runscaler.manifest.schema import document_schema
from tests.unit.test_manifest_fuzz import BASE, DOCUMENTS, MUTATIONS, mutate

SCHEMA = document_schema()
FAST = compile_schema(SCHEMA)
SLOW = Draft7Validator(SCHEMA)
SAME = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SAME
@given(DOCUMENTS)
def test_random_documents_get_the_same_answer(document: dict[str, Any]) -> None:
    assert FAST(document) == SLOW.is_valid(document)


@SAME
@given(MUTATIONS)
def test_mutated_manifests_get_the_same_answer(plan: Any) -> None:
    document = mutate(plan)
    assert FAST(document) == SLOW.is_valid(document)


def test_the_real_manifest_is_valid_for_both() -> None:
    assert FAST(BASE) and SLOW.is_valid(BASE)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("scaleSets", 0, "maxRunners"), True),  # a boolean is not an integer
        (("scaleSets", 0, "maxRunners"), 3.0),  # but 3.0 is
        (("scaleSets", 0, "docker", "cpus"), 0),
        (("scaleSets", 0, "docker", "cpus"), math.inf),
        (("scaleSets", 0, "drainTimeout"), 0.0),
        (("scaleSets", 0, "drainTimeout"), False),
        (("kind",), "fleet"),
        (("scaleSets", 0, "docker", "pull"), "Always"),
        (("scaleSets", 0, "name"), ""),
        (("metadata", "name"), "a" * 41),
    ],
)
def test_json_edge_cases_get_the_same_answer(path: tuple[Any, ...], value: Any) -> None:
    document: Any = mutate([])
    node = document
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    assert FAST(document) == SLOW.is_valid(document)


def test_a_keyword_it_does_not_know_refuses_to_compile() -> None:
    with pytest.raises(Unsupported, match="uniqueItems"):
        compile_schema({"type": "array", "uniqueItems": True})
    with pytest.raises(Unsupported):
        compile_schema({"$ref": "https://example.com/elsewhere.json"})
