"""The JSON Schema of the manifest as written, derived from the models so the two never disagree.

The models describe a scale set after `defaults` are merged in; a document may leave out of a
scale set whatever `defaults` gives it. `document_schema()` starts from pydantic's schema of
`Fleet` and applies one documented transform:

1. `$defs` becomes draft-07 `definitions`; `title`s go (descriptions stay); a `$ref` with
   sibling keywords is wrapped in `allOf`, since draft-07 ignores a `$ref`'s siblings.
2. Nothing a scale set can inherit is required: `required` is dropped from every model that
   `defaults` merges key by key. A scale set must still name itself (`name`), and models that
   are replaced whole (`github.auth.app`) or are the fleet's own (`metadata`) keep theirs.
3. `defaults` (`ScaleSetDefaults`: every scale-set field but `name`) is added, and
   `scaleSets` is required (an empty list is fine).
4. Defaults are shown as written: durations as `6h`, not seconds; mapping defaults are left
   out (each of their fields shows its own).

The result uses the draft-07 subset (editors' YAML language servers ignore newer keywords),
names its dialect in `$schema` and its version in `$id`, and refuses unknown keys everywhere.
`schemas/fleet-v1.schema.json` is this output, checked in; a test keeps them equal.
"""

from __future__ import annotations

import copy
import functools
import json
from typing import Any

from runscaler.manifest.models import Fleet
from runscaler.manifest.values import DURATION_PATTERN, format_duration

SCHEMA_ID = "https://runscaler.dev/schemas/fleet-v1.schema.json"
DRAFT_07 = "http://json-schema.org/draft-07/schema#"

KEEPS_REQUIRED = frozenset({"AppAuth", "Metadata"})
"""Models `defaults` does not merge into key by key: what they require stays required."""


def document_schema() -> dict[str, Any]:
    raw = Fleet.model_json_schema(by_alias=True, ref_template="#/definitions/{model}")
    definitions: dict[str, Any] = {
        name: _clean(schema) for name, schema in raw.pop("$defs").items()
    }
    for name, schema in definitions.items():
        if name not in KEEPS_REQUIRED:
            schema.pop("required", None)
    scale_set = definitions["ScaleSet"]
    scale_set["required"] = ["name"]
    defaults = copy.deepcopy(scale_set)
    del defaults["properties"]["name"]
    del defaults["required"]
    defaults["description"] = (
        "Any scale-set field but `name`, deep-merged under each scale set: mappings merge key "
        "by key, lists and scalars replace, github.auth is replaced as a whole."
    )
    definitions["ScaleSetDefaults"] = defaults

    fleet = _clean(raw)
    properties = fleet.pop("properties")
    ordered_properties = {}
    for name, schema in properties.items():
        ordered_properties[name] = schema
        if name == "metadata":
            ordered_properties["defaults"] = {"$ref": "#/definitions/ScaleSetDefaults"}
    return {
        "$schema": DRAFT_07,
        "$id": SCHEMA_ID,
        "title": "runscaler fleet manifest v1",
        "description": (
            "A fleet of GitHub Actions runner scale sets (apiVersion runscaler/v1). "
            "YAML and TOML spell the same document."
        ),
        "type": "object",
        "properties": ordered_properties,
        "required": ["apiVersion", "kind", "metadata", "scaleSets"],
        "additionalProperties": False,
        "definitions": dict(sorted(definitions.items())),
    }


def _clean(node: Any) -> Any:
    if isinstance(node, list):
        return [_clean(item) for item in node]
    if not isinstance(node, dict):
        return node
    cleaned = {key: _clean(value) for key, value in node.items() if key != "title"}
    if "default" in cleaned:
        default = cleaned["default"]
        if isinstance(default, dict):
            del cleaned["default"]
        elif _is_duration(cleaned) and isinstance(default, int | float) and default:
            cleaned["default"] = format_duration(default)
    if "$ref" in cleaned and len(cleaned) > 1:
        ref = cleaned.pop("$ref")
        cleaned = {"allOf": [{"$ref": ref}], **cleaned}
    return cleaned


def _is_duration(schema: dict[str, Any]) -> bool:
    return any(
        isinstance(branch, dict) and branch.get("pattern") == DURATION_PATTERN
        for branch in schema.get("anyOf", ())
    )


def schema_text() -> str:
    """The schema as checked in: two-space indents, the generator's key order, a final newline."""
    return json.dumps(document_schema(), indent=2, ensure_ascii=False) + "\n"


@functools.cache
def cached_schema() -> dict[str, Any]:
    return document_schema()
