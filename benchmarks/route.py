"""Learned routing on recorded per-task outcomes: the cost-quality frontier, and a live replay.

By default (``make bench-route``), for each data file (both public files beside the
repository unless ``--data`` names others), :mod:`benchmarks.route_frontier` prints Tally's
figures at several values of a solve -- its learner's and assigner's own code replayed in
process from a cold start, over 5 task orders (medians, with the spread) -- next to the
best single model, the cheapest, the oracle (the cheapest model that solves each task),
the best fixed order of two models chosen in hindsight and an online Beta-posterior
bandit, with spend per task over the first and second half of the stream. A CSV needs
``task_id, model, success`` and ``cost_usd`` or ``turns`` (the task type is what precedes
``__`` in the task id); turns become dollars at ``--price-per-turn`` (or per model, from a
``--turn-prices`` YAML of model -> dollars a turn). The default value of a solve is
``deploy/config/routing.yaml``'s.

With ``--bus``, one order of one file goes through the real bus with the services running
in-process on a throwaway database and namespace: every task is created
(``task.created``), estimated by the estimator, assigned by the assigner with the
``learned`` strategy; the recorded outcome of the model it got comes back through the
agents' SDK as ``run.started``, a ``worker_call`` carrying the recorded cost, and
``run.finished``; the tracker records the run, the learner learns from it and publishes
its routing policy, and the assigner escalates a failure while an untried model is worth
it. It prints how many runs the learner filed under an unknown task type or band.

Run: ``uv run python benchmarks/route.py [--data CSV ...] [--bus] [--models models.yaml]
[--tasks N]`` (``make bench-route DATA=… MODELS=…``). Servers from ``TALLY_NATS_URL``,
``TALLY_DATABASE_URL``, ``TALLY_REDIS_URL``; everything made for the run is removed at
the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import logging
import random
import re
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
import yaml
from sqlalchemy import func, select

from tally.db import create_engine
from tally.db.tables import assigner_tasks, learner_runs
from tally.events import PolicyUpdated, TaskAssigned, TaskCreated, TaskDeferred
from tally.registry import load_models
from tally.sandbox import sandbox
from tally.sdk import Tally, connect
from tally.settings import TallySettings

ROOT = Path(__file__).resolve().parents[1]
#: The public outcomes beside the repository (``../shared/data/routing``).
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "routing" / "swebench_pro_14runs_per_task.csv"
#: Of the default file's two configurations, the one whose turns are not cut by a cost cap.
DEFAULT_RUN_CONFIG = "250-turn cap, no cost cap"
WORKSPACE = "bench-route"
SUBSCRIPTION = "bench-unlimited"


@dataclass(frozen=True)
class Outcome:
    """What one model did on one task in the recorded data."""

    success: bool
    cost: float


@dataclass(frozen=True)
class Dataset:
    """Outcomes per task and model, restricted to tasks every model has an outcome for."""

    outcomes: dict[str, dict[str, Outcome]]
    models: tuple[str, ...]
    cost_unit: str
    run_config: str | None
    dropped: int


def task_type(task_id: str) -> str:
    """What precedes ``__`` in the task id; the whole id's kind is ``task`` without one."""
    head, sep, _ = task_id.partition("__")
    return head if sep else "task"


