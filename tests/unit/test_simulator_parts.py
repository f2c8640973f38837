"""The simulator's small parts: fault specs, tokens and their lifetimes, the JIT config."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from runscaler.commands.simulator import parse_listen
from runscaler.errors import ConfigurationError
from runscaler.simulator.faults import Faults, parse_fault
from runscaler.simulator.jitconfig import decode_jit_config, encode_jit_config
from runscaler.simulator.tokens import Tokens, app_jwt_issuer, bearer

# -- faults --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"path": "x"}, "needs at least one of status, drop, bom, empty or delay"),
        ({"path": "(", "status": 500}, "path is not a valid regex"),
        ({"path": "x", "status": 42}, "status must be an HTTP status code"),
        ({"path": "x", "status": 500, "times": 0}, "times must be a positive count"),
        ({"path": "x", "status": 500, "times": 1.5}, "times must be an integer"),
        ({"path": "x", "delay": -1}, "delay must not be negative"),
        ({"path": "x", "status": 500, "retry": 1}, "unknown fault fields: retry"),
        (["x"], "a fault is a JSON object"),
    ],
)
def test_malformed_faults_are_refused_with_the_reason(spec: object, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_fault(spec, fault_id=1)


def test_faults_match_method_and_path_and_count_down() -> None:
    faults = Faults()
    once = faults.add({"method": "get", "path": r"/message$", "status": 503})
    always = faults.add({"path": "", "bom": True, "times": None})
    assert faults.take("POST", "/x/message") == [always]
    assert faults.take("GET", "/x/message") == [once, always]
    assert faults.take("GET", "/x/message") == [always]
    assert (once.times, once.hits, always.times, always.hits) == (0, 1, -1, 3)


# -- tokens --------------------------------------------------------------------------------------


def test_tokens_are_valid_for_their_kind_until_they_expire() -> None:
    tokens = Tokens()
    admin = tokens.admin("tenant-1", now=100.0, ttl=10)
    queue = tokens.queue("s1", 7, now=100.0, ttl=10)
    assert tokens.check(admin, "admin", now=109.9) is not None
    assert tokens.check(admin, "admin", now=110.0) is None
    assert tokens.check(admin, "queue", now=101.0) is None
    issued = tokens.check(queue, "queue", now=101.0)
    assert issued is not None and (issued.session_id, issued.scale_set_id) == ("s1", 7)
    assert tokens.expire(("admin", "queue"), now=102.0) == 2
    assert tokens.check(queue, "queue", now=102.0) is None


def test_the_admin_token_is_a_jwt_with_a_real_exp() -> None:
    now = time.time()
    token = Tokens().admin("tenant-1", now=now, ttl=600)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert now + 600 <= claims["exp"] < now + 602


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc", "abc"), ("token abc", "abc"), ("RemoteAuth abc", ""), (None, ""), ("", "")],
)
def test_bearer_reads_github_authorization_schemes(header: str | None, token: str) -> None:
    assert bearer(header) == token


def _app_key() -> tuple[rsa.RSAPrivateKey, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, public.decode()


def test_app_jwts_need_rs256_and_iss_and_the_right_key_when_one_is_given() -> None:
    key, public = _app_key()
    other, _ = _app_key()
    now = int(time.time())
    claims = {"iss": "12345", "iat": now - 60, "exp": now + 540}
    good = jwt.encode(claims, key, algorithm="RS256")
    assert app_jwt_issuer(good, None, now=now) == "12345"
    assert app_jwt_issuer(good, public, now=now) == "12345"
    assert app_jwt_issuer(jwt.encode(claims, other, algorithm="RS256"), None, now=now) == "12345"
    assert app_jwt_issuer(jwt.encode(claims, other, algorithm="RS256"), public, now=now) is None
    no_iss = jwt.encode({"iat": now, "exp": now + 60}, key, algorithm="RS256")
    assert app_jwt_issuer(no_iss, None, now=now) is None
    assert app_jwt_issuer(jwt.encode(claims, "x" * 32, algorithm="HS256"), None, now=now) is None
    assert app_jwt_issuer("not-a-jwt", None, now=now) is None


# -- the JIT config -------------------------------------------------------------------------------


def test_the_jit_config_is_base64_of_the_runners_files_in_base64() -> None:
    encoded = encode_jit_config(
        runner_id=6858,
        runner_name="linux-abc",
        pool_id=5,
        server_url="http://127.0.0.1:1/_services/pipelines/tenant-1/",
        broker_url="http://127.0.0.1:1/_broker/",
        client_id="c1",
        work_folder="_work",
    )
    files = json.loads(base64.b64decode(encoded, validate=True))
    assert set(files) == {".runner", ".credentials", ".credentials_rsaparams"}
    runner = json.loads(base64.b64decode(files[".runner"]))
    assert runner["AgentId"] == 6858 and runner["AgentName"] == "linux-abc"
    assert runner["PoolId"] == 5 and runner["WorkFolder"] == "_work"
    assert runner["Ephemeral"] is True and runner["DisableUpdate"] is True
    assert runner["ServerUrlV2"] == "http://127.0.0.1:1/_broker/"
    assert runner["ServerUrl"].endswith("/tenant-1/")
    rsa_params = json.loads(base64.b64decode(files[".credentials_rsaparams"]))
    assert set(rsa_params) == {"d", "dp", "dq", "exponent", "inverseQ", "modulus", "p", "q"}
    decoded = decode_jit_config(encoded)
    assert (decoded.runner_id, decoded.client_id) == (6858, "c1")
    with pytest.raises(ValueError, match="not a JIT config"):
        decode_jit_config("bm90IGpzb24=")


# -- the command's --listen -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "allow_remote", "expected"),
    [
        ("127.0.0.1:0", False, ("127.0.0.1", 0)),
        ("localhost:9000", False, ("127.0.0.1", 9000)),
        ("[::1]:9000", False, ("::1", 9000)),
        ("0.0.0.0:9000", True, ("0.0.0.0", 9000)),
    ],
)
def test_listen_addresses(text: str, allow_remote: bool, expected: tuple[str, int]) -> None:
    assert parse_listen(text, allow_remote=allow_remote) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "0.0.0.0:9000",
            "--listen 0.0.0.0:9000: 0.0.0.0 is not a loopback address and the simulator accepts "
            "any token: use 127.0.0.1, or add --allow-remote to serve there anyway",
        ),
        ("9000", "--listen 9000: give HOST:PORT, like 127.0.0.1:9000"),
        ("127.0.0.1:99999", "--listen 127.0.0.1:99999: give HOST:PORT, like 127.0.0.1:9000"),
        (
            "example.com:80",
            "--listen example.com:80: example.com is not an IP address: use 127.0.0.1 (or ::1)",
        ),
    ],
)
def test_bad_listen_addresses_are_refused_in_one_line(text: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        parse_listen(text, allow_remote=False)
    assert str(refused.value) == message


def test_the_habit_flags_make_the_realism() -> None:
    import argparse

    from runscaler.commands.simulator import configure, realism_from
    from runscaler.simulator.realism import IDEAL, Realism

    parser = argparse.ArgumentParser()
    configure(parser)
    assert realism_from(parser.parse_args([])) == Realism()
    assert realism_from(parser.parse_args(["--ideal"])) == IDEAL
    chosen = realism_from(
        parser.parse_args(
            [
                "--ideal",
                "--event-delay",
                "1-3",
                "--start-delay",
                "0.5",
                "--habit-scale",
                "0.1",
                "--ghes-without-custom-labels",
                "--seed",
                "7",
            ]
        )
    )
    assert (chosen.event_delay, chosen.start_delay, chosen.scale) == ((1.0, 3.0), (0.5, 0.5), 0.1)
    assert (chosen.custom_labels, chosen.seed, chosen.per_session_message_ids) == (False, 7, False)
    with pytest.raises(SystemExit):
        parser.parse_args(["--event-delay", "3-1"])
