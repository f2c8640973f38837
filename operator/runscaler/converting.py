"""The Go original's TOML config turned into a v1 manifest (`runscaler convert`).

Pure: a parsed config mapping in, the manifest as a plain mapping plus warnings and suggested
`runscaler run` flags out (go-original-config.md). The top level's scale-set keys become
`defaults` and each `[[scaleset]]` writes only what it names, so the manifest keeps the
config's shape. Two things never carry over silently: a literal token (never copied into a
file that lives in git; the manifest reads an environment variable instead) and the original's
`dind = true` default (written explicitly, because v1 defaults to false).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from runscaler.errors import UserError
from runscaler.manifest.models import API_VERSION, FLEET_NAME_PATTERN, KIND, ScaleSet
from runscaler.manifest.values import ENV_NAME_PATTERN, MIB, format_duration, format_size
from runscaler.manifest.values import parse_duration as _parse_duration

TOKEN_ENV = "RUNNER_TOKEN"
PROCESS_KEYS = ("log-level", "log-format", "health-port", "dry-run")
_SCALE_SET_KEYS = (
    "url",
    "name",
    "token",
    "max-runners",
    "min-runners",
    "labels",
    "runner-group",
    "runner-image",
    "backend",
    "docker",
    "tart",
)


class ConversionError(UserError):
    """The config cannot be converted; the message names the file and the key."""


@dataclass(frozen=True)
class Conversion:
    manifest: dict[str, Any]  # the v1 document, keys in the order people read them
    warnings: tuple[str, ...]  # one line each, already naming the file and key
    run_flags: tuple[str, ...]  # `runscaler run` flags for the config's process settings


def fleet_name_from(stem: str) -> str:
    """A file name made into a fleet name: `My Runners.v2` → `my-runners-v2`."""
    name = re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")[:40].strip("-")
    return name or "fleet"


def fleet_name_of(config: Mapping[str, Any], *, stem: str) -> tuple[str, bool]:
    """The fleet's name from the config's top-level `name` (the scale set's, in the single
    form), else from the file's name; and whether it came from the file."""
    name = config.get("name")
    if isinstance(name, str) and fleet_name_from(name) != "fleet":
        return fleet_name_from(name), False
    return fleet_name_from(stem), True


