"""Validation layer 2: each scale set with `defaults` merged in, and the fleet as a whole.

The models (pydantic) check what a schema cannot say: URLs, secret refs, `minRunners <=
maxRunners`, exactly one auth method, and that what `defaults` leaves out a scale set gives.
Across scale sets, names are unique per GitHub URL (both compared as GitHub does). Warnings
point at what works but will surprise: a literal secret committed to git. More Tart runners
than the host's VM limit (macOS allows 2) is an error unless `tart.allowOverLimit` says so.
With `check_env`, refs are resolved as the operator would.

Every finding is located where the value was written; a value inherited from `defaults` is
reported once, at `defaults`, however many scale sets inherit it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from runscaler.manifest.findings import Findings
from runscaler.manifest.merging import merge_defaults, source_of
from runscaler.manifest.models import TART_VMS_PER_HOST, ScaleSet
from runscaler.manifest.positions import FieldPath
from runscaler.manifest.secrets import path_problem, secret_problem
from runscaler.manifest.values import is_literal_secret

_SECRETS: tuple[tuple[FieldPath, str], ...] = (
    (("github", "auth", "token"), "token"),
    (("github", "auth", "app", "privateKey"), "private key"),
)


class ScaleSetChecker:
    def __init__(
        self,
        document: dict[str, Any],
        findings: Findings,
        *,
        schema_errors: Sequence[FieldPath] = (),
    ) -> None:
        self.document = document
        self.findings = findings
        # What the schema already reported is not reported again in other words.
        self.schema_errors = tuple(schema_errors)
        defaults = document.get("defaults")
        self.defaults: dict[str, Any] = defaults if isinstance(defaults, dict) else {}
        items = document.get("scaleSets")
        self.items: list[Any] = items if isinstance(items, list) else []

    def validate(self) -> dict[int, ScaleSet]:
        """Every scale set that is valid, by index; findings for the others."""
        valid: dict[int, ScaleSet] = {}
        if ("defaults",) in self.schema_errors:
            return valid  # what would each scale set inherit? Fix defaults first.
        for index, item in enumerate(self.items):
            if not isinstance(item, dict):
                continue
            merged = merge_defaults(self.defaults, item)
            self._check_bounds(index, merged)
            try:
                valid[index] = ScaleSet.model_validate(merged)
            except ValidationError as exc:
                for error in exc.errors(include_url=False, include_input=False):
                    self._report_model_error(index, error)
        self._check_unique(valid)
        self._check_tart(valid)
        return valid

    def _check_tart(self, valid: dict[int, ScaleSet]) -> None:
        """The host's VM limit: macOS runs 2 VMs, and every Tart scale set on one TART_HOME
        shares them, so more is refused unless the user says the host allows it."""
        limits: dict[str | None, tuple[int, int]] = {}
        for index, scale_set in valid.items():
            if scale_set.backend != "tart":
                continue
            tart = scale_set.tart
            if tart.vm_limit > TART_VMS_PER_HOST and not tart.allow_over_limit:
                self.add(
                    index,
                    ("tart", "vmLimit"),
                    f"vmLimit is {tart.vm_limit}, but macOS allows {TART_VMS_PER_HOST} VMs per "
                    "host: lower it, or set tart.allowOverLimit: true if this host allows more",
                )
            if scale_set.max_runners > tart.vm_limit and not tart.allow_over_limit:
                self.add(
                    index,
                    ("maxRunners",),
                    f"maxRunners is {scale_set.max_runners} with backend tart, but the host runs "
                    f"at most {tart.vm_limit} VMs (tart.vmLimit): lower maxRunners, or set "
                    "tart.allowOverLimit: true to let runners queue for a VM",
                )
            if tart.pool_size > tart.vm_limit:
                self.add(
                    index,
                    ("tart", "poolSize"),
                    f"poolSize ({tart.pool_size}) must be <= tart.vmLimit ({tart.vm_limit}): "
                    "pooled VMs hold the host's VM slots",
                )
            first = limits.setdefault(tart.home, (index, tart.vm_limit))
            if first[1] != tart.vm_limit:
                where = tart.home or "~/.tart"
                self.add(
                    index,
                    ("tart", "vmLimit"),
                    f"vmLimit is {tart.vm_limit}, but scaleSets[{first[0]}] on the same "
                    f"TART_HOME ({where}) says {first[1]}: the limit is the host's, use one value",
                )

    def _check_bounds(self, index: int, merged: dict[str, Any]) -> None:
        """minRunners <= maxRunners, even when another field fails and the model stops early.

        The model says the same, in the same words, when it gets that far: one finding.
        """
        low = merged.get("minRunners", 0)
        high = merged.get("maxRunners", ScaleSet.model_fields["max_runners"].default)
        if _is_int(low) and _is_int(high) and low > high:
            self.add(index, ("minRunners",), f"minRunners ({low}) must be <= maxRunners ({high})")

    def _report_model_error(self, index: int, error: Any) -> None:
        loc: FieldPath = tuple(error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "missing":
            *parent, key = loc
            dotted = ".".join(str(part) for part in loc)
            message = f"missing required key {key!r} (set {dotted} in the scale set or in defaults)"
            self.add(index, tuple(parent), message, subject=loc, intrinsic=True)
            return
        if not loc and message.startswith("minRunners"):
            self.add(index, ("minRunners",), message)
            return
        self.add(index, loc, message, intrinsic=bool(loc))

    def add(
        self,
        index: int,
        path: FieldPath,
        message: str,
        *,
        intrinsic: bool = False,
        severity: str = "error",
        subject: FieldPath | None = None,
    ) -> None:
        """A finding about a merged value of scale set `index`, located where it was written.

        An intrinsic finding (the value is wrong in itself) about an inherited value is
        reported at `defaults`; one about how it combines with this scale set names the scale
        set and says that the value came from `defaults`.
        """
        item = self.items[index]
        where, inherited = source_of(index, path, defaults=self.defaults, scale_set=item)
        shown: FieldPath = ("scaleSets", index, *path)
        about = subject if subject is not None else path
        if self._reported((*shown[:2], *about)) or self._reported(
            source_of(index, about, defaults=self.defaults, scale_set=item)[0]
        ):
            return
        if inherited and intrinsic:
            shown = where
        elif inherited:
            message += " (inherited from defaults)"
        self.findings.add(shown, message, where=where, severity=severity)

    def _reported(self, path: FieldPath) -> bool:
        """Whether the schema reported something about this path, a parent, or a child."""
        return any(
            path[: len(bad)] == bad or bad[: len(path)] == path for bad in self.schema_errors
        )

    def _check_unique(self, valid: dict[int, ScaleSet]) -> None:
        seen: dict[tuple[str, str], int] = {}
        for index, scale_set in valid.items():
            first = seen.setdefault(scale_set.identity, index)
            if first == index:
                continue
            other = valid[first]
            self.findings.add(
                ("scaleSets", index, "name"),
                f"duplicate scale set {scale_set.name!r} for {scale_set.normalized_url}: "
                f"scaleSets[{first}] ({other.name}) has the same name "
                "(names and URLs compare case-insensitively)",
            )

    def warn(self, valid: dict[int, ScaleSet]) -> None:
        for path, what in self._literal_secrets():
            self.findings.add(
                path,
                f"literal {what} in the manifest, which lives in git: use env:NAME or file:PATH",
                severity="warning",
            )

    def _literal_secrets(self) -> Iterator[tuple[FieldPath, str]]:
        owners: list[tuple[FieldPath, Any]] = [(("defaults",), self.defaults)]
        owners += [(("scaleSets", i), item) for i, item in enumerate(self.items)]
        for prefix, owner in owners:
            for path, what in _SECRETS:
                value = _value_at(owner, path)
                if isinstance(value, str) and value and is_literal_secret(value):
                    yield (*prefix, *path), what

    def check_env(self, valid: dict[int, ScaleSet], *, base_dir: Path) -> None:
        """Prove every `env:` ref is set and every `file:` ref and file path is readable."""
        for index, scale_set in valid.items():
            for path, ref, is_secret in _references(scale_set):
                if is_secret:
                    problem = secret_problem(ref, base_dir=base_dir)
                else:
                    problem = path_problem(ref, base_dir=base_dir)
                if problem is not None:
                    self.add(index, path, problem, intrinsic=True)


def _references(scale_set: ScaleSet) -> Iterator[tuple[FieldPath, str, bool]]:
    """(merged path, ref or path, is a secret ref) for everything --check-env resolves."""
    auth = scale_set.github.auth
    if auth.token is not None:
        yield ("github", "auth", "token"), auth.token, True
    if auth.app is not None:
        yield ("github", "auth", "app", "privateKey"), auth.app.private_key, True
    if scale_set.github.ca_bundle:
        yield ("github", "caBundle"), scale_set.github.ca_bundle, False
    if scale_set.backend not in ("docker", "swarm"):
        return  # a scale set uses only its own backend's settings
    block = scale_set.backend
    engine = scale_set.docker if block == "docker" else scale_set.swarm
    for name, value in engine.env.items():
        if not is_literal_secret(value):
            yield (block, "env", name), value, True
    if engine.tls is not None:
        for key in ("ca", "cert", "key"):
            file = getattr(engine.tls, key)
            if file:
                yield (block, "tls", key), file, False


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _value_at(node: Any, path: FieldPath) -> Any:
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node
