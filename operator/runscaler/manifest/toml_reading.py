"""TOML text → plain data and a lazily built `SourceMap`.

tomllib parses; its syntax errors carry "(at line L, column C)", which we turn into the
manifest's `FILE:LINE:COL` form. Positions of values come from `toml_positions`, built only
when a finding needs one.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

from runscaler.manifest.positions import Mark, SourceMap
from runscaler.manifest.toml_positions import scan_positions
from runscaler.manifest.yaml_reading import MAX_DEPTH

_AT = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_AT_END = re.compile(r"\s*\(at end of document\)$")


# tomllib's words for the commonest mistakes, said as the user would see the mistake.
_CLEARER = {
    "cannot overwrite a value": "a key is set twice (or a table is defined twice)",
    "illegal character '\\n'": "a string is not closed on its line",
}


class TOMLProblem(Exception):
    """A located problem in the TOML text; the loader turns it into a diagnostic."""

    def __init__(self, message: str, mark: Mark | None) -> None:
        super().__init__(message)
        self.message = message
        self.mark = mark


def read_toml(text: str) -> tuple[dict[str, Any], SourceMap]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_problem(str(exc), text) from None
    except ValueError:  # an integer with more digits than Python converts
        raise TOMLProblem("invalid TOML: a number is too large", None) from None
    except RecursionError:
        raise TOMLProblem(f"invalid TOML: nesting deeper than {MAX_DEPTH} levels", None) from None
    _check_depth(data, text)
    return data, SourceMap(data, build=lambda: scan_positions(text))


def _syntax_problem(message: str, text: str) -> TOMLProblem:
    found = _AT.search(message)
    mark = None
    if found:
        mark = Mark(int(found.group(1)), int(found.group(2)))
        message = message[: found.start()]
    elif _AT_END.search(message):
        lines = text.split("\n")
        mark = Mark(len(lines), len(lines[-1]) + 1)
        message = _AT_END.sub("", message)
    message = message[:1].lower() + message[1:]
    return TOMLProblem(f"invalid TOML: {_CLEARER.get(message, message)}", mark)


def _check_depth(data: Any, text: str) -> None:
    """tomllib has no nesting limit of its own; everything after it recurses."""
    todo: list[tuple[Any, int]] = [(data, 0)]
    while todo:
        value, depth = todo.pop()
        if depth > MAX_DEPTH:
            raise TOMLProblem(f"invalid TOML: nesting deeper than {MAX_DEPTH} levels", None)
        if isinstance(value, dict):
            todo.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            todo.extend((v, depth + 1) for v in value)