def load(path: Path, run_config: str | None) -> Dataset:
    """Read the CSV; keep one run configuration (if the file has several) and full tasks."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"{path}: no rows")
    columns = rows[0].keys()
    cost_col = "cost_usd" if "cost_usd" in columns else "turns" if "turns" in columns else None
    if cost_col is None or not {"task_id", "model", "success"} <= set(columns):
        raise SystemExit(f"{path}: needs task_id, model, success and cost_usd or turns")
    if "run_config" in columns:
        configs = Counter(r["run_config"] for r in rows)
        if run_config is None:
            run_config = (
                DEFAULT_RUN_CONFIG if DEFAULT_RUN_CONFIG in configs else configs.most_common()[0][0]
            )
        rows = [r for r in rows if r["run_config"] == run_config]
    else:
        run_config = None
    table: dict[str, dict[str, Outcome]] = defaultdict(dict)
    for r in rows:
        table[r["task_id"]][r["model"]] = Outcome(
            success=str(r["success"]).strip().lower() in {"1", "true", "yes"},
            cost=float(r[cost_col] or 0.0),
        )
    models = tuple(sorted({m for per in table.values() for m in per}))
    full = {t: per for t, per in table.items() if len(per) == len(models)}
    unit = "USD" if cost_col == "cost_usd" else "turns"
    return Dataset(full, models, unit, run_config, len(table) - len(full))


@dataclass(frozen=True)
class Figures:
    """Tasks solved and total cost of one way of routing."""

    name: str
    solved: int
    cost: float
    runs: int


def single_model(outcomes: Mapping[str, Mapping[str, Outcome]], model: str) -> Figures:
    solved = sum(per[model].success for per in outcomes.values())
    cost = sum(per[model].cost for per in outcomes.values())
    return Figures(model, solved, cost, len(outcomes))


def best_single(outcomes: Mapping[str, Mapping[str, Outcome]], models: Iterable[str]) -> Figures:
    """The model that solves most tasks alone; the cheaper one among equals."""
    return min((single_model(outcomes, m) for m in models), key=lambda f: (-f.solved, f.cost))


def cheapest(outcomes: Mapping[str, Mapping[str, Outcome]], models: Iterable[str]) -> Figures:
    """The model with the lowest total cost; the one solving more among equals."""
    return min((single_model(outcomes, m) for m in models), key=lambda f: (f.cost, -f.solved))


def oracle(outcomes: Mapping[str, Mapping[str, Outcome]]) -> Figures:
    """The cheapest model that solves each task; nothing spent on tasks none solves."""
    solved, cost = 0, 0.0
    for per in outcomes.values():
        wins = [o.cost for o in per.values() if o.success]
        if wins:
            solved += 1
            cost += min(wins)
    return Figures("oracle", solved, cost, solved)


def slug(name: str, taken: set[str]) -> str:
    """A registry-friendly model name (ids built from it must fit 64 characters)."""
    base = re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-")[:36] or "model"
    out, i = base, 2
    while out in taken:
        out, i = f"{base}-{i}", i + 1
    taken.add(out)
    return out


def write_configs(models: Sequence[str], registry: Path | None, folder: Path) -> dict[str, str]:
    """Registry and subscriptions for the run; returns data model name -> registry name.

    Without ``registry``, every model in the data gets the same tier, prices and
    capabilities, and one unlimited subscription: nothing tells them apart but what the
    learner measures. With one, its models must carry the data's model names.
    """
    if registry is not None:
        specs = load_models(registry)
        known = {m.name for m in specs}
        missing = [m for m in models if m not in known]
        if missing:
            raise SystemExit(f"{registry}: no entry for {', '.join(missing)}")
        entries = [s.model_dump(mode="json") for s in specs]
        names = {m: m for m in models}
        subscriptions = sorted({s.subscription for s in specs})
    else:
        taken: set[str] = set()
        names = {m: slug(m, taken) for m in models}
        entries = [
            {
                "name": names[m],
                "provider": "bench",
                "tier": "standard",
                "prices": {"input": 1.0, "output": 1.0},
                "context_window": 10_000_000,
                "capabilities": {"default": 0.9},
                "subscription": SUBSCRIPTION,
            }
            for m in models
        ]
        subscriptions = [SUBSCRIPTION]
    (folder / "models.yaml").write_text(yaml.safe_dump({"models": entries}))
    (folder / "subscriptions.yaml").write_text(
        yaml.safe_dump(
            {
                "subscriptions": [
                    {"name": s, "kind": "payg", "enforcement": "soft"} for s in subscriptions
                ]
            }
        )
    )
    return names


@dataclass
class Replay:
    """Tally's side of the run: what it assigned, what that cost, what it solved."""

    outcomes: Mapping[str, Mapping[str, Outcome]]
    by_registry_name: Mapping[str, str]
    max_attempts: int
    solved: dict[str, bool] = field(default_factory=dict)
    cost: dict[str, float] = field(default_factory=dict)
    attempts: dict[str, list[str]] = field(default_factory=dict)
    policy: PolicyUpdated | None = None

    def figures(self, tasks: Iterable[str]) -> Figures:
        ids = list(tasks)
        return Figures(
            "Tally learned",
            sum(self.solved[t] for t in ids),
            sum(self.cost[t] for t in ids),
            sum(len(self.attempts[t]) for t in ids),
        )


