"""YAML text → plain data and a `SourceMap`, safely and fast, from the parser's event stream.

ruamel.yaml's round-trip loader keeps positions but takes over a second on a 1,000-scale-set
manifest; its C parser (ruamel.yaml.clib, when installed) produces the events of the same file
in a few tens of milliseconds. Building the data from events ourselves gives us, in one pass:

- positions of every key and value (the events carry marks), for located errors;
- safety: only the YAML 1.2 core schema's plain values (strings, numbers, booleans, null) and
  the standard tags; any other tag (`!!python/object`, custom tags) is refused;
- bounds the composers lack: nesting depth (the C composer recurses and would crash the
  process on a deeply nested document) and alias expansion (a "billion laughs" document is
  refused after a bounded amount of work, without expanding anything);
- duplicate keys refused, located at the second occurrence.

Merge keys (`<<: *anchor`) are honoured as ruamel.yaml does: keys written in the mapping win.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ruamel.yaml.main
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)

from runscaler.manifest.positions import Entry, FieldPath, Mark, SourceMap

MAX_DEPTH = 64
"""Nesting deeper than this is refused; a real manifest nests about six levels."""

MAX_ALIAS_EXPANSION = 100_000
"""Values that aliases may bring in, in all: a 1 MiB file without aliases has about as many."""

_TAG = "tag:yaml.org,2002:"
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_TRUE = re.compile(r"^(?:true|True|TRUE)$")
_FALSE = re.compile(r"^(?:false|False|FALSE)$")
_INT = re.compile(r"^[-+]?[0-9]+$")
_OCT = re.compile(r"^0o[0-7]+$")
_HEX = re.compile(r"^0x[0-9a-fA-F]+$")
_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")
_INF = re.compile(r"^[-+]?\.(?:inf|Inf|INF)$")
_NAN = re.compile(r"^\.(?:nan|NaN|NAN)$")


class YAMLProblem(Exception):
    """A located problem in the YAML text; the loader turns it into a diagnostic."""

    def __init__(self, message: str, mark: Mark | None) -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark


@dataclass
class _Frame:
    container: dict[str, Any] | list[Any]
    path: FieldPath
    anchor: str | None
    weight: int = 1
    key: str | None = None  # a mapping's key waiting for its value
    key_mark: Mark | None = None
    merge_pending: bool = False  # the waiting key is `<<`
    merged: dict[str, Any] = field(default_factory=dict)
    merged_marks: dict[str, Entry] = field(default_factory=dict)


def _mark(event: Any) -> Mark:
    return Mark(event.start_mark.line + 1, event.start_mark.column + 1)


def read_yaml(text: str) -> tuple[Any, SourceMap]:
    """Parse one YAML document into plain dicts, lists and scalars, with their positions.

    Raises `YAMLProblem` for anything that is not a usable document; an empty document is
    `None`.
    """
    try:
        return _Composer(text).compose(pure=False)
    except YAMLError:
        if getattr(ruamel.yaml.main, "CParser", None) is None:
            raise _parser_problem(text) from None
    # libyaml follows YAML 1.1 where the pure parser follows 1.2, which allows `:` inside
    # plain scalars in flow collections (`{url: https://github.com/acme}`): ask it too.
    try:
        return _Composer(text).compose(pure=True)
    except YAMLError:
        raise _parser_problem(text) from None


def _parser_problem(text: str) -> YAMLProblem:
    """The problem being handled, as a located one-line message."""
    exc = sys.exc_info()[1]
    if isinstance(exc, MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = Mark(mark.line + 1, mark.column + 1) if mark is not None else None
        problem = exc.problem or "unreadable YAML"
        if problem.startswith("found character '\\t'"):
            return YAMLProblem("invalid YAML: a tab cannot indent YAML; use spaces", where)
        context = f" ({exc.context})" if exc.context else ""
        return YAMLProblem(f"invalid YAML: {problem}{context}", where)
    assert isinstance(exc, YAMLError)
    return _reader_problem(exc, text)


def _reader_problem(exc: YAMLError, text: str) -> YAMLProblem:
    """A reader error (a character YAML does not allow), located by finding that character."""
    character = getattr(exc, "character", None)
    mark = None
    if isinstance(character, int):
        offset = text.find(chr(character))
        if offset >= 0:
            line_start = text.rfind("\n", 0, offset) + 1
            mark = Mark(text.count("\n", 0, offset) + 1, offset - line_start + 1)
        what = f"character U+{character:04X} is not allowed in YAML"
    else:
        what = "the text cannot be read as YAML"
    return YAMLProblem(f"invalid YAML: {what}", mark)


class _Composer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.entries: dict[FieldPath, Entry] = {}
        self.anchors: dict[str, tuple[Any, int]] = {}
        self.open_anchors: set[str] = set()
        self.stack: list[_Frame] = []
        self.expanded = 0
        self.documents = 0
        self.root: Any = None
        self.done = False

    def compose(self, *, pure: bool) -> tuple[Any, SourceMap]:
        """Build from the C parser's events (ruamel.yaml.clib) unless told `pure`."""
        handlers: dict[type, Callable[[Any], None]] = {
            ScalarEvent: self._scalar,
            MappingStartEvent: self._start,
            SequenceStartEvent: self._start,
            MappingEndEvent: self._end,
            SequenceEndEvent: self._end,
            AliasEvent: self._alias,
            DocumentStartEvent: self._document,
        }
        c_parser = None if pure else getattr(ruamel.yaml.main, "CParser", None)
        if c_parser is not None:
            next_event = c_parser(self.text).get_event  # straight from C, no generator
        else:
            next_event = iter(YAML(typ="safe", pure=True).parse(self.text)).__next__
        while True:
            event = next_event()
            kind = type(event)
            if kind is StreamEndEvent:
                return self.root, SourceMap(self.root, self.entries)
            handler = handlers.get(kind)
            if handler is not None:
                handler(event)

    def _document(self, event: Any) -> None:
        self.documents += 1
        if self.documents > 1:
            raise YAMLProblem(
                "more than one YAML document (---): a manifest is a single document",
                _mark(event),
            )

    # Values -------------------------------------------------------------------------------

    def _scalar(self, event: Any) -> None:
        frame = self.stack[-1] if self.stack else None
        mark = _mark(event)
        if frame is not None and isinstance(frame.container, dict) and frame.key is None:
            self._key(frame, event, mark)
            return
        value = _construct(event, mark)
        if event.anchor is not None:
            self.anchors[event.anchor] = (value, 1)
        self._attach(value, mark, weight=1)

    def _key(self, frame: _Frame, event: Any, mark: Mark) -> None:
        value = _construct(event, mark)
        if not isinstance(value, str):
            raise YAMLProblem(f"a key must be a string, got {_describe(value)}", mark)
        if event.anchor is not None:
            self.anchors[event.anchor] = (value, 1)
        merge = value == "<<" and bool(event.implicit[0]) and event.tag is None
        self._set_key(frame, value, mark, merge=merge)

    def _set_key(self, frame: _Frame, key: str, mark: Mark, *, merge: bool) -> None:
        if merge:
            frame.merge_pending = True
        elif key in frame.container:
            first = self.entries.get((*frame.path, key))
            at = f" (first at line {first.key.line})" if first and first.key else ""
            raise YAMLProblem(f"duplicate key {_describe(key)}{at}", mark)
        frame.key = key
        frame.key_mark = mark

    def _start(self, event: Any) -> None:
        mark = _mark(event)
        if len(self.stack) >= MAX_DEPTH:
            raise YAMLProblem(f"nesting deeper than {MAX_DEPTH} levels", mark)
        is_map = isinstance(event, MappingStartEvent)
        allowed = (None, "!", _TAG + ("map" if is_map else "seq"))
        if event.tag not in allowed:
            raise YAMLProblem(f"unsupported YAML tag {_short_tag(event.tag)}", mark)
        frame = self.stack[-1] if self.stack else None
        if frame is not None and isinstance(frame.container, dict) and frame.key is None:
            raise YAMLProblem("a key must be a string, not a mapping or a list", mark)
        container: dict[str, Any] | list[Any] = {} if is_map else []
        path = self._attach(container, mark, weight=0)
        if event.anchor is not None:
            self.open_anchors.add(event.anchor)
        self.stack.append(_Frame(container, path, event.anchor))

    def _end(self, event: Any) -> None:
        frame = self.stack.pop()
        if isinstance(frame.container, dict):
            for key, value in frame.merged.items():
                if key not in frame.container:
                    frame.container[key] = value
                    self.entries[(*frame.path, key)] = frame.merged_marks[key]
        if frame.anchor is not None:
            self.anchors[frame.anchor] = (frame.container, frame.weight)
            self.open_anchors.discard(frame.anchor)
        if self.stack:
            self.stack[-1].weight += frame.weight

    def _alias(self, event: Any) -> None:
        mark = _mark(event)
        name = event.anchor
        if name in self.open_anchors:
            raise YAMLProblem(f"alias *{name} refers to a value that contains it", mark)
        if name not in self.anchors:
            raise YAMLProblem(f"alias *{name} has no anchor &{name} before it", mark)
        value, weight = self.anchors[name]
        self.expanded += weight
        if self.expanded > MAX_ALIAS_EXPANSION:
            raise YAMLProblem(
                f"aliases expand to more than {MAX_ALIAS_EXPANSION} values "
                "(a YAML alias bomb?); write the values out",
                mark,
            )
        frame = self.stack[-1] if self.stack else None
        if frame is not None and isinstance(frame.container, dict) and frame.key is None:
            if not isinstance(value, str):
                raise YAMLProblem("a key must be a string, not a mapping or a list", mark)
            self._set_key(frame, value, mark, merge=False)
            return
        self._attach(value, mark, weight=weight)

    def _attach(self, value: Any, mark: Mark, *, weight: int) -> FieldPath:
        """Put a value where the parser is: the root, a list item, or a mapping's value."""
        if not self.stack:
            self.root = value
            self.entries[()] = Entry(None, mark)
            return ()
        frame = self.stack[-1]
        frame.weight += weight
        if isinstance(frame.container, list):
            path = (*frame.path, len(frame.container))
            frame.container.append(value)
            self.entries[path] = Entry(None, mark)
            return path
        key, key_mark = frame.key, frame.key_mark
        assert key is not None  # _scalar/_start/_alias handle a missing key first
        frame.key = None
        path = (*frame.path, key)
        if frame.merge_pending:
            frame.merge_pending = False
            self._merge(frame, value, Entry(key_mark, mark))
            return path
        frame.container[key] = value
        self.entries[path] = Entry(key_mark, mark)
        return path

    def _merge(self, frame: _Frame, value: Any, entry: Entry) -> None:
        sources = value if isinstance(value, list) else [value]
        for source in sources:
            if not isinstance(source, dict):
                raise YAMLProblem("`<<` merges mappings only (<<: *anchor)", entry.value)
            for key, item in source.items():
                if key not in frame.merged:  # the first source listed wins, as in ruamel.yaml
                    frame.merged[key] = item
                    frame.merged_marks[key] = entry


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_TAG) :] if tag.startswith(_TAG) else tag


