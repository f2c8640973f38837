"""The simulator's GitHub surface over real loopback HTTP: bootstrap, scale sets, sessions,
runners, as protocol.md spells them (status codes, field names, exceptions)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from runscaler.simulator.server import Simulator, serve_simulator
from tests.integration.simkit import Service, connect, exception_type, sim_options
from tests.waiting import eventually

SETS = "_apis/runtime/runnerscalesets"
AGENTS = "_apis/distributedtask/pools/0/agents"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with serve_simulator(sim_options(poll_wait=0.2)) as simulator:
        yield simulator


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


@pytest.fixture
async def service(http: httpx.AsyncClient, sim: Simulator) -> Service:
    return await connect(http, sim)


# -- the bootstrap (G1-G3) ------------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["acme", "acme/web", "enterprises/big"])
async def test_registration_token_then_runner_registration_give_a_tenant_and_admin_jwt(
    http: httpx.AsyncClient, scope: str
) -> None:
    options = sim_options(admin_token_ttl=600, registration_token_ttl=120)
    async with serve_simulator(options) as sim:
        path = {"acme": "orgs/acme", "acme/web": "repos/acme/web"}.get(scope, scope)
        before = time.time()
        registration = await http.post(
            f"{sim.url}/api/v3/{path}/actions/runners/registration-token",
            headers={"Authorization": "Bearer ghp_anything"},
        )
        assert registration.status_code == 201
        assert set(registration.json()) == {"token", "expires_at"}
        admin = await http.post(
            f"{sim.url}/api/v3/actions/runner-registration",
            headers={"Authorization": f"RemoteAuth {registration.json()['token']}"},
            content=f'{{"url":"{sim.url}/{scope}","runner_event":"register"}}\n',
        )
        assert admin.status_code == 200
        body = admin.json()
        assert body["url"].startswith(f"{sim.url}/_services/pipelines/")
        assert body["url"].endswith("/")
        exp = jwt.decode(body["token"], options={"verify_signature": False})["exp"]
        assert before + 600 <= exp <= time.time() + 601
        assert [s["scope"] for s in sim.state.snapshot()["scaleSets"]] == []
        assert sim.state.tenants == {body["url"].split("/")[-2]: scope}


async def test_runner_registration_refuses_a_bad_token_or_another_scope(
    http: httpx.AsyncClient, sim: Simulator
) -> None:
    url = f"{sim.url}/api/v3/actions/runner-registration"
    body = {"url": sim.config_url("acme"), "runner_event": "register"}
    bad = await http.post(url, headers={"Authorization": "RemoteAuth nope"}, json=body)
    assert bad.status_code == 401
    registration = await http.post(
        f"{sim.url}/api/v3/orgs/globex/actions/runners/registration-token",
        headers={"Authorization": "Bearer t"},
    )
    elsewhere = await http.post(
        url, headers={"Authorization": f"RemoteAuth {registration.json()['token']}"}, json=body
    )
    assert elsewhere.status_code == 403
    assert elsewhere.json()["message"] == "the registration token is for globex, not acme"


async def test_with_a_token_set_only_that_token_is_accepted(http: httpx.AsyncClient) -> None:
    async with serve_simulator(sim_options(token="ghp_right")) as sim:
        url = f"{sim.url}/api/v3/orgs/acme/actions/runners/registration-token"
        wrong = await http.post(url, headers={"Authorization": "Bearer ghp_wrong"})
        assert (wrong.status_code, wrong.json()["message"]) == (401, "Bad credentials")
        missing = await http.post(url)
        assert (missing.status_code, missing.json()["message"]) == (401, "Requires authentication")
        right = await http.post(url, headers={"Authorization": "token ghp_right"})
        assert right.status_code == 201


def _rsa_key() -> tuple[rsa.RSAPrivateKey, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, public.decode()


async def test_an_app_jwt_buys_an_installation_token_that_registers_runners(
    http: httpx.AsyncClient,
) -> None:
    key, public = _rsa_key()
    stranger, _ = _rsa_key()
    options = sim_options(token="ghp_only", app_public_key=public)
    async with serve_simulator(options) as sim:
        now = int(time.time())
        claims = {"iss": "Iv1.client", "iat": now - 60, "exp": now + 540}
        url = f"{sim.url}/api/v3/app/installations/42/access_tokens"
        forged = jwt.encode(claims, stranger, algorithm="RS256")
        refused = await http.post(url, headers={"Authorization": f"Bearer {forged}"})
        assert refused.status_code == 401
        app_jwt = jwt.encode(claims, key, algorithm="RS256")
        issued = await http.post(url, headers={"Authorization": f"Bearer {app_jwt}"})
        assert issued.status_code == 201
        installation = issued.json()["token"]
        assert installation.startswith("ghs_") and issued.json()["expires_at"].endswith("Z")
        registration = await http.post(
            f"{sim.url}/api/v3/orgs/acme/actions/runners/registration-token",
            headers={"Authorization": f"Bearer {installation}"},
        )
        assert registration.status_code == 201


# -- the Actions service: api-version and the admin token ----------------------------------------


async def test_the_actions_service_requires_api_version(
    http: httpx.AsyncClient, service: Service
) -> None:
    response = await http.get(
        f"{service.url}{SETS}", headers={"Authorization": f"Bearer {service.admin}"}
    )
    assert response.status_code == 400
    assert "VssVersionNotSpecifiedException" in exception_type(response)


async def test_a_wrong_or_expired_admin_token_answers_401(http: httpx.AsyncClient) -> None:
    async with serve_simulator(sim_options(admin_token_ttl=0.5)) as sim:
        service = await connect(http, sim)
        assert (await service.request("GET", SETS)).status_code == 200
        wrong = await service.request("GET", SETS, token="not-the-token")
        assert wrong.status_code == 401

        async def expired() -> bool:
            return (await service.request("GET", SETS)).status_code == 401

        await eventually(expired, timeout=5, message="the admin token to expire")
        fresh = await connect(http, sim)
        assert (await fresh.request("GET", SETS)).status_code == 200


async def test_expire_tokens_expires_admin_tokens_now(
    http: httpx.AsyncClient, sim: Simulator, service: Service
) -> None:
    expired = await http.post(f"{sim.url}/_sim/expire-tokens")
    assert expired.json() == {"expired": 1}
    assert (await service.request("GET", SETS)).status_code == 401


async def test_unknown_routes_answer_404(
    http: httpx.AsyncClient, sim: Simulator, service: Service
) -> None:
    for url in (
        f"{sim.url}/api/v3/orgs/acme/nothing",
        f"{service.url}_apis/runtime/nothing",
        f"{sim.url}/_services/pipelines/no-such-tenant/{SETS}?api-version=6.0-preview",
    ):
        response = await http.get(url, headers={"Authorization": f"Bearer {service.admin}"})
        assert response.status_code == 404, url


# -- runner groups and scale sets (A1-A6) ---------------------------------------------------------


async def test_runner_groups_are_found_by_name(
    http: httpx.AsyncClient, sim: Simulator, service: Service
) -> None:
    default = await service.request(
        "GET", "_apis/runtime/runnergroups/", params={"groupName": "default"}
    )
    assert default.status_code == 200
    assert default.json()["count"] == 1
    assert default.json()["value"][0]["id"] == 1
    assert default.json()["value"][0]["isDefaultGroup"] is True
    missing = await service.request(
        "GET", "_apis/runtime/runnergroups/", params={"groupName": "gpu"}
    )
    assert missing.json() == {"count": 0, "value": []}
    made = await http.post(f"{sim.url}/_sim/runner-groups", json={"name": "gpu"})
    found = await service.request("GET", "_apis/runtime/runnergroups/", params={"groupName": "gpu"})
    assert found.json()["value"][0]["id"] == made.json()["id"] == 2


async def test_scale_set_create_get_list_patch_delete(service: Service) -> None:
    created = await service.request(
        "POST",
        SETS,
        json={
            "name": "linux",
            "runnerGroupId": 1,
            "labels": [{"type": "System", "name": "linux"}, {"name": "x64"}],
            "RunnerSetting": {"disableUpdate": True},
            "createdOn": "0001-01-01T00:00:00Z",
        },
    )
    assert created.status_code == 200
    scale_set = created.json()
    assert scale_set["RunnerSetting"] == {"disableUpdate": True}
    assert "runnerSetting" not in scale_set
    assert scale_set["labels"] == [
        {"type": "System", "name": "linux"},
        {"type": "System", "name": "x64"},
    ]
    assert (scale_set["runnerGroupId"], scale_set["runnerGroupName"]) == (1, "default")
    assert scale_set["statistics"]["totalAssignedJobs"] == 0
    sid = scale_set["id"]

    listed = await service.request("GET", SETS, params={"runnerGroupId": "1", "name": "linux"})
    assert listed.status_code == 200
    assert listed.json()["count"] == 1 and listed.json()["value"][0]["id"] == sid
    none = await service.request("GET", SETS, params={"runnerGroupId": "1", "name": "mac"})
    assert none.json() == {"count": 0, "value": []}
    assert (await service.request("GET", f"{SETS}/{sid}")).json()["name"] == "linux"

    patched = await service.request(
        "PATCH",
        f"{SETS}/{sid}",
        json={"name": "", "runnerGroupId": 0, "labels": [{"name": "gpu"}], "RunnerSetting": {}},
    )
    assert patched.status_code == 200
    assert patched.json()["name"] == "linux"  # empty fields are ignored
    # Answered 200 and discarded, as the live service does with labels (ARC #4424).
    assert [label["name"] for label in patched.json()["labels"]] == ["linux", "x64"]
    assert patched.json()["RunnerSetting"] == {"disableUpdate": True}

    deleted = await service.request("DELETE", f"{SETS}/{sid}")
    assert deleted.status_code == 204 and deleted.content == b""
    gone = await service.request("GET", f"{SETS}/{sid}")
    assert gone.status_code == 404
    assert gone.json() == {
        "typeName": "GitHub.Actions.Runtime.WebApi.RunnerScaleSetNotFoundException, "
        "GitHub.Actions.Runtime.WebApi",
        "message": f"No runner scale set found with identifier {sid}.",
    }


async def test_a_scale_set_without_labels_is_labelled_with_its_name(service: Service) -> None:
    created = await service.request("POST", SETS, json={"name": "bare", "runnerGroupId": 1})
    assert created.json()["labels"] == [{"type": "System", "name": "bare"}]


# -- sessions (A7-A9) ------------------------------------------------------------------------------


async def test_one_active_session_per_scale_set(service: Service) -> None:
    sid = (await service.create_scale_set("dev"))["id"]
    session = await service.open_session(sid, owner="host-a")
    assert set(session.body) == {
        "sessionId",
        "ownerName",
        "runnerScaleSet",
        "messageQueueUrl",
        "messageQueueAccessToken",
        "statistics",
    }
    assert session.body["ownerName"] == "host-a"
    assert session.body["statistics"]["totalAssignedJobs"] == 0
    second = await service.request("POST", f"{SETS}/{sid}/sessions", json={"ownerName": "host-b"})
    assert second.status_code == 409
    assert second.json() == {
        "typeName": "GitHub.Actions.Runtime.WebApi.RunnerScaleSetSessionConflictException, "
        "GitHub.Actions.Runtime.WebApi",
        "message": "The actions runner scaleset dev already has an active session.",
    }


async def test_refresh_gives_a_fresh_queue_token_and_delete_ends_the_session(
    service: Service,
) -> None:
    sid = (await service.create_scale_set("dev"))["id"]
    session = await service.open_session(sid)
    old_token = session.token
    refreshed = await session.refresh()
    assert refreshed.status_code == 200
    assert session.token != old_token and session.id == refreshed.json()["sessionId"]
    path = f"{SETS}/{sid}/sessions/{session.id}"
    assert (await service.request("DELETE", path)).status_code == 204
    again = await service.request("DELETE", path)
    assert again.status_code == 400
    assert "RunnerScaleSetSessionExpiredException" in exception_type(again)
    assert again.json()["message"] == f"The session identifier {session.id} is not valid."
    unknown = await service.request("PATCH", path)
    assert unknown.status_code == 404 and "RunnerAdminException" in exception_type(unknown)
    assert (await service.open_session(sid)).id != session.id


# -- runners (A10, A12-A14) -----------------------------------------------------------------------


async def test_runner_registration_lookup_and_removal(service: Service) -> None:
    sid = (await service.create_scale_set("linux"))["id"]
    jit = await service.jit_config(sid, "linux-1")
    assert set(jit) == {"runner", "encodedJITConfig"}
    runner = jit["runner"]
    assert (runner["name"], runner["runnerScaleSetId"]) == ("linux-1", sid)
    duplicate = await service.request(
        "POST", f"{SETS}/{sid}/generatejitconfig", json={"name": "linux-1", "workFolder": ""}
    )
    assert duplicate.status_code == 409
    assert "AgentExistsException" in exception_type(duplicate)

    got = await service.request("GET", f"{AGENTS}/{runner['id']}")
    assert got.status_code == 200 and got.json()["name"] == "linux-1"
    by_name = await service.request("GET", AGENTS, params={"agentName": "linux-1"})
    assert by_name.json()["count"] == 1 and by_name.json()["value"][0]["id"] == runner["id"]
    nobody = await service.request("GET", AGENTS, params={"agentName": "linux-9"})
    assert nobody.json() == {"count": 0, "value": []}

    assert (await service.request("DELETE", f"{AGENTS}/{runner['id']}")).status_code == 204
    assert (await service.request("DELETE", f"{AGENTS}/{runner['id']}")).status_code == 204
    missing = await service.request("GET", f"{AGENTS}/{runner['id']}")
    assert missing.status_code == 404 and "AgentNotFoundException" in exception_type(missing)
