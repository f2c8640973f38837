"""Getting a runner image onto an engine: pull policies, one pull per image, progress events.

Many scale sets may use one image and start at the same moment; they must share one pull, not
race the engine with ten. `ImagePuller` keeps one in-flight pull task per (image, platform) that
every caller awaits, and remembers when each image was last refreshed, so `always` means once
per `refresh_interval` (a day), not once per runner. A mutable tag (`:latest`, or no tag) under
`missing` is refreshed on the same schedule: GitHub stops sending jobs to a runner more than 30
days behind a release, so an image pulled once and kept forever ends up running no jobs.

The engine's pull stream is turned into `PullEvent`s for a `PullProgress` (the console renders
them); the renderer never sees the engine's raw JSON, and a renderer bug never breaks a pull.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from runscaler.backends.base import BackendError
from runscaler.backends.docker_api import DockerAPI, EngineError, json_lines
from runscaler.backends.docker_client import engine_calls

log = logging.getLogger(__name__)

PullPolicy = Literal["always", "missing", "never"]
REFRESH_INTERVAL = 24 * 3600.0


def has_tag_or_digest(image: str) -> bool:
    """`name:tag` or `name@digest` (a registry's port, `host:5000/name`, is not a tag)."""
    return "@" in image or ":" in image.rsplit("/", 1)[-1]


def is_mutable_tag(image: str) -> bool:
    """`:latest` or no tag at all: what the registry serves under it changes over time."""
    return not has_tag_or_digest(image) or image.endswith(":latest")


@dataclass(frozen=True)
class PullEvent:
    """One line of an engine's pull stream, for one layer (or the image when `layer` is None).

    `status` is the engine's word for the step: `Pulling fs layer`, `Waiting`, `Downloading`,
    `Verifying Checksum`, `Download complete`, `Extracting`, `Pull complete`, `Already exists`.
    `current`/`total` are bytes, when the engine reports them.
    """

    image: str
    layer: str | None
    status: str
    current: int | None = None
    total: int | None = None


class PullProgress(Protocol):
    """Receives the progress of pulls (several images may be pulled at once)."""

    def pull_started(self, image: str) -> None: ...

    def pull_event(self, event: PullEvent) -> None: ...

    def pull_finished(self, image: str, *, error: str | None = None) -> None: ...


def pull_event(image: str, item: dict[str, Any]) -> PullEvent | None:
    """The engine's JSON line → a `PullEvent` (None for lines without a status)."""
    status = item.get("status")
    if not isinstance(status, str):
        return None
    detail = item.get("progressDetail") or {}
    layer = item.get("id")
    # Image-level lines carry the tag as their id ("Pulling from library/x", id "latest").
    if status.startswith(("Pulling from", "Digest:", "Status:")):
        layer = None
    return PullEvent(
        image=image,
        layer=layer if isinstance(layer, str) else None,
        status=status,
        current=_int(detail.get("current")),
        total=_int(detail.get("total")),
    )


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class ImagePuller:
    """Applies pull policies for one engine, sharing pulls between concurrent callers."""

    def __init__(
        self,
        *,
        docker: Callable[[], DockerAPI],
        host: str,
        progress: PullProgress | None = None,
        refresh_interval: float = REFRESH_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._docker = docker
        self._host = host
        self._progress = progress
        self._refresh_interval = refresh_interval
        self._clock = clock
        self._inflight: dict[tuple[str, str | None], asyncio.Task[None]] = {}
        # When each (image, platform) was last pulled or checked, on `clock`.
        self._refreshed: dict[tuple[str, str | None], float] = {}
        self._stale: set[str] = set()  # mutable tags whose runner said it is outdated

    def mark_stale(self, image: str) -> None:
        """A runner of `image` exited as outdated (code 7): pull a mutable tag again before
        the next start, whatever the pull policy says about a present image."""
        if "@" in image:
            return  # pinned by digest: pulling again cannot change it
        if image not in self._stale:
            log.warning(
                "image %s is outdated (its runner exited with code 7); pulling it again "
                "before the next start",
                image,
            )
        self._stale.add(image)
        self._refreshed = {k: at for k, at in self._refreshed.items() if k[0] != image}

    def _fresh(self, key: tuple[str, str | None]) -> bool:
        at = self._refreshed.get(key)
        return at is not None and self._clock() - at < self._refresh_interval

    async def ensure(self, image: str, *, policy: PullPolicy, platform: str | None) -> None:
        """Make `image` present per `policy` (see the manifest's `docker.pull`)."""
        key = (image, platform)
        if policy == "never":
            if not await self.present(image):
                raise BackendError(
                    f"image {image} is not on Docker at {self._host} and docker.pull is never: "
                    "load it there (docker pull or docker load) or set docker.pull: missing"
                )
            return
        if policy == "missing" and image in self._stale:
            await self.pull(image, platform=platform)
            self._stale.discard(image)
            return
        if policy == "missing":
            due = is_mutable_tag(image) and key in self._refreshed and not self._fresh(key)
            if due:
                await self._refresh(image, platform)
            elif not await self.present(image):
                await self.pull(image, platform=platform)
            self._refreshed.setdefault(key, self._clock())
            return
        if not self._fresh(key):
            await self._refresh(image, platform)

    async def _refresh(self, image: str, platform: str | None) -> None:
        """Pull again; an unreachable registry must not take a fleet down while a copy is at
        hand (the next interval tries again)."""
        try:
            await self.pull(image, platform=platform)
        except BackendError as exc:
            if not await self.present(image):
                raise
            log.warning("%s; using the copy already on the engine", exc)
        self._refreshed[(image, platform)] = self._clock()
        self._stale.discard(image)

    async def present(self, image: str) -> bool:
        with engine_calls(self._host, f"cannot inspect image {image}"):
            try:
                await self._docker().query_json(f"images/{image}/json")
            except EngineError as exc:
                if exc.status == 404:
                    return False
                raise
        return True

    async def pull(self, image: str, *, platform: str | None) -> None:
        """Pull `image`; a pull of the same image already under way is joined, not repeated."""
        key = (image, platform)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(self._pull(image, platform), name=f"pull {image}")
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._forget(key, done))
        # One caller giving up (cancelled) must not cancel the pull the others wait for.
        await asyncio.shield(task)

    def _forget(self, key: tuple[str, str | None], task: asyncio.Task[None]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved here so an unawaited failure is not reported twice

    async def pullable(self, image: str) -> str:
        """Ask the registry (through the engine) for the image's manifest, downloading nothing;
        return the digest. Raises `BackendError` with the registry's answer."""
        with engine_calls(self._host, f"cannot pull image {image}"):
            data = await self._docker().query_json(f"distribution/{image}/json")
        descriptor = data.get("Descriptor") if isinstance(data, dict) else None
        digest = descriptor.get("digest") if isinstance(descriptor, dict) else None
        return str(digest or "")

    async def close(self) -> None:
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _pull(self, image: str, platform: str | None) -> None:
        self._notify("pull_started", image)
        error: str | None = "cancelled"
        try:
            with engine_calls(self._host, f"cannot pull image {image}"):
                await self._stream_pull(image, platform)
            # A stream may end early when the connection drops: believe the engine.
            if not await self.present(image):
                raise BackendError(
                    f"cannot pull image {image} on Docker at {self._host}: the pull ended "
                    "without the image: is the engine restarting? try runscaler doctor"
                )
            error = None
        except BackendError as exc:
            error = str(exc)
            raise
        finally:
            self._notify("pull_finished", image, error=error)

    async def _stream_pull(self, image: str, platform: str | None) -> None:
        params = {"fromImage": image}
        if not has_tag_or_digest(image):
            # Without a tag the engine pulls every tag of the repository; the CLI means latest.
            params["tag"] = "latest"
        if platform:
            params["platform"] = platform
        stream = self._docker().stream(
            "images/create", method="POST", params=params, read_timeout=None
        )
        async with stream as response:
            async for item in json_lines(response):
                if item.get("error") or item.get("errorDetail"):
                    # The answer was 200; the registry's refusal comes inside the stream.
                    detail = item.get("errorDetail")
                    message = detail.get("message") if isinstance(detail, dict) else None
                    raise EngineError(0, str(message or item.get("error")))
                event = pull_event(image, item)
                if event is not None:
                    self._notify("pull_event", event)

    def _notify(self, method: str, *args: Any, **kwargs: Any) -> None:
        if self._progress is None:
            return
        try:
            getattr(self._progress, method)(*args, **kwargs)
        except Exception:
            log.exception("pull progress display failed (the pull goes on)")
