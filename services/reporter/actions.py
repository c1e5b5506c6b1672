"""Commands over HTTP: create and estimate tasks, move them between lanes, read and switch
quota. The API writes no table: each command goes onto the bus exactly as the CLI sends
it (:mod:`tally.commands`), and the service that owns the data acts on it.

``POST /tasks`` publishes ``task.created`` and waits up to ``wait`` seconds for the
estimate and the assignment: 201 when both came, else 202 with what came and the URL to
poll (``GET /tasks/{id}``). ``POST /estimate``, ``GET /quota`` and the freeze switch are
requests answered by the estimator and the quota service.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

import nats.errors
from fastapi import APIRouter, Body, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, computed_field, model_validator

from services.reporter.auth import Principal, QuotaAdmin, ReportsRead, TasksWrite
from services.reporter.errors import BUS_ERRORS, ApiError, not_found
from services.reporter.params import Id, Params, Workspace
from services.reporter.taskview import TaskRepo, task_url
from tally.client import TallyClient
from tally.commands import create_task, status_changed, task_created
from tally.errors import PermanentError, StepTimeout, TransientError
from tally.events import Estimate, EstimateRequest, TaskSpec, UsageReply, UsageRequest
from tally.events.assign import FreezeReply, FreezeRequest
from tally.events.learning import LearnerReport, LearnerReportRequest
from tally.events.tasks import TaskStatus
from tally.moneyview import Micros, UsdText, micros, usd_string
from tally.views import Assignment, Deferral

#: Opens a client on the reporter's own NATS connection.
ClientFactory = Callable[[], TallyClient]
T = TypeVar("T")


def _no_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" not in value
    if isinstance(value, dict):
        return all(_no_nul(k) and _no_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_no_nul(v) for v in value)
    return True


class _Body(BaseModel):
    @model_validator(mode="after")
    def _printable(self) -> _Body:
        for name, value in self.model_dump().items():
            if not _no_nul(value):
                raise ValueError(f"{name}: text contains a NUL character (\\u0000)")
        return self


class EstimateBody(_Body, TaskSpec):
    """A task to estimate (nothing is created)."""

    workspace: Workspace = "default"


class NewTask(EstimateBody):
    """A task to create; ``task_id`` is yours to choose (a new one when left out).

    With a ``task_id`` or an ``idempotency_key``, sending the same request again creates
    nothing new (``duplicate: true``), as ``tally task create --id/--idempotency-key``.
    """

    task_id: Id | None = None
    idempotency_key: Id | None = None
    dependencies: tuple[Id, ...] = ()
    plan_id: Id | None = None
    team_estimate: float | None = Field(None, ge=0)


class TaskAccepted(BaseModel):
    """A published task: what came back within the wait, and where to follow it."""

    task_id: str
    status_url: str = Field(description="GET this for the task's estimate and assignment.")
    settled: bool = Field(description="Estimated, and assigned or deferred.")
    duplicate: bool = Field(False, description="Sent before (same id or key): nothing new.")
    estimate: Estimate | None = None
    assignment: Assignment | None = None
    deferred: Deferral | None = None


class StatusBody(_Body):
    """A lane transition (``task.status_changed``)."""

    model_config = {"extra": "forbid"}

    to_status: TaskStatus
    #: The task's current status when left out.
    from_status: TaskStatus | None = None
    changed_at: datetime | None = None
    command: Id | None = None
    job_id: Id | None = None
    task_run_id: Id | None = None
    agent_id: Id | None = None
    metadata: dict[str, str | int | float | bool | None] = Field(default_factory=dict)


class StatusAccepted(BaseModel):
    task_id: str
    event_id: str
    from_status: TaskStatus | None
    to_status: TaskStatus
    changed_at: datetime
    status_url: str


class Window(BaseModel):
    """One quota window (day or month): use, reservations and limits."""

    window: str
    resets_at: datetime
    used_tokens: int
    reserved_tokens: int
    limit_tokens: int | None
    used_micros: Micros
    reserved_micros: Micros
    limit_micros: Micros | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def used_usd(self) -> UsdText:
        return usd_string(self.used_micros)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def reserved_usd(self) -> UsdText:
        return usd_string(self.reserved_micros)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def limit_usd(self) -> UsdText | None:
        return None if self.limit_micros is None else usd_string(self.limit_micros)


class SubscriptionUsage(BaseModel):
    subscription: str
    frozen: bool
    day: Window
    month: Window
    #: where alerts fire, percent of a limit (the subscription's own, or 75/90/100)
    alert_thresholds: list[int] = Field(default_factory=lambda: [75, 90, 100])


class QuotaReport(BaseModel):
    subscriptions: list[SubscriptionUsage]


def _window(w: dict[str, Any]) -> Window:
    # The quota service answers exact micros beside derived dollars; dollars only from an
    # older quota service.
    def exact(name: str) -> int | None:
        if f"{name}_micros" in w:
            value = w[f"{name}_micros"]
            return None if value is None else int(value)
        dollars = w.get(f"{name}_usd")
        return None if dollars is None else micros(dollars)

    return Window(
        window=w["window"],
        resets_at=w["resets_at"],
        used_tokens=w["used_tokens"],
        reserved_tokens=w["reserved_tokens"],
        limit_tokens=w.get("limit_tokens"),
        used_micros=exact("used") or 0,
        reserved_micros=exact("reserved") or 0,
        limit_micros=exact("limit"),
    )


class ExperimentAnalysis(BaseModel):
    """The learner's A/B analysis of one experiment (as ``tally experiment show``)."""

    experiment: str
    workspace: str
    #: Runs and success rate per arm.
    arms: dict[str, dict[str, Any]]
    #: Welch's t-test per metric between arms: means, p-value, effect size, verdict.
    comparisons: list[dict[str, Any]]
    #: Expected reward net of cost on held-out tasks: learned policy, best single model.
    held_out: dict[str, Any]


