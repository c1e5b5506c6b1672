"""Signed JWTs from an external identity provider, as an alternative to API tokens.

Set ``TALLY_REPORTER_JWT_ISSUER``, ``…_JWT_AUDIENCE`` and ``…_JWT_JWKS_URL`` and the
reporter also accepts a bearer JWT signed by a key of that JWKS (RS256, PS256, ES256 or
EdDSA), verified with PyJWT: signature, ``iss``, ``aud``, ``exp`` and ``sub`` are required.
The caller's workspace is the claim ``tally_workspace`` (``*`` for an operator) and its
scopes the ``scope`` claim (space-separated, or a list); scopes Tally does not know are
ignored. A token that fails any check is 401, like an unknown API token, and the reason is
logged.
"""

from __future__ import annotations

import asyncio
from typing import Any

import jwt
import structlog

from services.reporter.auth import SCOPES, Principal

log = structlog.get_logger(__name__)

#: Asymmetric algorithms only: a JWKS holds public keys (no ``HS256``, never ``none``).
ALGORITHMS = ["RS256", "PS256", "ES256", "EdDSA"]


class JwtVerifier:
    """Verifies an identity provider's JWTs against its JWKS (keys cached for 5 minutes)."""

    def __init__(
        self,
        issuer: str,
        audience: str,
        jwks_url: str,
        *,
        workspace_claim: str = "tally_workspace",
        scope_claim: str = "scope",
    ) -> None:
        self.issuer, self.audience = issuer, audience
        self.workspace_claim, self.scope_claim = workspace_claim, scope_claim
        self._keys = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=300, timeout=10)

    @staticmethod
    def looks_like_jwt(token: str) -> bool:
        return token.count(".") == 2 and not token.startswith("tly_")

    async def principal(self, token: str) -> Principal | None:
        """The JWT's caller, or None (logged) when it fails verification."""
        try:
            claims = await asyncio.to_thread(self._verify, token)
        except jwt.PyJWTError as exc:
            log.warning("jwt_refused", reason=str(exc))
            return None
        workspace = claims.get(self.workspace_claim)
        if not isinstance(workspace, str) or not workspace:
            log.warning("jwt_refused", reason=f"no {self.workspace_claim} claim")
            return None
        raw = claims.get(self.scope_claim) or []
        scopes = raw.split() if isinstance(raw, str) else [str(s) for s in raw]
        subject = str(claims["sub"])
        return Principal(
            f"jwt:{subject}", subject, workspace, frozenset(s for s in scopes if s in SCOPES)
        )

    def _verify(self, token: str) -> dict[str, Any]:
        key = self._keys.get_signing_key_from_jwt(token)
        claims: dict[str, Any] = jwt.decode(
            token,
            key.key,
            algorithms=ALGORITHMS,
            audience=self.audience,
            issuer=self.issuer,
            options={"require": ["exp", "iss", "aud", "sub"]},
        )
        return claims
