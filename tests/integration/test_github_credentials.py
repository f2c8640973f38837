"""The auth bootstrap against the simulator: PATs, Apps, rotation, refresh, and no leaks."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from runscaler.errors import UserError
from runscaler.github.auth import AppCredentials, Credentials, TokenCredentials
from runscaler.github.errors import AuthError, CredentialsUnavailableError
from runscaler.github.models import RunnerScaleSet
from runscaler.logs import secrets
from runscaler.manifest.secrets import resolve_secret
from tests.integration.githubkit import (
    RecordingTransport,
    add_fault,
    control,
    make_client,
    simulator,
)
from tests.waiting import eventually

G1 = r"/actions/runners/registration-token$"
G2 = r"^/api/v3/app/installations/42/access_tokens$"
G3 = r"^/api/v3/actions/runner-registration$"


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


def _public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="module")
def app_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class Source:
    """A credentials source that hands out the next value on each call (rotation)."""

    def __init__(self, *values: Credentials) -> None:
        self.values = list(values)
        self.calls = 0

    def __call__(self) -> Credentials:
        value = self.values[min(self.calls, len(self.values) - 1)]
        self.calls += 1
        return value


async def test_a_wrong_token_is_an_auth_error_naming_401() -> None:
    async with simulator(token="ghp_the-right-token-123456") as sim:
        source = Source(TokenCredentials("ghp_a-wrong-token-0000000"))
        wire = RecordingTransport()
        async with make_client(sim, credentials=source, transport=wire) as client:
            with pytest.raises(AuthError) as caught:
                await client.check_credentials()
    assert caught.value.status == 401
    assert str(caught.value) == (
        f"cannot get a runner registration token for acme (POST {sim.url}/api/v3/orgs/acme/"
        "actions/runners/registration-token): 401 Unauthorized: Bad credentials; check that "
        "the token is valid and not expired or revoked; the token needs the admin:org scope "
        "(classic) or 'Self-hosted runners: read and write' on the organization "
        "(fine-grained token or App)"
    )
    assert "ghp_a-wrong-token" not in str(caught.value)
    # Refused once, the credentials were read again (a rotated file) and tried once more.
    assert source.calls == 2
    assert wire.count("POST", G1) == 2


async def test_rotated_credentials_are_picked_up_after_a_refusal() -> None:
    async with simulator(token="ghp_the-new-token-1234567") as sim:
        source = Source(
            TokenCredentials("ghp_the-old-token-1234567"),
            TokenCredentials("ghp_the-new-token-1234567"),
        )
        wire = RecordingTransport()
        async with make_client(sim, credentials=source, transport=wire) as client:
            await client.create_scale_set(RunnerScaleSet(name="linux", runner_group_id=1))
    assert [s.status for s in wire.matching("POST", G1)] == [401, 201]
    assert source.calls == 2


async def test_a_github_app_authenticates_with_an_rs256_jwt(app_key: rsa.RSAPrivateKey) -> None:
    async with simulator(app_public_key=_public_pem(app_key)) as sim:
        source = Source(AppCredentials("Iv1.test-app", 42, _pem(app_key)))
        wire = RecordingTransport()
        async with make_client(sim, credentials=source, transport=wire) as client:
            await client.check_credentials()
            assert await client.get_scale_set(runner_group_id=1, name="x") is None
    (g2,) = wire.matching("POST", G2)
    assert g2.status == 201
    assert g2.headers["content-type"] == "application/vnd.github+json"
    (g1,) = wire.matching("POST", G1)
    # G1 is sent with the installation token, not the JWT.
    assert g1.headers["authorization"] != g2.headers["authorization"]
    assert g1.status == 201


async def test_an_app_key_github_does_not_know_is_refused(app_key: rsa.RSAPrivateKey) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    async with simulator(app_public_key=_public_pem(app_key)) as sim:
        source = Source(AppCredentials("Iv1.test-app", 42, _pem(other)))
        async with make_client(sim, credentials=source) as client:
            with pytest.raises(AuthError) as caught:
                await client.check_credentials()
    assert caught.value.status == 401
    assert str(caught.value).startswith(
        "cannot get an installation token for GitHub App Iv1.test-app (POST "
    )
    assert "check the App's clientId, installationId and privateKey" in str(caught.value)


async def test_the_admin_token_is_refreshed_a_minute_before_it_expires() -> None:
    # A 61.5 s token is inside the one-minute margin 1.5 s after it was issued.
    async with simulator(admin_token_ttl=61.5) as sim:
        wire = RecordingTransport()
        async with make_client(sim, transport=wire) as client:
            await client.get_scale_set(runner_group_id=1, name="x")
            await client.get_scale_set(runner_group_id=1, name="x")
            assert wire.count("POST", G3) == 1

            async def refreshed() -> bool:
                await client.get_scale_set(runner_group_id=1, name="x")
                return wire.count("POST", G3) == 2

            await eventually(refreshed, timeout=5, interval=0.2, message="an admin refresh")
            await client.get_scale_set(runner_group_id=1, name="x")
            # Refreshed tokens are still inside the margin: every call refreshes now, and
            # each refresh is one registration token and one exchange.
            assert wire.count("POST", G1) == wire.count("POST", G3)


async def test_a_failed_refresh_keeps_the_token_while_it_is_valid(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with simulator(admin_token_ttl=61.5) as sim:
        wire = RecordingTransport()
        async with make_client(sim, transport=wire) as client:
            await client.get_scale_set(runner_group_id=1, name="x")
            await add_fault(sim, method="POST", path=G1, times=-1, status=503)

            async def refresh_failed_but_call_worked() -> bool:
                assert await client.get_scale_set(runner_group_id=1, name="x") is None
                return wire.count("POST", G1) > 1

            with caplog.at_level(logging.WARNING, logger="runscaler.github"):
                await eventually(refresh_failed_but_call_worked, timeout=5, interval=0.2)
    assert wire.count("POST", G1) == 1 + 5  # the first exchange, then one refresh's attempts
    assert wire.count("POST", G3) == 1
    assert "admin token refresh failed, keeping the current one" in caplog.text


async def test_an_admin_token_the_service_refuses_is_renewed_once() -> None:
    async with simulator() as sim:
        wire = RecordingTransport()
        async with make_client(sim, transport=wire) as client:
            await client.get_scale_set(runner_group_id=1, name="x")
            await control(sim, "POST", "/_sim/expire-tokens")
            assert await client.get_scale_set(runner_group_id=1, name="x") is None
    statuses = [s.status for s in wire.matching("GET", r"/runnerscalesets$")]
    assert statuses == [200, 401, 200]
    assert wire.count("POST", G3) == 2


async def test_concurrent_first_calls_share_one_token_exchange() -> None:
    async with simulator() as sim:
        wire = RecordingTransport()
        async with make_client(sim, transport=wire) as client:
            found = await asyncio.gather(
                *(client.get_scale_set(runner_group_id=1, name=f"s{n}") for n in range(5))
            )
    assert found == [None] * 5
    assert (wire.count("POST", G1), wire.count("POST", G3)) == (1, 1)


@pytest.fixture
def debug_log() -> Iterator[io.StringIO]:
    """Every record of every logger at DEBUG, formatted but not redacted."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    quiet = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    for name in quiet:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        for name, level in quiet.items():
            logging.getLogger(name).setLevel(level)


