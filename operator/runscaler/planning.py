"""What applying a new manifest would do: a pure diff of two fleets into a `Plan`.

One function serves both `runscaler plan` (which renders the Plan) and the running controller
(which applies it), so what a user previews is what the operator does. The Plan is plain frozen
data: per scale set identity an action, the field-level changes with what they mean for running
runners, and `Effects` flags the controller acts on without diffing again.

Values in `FieldChange` are display values (JSON-like, sizes as `4GiB`, durations as `6h`) with
literal secrets already replaced by `SENSITIVE`, so no rendering can leak one. Secret refs
(`env:NAME`, `file:PATH`) are not secrets and are shown as written. The raw `ScaleSet` models
stay available as `before`/`after` for the controller.

No I/O here, and nothing from the engine, GitHub client or backends.
"""

from __future__ import annotations

import copy
import enum
import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError

from runscaler.manifest.models import Auth, Fleet, ScaleSet, is_housekeeping
from runscaler.manifest.values import format_duration, format_size, is_literal_secret

Action = Literal["create", "update", "replace", "delete", "no-op"]
Kind = Literal[
    "resize",
    "template",
    "inactive",
    "github_settings",
    "credentials",
    "suspend",
    "drain_timeout",
    "scale_down_delay",
    "housekeeping",
]


class Redacted(enum.Enum):
    """Stands in for a literal secret in every rendering."""

    SENSITIVE = "(sensitive)"


class Missing(enum.Enum):
    """The field has no value on this side (a created scale set, an added env var)."""

    ABSENT = "absent"


SENSITIVE = Redacted.SENSITIVE
ABSENT = Missing.ABSENT

NOTE_SCALE_DOWN = "surplus idle runners removed; busy runners finish"
NOTE_SCALE_UP = "more runners may start"
NOTE_ROLLING = "rolling: idle runners replaced; busy runners finish"
NOTE_GITHUB = "patched on GitHub in place"
NOTE_REPLACE = "replaced: GitHub ignores label changes"
NOTE_CREDENTIALS = "reconnects this scale set only"
NOTE_RESUME = "resumed: takes new jobs again"
NOTE_DRAIN_TIMEOUT = "applies to the current or next drain"
NOTE_SCALE_DOWN_DELAY = "applies to the next scale-down"
NOTE_HOUSEKEEPING = "applies to the next clean-up; runners are kept"

_SECRET_PATHS = ("github.auth.token", "github.auth.app.privateKey")
_SECRET_PREFIXES = ("docker.env.", "swarm.env.")
_SIZE_PATHS = ("docker.memory", "swarm.memory")
_CREDENTIAL_PREFIXES = ("github.auth", "github.caBundle", "github.proxy")
_NO_AUTH = Auth.model_construct(token=None, app=None)
# Shown in a create's header line, so not listed again as fields.
_HEADER_PATHS = ("name", "github.url")


@dataclass(frozen=True)
class FieldChange:
    """One changed field: a dotted camelCase path and its display values."""

    path: str
    before: Any  # a JSON-like value, SENSITIVE, or ABSENT
    after: Any
    kind: Kind
    note: str | None = None

    @property
    def effective(self) -> bool:
        """False for fields of the backend block this scale set does not use."""
        return self.kind != "inactive"


@dataclass(frozen=True)
class Effects:
    """What the controller must do for an update; all False means nothing at runtime."""

    resize: bool = False  # minRunners/maxRunners: recompute desired runners
    template: bool = False  # backend or its block: roll idle runners to the new template
    github_settings: bool = False  # labels, runnerGroup, name case: patch the scale set
    credentials: bool = False  # github.auth, caBundle, proxy: reconnect this scale set
    suspend: bool = False  # suspended false -> true: drain, keep the scale set
    resume: bool = False  # suspended true -> false: take jobs again
    drain_timeout: bool = False  # applies to a drain in progress too
    scale_down_delay: bool = False  # applies to the next scale-down
    housekeeping: bool = False  # sweeps, refreshes, pruning: read by their next round

    @property
    def any(self) -> bool:
        return any(getattr(self, name) for name in self.__dataclass_fields__)