def check_fleet_name(name: str) -> str:
    if not re.fullmatch(FLEET_NAME_PATTERN, name):
        raise ConversionError(
            f"--name {name!r}: a fleet name is 1-40 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return name


def convert(config: Mapping[str, Any], *, fleet_name: str, source: str) -> Conversion:
    """The v1 manifest for a parsed Go config. Raises `ConversionError` on bad input."""
    return _Converter(config, source=source).run(fleet_name)


class _Converter:
    def __init__(self, config: Mapping[str, Any], *, source: str) -> None:
        self.config = config
        self.source = source
        self.warnings: list[str] = []

    def warn(self, where: str, message: str) -> None:
        self.warnings.append(f"{self.source}: warning: {where}: {message}")

    def fail(self, where: str, message: str) -> ConversionError:
        return ConversionError(f"{self.source}: {where}: {message}")

    def run(self, fleet_name: str) -> Conversion:
        tables = self.config.get("scaleset")
        flags = self._run_flags()
        top = {k: v for k, v in self.config.items() if k not in (*PROCESS_KEYS, "scaleset")}
        if tables is None:
            scale_sets = [self._scale_set(top, where="top level", inherited={})]
            defaults: dict[str, Any] = {}
        else:
            if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
                raise self.fail("scaleset", "must be [[scaleset]] tables")
            top.pop("name", None)  # the fleet's name (metadata.name), not a default
            defaults = self._level(top, where="top level", backend=_backend(top, {}))
            scale_sets = [
                self._scale_set(table, where=f"scaleset[{i}]", inherited=top)
                for i, table in enumerate(tables)
            ]
        self._add_auth_fallback(defaults, scale_sets, single=tables is None)
        self._keep_dind(top, defaults, scale_sets, tables)
        manifest: dict[str, Any] = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": fleet_name},
        }
        if defaults:
            manifest["defaults"] = _ordered(defaults)
        manifest["scaleSets"] = [_ordered(s) for s in scale_sets]
        return Conversion(manifest, tuple(self.warnings), flags)

    def _scale_set(
        self, table: Mapping[str, Any], *, where: str, inherited: Mapping[str, Any]
    ) -> dict[str, Any]:
        name = table.get("name")
        if not isinstance(name, str) or not name:
            raise self.fail(where, "name is required (a string)")
        if "url" not in table and "url" not in inherited:
            raise self.fail(where, "url is required (here or at the top level)")
        for key in PROCESS_KEYS:
            if key in table:
                self.warn(f"{where}.{key}", "a process setting belongs at the top level: dropped")
        body = {k: v for k, v in table.items() if k not in PROCESS_KEYS}
        level = self._level(body, where=where, backend=_backend(table, inherited), name=name)
        level["name"] = name
        return level

    def _level(
        self, table: Mapping[str, Any], *, where: str, backend: str, name: str | None = None
    ) -> dict[str, Any]:
        """What one level (top or a scale set) writes, in v1 keys."""
        out: dict[str, Any] = {}
        for key in table:
            if key not in _SCALE_SET_KEYS:
                self.warn(_at(where, key), "has no v1 equivalent: dropped")
        if "url" in table:
            out["github"] = {"url": self._string(table, "url", where)}
        if "token" in table:
            token = self._token(table["token"], where=where, name=name)
            if token is not None:
                out.setdefault("github", {})["auth"] = {"token": token}
        self._scalars(table, out, where=where)
        docker = self._docker(table.get("docker"), where=_at(where, "docker"))
        tart = self._tart(table.get("tart"), where=_at(where, "tart"))
        if "runner-image" in table:
            image = self._string(table, "runner-image", where)
            (docker if backend == "docker" else tart).setdefault("image", image)
        if docker:
            out["docker"] = docker
        if tart:
            out["tart"] = tart
        return out

    def _scalars(self, table: Mapping[str, Any], out: dict[str, Any], *, where: str) -> None:
        if "runner-group" in table:
            out["runnerGroup"] = self._string(table, "runner-group", where)
        if "labels" in table:
            labels = table["labels"]
            if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
                raise self.fail(_at(where, "labels"), "must be a list of strings")
            # The name is always a label in v1: listing it again says nothing.
            kept = [x for x in labels if x.lower() != str(table.get("name", "")).lower()]
            if kept:
                out["labels"] = kept
        for key, v1 in (("min-runners", "minRunners"), ("max-runners", "maxRunners")):
            if key in table:
                out[v1] = self._int(table, key, where, minimum=0)
        if "backend" in table:
            backend = table["backend"]
            if backend not in ("docker", "tart"):
                raise self.fail(
                    _at(where, "backend"), f'must be "docker" or "tart", not {backend!r}'
                )
            out["backend"] = backend

    def _token(self, token: object, *, where: str, name: str | None) -> str | None:
        if not isinstance(token, str):
            raise self.fail(_at(where, "token"), "must be a string")
        if not token:
            return None
        if token.startswith("env:"):
            if not re.fullmatch(ENV_NAME_PATTERN, token[4:]):
                raise self.fail(_at(where, "token"), "env: needs a variable name like env:TOKEN")
            return token
        if where != "top level" and token == self.config.get("token"):
            return None  # the top level's literal: inherit the variable it became
        variable = TOKEN_ENV if where == "top level" else _token_variable(name or where)
        self.warn(
            _at(where, "token"),
            f"a literal token is not copied into the manifest (it lives in git): "
            f"it reads env:{variable} instead; set {variable} in the operator's environment",
        )
        return f"env:{variable}"

    def _docker(self, table: object, *, where: str) -> dict[str, Any]:
        if table is None:
            return {}
        section = self._table(table, where)
        out: dict[str, Any] = {}
        if "socket" in section:
            socket = self._string(section, "socket", where)
            out["host"] = socket if "://" in socket else f"unix://{socket}"
        if "dind" in section:
            out["dind"] = self._bool(section, "dind", where)
        if "platform" in section:
            out["platform"] = self._string(section, "platform", where)
        if section.get("memory"):
            out["memory"] = format_size(self._int(section, "memory", where, minimum=0) * MIB)
        if section.get("cpu"):
            out["cpus"] = self._number(section, "cpu", where)
        shared = self._durations(
            section,
            where,
            {"shared-volume-ttl": "ttl", "shared-volume-cleanup-interval": "cleanupInterval"},
        )
        if "shared-volume" in section:
            shared = {"path": self._string(section, "shared-volume", where), **shared}
        if shared:
            out["sharedVolume"] = shared
        buildx = self._durations(
            section, where, {"buildx-cleanup-ttl": "ttl", "buildx-cleanup-interval": "interval"}
        )
        if "buildx-cleanup" in section:
            buildx = {"enabled": self._bool(section, "buildx-cleanup", where), **buildx}
        if buildx:
            out["buildxCleanup"] = buildx
        self._unknown(section, where, _DOCKER_KEYS)
        return out

    def _tart(self, table: object, *, where: str) -> dict[str, Any]:
        if table is None:
            return {}
        section = self._table(table, where)
        out: dict[str, Any] = {}
        if "image" in section:
            out["image"] = self._string(section, "image", where)
        for key, v1 in (("cpu", "cpu"), ("memory", "memory")):
            if section.get(key):
                out[v1] = self._int(section, key, where, minimum=0)
        for key, v1 in (("runner-dir", "runnerDir"), ("home", "home")):
            if key in section:
                out[v1] = self._string(section, key, where)
        if "pool-size" in section:
            out["poolSize"] = self._int(section, "pool-size", where, minimum=0)
        out.update(
            self._durations(
                section,
                where,
                {"cache-max-age": "cacheMaxAge", "cache-cleanup-interval": "cacheCleanupInterval"},
            )
        )
        if "cache-space-budget" in section:
            out["cacheBudgetGB"] = self._int(section, "cache-space-budget", where, minimum=0)
        if "cache-cleanup" in section and not self._bool(section, "cache-cleanup", where):
            out["cacheMaxAge"] = 0
            if out.pop("cacheBudgetGB", 0):
                self.warn(_at(where, "cache-space-budget"), "ignored: cache-cleanup is off")
        self._unknown(section, where, _TART_KEYS)
        return out

    def _add_auth_fallback(
        self, defaults: dict[str, Any], scale_sets: list[dict[str, Any]], *, single: bool
    ) -> None:
        """Where no token is set, the original read $RUNNER_TOKEN: so does the manifest."""
        holder = scale_sets[0] if single else defaults
        if "auth" in holder.get("github", {}):
            return
        if not single and all("auth" in s.get("github", {}) for s in scale_sets):
            return
        holder.setdefault("github", {})["auth"] = {"token": f"env:{TOKEN_ENV}"}
        self.warn(
            "token",
            f"not set: the manifest reads env:{TOKEN_ENV}, as the original did "
            f"(if you set the older RUNSCALER_TOKEN, set {TOKEN_ENV} instead)",
        )

    def _keep_dind(
        self,
        top: Mapping[str, Any],
        defaults: dict[str, Any],
        scale_sets: list[dict[str, Any]],
        tables: list[dict[str, Any]] | None,
    ) -> None:
        """The original mounted the engine socket unless told not to: keep that explicit."""
        levels = [top] if tables is None else tables
        docker_sets = [
            (level, s)
            for level, s in zip(levels, scale_sets, strict=True)
            if _backend(level, top) == "docker"
        ]
        if not docker_sets:
            return
        holder = scale_sets[0] if tables is None else defaults
        if "dind" not in holder.get("docker", {}):
            holder.setdefault("docker", {})["dind"] = True
        inherited = holder["docker"]["dind"]
        if any(s.get("docker", {}).get("dind", inherited) for _, s in docker_sets):
            self.warn(
                "docker.dind",
                "true (the original's default): every job, forked pull requests included, "
                "gets the engine's socket, which is root on the host; set false unless "
                "workflows build images",
            )

    def _run_flags(self) -> tuple[str, ...]:
        flags: list[str] = []
        for key, flag in (("log-level", "--log-level"), ("log-format", "--log-format")):
            if key in self.config:
                flags += [flag, self._string(self.config, key, "top level")]
        if "health-port" in self.config:
            port = self._int(self.config, "health-port", "top level", minimum=0)
            if not 0 < port < 65536:
                raise self.fail("health-port", f"must be a port number, not {port}")
            flags += ["--listen", f"127.0.0.1:{port}"]
        if "dry-run" in self.config and self._bool(self.config, "dry-run", "top level"):
            flags.append("--dry-run")
        return tuple(flags)

    # Typed reads: a wrong type is an error naming the key, never a traceback.

    def _table(self, value: object, where: str) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, "must be a table")
        return value

    def _string(self, table: Mapping[str, Any], key: str, where: str) -> str:
        value = table[key]
        if not isinstance(value, str) or not value:
            raise self.fail(_at(where, key), f"must be a non-empty string, not {value!r}")
        return value

    def _bool(self, table: Mapping[str, Any], key: str, where: str) -> bool:
        value = table[key]
        if not isinstance(value, bool):
            raise self.fail(_at(where, key), f"must be true or false, not {value!r}")
        return value

    def _int(self, table: Mapping[str, Any], key: str, where: str, *, minimum: int) -> int:
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(_at(where, key), f"must be an integer >= {minimum}, not {value!r}")
        return value

    def _number(self, table: Mapping[str, Any], key: str, where: str) -> int | float:
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise self.fail(_at(where, key), f"must be a number >= 0, not {value!r}")
        return value

    def _durations(
        self, table: Mapping[str, Any], where: str, keys: Mapping[str, str]
    ) -> dict[str, str | int]:
        out: dict[str, str | int] = {}
        for key, v1 in keys.items():
            if key not in table:
                continue
            value = table[key]
            try:
                seconds = _parse_duration(value)
            except ValueError as exc:
                raise self.fail(_at(where, key), str(exc)) from None
            out[v1] = format_duration(seconds) if seconds else 0
        return out

    def _unknown(self, table: Mapping[str, Any], where: str, known: tuple[str, ...]) -> None:
        for key in table:
            if key not in known:
                self.warn(_at(where, key), "has no v1 equivalent: dropped")


