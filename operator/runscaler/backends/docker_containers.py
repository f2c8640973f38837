"""Low-level container calls the backend and its housekeeping share.

`create_container` is the one place a container is created (with the engine's `platform`
parameter when one is asked for), and `run_helper` runs a short-lived helper
(shared-volume setup and sweeping) to completion and always removes it, whatever happens.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import Any

from runscaler.backends.base import LABEL_FLEET, BackendError
from runscaler.backends.docker_api import DockerAPI, EngineError
from runscaler.backends.docker_client import engine_calls

# Marks what we create that is not a runner (helpers, the shared volume), so listings of
# runners never include it while the fleet's leak checks still do.
LABEL_ROLE = "dev.runscaler.role"

HELPER_TIMEOUT = 600.0


@dataclass(frozen=True)
class HelperResult:
    exit_code: int
    output: list[str]


async def create_container(
    docker: DockerAPI, body: dict[str, Any], *, name: str, platform: str | None
) -> str:
    """Create a container; return its id. EngineError propagates (callers translate it)."""
    params = {"name": name}
    if platform:
        params["platform"] = platform
    data = await docker.query_json("containers/create", method="POST", params=params, body=body)
    return str(data["Id"])


async def force_remove(docker: DockerAPI, ref: str) -> bool:
    """Kill and remove a container and its anonymous volumes; False when it was already gone."""
    try:
        await docker.query(f"containers/{ref}", method="DELETE", params={"force": "1", "v": "1"})
    except EngineError as exc:
        if exc.status == 404:
            return False
        # 409: another caller is removing it right now: wait until it is gone, so a caller
        # that lists containers next never sees it half removed.
        if exc.status == 409 and "in progress" in str(exc.message):
            await _gone(docker, ref)
            return True
        raise
    return True


async def _gone(docker: DockerAPI, ref: str, *, tries: int = 100) -> None:
    for _ in range(tries):
        try:
            await docker.query_json(f"containers/{ref}/json")
        except EngineError as exc:
            if exc.status == 404:
                return
            raise
        await asyncio.sleep(0.1)


async def output_lines(docker: DockerAPI, ref: str, *, tail: int | None = None) -> list[str]:
    """The container's stdout and stderr as lines (the last `tail` when given)."""
    params: dict[str, str | int] = {"stdout": "1", "stderr": "1"}
    if tail is not None:
        params["tail"] = tail
    lines = (await docker.logs(f"containers/{ref}/logs", params)).splitlines()
    return lines[-tail:] if tail else lines


async def run_helper(
    docker: DockerAPI,
    *,
    host: str,
    fleet: str,
    role: str,
    image: str,
    script: str,
    binds: list[str],
    platform: str | None = None,
    timeout: float = HELPER_TIMEOUT,  # noqa: ASYNC109 (the helper's deadline, enforced inside)
) -> HelperResult:
    """Run `sh -c script` as root in a fresh container of `image` without network, wait for it,
    return its exit code and output, and remove it."""
    name = f"runscaler-{fleet}-{role}-{secrets.token_hex(4)}"
    body = {
        "Image": image,
        "Entrypoint": ["sh", "-c"],
        "Cmd": [script],
        "User": "0",
        "Labels": {LABEL_FLEET: fleet, LABEL_ROLE: role},
        "HostConfig": {"Binds": binds, "NetworkMode": "none"},
    }
    with engine_calls(host, f"cannot run the {role} helper from {image}"):
        container_id = await create_container(docker, body, name=name, platform=platform)
        try:
            await docker.query(f"containers/{container_id}/start", method="POST")
            try:
                async with asyncio.timeout(timeout):
                    status = await docker.query_json(
                        f"containers/{container_id}/wait", method="POST", read_timeout=None
                    )
            except TimeoutError:
                raise BackendError(
                    f"the {role} helper on Docker at {host} did not finish within "
                    f"{timeout:.0f}s: it was stopped"
                ) from None
            output = await output_lines(docker, container_id)
        finally:
            await asyncio.shield(force_remove(docker, container_id))
    return HelperResult(exit_code=int(status.get("StatusCode", -1)), output=output)
