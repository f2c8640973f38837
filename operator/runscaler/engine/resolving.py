"""What a scale set resolves to at run time: credentials, their fingerprint, its template.

Resolving reads secret refs (`env:`, `file:`) now, so it is what a reload does first, before
anything changes: a ref that cannot be resolved rejects the reload whole. The fingerprint
tells a rotated secret (same manifest, new value) from an unchanged one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from runscaler.engine.listener import ListenerSettings
from runscaler.engine.scaler import Template
from runscaler.github.auth import AppCredentials, Credentials, TokenCredentials
from runscaler.manifest.models import ScaleSet, runner_shape
from runscaler.manifest.secrets import resolve_secret


def resolve_credentials(scale_set: ScaleSet, base_dir: Path) -> Credentials:
    """Resolve the scale set's auth secret refs now (re-read on every call)."""
    auth = scale_set.github.auth
    if auth.token is not None:
        return TokenCredentials(token=resolve_secret(auth.token, base_dir=base_dir))
    assert auth.app is not None
    return AppCredentials(
        client_id=auth.app.client_id,
        installation_id=auth.app.installation_id,
        private_key=resolve_secret(auth.app.private_key, base_dir=base_dir),
    )


def credentials_fingerprint(scale_set: ScaleSet, base_dir: Path) -> str:
    """A hash of everything the GitHub connection depends on, secrets resolved."""
    creds = resolve_credentials(scale_set, base_dir)
    parts = [
        scale_set.normalized_url,
        scale_set.github.proxy or "",
        scale_set.github.ca_bundle or "",
    ]
    if isinstance(creds, TokenCredentials):
        parts.append(creds.token)
    else:
        parts += [creds.client_id, str(creds.installation_id), creds.private_key]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def template_of(scale_set: ScaleSet, base_dir: Path) -> Template:
    """The template in force; its hash covers what shapes a runner (not housekeeping)."""
    spec = scale_set.template
    dumped = json.dumps(runner_shape(spec), sort_keys=True)
    env: dict[str, str] = {}
    if scale_set.backend in ("docker", "swarm"):
        block = scale_set.docker if scale_set.backend == "docker" else scale_set.swarm
        env = {k: resolve_secret(v, base_dir=base_dir) for k, v in block.env.items()}
    return Template(spec=spec, hash=hashlib.sha256(dumped.encode()).hexdigest()[:12], env=env)


def listener_settings(scale_set: ScaleSet) -> ListenerSettings:
    return ListenerSettings(
        name=scale_set.name,
        runner_group=scale_set.runner_group,
        labels=scale_set.all_labels,
        min_runners=scale_set.min_runners,
        max_runners=scale_set.max_runners,
    )
