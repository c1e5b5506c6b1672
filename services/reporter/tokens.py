"""``/auth/tokens``: create, list and revoke API tokens (scope ``admin``).

A token is shown once, in the answer that creates it. An admin token bound to a
workspace manages only that workspace's tokens; only an operator's (``*``) may create
tokens for any workspace or operator tokens.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Path
from pydantic import BaseModel, ConfigDict, Field

from services.reporter.auth import OPERATOR, SCOPES, Admin, TokenStore
from services.reporter.errors import ApiError, not_found
from services.reporter.params import Workspace

Scope = Literal[
    "tasks:write",
    "runs:read",
    "reports:read",
    "export",
    "quota:admin",
    "experiments:admin",
    "learning:admin",
    "admin",
]
assert set(Scope.__args__) == set(SCOPES)  # type: ignore[attr-defined]


class NewToken(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")
    workspace: Workspace = Field(description="The workspace the token sees, or `*` (operator).")
    scopes: list[Scope] = Field(min_length=1)
    expires_in_days: float | None = Field(
        90, gt=0, le=3650, description="Days until it expires; null: never."
    )


class TokenInfo(BaseModel):
    token_id: str
    name: str
    workspace: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class CreatedToken(TokenInfo):
    token: str = Field(description="The token itself: shown this once, never again.")


class TokenList(BaseModel):
    tokens: list[TokenInfo]


def _info(row: dict[str, object]) -> TokenInfo:
    return TokenInfo.model_validate({k: v for k, v in row.items() if k != "token_hash"})


def tokens_router(store: TokenStore) -> APIRouter:
    router = APIRouter(prefix="/auth/tokens", tags=["auth"])

    @router.post("", status_code=201, response_model=CreatedToken)
    async def create(body: Annotated[NewToken, Body()], who: Admin) -> CreatedToken:
        """Create a token; the answer holds the token itself, shown only this once."""
        if not who.operator and body.workspace != who.workspace:
            raise ApiError(
                403,
                "forbidden",
                f"workspace: this token may only create tokens of {who.workspace!r}",
                "workspace",
            )
        expires = (
            datetime.now(UTC) + timedelta(days=body.expires_in_days)
            if body.expires_in_days is not None
            else None
        )
        row, token = await store.create(body.name, body.workspace, list(body.scopes), expires)
        return CreatedToken(**_info(row).model_dump(), token=token)

    @router.get("", response_model=TokenList)
    async def listing(who: Admin) -> TokenList:
        """The tokens (never the tokens themselves): the caller's workspace's, or all."""
        rows = await store.list(None if who.operator else who.workspace)
        return TokenList(tokens=[_info(r) for r in rows])

    @router.delete("/{token_id}", response_model=TokenInfo)
    async def revoke(
        token_id: Annotated[str, Path(min_length=1, max_length=32)],
        who: Admin,
    ) -> TokenInfo:
        """Revoke a token: it answers 401 from now on."""
        row = await store.get(token_id)
        if (
            row is None
            or not who.owns(row["workspace"])
            or (row["workspace"] == OPERATOR and not who.operator)
        ):
            raise not_found("token_id", f"token {token_id} not found")
        await store.revoke(token_id)
        return _info((await store.get(token_id)) or row)

    return router
