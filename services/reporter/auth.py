"""Who may call the reporter's API: bearer tokens, scopes and the workspace a token sees.

A token is random (``tly_`` and 43 URL-safe characters, 256 bits), shown once when it is
created and stored only as its SHA-256 (a hash of a high-entropy secret needs no salt or
slow hash: it cannot be guessed from the hash). Each token names one workspace, or ``*``
for an operator, and a set of scopes; ``admin`` includes every scope.

Every endpoint depends on :class:`Require` with its scope: no token (or an unknown,
expired or revoked one) is 401, a token without the scope 403. The scope is also written
into the OpenAPI document (``security`` per operation, see :func:`document_scopes`).
A token bound to a workspace sees and changes only that workspace:
:meth:`Principal.workspace_for` turns the ``workspace`` a request names into the one it
may use, and :meth:`Principal.owns` hides another workspace's objects (404, as if absent).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, FastAPI, Security
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from services.reporter.errors import ApiError, not_found
from services.reporter.ratelimit import RateLimiter
from tally.db.tables import api_tokens
from tally.events import new_id, utcnow

#: Every scope a token can hold; ``admin`` includes all the others.
SCOPES = (
    "tasks:write",
    "runs:read",
    "reports:read",
    "export",
    "quota:admin",
    "experiments:admin",
    "learning:admin",
    "admin",
)
#: The workspace of an operator's token: every workspace.
OPERATOR = "*"
#: ``last_used_at`` is written when it is older than this (so it is at most this stale).
TOUCH_EVERY = timedelta(minutes=1)
#: The name of the security scheme in the OpenAPI document.
SCHEME = "bearerAuth"

bearer = HTTPBearer(
    auto_error=False,
    scheme_name=SCHEME,
    description="An API token (`tally token create`), sent as `Authorization: Bearer …`.",
)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "tly_" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Principal:
    """The caller a token stands for."""

    token_id: str
    name: str
    workspace: str
    scopes: frozenset[str]

    @property
    def operator(self) -> bool:
        return self.workspace == OPERATOR

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    def owns(self, workspace: str | None) -> bool:
        """Whether an object of ``workspace`` is visible to this caller."""
        return self.operator or workspace == self.workspace

    def workspace_for(self, requested: str | None, field: str = "workspace") -> str | None:
        """The workspace a request may use: an operator's choice (None: all), else its own.

        Raises:
            ApiError: 404 naming ``field`` when a bound token names another workspace.
        """
        if self.operator:
            return requested
        if requested is not None and requested != self.workspace:
            raise not_found(field, f"no workspace {requested!r} for this token")
        return self.workspace

    def hide_unless_owned(self, workspace: str | None, field: str, what: str) -> None:
        """404 (``what`` not found) when the object belongs to another workspace."""
        if workspace is not None and not self.owns(workspace):
            raise not_found(field, f"{what} not found")

    def operator_only(self, what: str) -> None:
        """403 for a bound token on an installation-wide resource (subscriptions, …)."""
        if not self.operator:
            raise ApiError(403, "operator_only", f"{what} needs an operator (workspace *) token")


class JwtCheck(Protocol):
    """An identity provider's JWTs (:class:`services.reporter.idp.JwtVerifier`)."""

    def looks_like_jwt(self, token: str) -> bool: ...

    async def principal(self, token: str) -> Principal | None: ...


