"""The live fleet for people: `runscaler status` as a header line over a table.

Input is the operator's `/status` JSON (cli.md), read leniently: a field an older or newer
operator does not send shows as `-` rather than failing. Every string in it comes from a
manifest, GitHub or a runner's output, so it is escaped for rich markup and stripped of
control characters before it reaches the terminal.
"""

from __future__ import annotations

import json
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

COLUMNS = (
    "SCALE SET",
    "STATE",
    "DESIRED",
    "IDLE",
    "BUSY",
    "STARTING",
    "ASSIGNED JOBS",
    "RUNNING JOBS",
    "LAST ERROR",
)
_COUNTS = ("desired", "idle", "busy", "starting", "assignedJobs", "runningJobs")
_STATE_STYLE = {
    "listening": "green",
    "starting": "cyan",
    "standby": "cyan",
    "draining": "yellow",
    "suspended": "dim",
    "degraded": "bold red",
}
_REVISION_DIGITS = 12


def safe(value: object) -> str:
    """A value as rich markup that shows it literally, control characters made visible."""
    text = "".join(
        ch if unicodedata.category(ch) != "Cc" else ch.encode("unicode_escape").decode()
        for ch in str(value)
    )
    return escape(text)


def ago(at: float, now: float) -> str:
    """`12s ago`, `5m ago`, `3h ago`, `2d ago` (`just now` for the future or under a second)."""
    seconds = int(now - at)
    if seconds < 1:
        return "just now"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def header(data: Mapping[str, Any], *, now: float) -> Text:
    """`fleet NAME · generation N · revision SHA · last reload ok 12s ago` (or its error)."""
    parts = [f"fleet [bold]{safe(data.get('fleet') or '-')}[/]"]
    parts.append(f"generation {safe(data.get('generation', '-'))}")
    manifest = data.get("manifest")
    revision = manifest.get("revision") if isinstance(manifest, Mapping) else None
    if revision:
        parts.append(f"revision {safe(str(revision)[:_REVISION_DIGITS])}")
    parts.append(_reload(data.get("reload"), now=now))
    return Text.from_markup(" · ".join(parts))


def _reload(reload: Any, *, now: float) -> str:
    if not isinstance(reload, Mapping):
        return "last reload -"
    at = reload.get("at")
    when = f" {ago(at, now)}" if isinstance(at, int | float) else ""
    if reload.get("ok", True):
        return f"last reload [green]ok[/]{when}"
    error = reload.get("error") or "unknown error"
    return f"last reload [bold red]rejected[/]{when}: [red]{safe(error)}[/]"


def table(scale_sets: Sequence[Mapping[str, Any]]) -> Table:
    """One row per scale set; the URL is added to names that are not unique."""
    names = Counter(str(s.get("name", "")).lower() for s in scale_sets)
    grid = Table(box=None, pad_edge=False, header_style="bold")
    for title in COLUMNS:
        numeric = title not in ("SCALE SET", "STATE", "LAST ERROR")
        grid.add_column(title, justify="right" if numeric else "left", overflow="fold")
    for scale_set in scale_sets:
        name = safe(scale_set.get("name", "-"))
        if names[str(scale_set.get("name", "")).lower()] > 1:
            name += f" [dim]({safe(scale_set.get('url', ''))})[/]"
        state = str(scale_set.get("state", "-"))
        style = _STATE_STYLE.get(state)
        shown_state = f"[{style}]{safe(state)}[/]" if style else safe(state)
        counts = [safe(scale_set.get(key, "-")) for key in _COUNTS]
        error = scale_set.get("lastError")
        grid.add_row(name, shown_state, *counts, f"[red]{safe(error)}[/]" if error else "-")
    return grid


def render_text(data: Mapping[str, Any], *, now: float) -> RenderableType:
    """The header line, then the table (or a line saying there are no scale sets)."""
    scale_sets = [s for s in data.get("scaleSets") or () if isinstance(s, Mapping)]
    body: RenderableType = table(scale_sets) if scale_sets else Text("no scale sets")
    return Group(header(data, now=now), Text(""), body)


def render_unreachable(message: str, *, last: RenderableType | None) -> RenderableType:
    """What `--watch` shows while the operator does not answer: the error over the last view."""
    line = Text.from_markup(f"[bold red]{safe(message)}[/] (retrying)")
    return line if last is None else Group(line, Text(""), last)


def render_json(data: Any) -> str:
    return json.dumps(data, indent=2) + "\n"
