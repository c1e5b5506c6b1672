"""JWTs of an external identity provider: verified against its JWKS, claims to a caller."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import ValidationError

from services.reporter.auth import TokenStore
from services.reporter.idp import JwtVerifier
from services.reporter.settings import ReporterSettings

ISSUER, AUDIENCE = "https://idp.example", "tally"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def jwks_url() -> Iterator[str]:
    """A JWKS with KEY's public half (kid ``k1``) served on a loopback port."""
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    server.shutdown()
    server.server_close()


def token(key: Any = KEY, kid: str = "k1", **claims: Any) -> str:
    now = int(time.time())
    body = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "exp": now + 300,
        "tally_workspace": "acme",
        "scope": "runs:read export openid",
        **claims,
    }
    return jwt.encode(
        {k: v for k, v in body.items() if v is not None},
        key,
        algorithm="RS256",
        headers={"kid": kid},
    )


async def test_a_valid_jwt_is_a_caller_of_its_workspace_with_known_scopes(jwks_url: str) -> None:
    verifier = JwtVerifier(ISSUER, AUDIENCE, jwks_url)
    who = await verifier.principal(token())
    assert who is not None
    assert (who.workspace, who.name, who.scopes) == ("acme", "alice", {"runs:read", "export"})
    assert verifier.looks_like_jwt(token()) and not verifier.looks_like_jwt("tly_abc")


@pytest.mark.parametrize(
    "bad",
    [
        {"aud": "someone-else"},
        {"iss": "https://evil.example"},
        {"exp": int(time.time()) - 60},
        {"tally_workspace": None},
        {"sub": None},
        {"key": OTHER_KEY},
        {"kid": "unknown"},
    ],
    ids=["audience", "issuer", "expired", "no-workspace", "no-subject", "forged", "kid"],
)
async def test_a_jwt_failing_any_check_is_refused(jwks_url: str, bad: dict[str, Any]) -> None:
    verifier = JwtVerifier(ISSUER, AUDIENCE, jwks_url)
    key, kid = bad.pop("key", KEY), bad.pop("kid", "k1")
    assert await verifier.principal(token(key, kid, **bad)) is None


def test_the_identity_provider_is_configured_whole_or_not_at_all() -> None:
    with pytest.raises(ValidationError, match="jwt_issuer, jwt_audience and jwt_jwks_url"):
        ReporterSettings(jwt_issuer=ISSUER)


async def test_the_token_store_hands_jwts_to_the_identity_provider(jwks_url: str) -> None:
    store = TokenStore(None, idp=JwtVerifier(ISSUER, AUDIENCE, jwks_url))  # type: ignore[arg-type]
    who = await store.authenticate(token(tally_workspace="*", scope=["admin"]))
    assert who is not None and who.operator and who.allows("export")
