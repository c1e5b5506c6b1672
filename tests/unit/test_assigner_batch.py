"""Batch plans: the exact MILP finds the best total value; greedy is close on large batches."""

from __future__ import annotations

import itertools
import random

from services.assigner.batch import BatchTask, Option, Room, greedy, plan_batch


def opt(model: str, sub: str, tokens: int, micro: int = 0) -> Option:
    return Option(model, sub, tokens, micro)


def brute_force(tasks: list[BatchTask], room: dict[str, Room]) -> float:
    best = 0.0
    for choice in itertools.product(*[[None, *t.options] for t in tasks]):
        used: dict[str, list[int]] = {}
        for o in choice:
            if o is not None:
                u = used.setdefault(o.subscription, [0, 0])
                u[0] += o.tokens
                u[1] += o.micro_usd
        fits = all(
            s in room
            and (room[s].tokens is None or u[0] <= room[s].tokens)
            and (room[s].micro_usd is None or u[1] <= room[s].micro_usd)
            for s, u in used.items()
        )
        if fits:
            value = sum(t.value for t, o in zip(tasks, choice, strict=True) if o is not None)
            best = max(best, value)
    return best


def test_the_exact_plan_beats_greedy_where_value_per_token_misleads() -> None:
    # Greedy takes the dense small task first and then cannot fit the big valuable one.
    tasks = [
        BatchTask("small", 10, (opt("m", "s", 10),)),
        BatchTask("big", 95, (opt("m", "s", 100),)),
    ]
    room = {"s": Room(tokens=100)}
    assert greedy(tasks, room).total_value(tasks) == 10
    plan = plan_batch(tasks, room)
    assert plan.method == "milp"
    assert plan.chosen["big"] is not None and plan.chosen["small"] is None


def test_the_exact_plan_matches_brute_force_and_respects_every_limit() -> None:
    rng = random.Random(7)
    for _ in range(30):
        subs = {"a": Room(tokens=rng.randint(50, 300)), "b": Room(micro_usd=rng.randint(50, 300))}
        tasks = [
            BatchTask(
                f"t{i}",
                float(rng.randint(0, 100)),
                tuple(
                    opt(f"m{j}", rng.choice("ab"), rng.randint(10, 150), rng.randint(10, 150))
                    for j in range(rng.randint(1, 3))
                ),
            )
            for i in range(5)
        ]
        plan = plan_batch(tasks, subs)
        assert plan.total_value(tasks) == brute_force(tasks, subs)
        for name, r in subs.items():
            chosen = [o for o in plan.chosen.values() if o and o.subscription == name]
            assert r.tokens is None or sum(o.tokens for o in chosen) <= r.tokens
            assert r.micro_usd is None or sum(o.micro_usd for o in chosen) <= r.micro_usd


def test_the_strategys_first_option_is_kept_when_value_is_equal() -> None:
    tasks = [BatchTask("t", 50, (opt("premium", "s", 10), opt("cheap", "s", 5)))]
    plan = plan_batch(tasks, {"s": Room(tokens=100)})
    assert plan.chosen["t"] == tasks[0].options[0]


def test_large_batches_are_planned_greedily_within_the_limits() -> None:
    rng = random.Random(3)
    tasks = [
        BatchTask(f"t{i}", float(rng.randint(1, 100)), (opt("m", "s", rng.randint(1, 50)),))
        for i in range(300)
    ]
    plan = plan_batch(tasks, {"s": Room(tokens=2_000)}, exact_max_pairs=100)
    assert plan.method == "greedy"
    assert sum(o.tokens for o in plan.chosen.values() if o) <= 2_000
    assert sum(o is not None for o in plan.chosen.values()) > 50


def test_tasks_without_room_stay_pending() -> None:
    tasks = [BatchTask("t", 50, (opt("m", "gone", 10),))]
    assert plan_batch(tasks, {"s": Room(tokens=100)}).chosen == {"t": None}
