"""A `tcp://` engine with TLS: the backend verifies the engine and presents its client cert.

The engine is a second dockerd (`tls_engine`) with `--tlsverify` on 127.0.0.1, certificates
made by openssl for the session; the busybox image is loaded into it from the main engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from runscaler.backends.base import (
    LABEL_FLEET,
    LABEL_RUNNER,
    BackendError,
    BackendUnavailable,
    RunnerSpec,
)
from runscaler.backends.docker import DockerBackend, DockerTLSPaths
from runscaler.manifest.models import DockerTemplate
from tests.integration.dockerkit import Dockerd, cleanup_fleet, make_tls_files, unique

pytestmark = pytest.mark.docker


@pytest.fixture
def tls_fleet(tls_engine: Dockerd) -> Iterator[str]:
    name = unique("t")
    try:
        yield name
    finally:
        cleanup_fleet(name, host=tls_engine.admin)


@pytest.fixture(scope="module")
def loaded_busybox(tls_engine: Dockerd, busybox_image: str) -> str:
    tls_engine.load(busybox_image)
    return busybox_image


def template(image: str) -> DockerTemplate:
    return DockerTemplate.model_validate(
        {"image": image, "pull": "never", "user": "0", "command": ["sleep", "300"]}
    )


async def test_a_runner_starts_and_goes_on_a_tls_engine(
    tls_engine: Dockerd, loaded_busybox: str, tls_fleet: str
) -> None:
    assert tls_engine.host.startswith("tcp://127.0.0.1:")
    backend = DockerBackend(fleet=tls_fleet, host=tls_engine.host, tls=tls_engine.tls)
    try:
        summary = await backend.check(template(loaded_busybox))
        await backend.start(
            RunnerSpec(
                name="linux-tls",
                jit_config="JIT-over-tls-0123456789",
                labels={LABEL_RUNNER: "linux-tls"},
                template=template(loaded_busybox),
            )
        )
        listed = json.loads(
            tls_engine.docker("inspect", f"runscaler-{tls_fleet}-linux-tls").stdout
        )[0]
        owned = await backend.list_owned({})
        await backend.remove("linux-tls")
        after = await backend.list_owned({})
    finally:
        await backend.close()

    assert summary.endswith(f"at {tls_engine.host}: image {loaded_busybox} present (pull: never)")
    assert listed["State"]["Running"] is True
    assert listed["Config"]["Labels"][LABEL_FLEET] == tls_fleet
    assert [r.name for r in owned] == ["linux-tls"]
    assert after == []


async def test_a_burst_of_calls_over_tls_keeps_only_a_few_connections_open(
    tls_engine: Dockerd, tls_fleet: str
) -> None:
    """Each TLS connection holds a 256 KiB buffer in asyncio: after a burst, few stay idle.

    Closing the backend closes their sockets at once, not after a TLS goodbye that a loop
    ending right after would never see answered.
    """
    port = int(tls_engine.host.rsplit(":", 1)[1])
    backend = DockerBackend(fleet=tls_fleet, host=tls_engine.host, tls=tls_engine.tls)
    try:
        versions = await asyncio.gather(*(backend.api().query_json("version") for _ in range(12)))
        idle = our_connections_to(port)
    finally:
        await backend.close()
    assert {v["ApiVersion"] for v in versions} and len(versions) == 12
    assert 1 <= idle <= 4
    assert our_connections_to(port) == 0


def our_connections_to(port: int) -> int:
    """This process's open TCP sockets to `port`, as /proc shows them."""
    inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[9] in inodes:
                count += 1
    return count


async def test_an_engine_signed_by_another_ca_is_refused(
    tls_engine: Dockerd, loaded_busybox: str, tmp_path: Path
) -> None:
    stranger = make_tls_files(tmp_path)
    assert tls_engine.tls is not None
    tls = DockerTLSPaths(ca=stranger.ca, cert=tls_engine.tls.cert, key=tls_engine.tls.key)
    backend = DockerBackend(fleet=unique("t"), host=tls_engine.host, tls=tls)
    try:
        with pytest.raises(BackendUnavailable) as caught:
            await backend.check(template(loaded_busybox))
    finally:
        await backend.close()

    assert str(caught.value) == (
        f"cannot reach Docker at {tls_engine.host}: TLS failed (certificate verify failed): "
        "check docker.tls (ca, cert, key) and the engine's certificate"
    )


async def test_a_client_without_a_certificate_is_refused(
    tls_engine: Dockerd, loaded_busybox: str
) -> None:
    assert tls_engine.tls is not None
    backend = DockerBackend(
        fleet=unique("t"), host=tls_engine.host, tls=DockerTLSPaths(ca=tls_engine.tls.ca)
    )
    try:
        with pytest.raises(BackendUnavailable) as caught:
            await backend.list_owned({})
    finally:
        await backend.close()

    assert str(caught.value).startswith(f"cannot reach Docker at {tls_engine.host}: ")


async def test_unreadable_certificates_are_a_configuration_problem(
    tls_engine: Dockerd, tmp_path: Path
) -> None:
    tls = DockerTLSPaths(ca=tmp_path / "missing-ca.pem")
    backend = DockerBackend(fleet=unique("t"), host=tls_engine.host, tls=tls)
    try:
        with pytest.raises(BackendError) as caught:
            await backend.list_owned({})
    finally:
        await backend.close()

    assert not isinstance(caught.value, BackendUnavailable)
    assert str(caught.value).startswith(
        f"docker.tls for {tls_engine.host}: cannot load the certificates ("
    )
    assert str(caught.value).endswith("): check the ca, cert and key paths")


async def test_the_docker_cli_environment_names_a_tls_engine(
    tls_engine: Dockerd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert tls_engine.tls is not None
    for source, target in (
        (tls_engine.tls.ca, "ca.pem"),
        (tls_engine.tls.cert, "cert.pem"),
        (tls_engine.tls.key, "key.pem"),
    ):
        assert source is not None
        shutil.copy(source, tmp_path / target)
    monkeypatch.setenv("DOCKER_HOST", tls_engine.host)
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    monkeypatch.setenv("DOCKER_CERT_PATH", str(tmp_path))

    backend = DockerBackend(fleet=unique("t"))
    try:
        assert await backend.list_owned({}) == []
    finally:
        await backend.close()
    assert backend.host == tls_engine.host