class WorkspaceParams(Params):
    workspace: Workspace = "default"


class WaitParams(Params):
    wait: float = Field(
        5.0, ge=0, le=60, description="Seconds to wait for the estimate and assignment."
    )


def _workspace(who: Principal, body: EstimateBody) -> str:
    """The body's workspace as the token allows it (a bound token's own when left out)."""
    named = body.workspace if "workspace" in body.model_fields_set else None
    return who.workspace_for(named) or body.workspace


def actions_router(clients: ClientFactory, tasks: TaskRepo, *, max_wait_s: float) -> APIRouter:
    """The command endpoints, each sending on the bus through ``clients()``."""
    router = APIRouter(responses=BUS_ERRORS)

    async def ask(step: str, field: str | None, call: Callable[[TallyClient], Awaitable[T]]) -> T:
        try:
            client = clients()
        except Exception as exc:  # the broker is not connected (starting or stopping)
            raise ApiError(503, "bus_unavailable", f"NATS is not connected: {exc}") from exc
        try:
            return await call(client)
        except StepTimeout as exc:
            message = f"{exc.step} did not answer within {exc.timeout_s:g}s"
            raise ApiError(504, "timeout", message) from exc
        except PermanentError as exc:
            text = f"{field}: {exc}" if field else str(exc)
            if "unknown subscription" in text:
                raise ApiError(404, "not_found", text, field) from exc
            raise ApiError(400, "rejected", text, field) from exc
        except (TransientError, nats.errors.Error, TimeoutError) as exc:
            raise ApiError(503, "bus_unavailable", f"{step}: {exc}") from exc

    @router.post(
        "/tasks",
        status_code=201,
        response_model=TaskAccepted,
        responses={202: {"model": TaskAccepted, "description": "Published; still in progress."}},
        tags=["tasks"],
    )
    async def create(
        body: Annotated[NewTask, Body()],
        q: Annotated[WaitParams, Query()],
        who: TasksWrite,
    ) -> Any:
        """Create a task (``task.created``): 201 with its estimate and assignment when they
        come within ``wait`` seconds, else 202 with what came and the URL to poll.

        A token bound to a workspace creates tasks there (``workspace`` may be left out)."""
        workspace = _workspace(who, body)
        if body.task_id is not None and not who.operator:
            known = await tasks.status(body.task_id)
            if known is not None and not who.owns(known.workspace):
                raise not_found("task_id", f"task {body.task_id} belongs to another workspace")
        fields = body.model_dump(
            exclude={"task_id", "idempotency_key", "workspace"}, exclude_unset=True
        )
        event = task_created(
            source="api",
            workspace=workspace,
            task_id=body.task_id,
            idempotency_key=body.idempotency_key,
            **fields,
        )
        wait = min(q.wait, max_wait_s)
        progress = await ask(
            "task.created",
            None,
            lambda c: create_task(c, event, timeout=wait, strict=False),
        )
        answer = TaskAccepted(
            task_id=event.task_id,
            status_url=task_url(event.task_id),
            settled=progress.settled,
            duplicate=progress.duplicate,
            estimate=progress.estimate,
            assignment=Assignment.of_event(progress.assigned) if progress.assigned else None,
            deferred=Deferral.of_event(progress.deferred) if progress.deferred else None,
        )
        return JSONResponse(
            answer.model_dump(mode="json"),
            status_code=201 if progress.settled else 202,
            headers={"Location": answer.status_url},
        )

    @router.post("/estimate", response_model=Estimate, tags=["tasks"])
    async def estimate(body: Annotated[EstimateBody, Body()], who: TasksWrite) -> Estimate:
        """Estimate a task without creating it (``task.estimate``, as ``tally estimate``)."""
        fields = {**body.model_dump(exclude_unset=True), "workspace": _workspace(who, body)}
        request = EstimateRequest(source="api", **fields)
        return await ask(
            "estimator",
            None,
            lambda c: c.request(request, Estimate, step="estimator", timeout=max_wait_s),
        )

    @router.post(
        "/tasks/{task_id:path}/status",
        status_code=202,
        response_model=StatusAccepted,
        tags=["tasks"],
    )
    async def move(
        task_id: Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")],
        body: Annotated[StatusBody, Body()],
        who: TasksWrite,
    ) -> StatusAccepted:
        """Move a task to another lane (``task.status_changed``); the tracker records it."""
        known = await tasks.status(task_id)
        if known is not None and not who.owns(known.workspace):
            raise not_found("task_id", f"task {task_id} not found")
        unknown_in = "default" if who.operator else who.workspace
        fields = body.model_dump(exclude_unset=True, exclude={"to_status", "from_status"})
        event = status_changed(
            task_id=task_id,
            to_status=body.to_status,
            from_status=body.from_status or (known.status if known else None),
            workspace=known.workspace if known else unknown_in,
            source="api",
            **fields,
        )
        await ask("task.status_changed", None, lambda c: c.publish(event))
        return StatusAccepted(
            task_id=task_id,
            event_id=event.event_id,
            from_status=event.from_status,
            to_status=event.to_status,
            changed_at=event.changed_at,
            status_url=task_url(task_id),
        )

    @router.get("/quota", response_model=QuotaReport, tags=["quota"])
    async def quota(q: Annotated[Params, Query()], who: ReportsRead) -> QuotaReport:
        """Each subscription's use and remaining allowance, today and this month.

        Subscriptions are shared by every workspace: operator tokens only."""
        who.operator_only("the subscriptions' use")
        reply = await ask(
            "quota",
            None,
            lambda c: c.request(UsageRequest(source="api"), UsageReply, step="quota"),
        )
        return QuotaReport(
            subscriptions=[
                SubscriptionUsage(
                    subscription=s["subscription"],
                    frozen=s["frozen"],
                    day=_window(s["day"]),
                    month=_window(s["month"]),
                    # an older quota service does not say: its thresholds were the default
                    alert_thresholds=s.get("alert_thresholds", [75, 90, 100]),
                )
                for s in reply.subscriptions
            ]
        )

    @router.post("/quota/{subscription}/{action}", response_model=FreezeReply, tags=["quota"])
    async def switch(
        subscription: Annotated[
            str, Path(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")
        ],
        action: Literal["freeze", "unfreeze"],
        who: QuotaAdmin,
    ) -> FreezeReply:
        """Freeze (refuse every new reservation) or unfreeze a subscription.

        Subscriptions are shared by every workspace: operator tokens only."""
        who.operator_only("freezing a subscription")
        request = FreezeRequest(subscription=subscription, frozen=action == "freeze", source="api")
        return await ask(
            "quota",
            "subscription",
            lambda c: c.request(request, FreezeReply, step="quota", timeout=max_wait_s),
        )

    @router.get("/experiments/{name}", response_model=ExperimentAnalysis, tags=["learning"])
    async def experiment(
        name: Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")],
        q: Annotated[WorkspaceParams, Query()],
        who: ReportsRead,
    ) -> ExperimentAnalysis:
        """Welch's t-test per metric between the arms, and the held-out evaluation."""
        workspace = who.workspace_for(q.workspace if "workspace" in q.model_fields_set else None)
        request = LearnerReportRequest(
            kind="experiment",
            experiment=name,
            workspace=workspace or q.workspace,
            source="api",
        )
        report = await ask(
            "learner",
            "name",
            lambda c: c.request(request, LearnerReport, step="learner", timeout=max_wait_s),
        )
        data = report.data
        if data.get("known") is False:
            raise not_found("name", f"no experiment named {name!r}")
        return ExperimentAnalysis(
            experiment=name,
            workspace=report.workspace,
            arms=data.get("arms") or {},
            comparisons=data.get("comparisons") or [],
            held_out=data.get("held_out") or {},
        )

    return router
