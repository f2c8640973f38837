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

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

# Short enough that the counts fit 80 columns beside a name; the last error goes below.
COLUMNS = (
    "SCALE SET",
    "STATE",
    "DESIRED",
    "IDLE",
    "BUSY",
    "STARTING",
    "ASSIGNED",
    "RUNNING",
)
_COUNTS = ("desired", "idle", "busy", "starting", "assignedJobs", "runningJobs")
RUNNER_COLUMNS = ("RUNNER", "STATE", "SINCE", "JOB", "TEMPLATE", "EXIT", "NODE")
_TEMPLATE_DIGITS = 8
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


def header(data: Mapping[str, Any], *, now: float, edited: bool | None = None) -> RenderableType:
    """`fleet NAME · generation N · revision SHA · last reload ok 12s ago`; a rejected reload's
    error on a line of its own. `edited`: the applied file differs from the revision's."""
    parts = [f"fleet [bold]{safe(data.get('fleet') or '-')}[/]"]
    parts.append(f"generation {safe(data.get('generation', '-'))}")
    manifest = data.get("manifest")
    revision = manifest.get("revision") if isinstance(manifest, Mapping) else None
    if revision:
        note = " [yellow](+ uncommitted edits)[/]" if edited else ""
        parts.append(f"revision {safe(str(revision)[:_REVISION_DIGITS])}{note}")
    reload, error = _reload(data.get("reload"), now=now)
    parts.append(reload)
    shown = _Parts([Text.from_markup(p) for p in parts], separator=" · ")
    if not error:
        return shown
    return Group(shown, Text.from_markup(f"[red]{safe(error)}[/]"))


class _Parts:
    """Parts joined on one line while they fit; a narrow terminal wraps between two parts,
    never inside one (rich alone would break `42s ago` apart)."""

    def __init__(self, parts: Sequence[Text], *, separator: str) -> None:
        self.parts = parts
        self.separator = separator

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        line = Text()
        for part in self.parts:
            joined = len(line) > 0
            width = line.cell_len + (len(self.separator) if joined else 0) + part.cell_len
            if joined and width > options.max_width:
                yield line
                line = Text()
            elif joined:
                line.append(self.separator)
            line.append_text(part)
        yield line


def _reload(reload: Any, *, now: float) -> tuple[str, str | None]:
    if not isinstance(reload, Mapping):
        return "last reload -", None
    at = reload.get("at")
    when = f" {ago(at, now)}" if isinstance(at, int | float) else ""
    if reload.get("ok", True):
        return f"last reload [green]ok[/]{when}", None
    return f"last reload [bold red]rejected[/]{when}:", str(reload.get("error") or "unknown error")


def _names(scale_sets: Sequence[Mapping[str, Any]]) -> list[str]:
    """Display names: the URL is added to names that are not unique."""
    counts = Counter(str(s.get("name", "")).lower() for s in scale_sets)
    names = []
    for scale_set in scale_sets:
        name = safe(scale_set.get("name", "-"))
        if counts[str(scale_set.get("name", "")).lower()] > 1:
            name += f" [dim]({safe(scale_set.get('url', ''))})[/]"
        names.append(name)
    return names


def _grid(titles: Sequence[str], *, left: Sequence[str], wraps: str) -> Table:
    grid = Table(box=None, pad_edge=False, header_style="bold")
    for title in titles:
        grid.add_column(
            title,
            justify="left" if title in left else "right",
            no_wrap=title != wraps,
            overflow="fold",
            min_width=9 if title == wraps else None,
        )
    return grid


def table(scale_sets: Sequence[Mapping[str, Any]]) -> Table:
    """One row per scale set: its state and counts."""
    grid = _grid(COLUMNS, left=("SCALE SET", "STATE"), wraps="SCALE SET")
    for name, scale_set in zip(_names(scale_sets), scale_sets, strict=True):
        state = str(scale_set.get("state", "-"))
        style = _STATE_STYLE.get(state)
        shown_state = f"[{style}]{safe(state)}[/]" if style else safe(state)
        counts = [safe(scale_set.get(key, "-")) for key in _COUNTS]
        grid.add_row(name, shown_state, *counts)
    return grid


