"""`defaults` merged under each scale set, and where each merged value came from.

Mappings merge key by key, lists and scalars replace, and `github.auth` is replaced as a
whole: it is one choice, so a scale set that names `app` does not inherit the default
`token`. A finding about a merged value is located where that value was written: in the
scale set, or at the `defaults` key it was inherited from.
"""

from __future__ import annotations

from typing import Any

from runscaler.manifest.positions import FieldPath

REPLACED_WHOLE: frozenset[FieldPath] = frozenset({("github", "auth")})
"""Mappings that replace instead of merging."""


def merge_defaults(defaults: dict[str, Any], scale_set: dict[str, Any]) -> dict[str, Any]:
    """The scale set with `defaults` under it. Neither input is changed (aliases share them)."""
    return _merge(defaults, scale_set, ())


def _merge(base: dict[str, Any], over: dict[str, Any], path: FieldPath) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        inherited = merged.get(key)
        here = (*path, key)
        if isinstance(value, dict) and isinstance(inherited, dict) and here not in REPLACED_WHOLE:
            merged[key] = _merge(inherited, value, here)
        else:
            merged[key] = value
    return merged


def source_of(
    index: int, path: FieldPath, *, defaults: Any, scale_set: Any
) -> tuple[FieldPath, bool]:
    """Where the merged value at `path` of `scaleSets[index]` was written.

    Returns the document path and whether it is in `defaults`. A path that exists on neither
    side (a missing key) gets the scale set's nearest written ancestor: that is where the
    missing key belongs.
    """
    own: Any = scale_set
    inherited: Any = defaults
    for depth, key in enumerate(path):
        here = path[: depth + 1]
        own_has = _has(own, key)
        inherited_has = _has(inherited, key)
        if own_has:
            own = own[key]
            replaced = not isinstance(own, dict) or here in REPLACED_WHOLE
            inherited = None if replaced or not inherited_has else inherited[key]
            continue
        if inherited_has:
            return ("defaults", *path), True
        return ("scaleSets", index, *path[:depth]), False
    return ("scaleSets", index, *path), False


def _has(node: Any, key: str | int) -> bool:
    if isinstance(node, dict):
        return key in node
    return isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node)