async def next_assignment(
    queue: asyncio.Queue[TaskAssigned | TaskDeferred],
    tally_id: str,
    declined: Callable[[str], Awaitable[bool]],
    *,
    first: bool,
    timeout_s: float = 60.0,
) -> TaskAssigned | TaskDeferred | None:
    """The task's next assignment; None once the assigner declined to escalate it."""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        try:
            return await asyncio.wait_for(queue.get(), 0.5)
        except TimeoutError:
            if not first and await declined(tally_id):
                return None
    raise RuntimeError(f"{tally_id}: no assignment within {timeout_s:.0f} s")


async def run_task(
    sdk: Tally,
    replay: Replay,
    queues: dict[str, asyncio.Queue[TaskAssigned | TaskDeferred]],
    original_id: str,
    tally_id: str,
    declined: Callable[[str], Awaitable[bool]],
) -> None:
    """Create one task, then play each assignment's recorded outcome until done."""
    queue = queues[tally_id]
    await sdk.client.publish(
        TaskCreated(
            task_id=tally_id,
            workspace=WORKSPACE,
            title=f"Resolve {original_id[:200]}",
            description="A SWE-bench-style issue: make the repository's failing tests pass.",
            task_type=task_type(original_id),
        )
    )
    replay.cost[tally_id], replay.solved[tally_id], replay.attempts[tally_id] = 0.0, False, []
    for attempt in range(1, replay.max_attempts + 1):
        got = await next_assignment(queue, tally_id, declined, first=attempt == 1)
        if got is None:
            return  # the assigner judged no untried model worth another attempt
        if isinstance(got, TaskDeferred):
            raise RuntimeError(f"{tally_id} deferred: {got.reason}")
        if got.attempt != attempt:
            raise RuntimeError(f"{tally_id}: expected attempt {attempt}, got {got.attempt}")
        model = replay.by_registry_name[got.model]
        outcome = replay.outcomes[original_id][model]
        async with sdk.run(
            tally_id,
            model=got.model,
            provider=got.provider,
            assignment_id=got.assignment_id,
            reservation_id=got.reservation.reservation_id,
        ) as run:
            await run.worker_call(
                model=got.model,
                cost_usd=outcome.cost,
                usage={"input_tokens": 1_000, "output_tokens": 100},
            )
            run.finish("complete", success=outcome.success)
        replay.attempts[tally_id].append(model)
        replay.cost[tally_id] += outcome.cost
        if outcome.success:
            replay.solved[tally_id] = True
            return