@dataclass(frozen=True)
class ScaleSetChange:
    """What happens to one scale set identity."""

    action: Action
    identity: tuple[str, str]
    before: ScaleSet | None
    after: ScaleSet | None
    changes: tuple[FieldChange, ...] = ()
    notes: tuple[str, ...] = ()
    effects: Effects = field(default_factory=Effects)

    @property
    def scale_set(self) -> ScaleSet:
        """The side that exists, preferring the new one."""
        chosen = self.after or self.before
        assert chosen is not None
        return chosen

    @property
    def name(self) -> str:
        return self.scale_set.name

    @property
    def url(self) -> str:
        """The URL as the manifest writes it."""
        return self.scale_set.github.url


@dataclass(frozen=True)
class Plan:
    """Every scale set identity of both fleets, in display order, plus fleet-level notes."""

    fleet: str
    previous_fleet: str | None
    changes: tuple[ScaleSetChange, ...]
    notes: tuple[str, ...] = ()

    @property
    def fleet_renamed(self) -> bool:
        return self.previous_fleet is not None and self.previous_fleet != self.fleet

    def with_actions(self, *actions: Action) -> tuple[ScaleSetChange, ...]:
        return tuple(c for c in self.changes if c.action in actions)

    @property
    def add(self) -> int:
        return len(self.with_actions("create", "replace"))

    @property
    def change(self) -> int:
        return len(self.with_actions("update"))

    @property
    def destroy(self) -> int:
        return len(self.with_actions("delete", "replace"))

    @property
    def has_changes(self) -> bool:
        return self.fleet_renamed or any(c.action != "no-op" for c in self.changes)


def plan(current: Fleet | None, desired: Fleet) -> Plan:
    """Compare what runs (`current`, None for nothing) with what the manifest wants."""
    before = current.by_identity() if current is not None else {}
    after = desired.by_identity()
    changes = [_compare(before.get(key), after.get(key)) for key in before.keys() | after.keys()]
    order = {"create": 0, "update": 1, "replace": 2, "delete": 3, "no-op": 4}
    changes.sort(key=lambda c: (order[c.action], c.identity))
    notes: tuple[str, ...] = ()
    previous = current.metadata.name if current is not None else None
    if previous is not None and previous != desired.metadata.name:
        notes = (
            f'fleet name changes from "{previous}" to "{desired.metadata.name}": a running '
            "operator refuses this reload; stop it and start one with the new manifest",
        )
    return Plan(
        fleet=desired.metadata.name, previous_fleet=previous, changes=tuple(changes), notes=notes
    )


def _compare(before: ScaleSet | None, after: ScaleSet | None) -> ScaleSetChange:
    if after is None:
        assert before is not None
        return ScaleSetChange(
            "delete",
            before.identity,
            before,
            None,
            notes=(delete_note(before.drain_timeout),),
        )
    if before is None:
        created = tuple(_created_fields(after))
        return ScaleSetChange("create", after.identity, None, after, created, _notes(created))
    if before == after:
        return ScaleSetChange("no-op", after.identity, before, after)
    changes = tuple(_updated_fields(before, after))
    if not changes:
        return ScaleSetChange("no-op", after.identity, before, after)
    if _label_set(before) != _label_set(after):
        # GitHub accepts a label PATCH and ignores it: only a new scale set gets new labels.
        notes = (REPLACE_NOTE, delete_note(before.drain_timeout))
        return ScaleSetChange(
            "replace", after.identity, before, after, changes, notes, _effects(changes)
        )
    return ScaleSetChange(
        "update", after.identity, before, after, changes, _notes(changes), _effects(changes)
    )


REPLACE_NOTE = (
    "labels cannot change on an existing scale set: it is drained (busy runners finish), "
    "deleted on GitHub and created again"
)


def _label_set(scale_set: ScaleSet) -> frozenset[str]:
    return frozenset(label.lower() for label in scale_set.all_labels)


