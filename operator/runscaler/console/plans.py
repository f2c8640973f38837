"""A `Plan` for people and for machines: the text plan, markdown for PR comments, JSON.

The text follows `terraform plan` (manifest.md, `plan`): one block per scale set that changes,
`+`/`~`/`-` lines with aligned `=`, what each change means for running runners as a trailing
`# note` in one column across the plan, then a `Plan: …` summary. Output is plain text (no
colour, no markup), and every value is rendered JSON-like with control characters escaped, so
a manifest value cannot move the cursor or restyle a terminal. Literal secrets arrive already
redacted (`SENSITIVE`) from the planner; nothing here sees them.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

from runscaler.planning import (
    ABSENT,
    SENSITIVE,
    FieldChange,
    Plan,
    ScaleSetChange,
    display_values,
)

HEADER = "runscaler will perform the following actions:"
NO_CHANGES = "No changes. The fleet matches the manifest."
FORMAT_VERSION = "1"
SENSITIVE_TEXT = "(sensitive)"
# Notes line up in one column unless a line is longer than this; such a line gets its note
# two spaces after it instead of pushing every other note far to the right.
_NOTE_COLUMN_LIMIT = 78

# Lines that say what changes (not `#` comment lines) set the notes' column.
_ITEM = ("  + ", "  ~ ", "  - ", "  -/+ ", "      ")
_SYMBOL = {"create": "+", "update": "~", "replace": "-/+", "delete": "-"}
_WILL_BE = {
    "create": "will be created",
    "update": "will be updated in-place",
    "replace": "must be replaced",
    "delete": "will be drained and deleted",
}


def summary_line(plan: Plan) -> str:
    return f"Plan: {plan.add} to add, {plan.change} to change, {plan.destroy} to destroy."


def render_text(plan: Plan) -> str:
    """The terraform-style plan, ending with a newline."""
    if not plan.has_changes:
        lines = [f"  # {_safe(note)}" for note in plan.notes]
        return "\n".join([*lines, *([""] if lines else []), NO_CHANGES]) + "\n"
    rows: list[tuple[str, str | None] | None] = []  # (line, note); None is a blank line
    for note in plan.notes:
        rows.append((f"  # {_safe(note)}", None))
    if plan.notes:
        rows.append(None)
    for change in plan.changes:
        if change.action != "no-op":
            rows.extend(_block(change))
            rows.append(None)
    column = _note_column([row for row in rows if row is not None and row[0].startswith(_ITEM)])
    out = [HEADER, ""]
    for row in rows:
        out.append("" if row is None else _with_note(*row, column=column))
    out.append(summary_line(plan))
    return "\n".join(out) + "\n"


def _block(change: ScaleSetChange) -> list[tuple[str, str | None]]:
    name = _quoted(change.name)
    header = f"  # scale set {name} ({_safe(change.url)}) {_WILL_BE[change.action]}"
    title = f"  {_SYMBOL[change.action]} scale set {name}"
    if change.action == "delete":
        return [(header, None), (title, "; ".join(change.notes) or None)]
    if change.action == "replace":
        header = f"{header} ({_safe(change.notes[0])})"
    width = max((len(c.path) for c in change.changes), default=0)
    rows: list[tuple[str, str | None]] = [(header, None), (title, None)]
    said: set[str] = set()
    for field in change.changes:
        # A note is said once per scale set, on the first line it applies to.
        note = field.note if field.note not in said else None
        said.add(field.note or "")
        rows.append((f"      {_field_line(field, width)}", note))
    return rows


def _field_line(field: FieldChange, width: int) -> str:
    path = _safe(field.path).ljust(width)
    if field.before is ABSENT:
        return f"+ {path} = {render_value(field.after)}"
    if field.after is ABSENT:
        return f"- {path} = {render_value(field.before)}"
    if field.before is SENSITIVE and field.after is SENSITIVE:
        return f"~ {path} = {render_value(SENSITIVE)}"
    return f"~ {path} = {render_value(field.before)} -> {render_value(field.after)}"


def _note_column(rows: list[tuple[str, str | None]]) -> int:
    widths = [len(line) for line, _ in rows if len(line) <= _NOTE_COLUMN_LIMIT]
    return max(widths, default=0) + 2


def _with_note(line: str, note: str | None, *, column: int) -> str:
    if not note:
        return line
    return f"{line.ljust(column - 2)}  # {_safe(note)}"


def render_value(value: Any) -> str:
    """JSON-like: `"a:1"`, `["self-hosted", "linux"]`, `10`, `null`; `(sensitive)` bare."""
    if value is SENSITIVE:
        return SENSITIVE_TEXT
    return _safe(json.dumps(_jsonable(value), ensure_ascii=False))


def _quoted(text: str) -> str:
    return _safe(json.dumps(text, ensure_ascii=False))


_UNSAFE = re.compile(r"[^\t -~]")  # fast path: printable ASCII needs no look


def _safe(text: str) -> str:
    """Escape control and format characters (ANSI escapes, C1 controls, bidi overrides)."""
    if not _UNSAFE.search(text):
        return text
    return "".join(
        f"\\u{ord(ch):04x}" if unicodedata.category(ch) in ("Cc", "Cf") else ch for ch in text
    )


def render_markdown(plan: Plan) -> str:
    """A one-line summary heading and the text plan in a fenced block (PR comments)."""
    if plan.has_changes:
        summary = f"{plan.add} to add, {plan.change} to change, {plan.destroy} to destroy"
    else:
        summary = "no changes"
    text = render_text(plan)
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    heading = f"### runscaler plan for fleet `{plan.fleet}`: {summary}"
    return f"{heading}\n\n{fence}text\n{text}{fence}\n"


def render_json(plan: Plan) -> str:
    """`{"format_version": "1", "changes": [...], "summary": {...}}`, secrets redacted."""
    # One change per line: readable, diffable, and encoded by json's fast path (an indented
    # dump of a 1,000-scale-set plan takes most of a second).
    lines = ",\n".join(f"    {json.dumps(_json_change(c))}" for c in plan.changes)
    changes = f"[\n{lines}\n  ]" if lines else "[]"
    summary = {"add": plan.add, "change": plan.change, "destroy": plan.destroy}
    return (
        "{\n"
        f'  "format_version": {json.dumps(FORMAT_VERSION)},\n'
        f'  "fleet": {json.dumps(plan.fleet)},\n'
        f'  "changes": {changes},\n'
        f'  "summary": {json.dumps(summary)},\n'
        f'  "notes": {json.dumps(list(plan.notes))}\n'
        "}\n"
    )


def _json_change(change: ScaleSetChange) -> dict[str, Any]:
    return {
        "url": change.url,
        "name": change.name,
        "actions": ["delete", "create"] if change.action == "replace" else [change.action],
        "before": _jsonable(display_values(change.before)) if change.before else None,
        "after": _jsonable(display_values(change.after)) if change.after else None,
        "changed": [
            field.path for field in change.changes if change.action in ("update", "replace")
        ],
        "notes": list(change.notes),
    }


def _jsonable(value: Any) -> Any:
    if value is SENSITIVE:
        return SENSITIVE_TEXT
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return value