async def replay_all(
    base: TallySettings,
    data: Dataset,
    order: Sequence[str],
    registry: Path | None,
    *,
    max_attempts: int,
    concurrency: int,
) -> tuple[Replay, float, float]:
    """Run the services, replay ``order``; return the replay, elapsed s and Tally's cost."""
    from services.assigner.app import create_app as assigner_app
    from services.assigner.settings import AssignerSettings
    from services.estimator.app import create_app as estimator_app
    from services.estimator.settings import EstimatorSettings
    from services.learner.app import create_app as learner_app
    from services.learner.settings import LearnerSettings
    from services.quota.app import create_app as quota_app
    from services.quota.settings import QuotaSettings
    from services.tracker.app import create_app as tracker_app
    from services.tracker.settings import TrackerSettings

    exits = contextlib.AsyncExitStack()
    box = await exits.enter_async_context(sandbox(base, prefix="br"))
    ns, db_url = box.namespace, box.database_url
    folder = Path(tempfile.mkdtemp(prefix=f"{ns}-"))
    names = write_configs(data.models, registry, folder)
    replay = Replay(data.outcomes, {v: k for k, v in names.items()}, max_attempts)
    common: dict[str, Any] = {
        "nats_url": base.nats_url,
        "database_url": db_url,
        "redis_url": base.redis_url,
        "namespace": ns,
    }
    models_path, subs_path = folder / "models.yaml", folder / "subscriptions.yaml"
    apps = [
        quota_app(QuotaSettings(**common, subscriptions_path=subs_path)),
        tracker_app(TrackerSettings(**common, models_path=models_path)),
        learner_app(LearnerSettings(**common, models_path=models_path, daily_enabled=False)),
        estimator_app(EstimatorSettings(**common)),
        assigner_app(
            AssignerSettings(
                **common, models_path=models_path, strategy="learned", max_attempts=max_attempts
            )
        ),
    ]
    for app in apps:
        await app.start()
    engine = create_engine(db_url)
    started = time.perf_counter()
    try:
        async with connect(base.nats_url, workspace=WORKSPACE, namespace=ns, source="bench") as sdk:
            queues: dict[str, asyncio.Queue[TaskAssigned | TaskDeferred]] = defaultdict(
                asyncio.Queue
            )
            ids = {original: f"t{i:05d}" for i, original in enumerate(order)}

            async def dispatch(q: asyncio.Queue[Any]) -> None:
                while True:
                    event = await q.get()
                    if isinstance(event, PolicyUpdated):
                        if replay.policy is None or event.version > replay.policy.version:
                            replay.policy = event
                    else:
                        queues[event.task_id].put_nowait(event)

            watchers = [
                sdk.client.watch(cls, lambda e: e.workspace == WORKSPACE)
                for cls in (TaskAssigned, TaskDeferred, PolicyUpdated)
            ]
            watched = [await w.__aenter__() for w in watchers]
            pumps = [asyncio.create_task(dispatch(q)) for q in watched]
            try:
                pending = iter(order)

                async def declined(task_id: str) -> bool:
                    t = assigner_tasks.c
                    async with engine.connect() as conn:
                        status = await conn.scalar(
                            select(t.status).where(t.namespace == ns, t.task_id == task_id)
                        )
                    return bool(status == "exhausted")

                async def worker() -> None:
                    for original in pending:
                        await run_task(sdk, replay, queues, original, ids[original], declined)

                await asyncio.gather(*(worker() for _ in range(concurrency)))
            finally:
                for pump in pumps:
                    pump.cancel()
                for w in reversed(watchers):
                    await w.__aexit__(None, None, None)
        elapsed = time.perf_counter() - started
        runs = sum(len(v) for v in replay.attempts.values())
        recorded_cost = await recorded(engine, runs)
    finally:
        await engine.dispose()
        for app in reversed(apps):
            await app.stop()
        await exits.aclose()
    return replay, elapsed, recorded_cost


async def recorded(engine: Any, runs: int, timeout_s: float = 60.0) -> float:
    """Total cost of the runs as the learner stored them from ``run.recorded``."""
    deadline = time.perf_counter() + timeout_s
    count = select(func.count()).select_from(learner_runs)
    while True:
        async with engine.connect() as conn:
            have = await conn.scalar(count.where(learner_runs.c.workspace == WORKSPACE))
            if have >= runs or time.perf_counter() > deadline:
                total = await conn.scalar(
                    select(func.coalesce(func.sum(learner_runs.c.cost_micros), 0)).where(
                        learner_runs.c.workspace == WORKSPACE
                    )
                )
                unknown = await conn.scalar(
                    select(func.count())
                    .select_from(learner_runs)
                    .where(
                        learner_runs.c.workspace == WORKSPACE,
                        (learner_runs.c.band == "unknown")
                        | (learner_runs.c.task_type == "unknown"),
                    )
                )
                print(f"runs learned: {have}, filed under an unknown type or band: {unknown}")
                return int(total) / 1_000_000
        await asyncio.sleep(0.2)


