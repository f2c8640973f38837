"""Positions of the keys and values in TOML text, which tomllib parses but does not locate.

A small scanner walks text that tomllib has already accepted and maps each field path to
where its key and value start: `[table]` and `[[array]]` headers (an array of tables' items
counted per parent, as `[[scaleSets]]` appends `scaleSets[N]`), dotted keys, quoted keys,
inline tables and arrays. It runs only when a finding needs a location, so the valid path
pays nothing for it. It trusts the text to be valid TOML: on anything unexpected it stops and
returns what it has found, and findings beyond that fall back to their nearest located parent.
"""

from __future__ import annotations

import bisect
import re

from runscaler.manifest.positions import Entry, FieldPath, Mark

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}
_SCALAR_END = re.compile(r"[,\]}#\r\n]")


class _Stop(Exception):
    """The text is not what the scanner expects; keep what was found so far."""


def scan_positions(text: str) -> dict[FieldPath, Entry]:
    scanner = _Scanner(text)
    try:
        scanner.document()
    except (_Stop, IndexError, ValueError):
        pass
    return scanner.entries


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self.newlines = [m.start() for m in re.finditer("\n", text)]
        self.entries: dict[FieldPath, Entry] = {}
        self.arrays_of_tables: dict[FieldPath, int] = {}

    def mark(self, offset: int) -> Mark:
        line = bisect.bisect_left(self.newlines, offset)
        line_start = self.newlines[line - 1] + 1 if line else 0
        return Mark(line + 1, offset - line_start + 1)

    def add(self, path: FieldPath, key: Mark | None, value: Mark) -> None:
        self.entries.setdefault(path, Entry(key, value))

    # Structure -------------------------------------------------------------------------

    def document(self) -> None:
        self.skip(newlines=True)
        self.entries[()] = Entry(None, self.mark(self.i))
        table: FieldPath = ()
        while self.i < len(self.text):
            if self.text[self.i] == "[":
                table = self.header()
            else:
                self.pair(table)
            self.skip(newlines=True)

    def header(self) -> FieldPath:
        start = self.i
        is_array = self.text.startswith("[[", start)
        self.i += 2 if is_array else 1
        keys = self.dotted_key()
        self.skip()
        self.expect("]]" if is_array else "]")
        at = self.mark(start)
        path: FieldPath = ()
        for n, key in enumerate(keys):
            path = (*path, key)
            if is_array and n == len(keys) - 1:
                self.add(path, at, at)
                index = self.arrays_of_tables.get(path, -1) + 1
                self.arrays_of_tables[path] = index
                path = (*path, index)
                self.add(path, None, at)
            else:
                self.add(path, at, at)
                if path in self.arrays_of_tables:  # `[a.b]` after `[[a]]`: inside a's last item
                    path = (*path, self.arrays_of_tables[path])
        return path

    def pair(self, table: FieldPath) -> None:
        start = self.mark(self.i)
        key_starts: list[Mark] = []
        keys = self.dotted_key(key_starts)
        self.skip()
        self.expect("=")
        self.skip()
        path = table
        for key, key_start in zip(keys[:-1], key_starts, strict=False):
            path = (*path, key)
            self.add(path, key_start, key_start)
        path = (*path, keys[-1])
        self.value(path, key=start)

    def value(self, path: FieldPath, *, key: Mark | None) -> None:
        self.add(path, key, self.mark(self.i))
        char = self.text[self.i]
        if char == "[":
            self.array(path)
        elif char == "{":
            self.inline_table(path)
        elif char in "\"'":
            self.string()
        else:
            end = _SCALAR_END.search(self.text, self.i)
            self.i = end.start() if end else len(self.text)

    def array(self, path: FieldPath) -> None:
        self.i += 1
        index = 0
        while True:
            self.skip(newlines=True)
            if self.text[self.i] == "]":
                self.i += 1
                return
            self.value((*path, index), key=None)
            index += 1
            self.skip(newlines=True)
            if self.text[self.i] == ",":
                self.i += 1

    def inline_table(self, path: FieldPath) -> None:
        self.i += 1
        while True:
            self.skip(newlines=True)
            if self.text[self.i] == "}":
                self.i += 1
                return
            self.pair(path)
            self.skip(newlines=True)
            if self.text[self.i] == ",":
                self.i += 1

    # Tokens ----------------------------------------------------------------------------

    def dotted_key(self, starts: list[Mark] | None = None) -> list[str]:
        keys = []
        while True:
            self.skip()
            if starts is not None:
                starts.append(self.mark(self.i))
            keys.append(self.key())
            self.skip()
            if self.i < len(self.text) and self.text[self.i] == ".":
                self.i += 1
                continue
            return keys

    def key(self) -> str:
        char = self.text[self.i]
        if char in "\"'":
            return self.string()
        match = _BARE_KEY.match(self.text, self.i)
        if not match:
            raise _Stop
        self.i = match.end()
        return match.group()

    def string(self) -> str:
        text, i = self.text, self.i
        quote = text[i]
        if text.startswith(quote * 3, i):
            found = self._closing(i + 3, quote * 3, escapes=quote == '"')
            run = 3  # up to two quotes right before the closing three belong to the string
            while run < 5 and found + run < len(text) and text[found + run] == quote:
                run += 1
            self.i = found + run
            return ""  # a multi-line string is never a key: its content does not matter here
        end = self._closing(i + 1, quote, escapes=quote == '"')
        self.i = end + 1
        raw = text[i + 1 : end]
        return _unescape(raw) if quote == '"' else raw

    def _closing(self, start: int, closer: str, *, escapes: bool) -> int:
        i = start
        while True:
            found = self.text.find(closer, i)
            if found < 0:
                raise _Stop
            if not escapes or not _escaped(self.text, found, start):
                return found
            i = found + 1

    def skip(self, *, newlines: bool = False) -> None:
        text = self.text
        while self.i < len(text):
            char = text[self.i]
            if char in " \t" or (newlines and char in "\r\n"):
                self.i += 1
            elif char == "#":
                end = text.find("\n", self.i)
                self.i = len(text) if end < 0 else end
            else:
                return

    def expect(self, token: str) -> None:
        if not self.text.startswith(token, self.i):
            raise _Stop
        self.i += len(token)


def _escaped(text: str, at: int, start: int) -> bool:
    """Whether the character at `at` is escaped: an odd run of backslashes right before it."""
    count = 0
    j = at - 1
    while j >= start and text[j] == "\\":
        count += 1
        j -= 1
    return count % 2 == 1


def _unescape(raw: str) -> str:
    out = []
    i = 0
    while i < len(raw):
        char = raw[i]
        if char != "\\":
            out.append(char)
            i += 1
            continue
        code = raw[i + 1]
        if code in "uU":
            width = 4 if code == "u" else 8
            out.append(chr(int(raw[i + 2 : i + 2 + width], 16)))
            i += 2 + width
        else:
            out.append(_ESCAPES.get(code, code))
            i += 2
    return "".join(out)
