"""``GET /models/policy``: the learner's routing policy as it stands, asked over the bus.

Only the learner computes the policy's probabilities (Thompson shares tilted by what it
learned, with an exploration floor), so the reporter asks it (``learner.report``, kind
``models``) as ``tally models`` does, instead of reading the learner's state table.
"""

from __future__ import annotations

from typing import Annotated

import nats.errors
from fastapi import APIRouter, Query
from pydantic import BaseModel

from services.reporter.actions import ClientFactory, WorkspaceParams
from services.reporter.auth import ReportsRead
from services.reporter.errors import BUS_ERRORS, ApiError
from tally.errors import PermanentError, StepTimeout, TransientError
from tally.events.learning import LearnerReport, LearnerReportRequest


class ModelProbability(BaseModel):
    model: str
    #: the share of tasks of this class the policy sends to the model
    probability: float


class PolicyClass(BaseModel):
    """One task type and complexity band, with each model's routing probability."""

    task_type: str
    band: str
    models: list[ModelProbability]


class Checkpoint(BaseModel):
    id: int
    version: int
    score: float | None


class RoutingPolicy(BaseModel):
    workspace: str
    #: how many updates the policy has had (0: nothing learned yet)
    version: int
    classes: list[PolicyClass]
    checkpoints: list[Checkpoint]


def policy_of(report: LearnerReport) -> RoutingPolicy:
    """The answer from the learner's ``models`` report."""
    policy = report.data.get("policy") or {}
    classes = []
    for key, table in sorted((policy.get("probabilities") or {}).items()):
        task_type, _, band = key.partition("|")
        ranked = sorted(table.items(), key=lambda kv: (-kv[1], kv[0]))
        classes.append(
            PolicyClass(
                task_type=task_type,
                band=band,
                models=[ModelProbability(model=m, probability=p) for m, p in ranked],
            )
        )
    return RoutingPolicy(
        workspace=report.workspace,
        version=int(policy.get("version") or 0),
        classes=classes,
        checkpoints=[Checkpoint(**c) for c in report.data.get("checkpoints") or []],
    )


def routing_router(clients: ClientFactory, *, max_wait_s: float) -> APIRouter:
    router = APIRouter(responses=BUS_ERRORS)

    @router.get("/models/policy", response_model=RoutingPolicy, tags=["learning"])
    async def policy(q: Annotated[WorkspaceParams, Query()], who: ReportsRead) -> RoutingPolicy:
        """The learner's routing probabilities per task type and band, and its checkpoints."""
        named = q.workspace if "workspace" in q.model_fields_set else None
        workspace = who.workspace_for(named) or q.workspace
        request = LearnerReportRequest(kind="models", workspace=workspace, source="api")
        try:
            client = clients()
        except Exception as exc:  # the broker is not connected (starting or stopping)
            raise ApiError(503, "bus_unavailable", f"NATS is not connected: {exc}") from exc
        try:
            report = await client.request(
                request, LearnerReport, step="learner", timeout=max_wait_s
            )
        except StepTimeout as exc:
            raise ApiError(
                504, "timeout", f"learner did not answer within {max_wait_s:g}s"
            ) from exc
        except PermanentError as exc:
            raise ApiError(400, "rejected", str(exc)) from exc
        except (TransientError, nats.errors.Error, TimeoutError) as exc:
            raise ApiError(503, "bus_unavailable", f"learner: {exc}") from exc
        return policy_of(report)

    return router