def row(f: Figures, best: Figures, unit: str) -> str:
    rate = (f.solved / f.cost) / (best.solved / best.cost) if f.cost and best.cost else float("nan")
    money = f"${f.cost:,.2f}" if unit == "USD" else f"{f.cost:,.0f}"
    return (
        f"  {f.name[:34]:34s} {f.solved:6d} {f.solved / best.solved:8.1%} {money:>12s}"
        f" {f.cost / best.cost:8.1%} {rate:10.2f}x {f.runs:6d}"
    )


def report(
    data: Dataset, order: Sequence[str], replay: Replay, elapsed: float, cost: float
) -> None:
    subset = {t: data.outcomes[t] for t in order}
    tally_ids = [f"t{i:05d}" for i in range(len(order))]
    best = best_single(subset, data.models)
    cheap = cheapest(subset, data.models)
    mine = replay.figures(tally_ids)
    unit = data.cost_unit
    types = Counter(task_type(t) for t in order)
    print(f"data: {len(order)} tasks of {len(types)} types, {len(data.models)} models", end="")
    print(f" (run_config {data.run_config!r})" if data.run_config else "")
    if data.dropped:
        print(f"  ({data.dropped} tasks left out: not every model has an outcome for them)")
    print(f"cost: {unit}" + ("" if unit == "USD" else " (the file has no cost_usd column)"))
    print(f"Tally: strategy learned, up to {replay.max_attempts} attempts, {elapsed:.0f} s")
    header = "  routing                            solved  vs best         cost  vs best"
    print(header + "  per cost    runs")
    print(row(mine, best, unit))
    print(row(Figures(f"best single: {best.name}", best.solved, best.cost, best.runs), best, unit))
    print(row(Figures(f"cheapest: {cheap.name}", cheap.solved, cheap.cost, cheap.runs), best, unit))
    print(row(oracle(subset), best, unit))
    first_try = sum(
        subset[t][replay.attempts[i][0]].success for t, i in zip(order, tally_ids, strict=True)
    )
    print(f"  Tally solved {first_try} at the first attempt; recorded by Tally: {cost:,.2f} {unit}")
    half = len(order) // 2
    for name, part in (("first half", slice(0, half)), ("second half", slice(half, None))):
        ids, originals = tally_ids[part], order[part]
        f = replay.figures(ids)
        b = single_model({t: data.outcomes[t] for t in originals}, best.name)
        print(
            f"  {name}: Tally {f.solved} solved for {f.cost:,.0f};"
            f" {best.name} alone {b.solved} for {b.cost:,.0f}"
        )
    firsts = Counter(replay.attempts[i][0] for i in tally_ids[half:])
    print("  first choices, second half: " + ", ".join(f"{m} {n}" for m, n in firsts.most_common()))
    if replay.policy is not None:
        spread = [max(p.values()) for p in replay.policy.probabilities.values() if p]
        print(
            f"  policy: version {replay.policy.version},"
            f" {len(replay.policy.probabilities)} task classes,"
            f" top probability median {statistics.median(spread):.2f}"
        )


#: Dollars per turn when a file counts turns: the geometric mean of the two models'
#: measured cost per API call in the paired file ($0.029 and $0.138).
PRICE_PER_TURN = 0.06
PAIRED_DATA = DEFAULT_DATA.with_name("swebench_pro_paired_gpt5_claude45_cost.csv")


