"""The client's network settings over real loopback sockets: an extra CA bundle, proxies
(HTTP and SOCKS5, from the manifest or the environment) and NO_PROXY."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from runscaler.github.auth import TokenCredentials
from runscaler.github.client import ScaleSetClient
from runscaler.github.errors import AuthError, TransportError
from runscaler.logs import secrets
from tests.integration.githubkit import FAST, TOKEN, simulator

_HOP_BY_HOP = {"connection", "proxy-connection", "proxy-authorization", "keep-alive", "host"}


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        assert issuer is not None
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@asynccontextmanager
async def tls_github(tmp_path: Path) -> AsyncIterator[tuple[str, Path, list[str]]]:
    """An HTTPS server on 127.0.0.1 with a certificate from a private CA; it refuses every
    token with 401. Yields its URL, the CA bundle and the paths it was asked for."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("runscaler test CA", ca_key, None, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _certificate("127.0.0.1", server_key, ca, ca_key, ca=False)
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(_pem(ca))
    (tmp_path / "server.pem").write_bytes(_pem(server))
    (tmp_path / "server.key").write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    seen: list[str] = []

    async def refuse(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.json_response({"message": "Bad credentials"}, status=401)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", refuse)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        port = runner.addresses[0][1]
        yield f"https://127.0.0.1:{port}", bundle, seen
    finally:
        await runner.cleanup()


async def test_a_ca_bundle_makes_a_private_ca_trusted(tmp_path: Path) -> None:
    async with tls_github(tmp_path) as (url, bundle, seen):
        client = ScaleSetClient(
            config_url=f"{url}/acme",
            credentials=lambda: TokenCredentials(TOKEN),
            ca_bundle=bundle,
            retry=FAST,
        )
        async with client:
            with pytest.raises(AuthError) as caught:
                await client.check_credentials()
    # The TLS handshake worked: the server answered, and refused the token.
    assert caught.value.status == 401
    assert seen[0] == "/api/v3/orgs/acme/actions/runners/registration-token"


async def test_without_the_ca_bundle_the_certificate_is_refused_at_once(tmp_path: Path) -> None:
    async with tls_github(tmp_path) as (url, _bundle, seen):
        client = ScaleSetClient(
            config_url=f"{url}/acme", credentials=lambda: TokenCredentials(TOKEN), retry=FAST
        )
        async with client:
            with pytest.raises(TransportError) as caught:
                await client.check_credentials()
    assert seen == []
    assert str(caught.value).endswith(
        "giving up after 1 attempt; the server's TLS certificate is not trusted; give its CA "
        "with caBundle"
    )


class ForwardProxy:
    """A plain HTTP forward proxy on loopback that notes each request line it relays."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.proxy_authorization: list[str] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with httpx.AsyncClient(timeout=10) as upstream:
                while line := await reader.readline():
                    method, target, _version = line.decode().split()
                    headers: dict[str, str] = {}
                    while (header := await reader.readline()) not in (b"\r\n", b""):
                        name, value = header.decode().split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                    body = await reader.readexactly(int(headers.get("content-length", "0")))
                    self.requests.append(f"{method} {target}")
                    if "proxy-authorization" in headers:
                        self.proxy_authorization.append(headers["proxy-authorization"])
                    forward = {k: v for k, v in headers.items() if k not in _HOP_BY_HOP}
                    reply = await upstream.request(method, target, headers=forward, content=body)
                    head = f"HTTP/1.1 {reply.status_code} {reply.reason_phrase}\r\n"
                    head += f"Content-Type: {reply.headers.get('content-type', 'text/plain')}\r\n"
                    head += f"Content-Length: {len(reply.content)}\r\n\r\n"
                    writer.write(head.encode() + reply.content)
                    await writer.drain()
        finally:
            writer.close()


async def test_requests_go_through_the_configured_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_PROXY")  # the suite exempts every host from proxies
    proxy = ForwardProxy()
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with simulator() as sim:
            client = ScaleSetClient(
                config_url=sim.config_url("acme"),
                credentials=lambda: TokenCredentials(TOKEN),
                proxy=f"http://runscaler:proxy-secret-42@127.0.0.1:{port}",
                retry=FAST,
            )
            async with client:
                assert await client.get_scale_set(runner_group_id=1, name="linux") is None
    finally:
        server.close()
        await server.wait_closed()
    g1, g3, a2 = (r.split("?")[0] for r in proxy.requests)
    assert g1 == f"POST {sim.url}/api/v3/orgs/acme/actions/runners/registration-token"
    assert g3 == f"POST {sim.url}/api/v3/actions/runner-registration"
    assert a2.startswith(f"GET {sim.url}/")
    assert a2.endswith("/_apis/runtime/runnerscalesets")
    assert proxy.proxy_authorization and proxy.proxy_authorization[0].startswith("Basic ")
    assert secrets.redact("proxy-secret-42") == "***"
    secrets.discard("proxy-secret-42")


class Socks5Proxy:
    """A SOCKS5 proxy on loopback (no authentication, CONNECT only) that notes each target."""

    def __init__(self) -> None:
        self.targets: list[tuple[str, int]] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Socks5Proxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"socks5://127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            _version, methods = await reader.readexactly(2)
            await reader.readexactly(methods)
            writer.write(b"\x05\x00")  # no authentication
            _version, command, _reserved, kind = await reader.readexactly(4)
            if kind == 1:
                host = str(ipaddress.IPv4Address(await reader.readexactly(4)))
            else:
                host = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
            port = int.from_bytes(await reader.readexactly(2), "big")
            assert command == 1 and ipaddress.ip_address(host).is_loopback
            self.targets.append((host, port))
            up_reader, up_writer = await asyncio.open_connection(host, port)
            writer.write(b"\x05\x00\x00\x01" + bytes(4) + bytes(2))
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while chunk := await source.read(65536):
            sink.write(chunk)
            await sink.drain()
    finally:
        sink.close()


def _sim_address(url: str) -> tuple[str, int]:
    parts = httpx.URL(url)
    assert parts.host and parts.port
    return parts.host, parts.port


async def test_requests_go_through_a_socks5_proxy_from_the_manifest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NO_PROXY")
    async with Socks5Proxy() as proxy, simulator() as sim:
        client = ScaleSetClient(
            config_url=sim.config_url("acme"),
            credentials=lambda: TokenCredentials(TOKEN),
            proxy=proxy.url,
            retry=FAST,
        )
        async with client:
            assert await client.get_scale_set(runner_group_id=1, name="linux") is None
    assert proxy.targets and set(proxy.targets) == {_sim_address(sim.url)}


async def test_a_socks5_all_proxy_from_the_environment_is_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NO_PROXY")
    async with Socks5Proxy() as proxy, simulator() as sim:
        monkeypatch.setenv("ALL_PROXY", proxy.url)
        client = ScaleSetClient(
            config_url=sim.config_url("acme"),
            credentials=lambda: TokenCredentials(TOKEN),
            retry=FAST,
        )
        async with client:
            assert await client.get_scale_set(runner_group_id=1, name="linux") is None
    assert set(proxy.targets) == {_sim_address(sim.url)}


async def test_no_proxy_exempts_a_host_from_the_manifests_proxy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NO_PROXY", "example.invalid, 127.0.0.1")
    async with Socks5Proxy() as proxy, simulator() as sim:
        client = ScaleSetClient(
            config_url=sim.config_url("acme"),
            credentials=lambda: TokenCredentials(TOKEN),
            proxy=proxy.url,
            retry=FAST,
        )
        async with client:
            assert await client.get_scale_set(runner_group_id=1, name="linux") is None
    assert proxy.targets == []
