"""The `encodedJITConfig` a runner starts from, shaped like the real one.

Standard base64 of a JSON object mapping the runner's hidden files (`.runner`, `.credentials`,
`.credentials_rsaparams`) to their base64 contents, as actions/runner decodes it. `.runner`
points back at the simulator (`ServerUrlV2` is where the stand-in runner asks for its job);
`.credentials` carries the runner's `clientId`, which the stand-in runner presents as its
credential. The RSA parameters are random bytes of the right sizes: nothing signs with them.
"""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass
from typing import Any

_RSA_SIZES = {
    "d": 256,
    "dp": 128,
    "dq": 128,
    "exponent": 3,
    "inverseQ": 128,
    "modulus": 256,
    "p": 128,
    "q": 128,
}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _file(content: dict[str, Any]) -> str:
    return _b64(json.dumps(content, separators=(",", ":")).encode())


def encode_jit_config(
    *,
    runner_id: int,
    runner_name: str,
    pool_id: int,
    server_url: str,
    broker_url: str,
    client_id: str,
    work_folder: str,
) -> str:
    runner = {
        "AgentId": runner_id,
        "AgentName": runner_name,
        "PoolId": pool_id,
        "PoolName": None,
        "DisableUpdate": True,
        "Ephemeral": True,
        "ServerUrl": server_url,
        "GitHubUrl": None,
        "WorkFolder": work_folder,
        "UseV2Flow": True,
        "ServerUrlV2": broker_url,
    }
    credentials = {
        "Scheme": "OAuth",
        "Data": {
            "clientId": client_id,
            "authorizationUrl": f"{server_url}_apis/oauth2/token",
            "requireFipsCryptography": "False",
        },
    }
    rsa = {name: _b64(secrets.token_bytes(size)) for name, size in _RSA_SIZES.items()}
    rsa["exponent"] = _b64(b"\x01\x00\x01")
    files = {
        ".runner": _file(runner),
        ".credentials": _file(credentials),
        ".credentials_rsaparams": _file(rsa),
    }
    return _b64(json.dumps(files, separators=(",", ":")).encode())


@dataclass(frozen=True)
class DecodedJitConfig:
    runner_id: int
    runner_name: str
    broker_url: str
    client_id: str
    files: dict[str, dict[str, Any]]


def decode_jit_config(encoded: str) -> DecodedJitConfig:
    """Read a JIT config back (ValueError when it is not one): for tests and the Python runner."""
    try:
        outer = json.loads(base64.b64decode(encoded, validate=True))
        files = {name: json.loads(base64.b64decode(value)) for name, value in outer.items()}
        runner = files[".runner"]
        data = files[".credentials"]["Data"]
        return DecodedJitConfig(
            runner_id=int(runner["AgentId"]),
            runner_name=str(runner["AgentName"]),
            broker_url=str(runner["ServerUrlV2"]),
            client_id=str(data["clientId"]),
            files=files,
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a JIT config: {exc}") from None
