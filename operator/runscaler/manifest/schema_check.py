"""Validation layer 1: the document as written against the JSON Schema, in the user's words.

jsonschema's own messages name schema keywords ("is not valid under any of the given
schemas"); each error here is reworded by what went wrong: a wrong type, an unknown key (with
a "did you mean" hint), a value out of range, a malformed duration. The same schema is what
editors and `check-jsonschema` use, so the three always agree on what is valid. A compiled
check (`fast_schema`) answers first; jsonschema runs only to explain a document it rejects.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from runscaler.manifest.fast_schema import Check, Unsupported, compile_schema
from runscaler.manifest.findings import Findings, suggest
from runscaler.manifest.models import (
    FLEET_NAME_PATTERN,
    SCALE_SET_NAME_PATTERN,
    SUPPORTED_API_VERSIONS,
    SWARM_CONSTRAINT_PATTERN,
    SWARM_SPREAD_PATTERN,
)
from runscaler.manifest.positions import FieldPath
from runscaler.manifest.schema import cached_schema
from runscaler.manifest.values import (
    DURATION_PATTERN,
    SIZE_PATTERN,
    parse_config_url,
    parse_duration,
    parse_size,
)

if TYPE_CHECKING:
    from jsonschema import Draft7Validator, ValidationError

Explained = tuple[FieldPath, str, bool]  # path, message, located at the key

_TYPES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
}
_NAME_HELP = {
    SCALE_SET_NAME_PATTERN: "a scale set name is 1 to 45 letters, digits, '.', '_' or '-'",
    FLEET_NAME_PATTERN: (
        "a fleet name is 1 to 40 lowercase letters, digits or '-', "
        "starting and ending with a letter or digit"
    ),
}
_PATTERN_HELP = {
    SWARM_CONSTRAINT_PATTERN: (
        "invalid placement constraint {value}: write KEY==VALUE or KEY!=VALUE, "
        "e.g. node.labels.pool==big"
    ),
    SWARM_SPREAD_PATTERN: (
        "invalid spread preference {value}: name a node attribute, e.g. node.labels.zone"
    ),
}
_REQUIRED_HINTS = {
    "kind": "kind: Fleet",
    "metadata": "metadata: {name: my-fleet}",
    "scaleSets": "scaleSets: [] (or a list of scale sets)",
    "name": "name: linux-x64",
}
_SECRET_KEYS = frozenset({"token", "privateKey"})


@functools.cache
def _validator() -> Draft7Validator:
    from jsonschema import Draft7Validator

    return Draft7Validator(cached_schema())


@functools.cache
def _fast_check() -> Check | None:
    try:
        return compile_schema(cached_schema())
    except Unsupported:
        return None


def check_version(document: dict[str, Any], findings: Findings) -> bool:
    """`apiVersion` selects everything else: without a supported one, nothing more is checked."""
    supported = ", ".join(SUPPORTED_API_VERSIONS)
    if "apiVersion" not in document:
        findings.add((), f"missing required key 'apiVersion': add `apiVersion: {supported}`")
        return False
    version = document["apiVersion"]
    if version not in SUPPORTED_API_VERSIONS:
        findings.add(
            ("apiVersion",),
            f"unsupported apiVersion {describe(version)}; supported versions: {supported}",
        )
        return False
    return True


def check_schema(document: dict[str, Any], findings: Findings) -> list[FieldPath]:
    """Report every schema error; return the paths they are about."""
    fast = _fast_check()
    if fast is not None and fast(document):
        return []
    bad: list[FieldPath] = []
    for error in _validator().iter_errors(document):
        for path, message, at_key in explain(error):
            findings.add(path, message, at_key=at_key)
        bad.extend(_subjects(error))
    return bad


def _subjects(error: ValidationError) -> list[FieldPath]:
    """The paths an error is about: a missing or unknown key's own path, not its parent's."""
    path = tuple(error.absolute_path)
    instance = _instance(error)
    if error.validator == "required" and isinstance(instance, dict):
        return [(*path, key) for key in _rule(error) if key not in instance]
    if error.validator == "additionalProperties" and isinstance(error.schema, dict):
        known = error.schema.get("properties", {})
        return [(*path, key) for key in instance if key not in known]
    return [path]


def explain(error: ValidationError) -> list[Explained]:
    path = tuple(error.absolute_path)
    handler = _HANDLERS.get(str(error.validator))
    if handler is not None:
        return handler(error, path)
    return [(path, error.message, False)]


def _instance(error: ValidationError) -> Any:
    return error.instance


def _rule(error: ValidationError) -> Any:
    """The failing keyword's value in the schema (`validator_value`)."""
    return error.validator_value


def _additional_properties(error: ValidationError, path: FieldPath) -> list[Explained]:
    known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
    return [
        ((*path, key), _unknown_key(key, path, known), True)
        for key in _instance(error)
        if key not in known
    ]


def _unknown_key(key: str, path: FieldPath, known: dict[str, Any]) -> str:
    if path == ("defaults",) and key == "name":
        return "`name` cannot be inherited: each scale set names itself"
    hint = suggest(key, known)
    if hint is not None:
        return f"unknown key {key!r} (did you mean {hint!r}?)"
    nested = [f"{parent}.{key}" for parent, sub in known.items() if key in _properties_of(sub)]
    if nested:
        return f"unknown key {key!r} (did you mean {' or '.join(map(repr, nested))}?)"
    return f"unknown key {key!r}"