def _construct(event: Any, mark: Mark) -> Any:
    """A scalar's value under the YAML 1.2 core schema (no `yes`/`no` booleans, no dates)."""
    value: str = event.value
    tag = event.tag
    if tag is None and event.implicit[0]:
        return _resolve_plain(value)
    if tag is None or tag in ("!", _TAG + "str"):
        return value
    kind = tag[len(_TAG) :] if tag.startswith(_TAG) else None
    resolved = _resolve_plain(value)
    if kind == "int" and isinstance(resolved, int) and not isinstance(resolved, bool):
        return resolved
    if kind == "float" and isinstance(resolved, int | float) and not isinstance(resolved, bool):
        return float(resolved)
    if kind == "bool" and isinstance(resolved, bool):
        return resolved
    if kind == "null" and resolved is None:
        return None
    if kind in ("int", "float", "bool", "null"):
        raise YAMLProblem(f"{value!r} is not a valid !!{kind}", mark)
    raise YAMLProblem(f"unsupported YAML tag {_short_tag(tag)}", mark)


def _resolve_plain(value: str) -> Any:
    if not value:
        return None
    if value[0] not in "~nNtTfF0123456789-+.":
        return value
    if _NULL.match(value):
        return None
    if _TRUE.match(value):
        return True
    if _FALSE.match(value):
        return False
    if _INT.match(value):
        return _int(value, 10)
    if _OCT.match(value):
        return _int(value[2:], 8)
    if _HEX.match(value):
        return _int(value[2:], 16)
    if _FLOAT.match(value):
        return float(value)
    if _INF.match(value):
        return -math.inf if value[0] == "-" else math.inf
    if _NAN.match(value):
        return math.nan
    return value


def _int(digits: str, base: int) -> int | str:
    try:
        return int(digits, base)
    except ValueError:  # longer than Python converts (sys.get_int_max_str_digits)
        return digits


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