def _notes(changes: tuple[FieldChange, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(c.note for c in changes if c.note))


def _created_fields(after: ScaleSet) -> Iterator[FieldChange]:
    defaults = _flatten(_plain(_default_like(after)))
    for path, value in _flatten(_plain(after)).items():
        if path in _HEADER_PATHS or value == defaults.get(path, ABSENT):
            continue
        kind = _kind(path, after)
        note = _inactive_note(after) if kind == "inactive" else None
        yield FieldChange(path, ABSENT, _display(path, value), kind, note)


def _default_like(scale_set: ScaleSet) -> ScaleSet:
    """The scale set a manifest gets when it sets nothing optional (credentials: none)."""
    blank = ScaleSet.model_validate(
        {"name": scale_set.name, "github": {"url": scale_set.github.url, "auth": {"token": "x"}}}
    )
    return blank.model_copy(update={"github": blank.github.model_copy(update={"auth": _NO_AUTH})})


def _updated_fields(before: ScaleSet, after: ScaleSet) -> Iterator[FieldChange]:
    old = _flatten(_plain(before))
    new = _flatten(_plain(after))
    for path in [*new, *(p for p in old if p not in new)]:
        if path == "github.url":
            continue  # same identity: only case, `www.` or a trailing `/` differ
        old_value, new_value = old.get(path, ABSENT), new.get(path, ABSENT)
        if old_value == new_value or _is_placeholder(path, old, new):
            continue
        kind = _kind(path, after)
        yield FieldChange(
            path,
            _display(path, old_value),
            _display(path, new_value),
            kind,
            _note(kind, path, before=before, after=after),
        )


def _is_placeholder(path: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """A `null` block (`github.auth.app`) where the other side has fields inside it."""
    value = old.get(path, new.get(path))
    other = new if path in old else old
    prefix = path + "."
    return value is None and any(p.startswith(prefix) for p in other)


def _kind(path: str, scale_set: ScaleSet) -> Kind:
    top = path.split(".", 1)[0]
    if top in ("minRunners", "maxRunners"):
        return "resize"
    if top in ("labels", "runnerGroup", "name"):
        return "github_settings"
    if path.startswith(_CREDENTIAL_PREFIXES):
        return "credentials"
    if top == "suspended":
        return "suspend"
    if top == "drainTimeout":
        return "drain_timeout"
    if top == "scaleDownDelay":
        return "scale_down_delay"
    if top in ("docker", "tart", "swarm") and top != scale_set.backend:
        return "inactive"
    if is_housekeeping(path):
        return "housekeeping"
    return "template"  # backend, the active block, and anything new: replacing idle is safe


def _note(kind: Kind, path: str, *, before: ScaleSet, after: ScaleSet) -> str:
    if kind == "resize":
        attribute = "min_runners" if path == "minRunners" else "max_runners"
        grows = getattr(after, attribute) > getattr(before, attribute)
        return NOTE_SCALE_UP if grows else NOTE_SCALE_DOWN
    if kind == "suspend":
        return suspend_note(after.drain_timeout) if after.suspended else NOTE_RESUME
    if kind == "inactive":
        return _inactive_note(after)
    if path.split(".", 1)[0] == "labels" and _label_set(before) != _label_set(after):
        return NOTE_REPLACE
    notes: dict[Kind, str] = {
        "template": NOTE_ROLLING,
        "github_settings": NOTE_GITHUB,
        "credentials": NOTE_CREDENTIALS,
        "drain_timeout": NOTE_DRAIN_TIMEOUT,
        "scale_down_delay": NOTE_SCALE_DOWN_DELAY,
        "housekeeping": NOTE_HOUSEKEEPING,
    }
    return notes[kind]


def suspend_note(drain_timeout: float) -> str:
    if drain_timeout == 0:
        return "drained: idle runners removed, busy runners force-removed at once"
    return f"drained: idle runners removed, busy runners get up to {format_duration(drain_timeout)}"


def delete_note(drain_timeout: float) -> str:
    if drain_timeout == 0:
        return "busy runners are force-removed at once"
    return f"busy runners get up to {format_duration(drain_timeout)} to finish"


def _inactive_note(scale_set: ScaleSet) -> str:
    return f"no effect: backend is {scale_set.backend}"


def _effects(changes: tuple[FieldChange, ...]) -> Effects:
    kinds = {c.kind for c in changes}
    suspended = [c.after for c in changes if c.kind == "suspend"]
    return Effects(
        resize="resize" in kinds,
        template="template" in kinds,
        github_settings="github_settings" in kinds,
        credentials="credentials" in kinds,
        suspend=True in suspended,
        resume=False in suspended,
        drain_timeout="drain_timeout" in kinds,
        scale_down_delay="scale_down_delay" in kinds,
        housekeeping="housekeeping" in kinds,
    )


def display_values(scale_set: ScaleSet) -> dict[str, Any]:
    """The scale set as JSON-like camelCase data for people: literal secrets are `SENSITIVE`."""
    shown: dict[str, Any] = _redact(_plain(scale_set), "")
    return shown


def _plain(scale_set: ScaleSet) -> dict[str, Any]:
    """JSON-like camelCase data, sizes readable (`4GiB`), durations Go-style (`6h`).

    Optional blocks left out (`docker.tls`, `docker.sharedVolume`) show their defaults, so
    setting one field of them shows as that one field.
    """
    data = scale_set.model_dump(mode="json", by_alias=True)
    _fill_optional_blocks(data, type(scale_set))
    for path in _SIZE_PATHS:
        parent, key = _parent(data, path)
        if parent is not None and isinstance(parent.get(key), int):
            parent[key] = format_size(parent[key])
    return data


def _fill_optional_blocks(data: dict[str, Any], model: type[BaseModel]) -> None:
    for key, block, default in _blocks(model):
        if data.get(key) is None and default is not None:
            data[key] = copy.deepcopy(default)
        if isinstance(data.get(key), dict):
            _fill_optional_blocks(data[key], block)


@functools.cache
def _blocks(
    model: type[BaseModel],
) -> tuple[tuple[str, type[BaseModel], dict[str, Any] | None], ...]:
    """The model's sub-model fields: (key, model, its default dump or None if it has none)."""
    found = []
    for name, info in model.model_fields.items():
        candidates = get_args(info.annotation) or (info.annotation,)
        block = next((t for t in candidates if _is_model(t)), None)
        if block is None:
            continue
        try:
            default: dict[str, Any] | None = block().model_dump(mode="json", by_alias=True)
        except ValidationError:
            default = None  # has required fields (github.auth.app): stays null
        found.append((info.alias or name, block, default))
    return tuple(found)


def _is_model(annotation: object) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _parent(data: dict[str, Any], path: str) -> tuple[dict[str, Any] | None, str]:
    *heads, key = path.split(".")
    node: Any = data
    for head in heads:
        node = node.get(head) if isinstance(node, dict) else None
    return (node if isinstance(node, dict) else None), key


def _redact(value: Any, path: str) -> Any:
    if isinstance(value, dict):
        return {k: _redact(v, f"{path}.{k}" if path else k) for k, v in value.items()}
    return _display(path, value)


def _display(path: str, value: Any) -> Any:
    """The value as it may be shown: a literal secret never is."""
    if isinstance(value, str) and _is_secret(path, value):
        return SENSITIVE
    return value


def _is_secret(path: str, value: str) -> bool:
    if path in _SECRET_PATHS or path.startswith(_SECRET_PREFIXES):
        return is_literal_secret(value)
    if path == "github.proxy":
        return "@" in urlsplit(value).netloc  # a proxy URL with credentials in it
    return False


def _flatten(data: dict[str, Any]) -> dict[str, Any]:
    """Dotted paths to leaves: lists are leaves, mappings (`docker.env` too) are walked."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else key)
        else:
            flat[prefix] = node

    walk(data, "")
    return flat
