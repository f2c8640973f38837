"""`runscaler run --dry-run`: prove a manifest would work, changing nothing.

For each scale set it proves the GitHub credentials (the registration-token exchange is the
only call that writes anything on GitHub's side), resolves the runner group, looks the scale
set up (it exists, or would be created; an existing one's labels are compared with the
manifest's), and checks the backend (engine reachable; image
present, or pullable under its pull policy). It creates no scale set, session, runner or
container. Scale sets are checked concurrently; each gets one verdict line.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from runscaler.backends.base import BackendError
from runscaler.engine.backendpool import BackendPool
from runscaler.engine.labels import label_mismatch
from runscaler.engine.resolving import resolve_credentials
from runscaler.errors import UserError
from runscaler.github.client import RetryPolicy, ScaleSetClient
from runscaler.github.errors import GitHubError
from runscaler.manifest.loading import LoadedManifest
from runscaler.manifest.models import ScaleSet


@dataclass(frozen=True)
class DryRunResult:
    name: str
    url: str
    ok: bool
    credentials: str = ""
    runner_group: str = ""
    scale_set: str = ""
    backend: str = ""
    problem: str = ""  # one line: what failed, the HTTP status, what to check
    # The scale set exists on GitHub with labels other than the manifest's (a warning: jobs
    # asking for the missing ones would stay queued).
    labels: str | None = None


def _describe(exc: Exception) -> str:
    status = getattr(exc, "status", None)
    text = str(exc)
    if status is not None and str(status) not in text:
        text = f"HTTP {status}: {text}"
    return text


async def check_scale_set(
    scale_set: ScaleSet, *, fleet: str, base_dir: Path, pool: BackendPool, retry: RetryPolicy
) -> DryRunResult:
    result = DryRunResult(name=scale_set.name, url=scale_set.github.url, ok=False)
    github = scale_set.github
    try:
        client = ScaleSetClient(
            config_url=github.url,
            credentials=lambda: resolve_credentials(scale_set, base_dir),
            proxy=github.proxy,
            ca_bundle=base_dir / github.ca_bundle if github.ca_bundle else None,
            retry=retry,
        )
    except Exception as exc:
        return _failed(result, f"cannot use github settings: {exc}")
    async with client:
        try:
            await client.check_credentials()
            result = _with(result, credentials="ok")
            group_id = await client.get_runner_group_id(scale_set.runner_group)
            result = _with(result, runner_group=f"{scale_set.runner_group} (id {group_id})")
            existing = await client.get_scale_set(runner_group_id=group_id, name=scale_set.name)
        except (GitHubError, UserError, ValueError) as exc:
            what = "check the token or App credentials and their scopes"
            if result.credentials:
                what = "check runnerGroup and the credentials' permissions"
            return _failed(result, f"{_describe(exc)}; {what}")
        found = f"exists (id {existing.id})" if existing else "would be created"
        mismatch = label_mismatch(scale_set.all_labels, existing.labels) if existing else None
        result = _with(result, scale_set=found, labels=mismatch)
    backend = pool.backend_for(fleet, scale_set, base_dir)
    try:
        summary = await backend.check(scale_set.template)
    except BackendError as exc:
        return _failed(result, str(exc))
    return _with(result, backend=summary, ok=True)


def _with(result: DryRunResult, **changes: object) -> DryRunResult:
    from dataclasses import replace

    return replace(result, **changes)  # type: ignore[arg-type]


def _failed(result: DryRunResult, problem: str) -> DryRunResult:
    return _with(result, ok=False, problem=problem)


async def dry_run(
    loaded: LoadedManifest, *, retry: RetryPolicy | None = None
) -> list[DryRunResult]:
    retry = retry or RetryPolicy()
    pool = BackendPool()
    fleet = loaded.fleet.metadata.name
    try:
        return list(
            await asyncio.gather(
                *(
                    check_scale_set(
                        s, fleet=fleet, base_dir=loaded.base_dir, pool=pool, retry=retry
                    )
                    for s in loaded.fleet.scale_sets
                )
            )
        )
    finally:
        await pool.close()
