"""The operator's HTTP endpoints, served for real on loopback with a fake operator behind them."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client import CollectorRegistry

from runscaler.engine.status import ReloadStatus
from runscaler.errors import ConfigurationError
from runscaler.fingerprints import fingerprint
from runscaler.logs import secrets
from runscaler.metrics import Metrics
from runscaler.server import serve_http
from tests.fakeoperator import (
    ENV_SECRET,
    PRIVATE_KEY,
    TOKEN,
    FakeOperator,
    Outcome,
    failure,
    fleet_status,
    scale_set_status,
)


@pytest.fixture
def view() -> FakeOperator:
    return FakeOperator()


@pytest.fixture
async def client(view: FakeOperator) -> AsyncIterator[httpx.AsyncClient]:
    metrics = Metrics(view.snapshot)
    async with (
        serve_http(view, listen="127.0.0.1:0", registry=metrics.registry) as url,
        httpx.AsyncClient(base_url=url, trust_env=False) as client,
    ):
        yield client


async def test_healthz_answers_ok(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize(("ready", "code"), [(True, 200), (False, 503)])
async def test_readyz_is_200_only_once_ready(
    client: httpx.AsyncClient, view: FakeOperator, ready: bool, code: int
) -> None:
    view.ready = ready

    response = await client.get("/readyz")

    assert response.status_code == code


async def test_readyz_is_503_naming_each_scale_set_without_a_session_and_why(
    client: httpx.AsyncClient, view: FakeOperator
) -> None:
    view.not_serving = {"linux": "standby: another operator holds the session"}

    response = await client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {
        "status": "degraded",
        "notServing": {"linux": "standby: another operator holds the session"},
    }


async def test_status_is_the_fleet_status_json_with_the_keys_cli_md_lists(
    client: httpx.AsyncClient, view: FakeOperator
) -> None:
    view.status = fleet_status(
        scale_set_status("linux", last_error="GitHub said 401", last_failure=failure()),
        reload=ReloadStatus(ok=False, at=5.0, error="fleet.yaml:3:5: bad"),
    )

    response = await client.get("/status")

    assert response.status_code == 200
    body = response.json()
    assert body == view.status.to_json()
    assert {"fleet", "generation", "manifest", "reload", "scaleSets"} <= body.keys()
    assert body["manifest"].keys() == {"path", "sha256", "revision"}
    assert body["reload"] == {"ok": False, "at": 5.0, "error": "fleet.yaml:3:5: bad"}
    row = body["scaleSets"][0]
    assert {
        "name", "url", "state", "desired", "idle", "busy", "starting",
        "assignedJobs", "runningJobs", "lastError",
    } <= row.keys()  # fmt: skip
    assert row["lastError"] == "GitHub said 401"


async def test_metrics_is_prometheus_text_with_the_live_gauges(
    client: httpx.AsyncClient, view: FakeOperator
) -> None:
    view.status = fleet_status(scale_set_status("linux", desired=7))

    response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    line = 'gha_desired_runners{enterprise="",name="linux",organization="acme",repository=""} 7.0'
    assert line in response.text.splitlines()


@pytest.mark.parametrize(
    ("outcome", "code", "body"),
    [
        (Outcome("applied", 4), 200, {"result": "applied", "generation": 4}),
        (Outcome("unchanged", 3), 200, {"result": "unchanged", "generation": 3}),
        (
            Outcome("rejected", 3, "fleet.yaml:12:5: scaleSets[0].maxRunners: must be >= 1"),
            422,
            {
                "result": "rejected",
                "error": "fleet.yaml:12:5: scaleSets[0].maxRunners: must be >= 1",
            },
        ),
    ],
)
async def test_post_reload_forces_a_reload_and_reports_its_outcome(
    client: httpx.AsyncClient,
    view: FakeOperator,
    outcome: Outcome,
    code: int,
    body: dict[str, object],
) -> None:
    view.outcome = outcome

    response = await client.post("/-/reload")

    assert response.status_code == code
    assert response.json() == body
    assert view.reloads == [True]


async def test_get_on_reload_is_405_and_does_not_reload(
    client: httpx.AsyncClient, view: FakeOperator
) -> None:
    response = await client.get("/-/reload")

    assert response.status_code == 405
    assert response.json() == {"error": "GET is not allowed on /-/reload"}
    assert view.reloads == []


async def test_unknown_paths_are_404_json(client: httpx.AsyncClient) -> None:
    response = await client.get("/nope")

    assert response.status_code == 404
    assert response.json() == {"error": "no such endpoint: /nope"}


async def test_fleet_replaces_every_literal_secret_by_its_fingerprint(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/-/fleet")

    assert response.status_code == 200
    linux, app = response.json()["scaleSets"]
    assert linux["github"]["auth"]["token"] == fingerprint(TOKEN)
    assert linux["docker"]["env"] == {"API_KEY": fingerprint(ENV_SECRET), "FROM_ENV": "env:API_KEY"}
    assert app["github"]["auth"]["app"]["privateKey"] == fingerprint(PRIVATE_KEY)
    assert app["github"]["auth"]["app"]["clientId"] == "Iv1.abc"
    proxy = app["github"]["proxy"]
    assert proxy.startswith("http://sensitive:") and proxy.endswith("@127.0.0.1:3128")
    for secret in (TOKEN, ENV_SECRET, "MIIEliteralKeyBody0123456789", "proxy-password-1"):
        assert secret not in response.text


async def test_fleet_is_503_before_a_manifest_is_applied(
    client: httpx.AsyncClient, view: FakeOperator
) -> None:
    view.fleet = None

    response = await client.get("/-/fleet")

    assert response.status_code == 503
    assert response.json() == {"error": "no manifest is applied yet"}


async def test_no_response_carries_a_registered_secret(
    client: httpx.AsyncClient, view: FakeOperator
) -> None:
    leaked = "ghs_registeredSecretValue42"
    secrets.add(leaked)
    try:
        view.status = fleet_status(scale_set_status(last_error=f"auth failed with {leaked}"))
        view.outcome = Outcome("rejected", 3, f"fleet.yaml:1:1: bad token {leaked}")
        answers = [
            await client.get("/status"),
            await client.get("/metrics"),
            await client.post("/-/reload"),
            await client.get("/-/fleet"),
        ]
    finally:
        secrets.discard(leaked)

    for answer in answers:
        assert leaked not in answer.text
    assert "auth failed with ***" in answers[0].text


@pytest.mark.parametrize(("path", "method"), [("/-/reload", "POST"), ("/-/fleet", "GET")])
@pytest.mark.parametrize(
    "headers",
    [
        {"X-Forwarded-For": "203.0.113.7"},
        {"Forwarded": "for=203.0.113.7"},
        {"Host": "attacker.example:8080"},
    ],
    ids=["x-forwarded-for", "forwarded", "foreign-host"],
)
async def test_local_only_endpoints_refuse_proxied_or_rebound_requests(
    client: httpx.AsyncClient,
    view: FakeOperator,
    path: str,
    method: str,
    headers: dict[str, str],
) -> None:
    response = await client.request(method, path, headers=headers)

    assert response.status_code == 403
    assert response.json() == {"error": f"{path} answers only loopback clients on this host"}
    assert view.reloads == []
    assert TOKEN not in response.text and "sensitive:" not in response.text


async def test_reading_endpoints_answer_a_foreign_host_name(client: httpx.AsyncClient) -> None:
    response = await client.get("/status", headers={"Host": "ops.example:8080"})

    assert response.status_code == 200


async def test_a_busy_port_is_a_one_line_configuration_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(ConfigurationError) as caught:
            async with serve_http(
                FakeOperator(), listen=f"127.0.0.1:{port}", registry=CollectorRegistry()
            ):
                pass

    assert str(caught.value) == (
        f"cannot listen on 127.0.0.1:{port}: address in use; pass --listen HOST:PORT"
    )


async def test_port_0_picks_a_free_port_and_yields_the_bound_url() -> None:
    async with serve_http(
        FakeOperator(), listen="127.0.0.1:0", registry=CollectorRegistry()
    ) as url:
        assert url.startswith("http://127.0.0.1:")
        port = int(url.rsplit(":", 1)[1])
        assert port > 0
        async with httpx.AsyncClient(trust_env=False) as client:
            assert (await client.get(f"{url}/healthz")).status_code == 200

    # Stopped: the port no longer answers.
    async with httpx.AsyncClient(trust_env=False) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"{url}/healthz")


async def test_ipv6_loopback_is_served_with_a_bracketed_url() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    try:
        served = serve_http(FakeOperator(), listen="[::1]:0", registry=CollectorRegistry())
        url = await served.__aenter__()
    except ConfigurationError as exc:
        pytest.skip(f"::1 is not available here: {exc}")
    try:
        assert url.startswith("http://[::1]:")
        async with httpx.AsyncClient(trust_env=False) as client:
            response = await client.post(f"{url}/-/reload")
        assert response.status_code == 200
    finally:
        await served.__aexit__(None, None, None)


async def test_stopping_does_not_wait_for_an_idle_keep_alive_connection() -> None:
    async with httpx.AsyncClient(trust_env=False) as client:
        served = serve_http(FakeOperator(), listen="127.0.0.1:0", registry=CollectorRegistry())
        url = await served.__aenter__()
        assert (await client.get(f"{url}/healthz")).status_code == 200  # connection kept open
        started = time.monotonic()

        await served.__aexit__(None, None, None)

        assert time.monotonic() - started < 1.0