def priced(data: Dataset, per_turn: float, prices: Mapping[str, float]) -> dict[str, Any]:
    """Outcomes in dollars: a turn costs ``prices[model]`` (else ``per_turn``) dollars."""
    from benchmarks.route_frontier import Played

    rate = {m: (prices.get(m, per_turn) if data.cost_unit == "turns" else 1.0) for m in data.models}
    return {
        t: {m: Played(o.success, o.cost * rate[m]) for m, o in per.items()}
        for t, per in data.outcomes.items()
    }


def show_frontier(path: Path, args: argparse.Namespace) -> None:
    from benchmarks.route_frontier import frontier
    from services.assigner.value import load_routing_values
    from tally.settings import CONFIG_DIR

    data = load(path, args.run_config)
    prices = yaml.safe_load(args.turn_prices.read_text()) if args.turn_prices else {}
    outcomes = priced(data, args.price_per_turn, prices or {})
    default = load_routing_values(CONFIG_DIR / "routing.yaml").default.usd
    types = Counter(task_type(t) for t in outcomes)
    print(f"\n{path.name}: {len(outcomes)} tasks of {len(types)} types, {len(data.models)} models")
    if data.run_config:
        print(f"  run_config {data.run_config!r}")
    if data.cost_unit == "turns":
        print(f"  cost: turns at ${args.price_per_turn} a turn (the file has no cost_usd)")
    frontier(
        outcomes,
        task_type,
        default_value=default,
        max_attempts=min(args.max_attempts, len(data.models)),
        n_orders=args.orders,
        first_seed=args.first_order,
        unit="USD" if data.cost_unit == "USD" else "turns",
        usd_per_unit=1.0 if data.cost_unit == "USD" else args.price_per_turn,
    )


async def main(args: argparse.Namespace) -> None:
    if not args.bus:
        for path in args.data or [DEFAULT_DATA, PAIRED_DATA]:
            if not path.exists():
                print(f"{path}: not found (public data beside the repository); skipped")
                continue
            show_frontier(path, args)
        return
    data = load((args.data or [DEFAULT_DATA])[0], args.run_config)
    if data.cost_unit == "turns":  # priced like the frontier's, so the value of a solve fits
        prices = yaml.safe_load(args.turn_prices.read_text()) if args.turn_prices else {}
        outcomes = priced(data, args.price_per_turn, prices or {})
        data = Dataset(
            {
                t: {m: Outcome(p.success, p.usd) for m, p in per.items()}
                for t, per in outcomes.items()
            },
            data.models,
            "USD",
            data.run_config,
            data.dropped,
        )
        print(f"turns priced at ${args.price_per_turn} a turn")
    # A task never goes back to a model that failed it: attempts cannot outnumber models.
    args.max_attempts = min(args.max_attempts, len(data.models))
    order = sorted(data.outcomes)
    random.Random(args.seed).shuffle(order)
    if args.tasks:
        order = order[: args.tasks]
    replay, elapsed, cost = await replay_all(
        TallySettings(),
        data,
        order,
        args.models,
        max_attempts=args.max_attempts,
        concurrency=args.concurrency,
    )
    report(data, order, replay, elapsed, cost)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, action="append", help="a CSV (repeatable)")
    parser.add_argument("--models", type=Path, default=None, help="a model registry YAML")
    parser.add_argument("--run-config", default=None, help="rows of this run_config only")
    parser.add_argument("--tasks", type=int, default=0, help="the first N (shuffled); 0: all")
    parser.add_argument("--max-attempts", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4, help="tasks in flight")
    parser.add_argument("--seed", type=int, default=0, help="task order")
    parser.add_argument("--orders", type=int, default=5, help="task orders for medians")
    parser.add_argument(
        "--first-order",
        type=int,
        default=0,
        help="seed of the first task order (tune on other orders than the 0-4 reported)",
    )
    parser.add_argument("--price-per-turn", type=float, default=PRICE_PER_TURN)
    parser.add_argument("--turn-prices", type=Path, default=None, help="YAML: model -> $/turn")
    parser.add_argument(
        "--bus", action="store_true", help="replay once through the real services instead"
    )
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    asyncio.run(main(args))