_DOCKER_KEYS = (
    "socket",
    "dind",
    "shared-volume",
    "shared-volume-ttl",
    "shared-volume-cleanup-interval",
    "memory",
    "cpu",
    "platform",
    "buildx-cleanup",
    "buildx-cleanup-ttl",
    "buildx-cleanup-interval",
)
_TART_KEYS = (
    "image",
    "cpu",
    "memory",
    "runner-dir",
    "pool-size",
    "home",
    "cache-cleanup",
    "cache-max-age",
    "cache-space-budget",
    "cache-cleanup-interval",
)


def _ordered(level: dict[str, Any]) -> dict[str, Any]:
    """Keys in the models' order, the order people read a scale set in."""
    return _sorted_like(level, ScaleSet)


def _sorted_like(data: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    fields = {(info.alias or name): info.annotation for name, info in model.model_fields.items()}
    order = list(fields)
    out = {}
    for key in sorted(data, key=lambda k: order.index(k) if k in order else len(order)):
        value, annotation = data[key], fields.get(key)
        if isinstance(value, dict) and isinstance(annotation, type):
            if issubclass(annotation, BaseModel):
                value = _sorted_like(value, annotation)
        out[key] = value
    return out


def _at(where: str, key: str) -> str:
    return key if where == "top level" else f"{where}.{key}"


def _backend(level: Mapping[str, Any], top: Mapping[str, Any]) -> str:
    backend = level.get("backend", top.get("backend", "docker"))
    return backend if isinstance(backend, str) else "docker"


def _token_variable(name: str) -> str:
    return f"{TOKEN_ENV}_{re.sub(r'[^A-Z0-9]+', '_', name.upper()).strip('_')}"