def _properties_of(schema: Any) -> dict[str, Any]:
    """The keys an object schema allows, through `$ref`, `allOf` and `anyOf`."""
    if not isinstance(schema, dict):
        return {}
    found: dict[str, Any] = dict(schema.get("properties", {}))
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/definitions/"):
        found.update(_properties_of(cached_schema()["definitions"].get(ref.rsplit("/", 1)[1])))
    for branch in (*schema.get("allOf", ()), *schema.get("anyOf", ())):
        found.update(_properties_of(branch))
    return found


def _required(error: ValidationError, path: FieldPath) -> list[Explained]:
    instance = _instance(error)
    known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
    unknown = [key for key in instance if key not in known]
    # A misspelt key is reported as unknown, with the right spelling: once is enough.
    missing = [
        key
        for key in _rule(error)
        if key not in instance and not any(suggest(u, [key]) == key for u in unknown)
    ]
    out = []
    for key in missing:
        hint = _REQUIRED_HINTS.get(key)
        message = f"missing required key {key!r}" + (f": add `{hint}`" if hint else "")
        out.append((path, message, False))
    return out


def _type(error: ValidationError, path: FieldPath) -> list[Explained]:
    expected = _rule(error)
    names = [expected] if isinstance(expected, str) else list(expected)
    wanted = " or ".join(_TYPES.get(name, name) for name in names)
    got = describe(_instance(error), sensitive=_sensitive(path))
    return [(path, f"must be {wanted}, got {got}", False)]


def _any_of(error: ValidationError, path: FieldPath) -> list[Explained]:
    branches = [b for b in _rule(error) if isinstance(b, dict)]
    patterns = {b.get("pattern") for b in branches}
    for pattern, parser in ((DURATION_PATTERN, parse_duration), (SIZE_PATTERN, parse_size)):
        if pattern in patterns:
            message = _parser_message(parser, _instance(error))
            if message:
                return [(path, message, False)]
    live = [i for i, b in enumerate(_rule(error)) if b != {"type": "null"}]
    if len(live) == 1 and _instance(error) is not None:
        inner = [e for e in error.context or () if e.relative_schema_path[0] == live[0]]
        explained = [item for e in inner for item in explain(e)]
        if explained:
            return explained
    got = describe(_instance(error), sensitive=_sensitive(path))
    return [(path, f"is not a valid value: got {got}", False)]


def _parser_message(parser: Callable[[Any], object], value: Any) -> str | None:
    try:
        parser(value)
    except ValueError as exc:
        return str(exc)
    return None


def _const(error: ValidationError, path: FieldPath) -> list[Explained]:
    got = describe(_instance(error))
    return [(path, f"must be {_rule(error)!r}, got {got}", False)]


def _enum(error: ValidationError, path: FieldPath) -> list[Explained]:
    allowed = [str(v) for v in _rule(error)]
    message = f"must be one of {', '.join(allowed)}; got {describe(_instance(error))}"
    if isinstance(_instance(error), str):
        hint = suggest(_instance(error), allowed)
        if hint is not None:
            message += f" (did you mean {hint!r}?)"
    return [(path, message, False)]


def _pattern(error: ValidationError, path: FieldPath) -> list[Explained]:
    pattern = _rule(error)
    if pattern in _NAME_HELP:
        return [(path, f"invalid name {describe(_instance(error))}: {_NAME_HELP[pattern]}", False)]
    if pattern in _PATTERN_HELP:
        return [(path, _PATTERN_HELP[pattern].format(value=describe(_instance(error))), False)]
    if path and path[-1] == "url":
        message = _parser_message(parse_config_url, _instance(error))
        if message:
            return [(path, message, False)]
    return [(path, f"{describe(_instance(error))} does not match {pattern}", False)]


def _bound(symbol: str) -> Callable[[ValidationError, FieldPath], list[Explained]]:
    def explain_bound(error: ValidationError, path: FieldPath) -> list[Explained]:
        got = describe(_instance(error))
        return [(path, f"must be {symbol} {_rule(error)}, got {got}", False)]

    return explain_bound


def _min_length(error: ValidationError, path: FieldPath) -> list[Explained]:
    if _rule(error) == 1:
        return [(path, "must not be empty", False)]
    return [(path, f"must be at least {_rule(error)} characters long", False)]


_HANDLERS: dict[str, Callable[[ValidationError, FieldPath], list[Explained]]] = {
    "additionalProperties": _additional_properties,
    "required": _required,
    "type": _type,
    "anyOf": _any_of,
    "const": _const,
    "enum": _enum,
    "pattern": _pattern,
    "minimum": _bound(">="),
    "exclusiveMinimum": _bound(">"),
    "maximum": _bound("<="),
    "exclusiveMaximum": _bound("<"),
    "minLength": _min_length,
}


def _sensitive(path: FieldPath) -> bool:
    """Secrets never appear in messages, even a secret written with the wrong type."""
    return bool(path) and (path[-1] in _SECRET_KEYS or (len(path) > 1 and path[-2] == "env"))


def describe(value: Any, *, sensitive: bool = False) -> str:
    """A value as a message shows it: YAML-ish, short, and never a secret."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if sensitive:
        return "a string" if isinstance(value, str) else "a number"
    if isinstance(value, int | float):
        try:
            text = str(value)
        except ValueError:  # more digits than Python prints
            return "a very large number"
    elif isinstance(value, str):
        text = repr(value)
    else:
        text = f"a {type(value).__name__}"  # a TOML date or time
    return text if len(text) <= 60 else text[:57] + "..."
