"""The assigner: chooses a model for each task, reserves its quota, escalates failures.

The subscribers in :mod:`services.assigner.handlers` call it; it publishes what it decides.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta

import structlog

from services.assigner.escalation import escalation_order, priced
from services.assigner.experiments import arm_label, experiment_for, pick_arm
from services.assigner.repo import AssignmentRepo
from services.assigner.selection import (
    STRATEGIES,
    Candidate,
    LearnedScore,
    RoutingTable,
    candidates,
    first_choice_propensity,
    rank,
    route_seed,
)
from services.assigner.settings import AssignerSettings
from services.assigner.value import RoutingValues, load_routing_values
from tally import metrics
from tally.bus import Bus
from tally.errors import PermanentError, TransientError
from tally.events import (
    Estimate,
    PolicyUpdated,
    ReleaseReply,
    ReleaseRequest,
    Reservation,
    ReserveManyReply,
    ReserveManyRequest,
    ReserveReply,
    ReserveRequest,
    RunRecorded,
    TaskAssigned,
    TaskDeferred,
    TaskEstimated,
    UsageReply,
    UsageRequest,
    utcnow,
)
from tally.events.assign import (
    Experiment,
    ExperimentReply,
    ExperimentRequest,
    RecommendReply,
    RecommendRequest,
)
from tally.registry import ModelRegistry

log = structlog.get_logger(__name__)


class Assigner:
    """Chooses models for estimated tasks and holds the quota for them."""

    def __init__(
        self,
        bus: Bus,
        repo: AssignmentRepo,
        registry: ModelRegistry,
        settings: AssignerSettings,
        values: RoutingValues | None = None,
    ) -> None:
        self.bus = bus
        #: What a solved task is worth per workspace (``routing.yaml``).
        self.values = values if values is not None else load_routing_values(settings.routing_path)
        self.repo = repo
        self.registry = registry
        self.settings = settings
        self._prepaid: tuple[float, frozenset[str]] = (-1e9, frozenset())
        self._experiments: tuple[float, list[Experiment]] = (-1e9, [])
        #: The learner's latest scores per model (for the ``learned`` strategy).
        self.scores: dict[str, LearnedScore] = {}
        #: The learner's newest routing policy per workspace (for the ``learned`` strategy).
        self.policies: dict[str, RoutingTable] = {}

    def adopt_policy(self, e: PolicyUpdated) -> bool:
        """Keep ``e`` as its workspace's policy unless a newer version is already held."""
        held = self.policies.get(e.workspace)
        if held is not None and held.version >= e.version:
            return False
        self.policies[e.workspace] = RoutingTable(
            e.version, e.probabilities, e.models, e.posteriors
        )
        log.info("policy_adopted", workspace=e.workspace, version=e.version)
        return True

    def follows_policy(self, strategy: str, workspace: str, estimate: Estimate) -> bool:
        """Whether the learned policy (not the score ranking) orders this task."""
        policy = self.policies.get(workspace)
        return (
            strategy == "learned"
            and policy is not None
            and (policy.posterior(estimate) is not None or policy.table(estimate) is not None)
        )

    async def prepaid(self) -> frozenset[str]:
        """Subscriptions paid for in advance, as the quota service knows them (cached 60 s)."""
        fetched_at, names = self._prepaid
        now = time.monotonic()
        if now - fetched_at > 60:
            reply = await self.usage()
            names = frozenset(
                s["subscription"] for s in reply.subscriptions if s.get("kind") == "prepaid"
            )
            self._prepaid = (now, names)
        return names

    async def usage(self) -> UsageReply:
        return await self.bus.request(
            UsageRequest(), UsageReply, step="quota", timeout=self.settings.quota_timeout_s
        )

    async def experiments(self) -> list[Experiment]:
        """Experiments, re-read every ``experiments_refresh_s`` (replicas share the table)."""
        fetched_at, cached = self._experiments
        now = time.monotonic()
        if now - fetched_at > self.settings.experiments_refresh_s:
            cached = await self.repo.experiments()
            self._experiments = (now, cached)
        return cached

    def forget_experiments(self) -> None:
        self._experiments = (-1e9, [])

    async def ranked(
        self,
        estimate: Estimate,
        strategy: str,
        *,
        workspace: str = "default",
        seed: int = 0,
        exclude: frozenset[str] = frozenset(),
        attempt: int = 1,
    ) -> list[Candidate]:
        """Candidates in ``strategy``'s order, leaving out the models in ``exclude``.

        Args:
            workspace: whose learned routing policy applies.
            seed: the draw of the learned policy (see :func:`route_seed`).
            attempt: the attempt being ranked (the learned strategy values a fallback
                while ``max_attempts`` allows one).
        """
        prepaid = await self.prepaid() if strategy == "maximize_subscription_usage" else frozenset()
        models = [m for m in self.registry.models() if m.name not in exclude]
        return rank(
            strategy,
            models,
            estimate,
            prepaid=prepaid,
            scores=self.scores,
            policy=self.policies.get(workspace),
            seed=seed,
            value_usd=self.values.for_workspace(workspace),
            after_failure=bool(exclude),
            attempts_left=self.settings.max_attempts - attempt,
            exploration=self.settings.exploration,
        )

    async def strategy_for(self, e: TaskEstimated) -> tuple[str, str | None]:
        """The strategy for a task and its A/B arm, if an experiment covers it."""
        experiment = experiment_for(await self.experiments(), e.estimate.task_type)
        if experiment is None:
            return self.settings.strategy, None
        variant = pick_arm(experiment, e.task_id)
        return variant.strategy, arm_label(experiment, variant)

    async def answer(self, e: TaskEstimated) -> TaskAssigned | TaskDeferred | None:
        """Assign a newly estimated task, once.

        A redelivered estimate is answered with the assignment already made for the task's
        current attempt (the same model, the same reservation, the same event id); a task
        still deferred is tried again at its attempt; an exhausted one is left alone.
        """
        state = await self.repo.task(e.task_id)
        if state is None:
            return await self.assign(e)
        if state.status == "exhausted":
            log.info("estimate_for_exhausted_task", task_id=e.task_id)
            return None
        failed = state.failed_models
        return await self.assign(
            state.estimated,
            state.attempt,
            failed_models=failed,
            escalate_from=failed[-1] if failed else None,
        )

    async def assign(
        self,
        e: TaskEstimated,
        attempt: int = 1,
        *,
        failed_models: Sequence[str] = (),
        escalate_from: str | None = None,
    ) -> TaskAssigned | TaskDeferred:
        """Reserve quota for the best model and announce it, or defer the task.

        Args:
            attempt: 1 for a new task, n + 1 after n failed runs.
            failed_models: models that failed this task; never tried again.
            escalate_from: the model of the failed attempt: stronger models go first.
        """
        strategy, arm = await self.strategy_for(e)
        policy_led = self.follows_policy(strategy, e.workspace, e.estimate)
        ranked = await self.ranked(
            e.estimate,
            strategy,
            workspace=e.workspace,
            seed=route_seed(e.task_id, attempt),
            # The policy draws among the models not yet tried: a failed one never returns.
            exclude=frozenset(failed_models) if policy_led else frozenset(),
            attempt=attempt,
        )
        pool = list(ranked)
        note = ""
        if policy_led and (escalate_from or failed_models):
            note = f"policy after {escalate_from} failed attempt {attempt - 1}; "
            ranked = self.worth_trying(e, ranked, attempt)
        elif escalate_from or failed_models:
            failed = self.registry.get(escalate_from) if escalate_from else None
            capability = (
                failed.capability(e.estimate.task_type, *e.estimate.labels) if failed else 0
            )
            ranked = escalation_order(ranked, failed, set(failed_models), capability)
            note = f"escalated after {escalate_from} failed attempt {attempt - 1}; "
        return await self.reserve_first(
            e,
            ranked,
            attempt,
            strategy,
            arm=arm,
            failed_models=tuple(failed_models),
            note=note,
            propensity=self.propensity(
                e, ranked, pool, strategy, after_failure=bool(failed_models), attempt=attempt
            ),
        )

    def propensity(
        self,
        e: TaskEstimated,
        ranked: Sequence[Candidate],
        pool: Sequence[Candidate],
        strategy: str,
        *,
        after_failure: bool = False,
        attempt: int = 1,
    ) -> float:
        """The chance ``strategy`` had of ranking ``ranked[0]`` first among ``pool`` (1 for
        an ordering without randomness), logged for off-policy evaluation."""
        if not ranked or strategy != "learned":
            return 1.0
        return first_choice_propensity(
            ranked[0].model.name,
            pool,
            e.estimate,
            policy=self.policies.get(e.workspace),
            value_usd=self.values.for_workspace(e.workspace),
            after_failure=after_failure,
            attempts_left=self.settings.max_attempts - attempt,
            exploration=self.settings.exploration,
        )

    async def reserve_first(
        self,
        e: TaskEstimated,
        ranked: Sequence[Candidate],
        attempt: int,
        strategy: str,
        *,
        arm: str | None = None,
        failed_models: tuple[str, ...] = (),
        note: str = "",
        propensity: float | None = None,
    ) -> TaskAssigned | TaskDeferred:
        """Try ``ranked`` in order until a reservation is accepted; defer if none is.

        ``propensity`` is the chance the strategy had of ranking ``ranked[0]`` first: it
        goes with that model; a fallback after a refusal is logged without one.
        """
        assignment_id = f"{e.task_id}-a{attempt}"
        made = await self.repo.assigned(assignment_id)
        if made is not None:  # a redelivery: announce the assignment made, reserve nothing
            return await self._announce(e, made, failed_models)
        answer = await self.first_accepted(
            e,
            ranked,
            attempt,
            strategy,
            arm=arm,
            failed_models=failed_models,
            note=note,
            propensity=propensity,
        )
        if isinstance(answer, TaskAssigned):
            kept = await self.repo.save(answer)
            return await self.kept(e, answer, kept, failed_models)
        await self.repo.set_task(
            e,
            "deferred",
            attempt,
            failed_models=failed_models,
            reason=answer.reason,
            retry_after=answer.retry_after,
        )
        await self.bus.publish(answer)
        return answer

    async def kept(
        self,
        e: TaskEstimated,
        assigned: TaskAssigned,
        kept: TaskAssigned,
        failed_models: tuple[str, ...],
    ) -> TaskAssigned:
        """Announce the assignment that was stored: ours, or (when another delivery of the
        task assigned it first) that one, giving up our reservation."""
        if kept.reservation.reservation_id != assigned.reservation.reservation_id:
            await self._release(e, assigned.reservation.reservation_id)
            return await self._announce(e, kept, failed_models)
        metrics.ASSIGNMENTS.labels(assigned.model, assigned.strategy).inc()
        return await self._announce(e, assigned, failed_models)

    async def first_accepted(
        self,
        e: TaskEstimated,
        ranked: Sequence[Candidate],
        attempt: int,
        strategy: str,
        *,
        arm: str | None = None,
        failed_models: tuple[str, ...] = (),
        note: str = "",
        propensity: float | None = None,
    ) -> TaskAssigned | TaskDeferred:
        """Reserve for the first of ``ranked`` that quota accepts: the assignment to store
        and announce, or the deferral when none is accepted. Stores nothing."""
        refusals: list[ReserveReply] = []
        assignment_id = f"{e.task_id}-a{attempt}"
        for i, cand in enumerate(ranked):
            reply = await self.bus.request(
                self.reserve_request(e, cand, assignment_id),
                ReserveReply,
                step="quota",
                timeout=self.settings.quota_timeout_s,
            )
            if reply.ok:
                return self.assigned_event(
                    e,
                    ranked,
                    i,
                    reply,
                    attempt,
                    strategy,
                    arm=arm,
                    note=note,
                    refusals=refusals,
                    propensity=propensity if i == 0 else None,
                )
            refusals.append(reply)
        return self.deferred_event(e, attempt, refusals)

    async def reserve_many(self, requests: Sequence[ReserveRequest]) -> list[ReserveReply]:
        """Several reservations in one request to quota; one reply each, in order.

        Quota is given ``quota_timeout_s`` plus as much again per 32 reservations.
        """
        reply = await self.bus.request(
            ReserveManyRequest(reservations=list(requests), source=self.bus.service),
            ReserveManyReply,
            step="quota",
            timeout=self.settings.quota_timeout_s * (1 + len(requests) / 32),
        )
        if len(reply.replies) != len(requests):
            raise TransientError(f"quota answered {len(reply.replies)} of {len(requests)}")
        return reply.replies

    def reserve_request(
        self, e: TaskEstimated, cand: Candidate, assignment_id: str
    ) -> ReserveRequest:
        """The reservation of ``cand`` for an assignment (its id: assignment and model)."""
        return e.child(
            ReserveRequest,
            subscription=cand.model.subscription,
            tokens=cand.tokens,
            cost_usd=round(cand.expected_cost, 6),
            task_id=e.task_id,
            model=cand.model.name,
            reservation_id=f"{assignment_id}-{cand.model.name}",
            ttl_s=self.settings.reservation_ttl_s,
        )

    def assigned_event(
        self,
        e: TaskEstimated,
        ranked: Sequence[Candidate],
        i: int,
        reply: ReserveReply,
        attempt: int,
        strategy: str,
        *,
        arm: str | None,
        note: str,
        refusals: list[ReserveReply],
        propensity: float | None = None,
    ) -> TaskAssigned:
        """The assignment of ``ranked[i]``, whose reservation quota accepted."""
        cand = ranked[i]
        assignment_id = f"{e.task_id}-a{attempt}"
        return e.child(
            TaskAssigned,
            event_id=f"assigned-{assignment_id}",
            task_id=e.task_id,
            assignment_id=assignment_id,
            model=cand.model.name,
            provider=cand.model.provider,
            subscription=cand.model.subscription,
            strategy=strategy,
            runner_up=ranked[i + 1].model.name if i + 1 < len(ranked) else None,
            attempt=attempt,
            arm=arm,
            propensity=propensity,
            reason=note + _reason(strategy, cand.capability, cand.expected_cost, refusals),
            reservation=Reservation(
                reservation_id=reply.reservation_id,
                subscription=reply.subscription,
                tokens=cand.tokens,
                cost_usd=round(cand.expected_cost, 6),
                expires_at=reply.expires_at
                or utcnow() + timedelta(seconds=self.settings.reservation_ttl_s),
            ),
        )

    def deferred_event(
        self, e: TaskEstimated, attempt: int, refusals: list[ReserveReply]
    ) -> TaskDeferred:
        """The deferral of a task no model could be reserved for (counted)."""
        metrics.DEFERRALS.labels("quota" if refusals else "no_capable_model").inc()
        return e.child(
            TaskDeferred,
            event_id=f"deferred-{e.task_id}-a{attempt}",
            task_id=e.task_id,
            attempt=attempt,
            reason="; ".join(f"{r.subscription}: {r.reason}" for r in refusals)
            or "no model passes the context-window and capability filters",
            retry_after=min((r.retry_after for r in refusals if r.retry_after), default=None)
            or utcnow() + timedelta(seconds=self.settings.retry_interval_s),
        )

    async def _announce(
        self, e: TaskEstimated, assigned: TaskAssigned, failed_models: tuple[str, ...]
    ) -> TaskAssigned:
        """Mark the task assigned and publish ``assigned`` (again, under the same event id)."""
        await self.repo.set_task(e, "assigned", assigned.attempt, failed_models=failed_models)
        await self.bus.publish(assigned)
        return assigned

    async def _release(self, e: TaskEstimated, reservation_id: str) -> None:
        reply = await self.bus.request(
            e.child(ReleaseRequest, reservation_id=reservation_id),
            ReleaseReply,
            step="quota",
            timeout=self.settings.quota_timeout_s,
        )
        log.info("duplicate_reservation_released", task_id=e.task_id, status=reply.status)

    async def escalate(self, e: RunRecorded) -> TaskAssigned | TaskDeferred | None:
        """After a failed run with attempts left, assign the task again to a stronger model.

        Waits (by redelivery) until the quota service has settled the failed attempt's
        reservation, so the new reservation never counts alongside the old estimate.
        """
        if e.success:
            return None
        a = await self.repo.assignment_for(e.reservation_id, e.task_id)
        state = await self.repo.task(e.task_id)
        if a is None or state is None:
            return None  # not ours
        if state.attempt > a.attempt:  # already escalated: announce that assignment again
            made = await self.repo.assigned(f"{e.task_id}-a{state.attempt}")
            if made is not None:
                return await self._announce(state.estimated, made, state.failed_models)
            return None
        failed = tuple(dict.fromkeys((*state.failed_models, a.model)))
        if a.attempt >= self.settings.max_attempts:
            await self.repo.set_task(
                state.estimated,
                "exhausted",
                a.attempt,
                failed_models=failed,
                reason=f"{a.attempt} attempts failed",
            )
            log.info("escalation_exhausted", task_id=e.task_id, attempts=a.attempt)
            return None
        worth = await self.escalation_value(state.estimated, failed, a.attempt + 1)
        if worth is not None and worth <= 0:
            await self.repo.set_task(
                state.estimated,
                "exhausted",
                a.attempt,
                failed_models=failed,
                reason=f"no untried model is worth another attempt (best expected value"
                f" ${worth:.2f} at ${self.values.for_workspace(e.workspace):.2f} a solve)",
            )
            metrics.ESCALATIONS_DECLINED.of("assigner").inc()
            log.info("escalation_not_worth_it", task_id=e.task_id, expected_value=worth)
            return None
        if e.reservation_id and await self.repo.reservation_settled(e.reservation_id) is False:
            raise TransientError(
                f"reservation {e.reservation_id} not settled yet",
                delay_s=self.settings.settle_wait_s,
            )
        log.info("escalating", task_id=e.task_id, failed_model=a.model, attempt=a.attempt + 1)
        return await self.assign(
            state.estimated, a.attempt + 1, failed_models=failed, escalate_from=a.model
        )

    def worth_trying(
        self, e: TaskEstimated, ranked: Sequence[Candidate], attempt: int
    ) -> list[Candidate]:
        """After a failure, only the candidates with a positive expected value: quota
        refusing the best never sends the task to a model not worth the attempt."""
        policy = self.policies.get(e.workspace)
        post = policy.posterior(e.estimate) if policy is not None else None
        if post is None:
            return list(ranked)
        ev = self.priced(e, ranked, post, attempt)
        return [c for c in ranked if ev[c.model.name] > 0]

    async def escalation_value(
        self, e: TaskEstimated, failed: Sequence[str], attempt: int
    ) -> float | None:
        """The best untried model's expected value in dollars (the draw the next
        assignment makes), or None when the learned policy does not price this task."""
        strategy, _ = await self.strategy_for(e)
        policy = self.policies.get(e.workspace)
        post = policy.posterior(e.estimate) if strategy == "learned" and policy else None
        if post is None:
            return None
        models = [m for m in self.registry.models() if m.name not in failed]
        untried = candidates(models, e.estimate)
        ev = self.priced(e, untried, post, attempt)
        return max(ev.values(), default=0.0)

    def priced(
        self,
        e: TaskEstimated,
        untried: Sequence[Candidate],
        post: Mapping[str, Sequence[float | None]],
        attempt: int,
    ) -> dict[str, float]:
        """The untried candidates' expected values for ``attempt``: the draws the
        learned strategy ranks that attempt by."""
        return priced(
            untried,
            post,
            value_usd=self.values.for_workspace(e.workspace),
            task_id=e.task_id,
            attempt=attempt,
            attempts_left=self.settings.max_attempts - attempt,
            exploration=self.settings.exploration,
        )

    async def recommend(self, r: RecommendRequest) -> RecommendReply:
        """The model :meth:`assign` would try first, the runner-up and why; reserves nothing."""
        strategy = r.strategy or self.settings.strategy
        if strategy not in STRATEGIES:
            raise PermanentError(f"unknown strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
        ranked = await self.ranked(r.estimate, strategy, workspace=r.workspace)
        if not ranked:
            return RecommendReply(
                model=None,
                strategy=strategy,
                reason="no model passes the context-window and capability filters",
            )
        best = ranked[0]
        return RecommendReply(
            model=best.model.name,
            runner_up=ranked[1].model.name if len(ranked) > 1 else None,
            strategy=strategy,
            reason=_reason(strategy, best.capability, best.expected_cost, []),
            expected_cost_usd=round(best.expected_cost, 6),
            candidates=[c.model.name for c in ranked],
        )

    async def experiment(self, r: ExperimentRequest) -> ExperimentReply:
        """Create, list or stop experiments."""
        if r.action == "create":
            if r.experiment is None:
                raise PermanentError("create needs an experiment")
            unknown = [v.strategy for v in r.experiment.variants if v.strategy not in STRATEGIES]
            if unknown:
                raise PermanentError(
                    f"unknown strategy {unknown[0]!r}; known: {', '.join(STRATEGIES)}"
                )
            if not await self.repo.save_experiment(r.experiment):
                raise PermanentError(f"an experiment called {r.experiment.name!r} exists")
        elif r.action == "stop" and not await self.repo.stop_experiment(r.name or ""):
            raise PermanentError(f"no experiment called {r.name!r}")
        self.forget_experiments()
        return ExperimentReply(experiments=await self.experiments())


def _reason(strategy: str, capability: float, cost: float, refusals: list[ReserveReply]) -> str:
    text = f"{strategy}: capability {capability:.2f}, expected ${cost:.4f}"
    if refusals:
        text += "; skipped " + ", ".join(f"{r.subscription} ({r.reason})" for r in refusals)
    return text