async def test_debug_logs_never_contain_a_token_key_or_jit_config(
    app_key: rsa.RSAPrivateKey, debug_log: io.StringIO
) -> None:
    pem = _pem(app_key)
    async with simulator(app_public_key=_public_pem(app_key), message_queue_token_ttl=0.5) as sim:
        wire = RecordingTransport()
        source = Source(AppCredentials("Iv1.test-app", 42, pem))
        async with make_client(sim, credentials=source, transport=wire) as client:
            scale_set = await client.create_scale_set(RunnerScaleSet(name="s", runner_group_id=1))
            session = await client.create_session(scale_set.id, owner="host-a")
            try:
                sim.add_jobs(["s"])
                message = await session.get_message(last_message_id=0, max_capacity=1)
                assert message is not None
                await control(sim, "POST", "/_sim/expire-tokens")
                await session.delete_message(message.message_id)
                jit = await client.generate_jit_config(scale_set.id, runner_name="s-1")
            finally:
                await session.close()
    text = debug_log.getvalue()
    assert "runner-registration" in text  # the log did capture the exchange
    credentials = wire.credentials_seen()
    # Installation token, registration tokens, admin tokens (2), queue tokens (2), the JWT.
    assert len(credentials) >= 7
    leaked = [c for c in credentials if c in text]
    assert leaked == []
    assert jit.encoded not in text
    for line in pem.splitlines()[1:-1]:
        assert line not in text
    secrets.discard(jit.encoded)


async def test_a_file_secret_gone_at_a_refresh_is_an_auth_error_with_the_cause_chained(
    tmp_path: Path,
) -> None:
    secret = tmp_path / "token"
    secret.write_text("ghp_from-a-file-1234567\n")

    def from_file() -> TokenCredentials:
        return TokenCredentials(resolve_secret(f"file:{secret}", base_dir=tmp_path))

    async with simulator() as sim, make_client(sim, credentials=from_file) as client:
        await client.check_credentials()
        secret.unlink()
        with pytest.raises(CredentialsUnavailableError, match="file:") as caught:
            await client.check_credentials()
    assert isinstance(caught.value, AuthError)
    assert isinstance(caught.value.__cause__, UserError)
