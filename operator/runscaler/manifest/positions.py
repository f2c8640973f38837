"""Where each key and value of a parsed manifest sits in its text, and how a field path reads.

Validators (the JSON Schema, pydantic) see plain data without positions, so each reader
(YAML, TOML) also returns a `SourceMap` from field paths to line and column. A path that is
not in the map (a missing key, a value an alias brought in) is located at its nearest
ancestor that is, so every finding in a document with any text gets a place.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple

FieldPath = tuple[str | int, ...]
"""Keys and 0-based list indices from the document's root: `("scaleSets", 2, "maxRunners")`."""


class Mark(NamedTuple):
    """A 1-based line and column. (Tuples: a large manifest makes tens of thousands.)"""

    line: int
    col: int


class Entry(NamedTuple):
    """Where one value sits: its key (None for list items and the root) and the value itself."""

    key: Mark | None
    value: Mark


class SourceMap:
    """Field path → position, built eagerly (YAML) or on first use (TOML)."""

    def __init__(
        self,
        data: Any,
        entries: dict[FieldPath, Entry] | None = None,
        *,
        build: Callable[[], dict[FieldPath, Entry]] | None = None,
    ) -> None:
        self.data = data
        self._entries = entries
        self._build = build

    @property
    def entries(self) -> dict[FieldPath, Entry]:
        if self._entries is None:
            self._entries = self._build() if self._build is not None else {}
        return self._entries

    def locate(self, path: FieldPath, *, at_key: bool = False) -> Mark | None:
        """The best position for a finding about `path`.

        A scalar is located at its value; a mapping or list at its key (the line that names
        it); an unknown key (`at_key`) at the key. A path absent from the map falls back to its
        nearest located ancestor, at that ancestor's key.
        """
        entries = self.entries
        for end in range(len(path), -1, -1):
            entry = entries.get(path[:end])
            if entry is None:
                continue
            if end < len(path) or at_key:
                return entry.key or entry.value
            if entry.key is not None and isinstance(_value_at(self.data, path), dict | list):
                return entry.key
            return entry.value
        return None


def _value_at(data: Any, path: FieldPath) -> Any:
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def format_path(path: FieldPath, document: Any = None) -> str:
    """`scaleSets[2] (linux-x64).docker.memory`: 0-based, naming scale sets when they have one."""
    text = ""
    node = document
    for depth, part in enumerate(path):
        if isinstance(part, int):
            text += f"[{part}]"
        elif _PLAIN_KEY.match(part):
            text += f".{part}" if text else part
        else:
            text += f"[{_quote(part)}]"
        node = _child(node, part)
        if depth == 1 and path[0] == "scaleSets" and isinstance(node, dict):
            name = node.get("name")
            if isinstance(name, str) and name:
                text += f" ({name})"
    return text


def _child(node: Any, part: str | int) -> Any:
    if isinstance(part, int) and isinstance(node, list) and 0 <= part < len(node):
        return node[part]
    if isinstance(part, str) and isinstance(node, dict):
        return node.get(part)
    return None


def _quote(key: str) -> str:
    return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'
