"""No secret reaches the operator's output, even at debug level with jobs running.

A token scale set and a GitHub App scale set (a real RS256 key made here) run jobs; the JIT
configs are read from the runner containers' environment while they run, and every token the
simulator issued is collected. None of them may appear in any line the operator wrote, nor in
`/status` or `/metrics`.
"""

from __future__ import annotations

import signal

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from runscaler.backends.base import JIT_CONFIG_ENV
from runscaler.simulator.server import Simulator
from tests.e2e.conftest import E2E
from tests.e2e.operatorkit import container_env, running
from tests.waiting import eventually

pytestmark = pytest.mark.docker


def rsa_private_key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


def issued_tokens(sim: Simulator) -> set[str]:
    """Every token the simulator handed out (registration, installation, admin, queue)."""
    return set(sim._core.tokens._issued)


def secret_pieces(private_key: str) -> set[str]:
    """The key whole and each base64 line of its body (a log might show either)."""
    body = [line for line in private_key.splitlines() if line and not line.startswith("-----")]
    return {private_key, private_key.strip(), *body}


async def test_no_token_key_or_jit_config_appears_in_debug_logs(e2e: E2E) -> None:
    private_key = rsa_private_key_pem()
    e2e.write(private_key, "app.pem")
    app = {"app": {"clientId": "Iv1.e2etest", "installationId": 4242, "privateKey": "file:app.pem"}}
    path = e2e.write(
        e2e.manifest(
            [
                {"name": "linux", "minRunners": 1, "maxRunners": 2},
                {"name": "app-linux", "minRunners": 1, "maxRunners": 2, "github": {"auth": app}},
            ]
        )
    )
    operator = e2e.start(path, log_level="debug")
    await operator.wait_ready()
    jit_configs: set[str] = set()
    client_ids: set[str] = set()

    async def collected(at_least: int) -> bool:
        """Gather the JIT configs of the running runners and their credentials in the
        simulator; whether `at_least` JIT configs are known by now."""
        for container in await running(e2e.fleet):
            env = await container_env(container.id)
            if env.get(JIT_CONFIG_ENV):
                jit_configs.add(env[JIT_CONFIG_ENV])
        client_ids.update(r.client_id for r in e2e.sim.state.runners.values())
        return len(jit_configs) >= at_least

    await eventually(lambda: collected(2), timeout=30, message="two warm runners")
    ids = e2e.sim.add_jobs(["linux"], duration=0.3) + e2e.sim.add_jobs(["app-linux"], duration=0.3)

    def done() -> bool:
        return all(j["state"] == "done" for j in e2e.jobs(ids))

    await eventually(done, timeout=30, message="both jobs done")
    # The warm minimum comes back with new runners: their JIT configs count too.
    await eventually(lambda: collected(4), timeout=30, message="two new warm runners")
    assert {j["result"] for j in e2e.jobs(ids)} == {"succeeded"}
    served = (await operator.get("/status")).text + await operator.metrics()
    tokens = issued_tokens(e2e.sim)

    operator.signal(signal.SIGTERM)
    assert await operator.wait() == 0
    log = operator.log_text()
    assert " DEBUG " in log and "app-linux" in log and "runner" in log  # the grep is not idle
    assert any(t.startswith("ghs_") for t in tokens)  # the App really got an installation token
    secrets = {
        "token": {e2e.token},
        "private key": secret_pieces(private_key),
        "JIT config": jit_configs,
        "runner credential": client_ids,
        "issued token": tokens,
    }
    for kind, values in secrets.items():
        for value in values:
            assert value not in log, f"a {kind} appears in the operator's log"
            assert value not in served, f"a {kind} appears in /status or /metrics"
