"""``GET /auth/me``: the caller a token stands for, so a client can show what it may do."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from services.reporter.auth import SCOPES, RunsRead
from services.reporter.params import Params


class Me(BaseModel):
    name: str
    #: ``*`` for an operator (every workspace)
    workspace: str
    operator: bool
    scopes: list[str] = Field(description="The scopes held (``admin`` includes every one).")
    #: Every scope this token is allowed, ``admin`` expanded.
    allows: list[str]


def whoami_router() -> APIRouter:
    router = APIRouter(tags=["auth"])

    @router.get("/auth/me", response_model=Me)
    async def me(q: Annotated[Params, Query()], who: RunsRead) -> Me:
        """The token's name, workspace and scopes (no secret is ever answered)."""
        return Me(
            name=who.name,
            workspace=who.workspace,
            operator=who.operator,
            scopes=sorted(who.scopes),
            allows=[s for s in SCOPES if who.allows(s)],
        )

    return router
