"""The nearest past tasks come from the sparse index exactly as a full scan would find them,
and risk keywords match as whole words in one pass per rule."""

from __future__ import annotations

import random

import pytest

from services.estimator.points_model import HistoricalTask, PointsModel, task_text
from services.estimator.scoring import PointsConfig
from services.estimator.value import _mentions

WORDS = [
    "login",
    "redirect",
    "oauth",
    "callback",
    "cache",
    "invalidate",
    "search",
    "index",
    "query",
    "planner",
    "export",
    "csv",
    "page",
    "cursor",
    "token",
    "quota",
    "reserve",
    "settle",
    "ledger",
    "redis",
    "postgres",
    "nats",
    "stream",
    "consumer",
    "retry",
    "backoff",
    "dashboard",
    "chart",
    "latency",
    "estimate",
    "points",
    "hours",
    "model",
    "routing",
    "policy",
]


def history(n: int, seed: int) -> list[HistoricalTask]:
    rnd = random.Random(seed)
    return [
        HistoricalTask(
            f"T-{i}",
            " ".join(rnd.sample(WORDS, rnd.randrange(2, 6))),
            " ".join(rnd.choices(WORDS, k=rnd.randrange(0, 25))),
            float(rnd.choice([1, 2, 3, 5, 8, 13])),
        )
        for i in range(n)
    ]


def brute_force(model: PointsModel, title: str, description: str, k: int) -> list[tuple]:
    """Cosine similarity against every past task (a dense scan), most similar first."""
    text_model = model._text
    assert text_model is not None and text_model.matrix is not None
    query = text_model.transform([task_text(title, description)])
    sims = (text_model.matrix @ query.T).toarray().ravel()
    order = sorted(range(len(sims)), key=lambda i: (-sims[i], i))
    return [(model.tasks[i].task_id, round(float(sims[i]), 4)) for i in order[:k] if sims[i] > 0]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_cited_neighbours_are_the_most_similar_of_the_whole_history(seed: int) -> None:
    tasks = history(600, seed)
    model = PointsModel(tasks, PointsConfig())
    rnd = random.Random(seed + 100)
    queries = [
        (" ".join(rnd.sample(WORDS, 3)), " ".join(rnd.choices(WORDS, k=8))) for _ in range(40)
    ]
    found = model.predict([q[0] for q in queries], [q[1] for q in queries])
    for (title, description), prediction in zip(queries, found, strict=True):
        cited = [(n.task_id, n.similarity) for n in prediction.evidence]
        expected = brute_force(model, title, description, PointsConfig().evidence)
        # Same similarities in the same order; ids equal unless two tasks tie at the cut.
        assert [s for _, s in cited] == pytest.approx([s for _, s in expected], abs=1e-4)
        cut = expected[-1][1] if expected else 0.0
        above_cut = {i for i, s in expected if s > cut + 1e-4}
        assert above_cut <= {i for i, _ in cited}


def test_a_query_sharing_no_word_cites_nothing() -> None:
    model = PointsModel(history(50, 4), PointsConfig())
    assert model.predict(["zzz qqq"], [""])[0].evidence == ()


@pytest.mark.parametrize(
    ("keywords", "text", "expected"),
    [
        (["auth", "payment"], "fix the auth flow", True),
        (["auth", "payment"], "fix the author list", False),
        (["auth", "payment"], "payment-gateway timeout", False),  # hyphenated: another word
        (["pay", "payment"], "a payment failed", True),  # a longer keyword after a prefix
        (["c++", "a.b"], "port to c++ now", True),
        ([], "anything", False),
    ],
)
def test_risk_keywords_match_as_whole_words(keywords: list[str], text: str, expected: bool) -> None:
    assert _mentions(keywords, [text]) is expected


def test_one_pattern_per_rule_agrees_with_each_keyword_alone() -> None:
    import re

    rnd = random.Random(9)
    for _ in range(300):
        keywords = rnd.sample([*WORDS, "sec", "security", "pay-ment", "db"], 3)
        text = " ".join(rnd.choices([*WORDS, "securityx", "x-db", "db-x", "sec."], k=12))
        alone = any(
            re.search(rf"(?<![\w-]){re.escape(k)}(?![\w-])", text) is not None for k in keywords
        )
        assert _mentions(keywords, [text]) is alone, (keywords, text)