class _Indented:
    """Text wrapped at word boundaries with every line indented, and no trailing spaces."""

    def __init__(self, text: Text, columns: int) -> None:
        self.text = text
        self.columns = columns

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = max(options.max_width - self.columns, 10)
        for line in self.text.wrap(console, width):
            line.rstrip()
            yield Text(" " * self.columns) + line


def _indented(renderable: RenderableType, columns: int) -> RenderableType:
    if isinstance(renderable, Text):
        return _Indented(renderable, columns)
    return Padding(renderable, (0, 0, 0, columns), expand=False)


def errors(scale_sets: Sequence[Mapping[str, Any]]) -> RenderableType | None:
    """`last errors:` and one indented, word-wrapped entry per scale set that has one (and
    one per scale set whose labels on GitHub are not the manifest's)."""
    lines = [
        _indented(Text.from_markup(f"{name}: [red]{safe(s['lastError'])}[/]"), 2)
        for name, s in zip(_names(scale_sets), scale_sets, strict=True)
        if s.get("lastError")
    ] + [
        _indented(Text.from_markup(f"{name}: [yellow]{safe(s['labelMismatch'])}[/]"), 2)
        for name, s in zip(_names(scale_sets), scale_sets, strict=True)
        if s.get("labelMismatch")
    ]
    return Group(Text("last errors:", style="bold"), *lines) if lines else None


def _since(value: Any, now: float) -> str:
    return ago(value, now).removesuffix(" ago") if isinstance(value, int | float) else "-"


def runners(scale_sets: Sequence[Mapping[str, Any]], *, now: float) -> list[RenderableType]:
    """Per scale set that reports them (newer operators), its runners; nothing otherwise."""
    shown: list[RenderableType] = []
    for name, scale_set in zip(_names(scale_sets), scale_sets, strict=True):
        listed = scale_set.get("runners")
        if not isinstance(listed, Sequence) or isinstance(listed, str):
            continue
        items = [r for r in listed if isinstance(r, Mapping)]
        count = f"{len(items)} runner{'s' if len(items) != 1 else ''}"
        shown.append(Text.from_markup(f"[bold]{name}[/]: {count}"))
        if not items:
            continue
        grid = _grid(RUNNER_COLUMNS, left=("RUNNER", "STATE", "NODE"), wraps="RUNNER")
        reasons: list[RenderableType] = []
        for runner in items:
            template = runner.get("templateHash")
            grid.add_row(
                safe(runner.get("name") or "-"),
                safe(runner.get("state") or "-"),
                _since(runner.get("since"), now),
                safe(runner.get("jobId") or "-"),
                safe(str(template)[:_TEMPLATE_DIGITS]) if template else "-",
                safe(runner["exitCode"]) if runner.get("exitCode") is not None else "-",
                safe(runner.get("node") or "-"),
            )
            if runner.get("reason"):
                why = f"{safe(runner.get('name') or '-')}: {safe(runner['reason'])}"
                reasons.append(_indented(Text.from_markup(why), 4))
        shown.append(_indented(grid, 2))
        shown += reasons
    return shown


def render_text(
    data: Mapping[str, Any],
    *,
    now: float,
    edited: bool | None = None,
    with_runners: bool = False,
) -> RenderableType:
    """The header, the table (or a line saying there are no scale sets), the last errors, and
    with `with_runners` each scale set's runners."""
    scale_sets = [s for s in data.get("scaleSets") or () if isinstance(s, Mapping)]
    parts: list[RenderableType] = [header(data, now=now, edited=edited), Text("")]
    if not scale_sets:
        parts.append(Text("no scale sets"))
        return Group(*parts)
    parts.append(table(scale_sets))
    failing = errors(scale_sets)
    if failing is not None:
        parts += [Text(""), failing]
    if with_runners:
        listed = runners(scale_sets, now=now)
        if listed:
            parts += [Text(""), *listed]
    return Group(*parts)


def render_unreachable(message: str, *, last: RenderableType | None) -> RenderableType:
    """What `--watch` shows while the operator does not answer: the error over the last view."""
    line = Text.from_markup(f"[bold red]{safe(message)}[/] (retrying)")
    return line if last is None else Group(line, Text(""), last)


def render_json(data: Any) -> str:
    return json.dumps(data, indent=2) + "\n"
