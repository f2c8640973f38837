"""A fast yes/no check against the manifest's JSON Schema; jsonschema explains a "no".

jsonschema interprets the schema afresh for every value: about 0.2 s for a 1,000-scale-set
manifest, most of `runscaler validate`'s time. Nearly every manifest checked is valid, so the
schema is first compiled here into plain Python closures that answer only "valid or not";
only a document they reject goes through jsonschema, whose errors are then reported.

The compiler knows exactly the keywords the generated schema uses, with Draft 7's meaning
(booleans are not numbers, `2.0` is an integer, `pattern` is `re.search`, a keyword applies
only to values of its type). It refuses a schema with any other keyword, and then callers
use jsonschema alone, so it can never call valid what jsonschema would not by ignoring a
rule. A test holds the two to the same answers on generated documents.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Check = Callable[[Any], bool]

_ANNOTATIONS = frozenset({"$schema", "$id", "title", "description", "default", "definitions"})


class Unsupported(Exception):
    """The schema uses a keyword this compiler does not implement."""


def compile_schema(root: dict[str, Any]) -> Check:
    definitions: dict[str, Any] = root.get("definitions", {})
    compiled: dict[str, Check] = {}

    def reference(ref: str) -> Check:
        prefix = "#/definitions/"
        if not ref.startswith(prefix) or ref[len(prefix) :] not in definitions:
            raise Unsupported(f"$ref {ref}")
        name = ref[len(prefix) :]
        if name not in compiled:
            compiled[name] = _always  # a recursive reference sees the finished check below
            compiled[name] = build(definitions[name])
        # Late binding: the check is looked up at call time, after every definition is built.
        return lambda value: compiled[name](value)

    def build(schema: Any) -> Check:
        if schema is True:
            return _always
        if schema is False:
            return _never
        if not isinstance(schema, dict):
            raise Unsupported(f"schema {schema!r}")
        if "$ref" in schema:  # Draft 7: a $ref's siblings are ignored
            return reference(schema["$ref"])
        unknown = set(schema) - _ANNOTATIONS - set(_KEYWORDS)
        if unknown:
            raise Unsupported(", ".join(sorted(unknown)))
        checks = [_KEYWORDS[key](schema[key], schema, build) for key in schema if key in _KEYWORDS]
        checks = [check for check in checks if check is not None]
        if len(checks) == 1:
            return checks[0]
        return lambda value: all(check(value) for check in checks)

    return build(root)


def _always(value: Any) -> bool:
    return True


def _never(value: Any) -> bool:
    return False


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_TYPES: dict[str, Check] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": _is_number,
    "integer": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool))
        or (isinstance(v, float) and v.is_integer())
    ),
}

Builder = Callable[[Any], Check]
Keyword = Callable[[Any, dict[str, Any], Builder], Check]


def _type(rule: Any, schema: dict[str, Any], build: Builder) -> Check:
    names = [rule] if isinstance(rule, str) else list(rule)
    if any(name not in _TYPES for name in names):
        raise Unsupported(f"type {rule!r}")
    checks = [_TYPES[name] for name in names]
    return lambda value: any(check(value) for check in checks)


def _properties(rule: Any, schema: dict[str, Any], build: Builder) -> Check:
    checks = {name: build(sub) for name, sub in rule.items()}

    def check(value: Any) -> bool:
        if not isinstance(value, dict):
            return True
        return all(checks[key](item) for key, item in value.items() if key in checks)

    return check


def _additional(rule: Any, schema: dict[str, Any], build: Builder) -> Check:
    known = frozenset(schema.get("properties", {}))
    extra = build(rule)

    def check(value: Any) -> bool:
        if not isinstance(value, dict):
            return True
        return all(extra(item) for key, item in value.items() if key not in known)

    return check


def _required(rule: Any, schema: dict[str, Any], build: Builder) -> Check:
    keys = list(rule)
    return lambda value: not isinstance(value, dict) or all(key in value for key in keys)


def _items(rule: Any, schema: dict[str, Any], build: Builder) -> Check:
    if isinstance(rule, list):
        raise Unsupported("items as a list")
    item = build(rule)
    return lambda value: not isinstance(value, list) or all(item(v) for v in value)


def _any_of(rule: Any, schema: dict[str, Any], build: Builder) -> Check:
    checks = [build(sub) for sub in rule]
    return lambda value: any(check(value) for check in checks)


def _all_of(rule: Any, schema: dict[str, Any], build: Builder) -> Check:
    checks = [build(sub) for sub in rule]
    return lambda value: all(check(value) for check in checks)


def _equal(one: Any, two: Any) -> bool:
    """JSON equality: `true` is not `1`; containers compare item by item."""
    if isinstance(one, bool) or isinstance(two, bool):
        return isinstance(one, bool) and isinstance(two, bool) and one == two
    if isinstance(one, str) or isinstance(two, str):
        return bool(one == two)
    if isinstance(one, list) and isinstance(two, list):
        return len(one) == len(two) and all(_equal(a, b) for a, b in zip(one, two, strict=True))
    if isinstance(one, dict) and isinstance(two, dict):
        return one.keys() == two.keys() and all(_equal(one[k], two[k]) for k in one)
    if isinstance(one, list | dict) or isinstance(two, list | dict):
        return False
    return bool(one == two)


def _const(rule: Any, schema: dict[str, Any], build: Builder) -> Check:
    return lambda value: _equal(value, rule)


def _enum(rule: Any, schema: dict[str, Any], build: Builder) -> Check:
    options = list(rule)
    return lambda value: any(_equal(value, option) for option in options)


def _pattern(rule: Any, schema: dict[str, Any], build: Builder) -> Check:
    search = re.compile(rule).search
    return lambda value: not isinstance(value, str) or search(value) is not None


def _bound(compare: Callable[[Any, Any], bool]) -> Keyword:
    def keyword(rule: Any, schema: dict[str, Any], build: Builder) -> Check:
        return lambda value: not _is_number(value) or compare(value, rule)

    return keyword


def _min_length(rule: Any, schema: dict[str, Any], build: Builder) -> Check:
    return lambda value: not isinstance(value, str) or len(value) >= rule


_KEYWORDS: dict[str, Keyword] = {
    "type": _type,
    "properties": _properties,
    "additionalProperties": _additional,
    "required": _required,
    "items": _items,
    "anyOf": _any_of,
    "allOf": _all_of,
    "const": _const,
    "enum": _enum,
    "pattern": _pattern,
    "minimum": _bound(lambda value, rule: value >= rule),
    "maximum": _bound(lambda value, rule: value <= rule),
    "exclusiveMinimum": _bound(lambda value, rule: value > rule),
    "exclusiveMaximum": _bound(lambda value, rule: value < rule),
    "minLength": _min_length,
}
