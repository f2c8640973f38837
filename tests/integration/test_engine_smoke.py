"""The machine's Docker engine does what every other Docker test relies on.

A `FROM scratch` image with static busybox builds locally (no registry, no internet), and a
container on the host network reaches a server the test runs on 127.0.0.1: that is how runner
containers reach the simulator.
"""

from __future__ import annotations

import secrets
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.integration.dockerkit import BUSYBOX, BUSYBOX_DOCKERFILE, build_image, docker, unique

pytestmark = pytest.mark.docker


class _Recorder(ThreadingHTTPServer):
    def __init__(self, body: bytes) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.body = body
        self.paths: list[str] = []


class _Handler(BaseHTTPRequestHandler):
    server: _Recorder

    def do_GET(self) -> None:
        self.server.paths.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.server.body)))
        self.end_headers()
        self.wfile.write(self.server.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[_Recorder]:
    server = _Recorder(f"hello from the test {secrets.token_hex(8)}\n".encode())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_a_scratch_busybox_container_fetches_from_a_loopback_server(
    docker_engine: str, http_server: _Recorder, tmp_path: Path
) -> None:
    shutil.copy(BUSYBOX, tmp_path / "busybox")
    image = f"runscaler-test/smoke:{secrets.token_hex(4)}"
    container = unique("runscaler-smoke")
    port = http_server.server_address[1]
    build_image(image, dockerfile=BUSYBOX_DOCKERFILE, context=tmp_path)
    try:
        run = docker(
            "run", "--name", container, "--network", "host", image,
            "wget", "-q", "-O", "-", f"http://127.0.0.1:{port}/smoke",
        )  # fmt: skip
        assert run.stdout == http_server.body.decode()
        assert http_server.paths == ["/smoke"]
    finally:
        docker("rm", "-f", container, check=False)
        docker("rmi", "-f", image, check=False)
    assert docker("ps", "-aq", "--filter", f"name={container}").stdout == ""
    assert docker("image", "inspect", image, check=False).returncode != 0
