"""``/learning/jobs``: start, read, list, cancel and promote learning jobs over HTTP.

The learner owns the jobs: each call is a ``learner.job.command`` request, as
``tally learn`` sends it. Starting, cancelling and promoting need the ``learning:admin``
scope; reading needs ``reports:read``. A token sees its own workspace's jobs only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import nats.errors
from fastapi import APIRouter, Body, Path, Query, Security
from pydantic import BaseModel, Field

from services.reporter.actions import ClientFactory
from services.reporter.auth import Principal, ReportsRead, Require
from services.reporter.errors import ApiError, not_found
from services.reporter.params import Params, Workspace
from tally.client import TallyClient
from tally.errors import PermanentError, StepTimeout, TransientError
from tally.events.jobs import JobConfig, JobStatus, LearningJobCommand, LearningJobReply

LearningAdmin = Annotated[Principal, Security(Require("learning:admin"))]
JobId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
T = TypeVar("T")


class StartJob(BaseModel):
    """A job to queue: its configuration (every field has a default) and a name."""

    workspace: Workspace = "default"
    name: str | None = Field(None, max_length=128)
    config: JobConfig = Field(default_factory=JobConfig)


class Promotion(BaseModel):
    """Why the job's candidate becomes the live policy (kept with the promotion)."""

    note: str = Field(min_length=1, max_length=1000)


class LearningJob(BaseModel):
    """A job: status, progress, budget, checkpoints and (when finished) its report."""

    model_config = {"extra": "allow"}

    job_id: str
    workspace: str
    status: JobStatus
    priority: str
    iteration: int
    iterations: int | None


class LearningJobs(BaseModel):
    """Jobs, newest first."""

    jobs: list[LearningJob]


class ListParams(Params):
    workspace: Workspace | None = None
    status: JobStatus | None = None
    limit: int = Field(50, ge=1, le=1000)


class WorkspaceParams(Params):
    workspace: Workspace | None = None


def learning_router(clients: ClientFactory, *, max_wait_s: float = 30.0) -> APIRouter:
    """The ``/learning/jobs`` routes."""
    router = APIRouter(tags=["learning"])

    async def ask(command: LearningJobCommand) -> list[dict[str, Any]]:
        async def call(c: TallyClient) -> LearningJobReply:
            return await c.request(command, LearningJobReply, step="learner", timeout=max_wait_s)

        return (await _bus(clients, call)).jobs

    def scope(who: Principal, workspace: str | None) -> str:
        return who.workspace_for(workspace) or "*"

    @router.post("/learning/jobs", status_code=202, response_model=LearningJob)
    async def start(body: Annotated[StartJob, Body()], who: LearningAdmin) -> Any:
        """Queue a learning job (202: queued; follow it with ``GET /learning/jobs/{id}``)."""
        workspace = who.workspace_for(body.workspace) or body.workspace
        command = LearningJobCommand(
            action="start",
            workspace=workspace,
            name=body.name,
            config=body.config,
            by=who.name,
            source="api",
        )
        return (await ask(command))[0]

    @router.get("/learning/jobs", response_model=LearningJobs)
    async def jobs(q: Annotated[ListParams, Query()], who: ReportsRead) -> Any:
        """The workspace's learning jobs, newest first (an operator's token: all, unless
        it names a workspace)."""
        command = LearningJobCommand(
            action="list",
            workspace=scope(who, q.workspace),
            status=q.status,
            limit=q.limit,
            source="api",
        )
        return {"jobs": await ask(command)}

    @router.get("/learning/jobs/{job_id}", response_model=LearningJob)
    async def job(job_id: JobId, q: Annotated[WorkspaceParams, Query()], who: ReportsRead) -> Any:
        """One job with its configuration, checkpoints and report."""
        command = LearningJobCommand(
            action="get", workspace=scope(who, q.workspace), job_id=job_id, source="api"
        )
        return (await ask(command))[0]

    @router.post("/learning/jobs/{job_id}/cancel", response_model=LearningJob)
    async def cancel(
        job_id: JobId, q: Annotated[WorkspaceParams, Query()], who: LearningAdmin
    ) -> Any:
        """Stop a job: a queued one at once, a running one at its next iteration."""
        command = LearningJobCommand(
            action="cancel", workspace=scope(who, q.workspace), job_id=job_id, source="api"
        )
        return (await ask(command))[0]

    @router.post("/learning/jobs/{job_id}/promote", response_model=LearningJob)
    async def promote(
        job_id: JobId,
        body: Annotated[Promotion, Body()],
        q: Annotated[WorkspaceParams, Query()],
        who: LearningAdmin,
    ) -> Any:
        """Publish the job's best checkpoint as the live routing policy (who: the token's
        name; why: ``note``)."""
        command = LearningJobCommand(
            action="promote",
            workspace=scope(who, q.workspace),
            job_id=job_id,
            by=who.name,
            note=body.note,
            source="api",
        )
        return (await ask(command))[0]

    return router


async def _bus(clients: ClientFactory, call: Callable[[TallyClient], Awaitable[T]]) -> T:
    try:
        client = clients()
    except Exception as exc:  # the broker is not connected (starting or stopping)
        raise ApiError(503, "bus_unavailable", f"NATS is not connected: {exc}") from exc
    try:
        return await call(client)
    except StepTimeout as exc:
        raise ApiError(504, "timeout", f"learner did not answer within {exc.timeout_s:g}s") from exc
    except PermanentError as exc:
        text = str(exc).removeprefix("learner: ")
        field = text.split(":", 1)[0] if ":" in text else None
        if field == "job_id":
            raise not_found("job_id", text) from exc
        raise ApiError(400, "rejected", text, field) from exc
    except (TransientError, nats.errors.Error, TimeoutError) as exc:
        raise ApiError(503, "bus_unavailable", f"learner: {exc}") from exc
