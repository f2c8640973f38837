"""App JWTs, admin-token expiry parsing, and credentials that keep their secrets out of repr."""

from __future__ import annotations

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from runscaler.github.auth import (
    AppCredentials,
    TokenCredentials,
    create_app_jwt,
    jwt_expiry,
)
from runscaler.github.errors import AuthError
from runscaler.github.tokens import AdminConnection
from runscaler.logs import secrets


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def test_the_app_jwt_is_rs256_backdated_a_minute_and_lives_nine(rsa_key: rsa.RSAPrivateKey) -> None:
    credentials = AppCredentials(client_id="Iv1.abc", installation_id=7, private_key=_pem(rsa_key))
    token = create_app_jwt(credentials, now=1_700_000_000)
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    claims = jwt.decode(
        token,
        rsa_key.public_key(),
        algorithms=["RS256"],
        options={"verify_exp": False, "verify_iat": False},
    )
    assert claims == {"iss": "Iv1.abc", "iat": 1_700_000_000 - 60, "exp": 1_700_000_000 + 480}


def test_a_bad_private_key_is_an_auth_error_that_does_not_quote_the_key() -> None:
    key = (
        "-----BEGIN RSA PRIVATE KEY-----\nnot-a-key-at-all-but-long\n-----END RSA PRIVATE KEY-----"
    )
    with pytest.raises(AuthError) as caught:
        create_app_jwt(AppCredentials(client_id="123", installation_id=1, private_key=key))
    assert str(caught.value) == (
        "cannot sign a JWT for GitHub App 123: the private key is not a valid PEM RSA key; "
        "check the app's privateKey secret"
    )


def test_the_app_jwt_is_registered_for_redaction(rsa_key: rsa.RSAPrivateKey) -> None:
    token = create_app_jwt(AppCredentials("1", 1, _pem(rsa_key)))
    assert secrets.redact(f"Bearer {token}") == "Bearer ***"
    secrets.discard(token)


def test_expiry_is_read_without_verifying_the_signature() -> None:
    token = jwt.encode(
        {"exp": 1_800_000_000, "sub": "x"}, "some-other-servers-key-" + "x" * 32, "HS256"
    )
    assert jwt_expiry(token) == 1_800_000_000.0


@pytest.mark.parametrize("token", ["", "not.a.jwt", "abc"])
def test_an_unreadable_token_has_no_expiry(token: str) -> None:
    assert jwt_expiry(token) is None


def test_a_token_without_exp_has_no_expiry() -> None:
    assert jwt_expiry(jwt.encode({"sub": "x"}, "k" * 32, "HS256")) is None


def test_admin_tokens_refresh_a_minute_before_expiry() -> None:
    connection = AdminConnection(url="u", token="t", expires_at=1000.0)
    assert connection.fresh(939.0)
    assert not connection.fresh(940.0)
    assert connection.usable(999.0)
    assert not connection.usable(1000.0)
    unknown = AdminConnection(url="u", token="t", expires_at=None)
    assert not unknown.fresh(0.0)


def test_reprs_hide_secrets(rsa_key: rsa.RSAPrivateKey) -> None:
    pem = _pem(rsa_key)
    assert "ghp_secret" not in repr(TokenCredentials("ghp_secret"))
    assert "PRIVATE KEY" not in repr(AppCredentials("1", 2, pem))
    assert "s3cr3t" not in repr(AdminConnection(url="u", token="s3cr3t", expires_at=None))