class TokenStore:
    """The ``api_tokens`` table (the reporter is its only writer), and the bootstrap token."""

    def __init__(
        self, engine: AsyncEngine, bootstrap: str | None = None, idp: JwtCheck | None = None
    ) -> None:
        self.engine = engine
        self._bootstrap = bootstrap or None
        self._idp = idp

    async def authenticate(self, token: str) -> Principal | None:
        """The live token's caller (its ``last_used_at`` brought up to date), else None."""
        if self._bootstrap and hmac.compare_digest(token.encode(), self._bootstrap.encode()):
            return Principal("bootstrap", "bootstrap", OPERATOR, frozenset({"admin"}))
        if self._idp is not None and self._idp.looks_like_jwt(token):
            return await self._idp.principal(token)
        now = utcnow()
        live = select(api_tokens).where(
            api_tokens.c.token_hash == hash_token(token),
            api_tokens.c.revoked_at.is_(None),
            or_(api_tokens.c.expires_at.is_(None), api_tokens.c.expires_at > now),
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(live)).first()
        if row is None:
            return None
        # One write a minute at most per token, not one per request.
        if row.last_used_at is None or now - row.last_used_at > TOUCH_EVERY:
            touch = (
                update(api_tokens)
                .where(api_tokens.c.token_id == row.token_id)
                .values(last_used_at=now)
            )
            async with self.engine.begin() as conn:
                await conn.execute(touch)
        return Principal(row.token_id, row.name, row.workspace, frozenset(row.scopes))

    async def create(
        self, name: str, workspace: str, scopes: list[str], expires_at: datetime | None
    ) -> tuple[dict[str, Any], str]:
        """A new token's row and the token itself (shown once, never stored)."""
        token = new_token()
        row = {
            "token_id": new_id(),
            "name": name,
            "token_hash": hash_token(token),
            "workspace": workspace,
            "scopes": sorted(set(scopes)),
            "created_at": utcnow(),
            "expires_at": expires_at,
        }
        async with self.engine.begin() as conn:
            await conn.execute(api_tokens.insert().values(**row))
        return {**row, "last_used_at": None, "revoked_at": None}, token

    async def list(self, workspace: str | None) -> list[dict[str, Any]]:
        stmt = select(api_tokens).order_by(api_tokens.c.created_at, api_tokens.c.token_id)
        if workspace is not None:
            stmt = stmt.where(api_tokens.c.workspace == workspace)
        async with self.engine.connect() as conn:
            return [dict(r._mapping) for r in (await conn.execute(stmt)).all()]

    async def get(self, token_id: str) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(select(api_tokens).where(api_tokens.c.token_id == token_id))
            ).first()
        return dict(row._mapping) if row else None

    async def revoke(self, token_id: str) -> None:
        stmt = (
            update(api_tokens)
            .where(api_tokens.c.token_id == token_id, api_tokens.c.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        async with self.engine.begin() as conn:
            await conn.execute(stmt)


class Require:
    """The dependency that lets a request in: a live bearer token holding ``scope``.

    It also spends one request of the token's rate limit (429 when none is left).
    """

    def __init__(self, scope: str) -> None:
        if scope not in SCOPES:
            raise ValueError(f"scope: unknown scope {scope!r}")
        self.scope = scope

    async def __call__(
        self,
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Principal:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise _unauthorized("no bearer token: send Authorization: Bearer <token>")
        store: TokenStore = request.app.state.tokens
        who = await store.authenticate(credentials.credentials)
        if who is None:
            raise _unauthorized("the token is unknown, expired or revoked")
        limiter: RateLimiter = request.app.state.limiter
        wait = limiter.wait_s(who.token_id)
        if wait > 0:
            raise ApiError(429, "rate_limited", f"too many requests; retry in {wait:.1f}s")
        if not who.allows(self.scope):
            raise ApiError(403, "forbidden", f"this token lacks the scope {self.scope!r}")
        return who


@dataclass(frozen=True)
class Refusal:
    """Why a raw route (OTLP, ``/metrics``) turns a request away: 401, 403 or 429."""

    status: int
    message: str


#: Checks an ``Authorization`` header for a raw route: the caller, or why not.
Authorizer = Callable[[str | None], Awaitable[Principal | Refusal]]


def raw_authorizer(store: TokenStore, limiter: RateLimiter, scope: str) -> Authorizer:
    """What :class:`Require` checks, for routes outside FastAPI that answer in their shape."""

    async def check(authorization: str | None) -> Principal | Refusal:
        kind, _, token = (authorization or "").partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            return Refusal(401, "no bearer token: send Authorization: Bearer <token>")
        who = await store.authenticate(token.strip())
        if who is None:
            return Refusal(401, "the token is unknown, expired or revoked")
        if (wait := limiter.wait_s(who.token_id)) > 0:
            return Refusal(429, f"too many requests; retry in {wait:.1f}s")
        if not who.allows(scope):
            return Refusal(403, f"this token lacks the scope {scope!r}")
        return who

    return check


def guarded(handler: ASGIApp, check: Authorizer) -> ASGIApp:
    """``handler`` behind ``check``: a refusal is answered in plain text."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers") or [])
        raw = headers.get(b"authorization")
        who = await check(raw.decode("latin-1") if raw is not None else None)
        if isinstance(who, Refusal):
            extra = {"WWW-Authenticate": "Bearer"} if who.status == 401 else None
            response = PlainTextResponse(who.message, status_code=who.status, headers=extra)
            await response(scope, receive, send)
            return
        await handler(scope, receive, send)

    return app


def _unauthorized(message: str) -> ApiError:
    error = ApiError(401, "unauthorized", message)
    error.headers = {"WWW-Authenticate": "Bearer"}
    return error


def scope_of(route: APIRoute) -> str | None:
    """The scope ``route`` requires (through :class:`Require` anywhere in its dependencies)."""
    pending = [route.dependant]
    while pending:
        dependant = pending.pop()
        if isinstance(dependant.call, Require):
            return dependant.call.scope
        pending.extend(dependant.dependencies)
    return None


def document_scopes(api: FastAPI, routers: Sequence[APIRouter]) -> None:
    """Write the scope of each operation of ``routers`` (included in ``api``) into the
    OpenAPI document: its ``security`` requirement, ``x-scope`` and its description."""
    build: Callable[[], dict[str, Any]] = api.openapi
    routes = [r for router in routers for r in router.routes if isinstance(r, APIRoute)]

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is not None:
            return api.openapi_schema
        schema = build()
        for route in routes:
            if (scope := scope_of(route)) is None:
                continue
            for method in route.methods or ():
                operation = schema["paths"][route.path_format][method.lower()]
                operation["security"] = [{SCHEME: [scope]}]
                operation["x-scope"] = scope
                note = f"Scope: `{scope}` (or `admin`)."
                text = operation.get("description")
                operation["description"] = f"{text}\n\n{note}" if text else note
        return schema

    api.openapi = openapi  # type: ignore[method-assign]


#: What an endpoint takes to learn its caller, one per scope it may require.
TasksWrite = Annotated[Principal, Security(Require("tasks:write"))]
RunsRead = Annotated[Principal, Security(Require("runs:read"))]
ReportsRead = Annotated[Principal, Security(Require("reports:read"))]
ExportRows = Annotated[Principal, Security(Require("export"))]
QuotaAdmin = Annotated[Principal, Security(Require("quota:admin"))]
Admin = Annotated[Principal, Security(Require("admin"))]
