"""Story points learned from a workspace's finished tasks.

The estimate is a weighted median of past tasks' points. Every past task carries a little
weight (the workspace's own distribution, so a task with no close neighbour lands on the
history's median), tasks that share the new task's type, labels, size words or length
carry a little more, and the nearest tasks by text (TF-IDF cosine) carry weight that grows
with their similarity. The median keeps one outlier from dragging the estimate, which is
what mean absolute error rewards. Without history, points come from feature priors.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import scipy.sparse as sp

from services.estimator.decompose import (
    SubtaskSpec,
    TaskFeatures,
    decompose,
    extract_features,
    words,
)
from services.estimator.scoring import ColdStartPriors, PointsConfig
from tally.events.tasks import Band, band

#: The scale Tally shows users.
FIBONACCI: tuple[int, ...] = (1, 2, 3, 5, 8, 13, 21)


_STOPWORD_TEXT = (
    "a an and are as at be but by for from has have if in into is it its of on or that the "
    "this to was were will with when which should would can not no we i you they"
)
#: Words too common to tell tasks apart.
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
#: Upper bounds of the description-length buckets (words) used as a learned size group.
_LENGTH_BUCKETS = (15, 40, 100, 250)


def to_fibonacci(raw: float) -> int:
    """Nearest Fibonacci point in log space (so 4 rounds to 5, not 3), clamped to 1-21."""
    if not math.isfinite(raw) or raw <= FIBONACCI[0]:
        return FIBONACCI[0]
    return min(FIBONACCI, key=lambda f: abs(math.log(f) - math.log(raw)))


@dataclass(frozen=True)
class HistoricalTask:
    """A completed task and the points it turned out to be worth."""

    task_id: str
    title: str
    description: str
    story_points: float
    task_type: str | None = None
    labels: tuple[str, ...] = ()
    actual_hours: float | None = None


@dataclass(frozen=True)
class Neighbour:
    """A past task cited as evidence for an estimate."""

    task_id: str
    title: str
    points: float
    similarity: float


@dataclass(frozen=True)
class PointsQuery:
    """The text and metadata of the task being estimated."""

    title: str
    description: str = ""
    task_type: str | None = None
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class PointsEstimate:
    """Points for one task, with the evidence behind them.

    Attributes:
        points: Fibonacci points shown to users.
        raw: The model's unrounded estimate.
        band: Complexity band of ``points``.
        evidence: Nearest past tasks, most similar first.
        confidence: Share of the estimate's weight carried by similar past tasks (0-1).
        source: ``history`` when learned from the workspace, ``prior`` on a cold start.
    """

    points: int
    raw: float
    band: Band
    evidence: tuple[Neighbour, ...] = ()
    confidence: float = 0.0
    source: Literal["history", "prior"] = "history"


@dataclass(frozen=True)
class SubtaskPoints:
    """A subtask's share of its task's points."""

    subtask: SubtaskSpec
    points: int
    raw: float


@dataclass(frozen=True)
class TaskPointsEstimate:
    """Points for a task in total and per subtask."""

    total: PointsEstimate
    subtasks: tuple[SubtaskPoints, ...] = field(default_factory=tuple)


def _terms(text: str) -> list[str]:
    return [w for w in words(text) if len(w) > 1 and w not in _STOPWORDS and not w.isdigit()]


def _group_keys(features: TaskFeatures) -> list[str]:
    """Keys of the groups a task belongs to: type, labels, size words, length bucket."""
    keys = [f"label:{label}" for label in features.labels]
    if features.task_type:
        keys.append(f"type:{features.task_type}")
    keys.extend(f"word:{w}" for w in features.size_words)
    bucket = sum(features.word_count > edge for edge in _LENGTH_BUCKETS)
    keys.append(f"length:{bucket}")
    return keys


class HistoryIndex:
    """Completed tasks of one workspace, searchable by text similarity.

    Texts are weighted by TF-IDF (sublinear term frequency, smoothed idf) and compared by
    cosine similarity, so similarities lie in [0, 1].
    """

    def __init__(self, tasks: Sequence[HistoricalTask]) -> None:
        self.tasks: tuple[HistoricalTask, ...] = tuple(tasks)
        self.points = np.array([t.story_points for t in self.tasks], dtype=float)
        self._values, self._codes = np.unique(self.points, return_inverse=True)
        docs = [_terms(f"{t.title} {t.description}") for t in self.tasks]
        self._vocab: dict[str, int] = {}
        rows: list[int] = []
        cols: list[int] = []
        counts: list[int] = []
        for i, doc in enumerate(docs):
            tf: dict[int, int] = defaultdict(int)
            for term in doc:
                tf[self._vocab.setdefault(term, len(self._vocab))] += 1
            rows.extend([i] * len(tf))
            cols.extend(tf.keys())
            counts.extend(tf.values())
        shape = (len(docs), max(len(self._vocab), 1))
        matrix = sp.csr_matrix((np.array(counts, dtype=np.float64), (rows, cols)), shape=shape)
        df = np.bincount(matrix.indices, minlength=shape[1])
        self._idf = np.log((1.0 + len(docs)) / (1.0 + df)) + 1.0
        self._matrix = self._normalise(matrix)
        self._groups: dict[str, np.ndarray] = {}
        members: dict[str, list[int]] = defaultdict(list)
        for i, t in enumerate(self.tasks):
            features = extract_features(t.title, t.description, t.labels, t.task_type)
            for key in _group_keys(features):
                members[key].append(i)
        self._groups = {key: np.array(idx) for key, idx in members.items()}

    def __len__(self) -> int:
        return len(self.tasks)

    def _normalise(self, counts: sp.csr_matrix) -> sp.csr_matrix:
        weighted = counts.copy()
        weighted.data = 1.0 + np.log(weighted.data)
        weighted = sp.csr_matrix(weighted.multiply(self._idf[np.newaxis, :]))
        norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        return sp.csr_matrix(sp.diags(1.0 / norms) @ weighted)

    def similarities(self, text: str) -> np.ndarray:
        """Cosine similarity of ``text`` to every past task, in index order."""
        if not self.tasks:
            return np.zeros(0)
        tf: dict[int, int] = defaultdict(int)
        for term in _terms(text):
            if term in self._vocab:
                tf[self._vocab[term]] += 1
        if not tf:
            return np.zeros(len(self.tasks))
        query = sp.csr_matrix(
            (np.array(list(tf.values()), dtype=float), ([0] * len(tf), list(tf.keys()))),
            shape=(1, self._matrix.shape[1]),
        )
        return np.asarray((self._matrix @ self._normalise(query).T).todense()).ravel()

    def nearest(self, text: str, k: int = 5) -> list[Neighbour]:
        """The ``k`` past tasks most similar to ``text``, most similar first."""
        return self.cite(self.similarities(text), k)

    def group_members(self, features: TaskFeatures, min_samples: int) -> list[np.ndarray]:
        """Indices of past tasks per group the task shares, for groups of enough tasks."""
        found = (self._groups.get(key) for key in _group_keys(features))
        return [idx for idx in found if idx is not None and len(idx) >= min_samples]

    @staticmethod
    def _top(sims: np.ndarray, k: int) -> np.ndarray:
        if len(sims) <= k:
            return np.argsort(-sims, kind="stable")
        top = np.argpartition(-sims, k)[:k]
        return top[np.argsort(-sims[top], kind="stable")]

    def cite(self, sims: np.ndarray, k: int) -> list[Neighbour]:
        """The ``k`` past tasks with the highest of the given similarities, as evidence."""
        return [
            Neighbour(
                task_id=self.tasks[i].task_id,
                title=self.tasks[i].title,
                points=float(self.points[i]),
                similarity=round(float(sims[i]), 4),
            )
            for i in self._top(sims, k)
        ]

    def weighted_median(self, weights: np.ndarray) -> float:
        """The point value at which half the weight lies below and half above."""
        mass = np.bincount(self._codes, weights=weights, minlength=len(self._values))
        cumulative = np.cumsum(mass)
        return float(self._values[np.searchsorted(cumulative, cumulative[-1] / 2.0)])


def _history_estimate(
    index: HistoryIndex, sims: np.ndarray, groups: list[np.ndarray], config: PointsConfig
) -> tuple[float, float, np.ndarray]:
    """Weighted median of history; returns (raw, confidence, voting neighbours)."""
    if config.recency_half_life > 0:
        age = np.arange(len(index))[::-1]
        decay = np.exp2(-age / config.recency_half_life)
        weights = config.prior_mass * decay / decay.sum()
    else:
        weights = np.full(len(index), config.prior_mass / len(index))
    for members in groups:
        weights[members] += config.group_mass / (len(groups) * len(members))
    top = HistoryIndex._top(sims, config.k)
    top = top[sims[top] >= config.min_similarity]
    votes = config.neighbour_weight * sims[top] ** config.power
    weights[top] += votes
    neighbour_mass = float(votes.sum())
    confidence = neighbour_mass / (neighbour_mass + config.prior_mass + config.group_mass)
    return index.weighted_median(weights), confidence, top


def cold_start_points(features: TaskFeatures, priors: ColdStartPriors) -> float:
    """Points guessed from features alone: type base, size words, files, criteria, lines."""
    raw = priors.type_points.get(features.task_type or "", priors.base_points)
    for word in features.size_words:
        raw *= priors.size_word_factors.get(word, 1.0)
    raw *= 1.0 + priors.per_file * max(features.files_count - 1, 0)
    raw *= 1.0 + priors.per_acceptance * features.acceptance_count
    raw *= 1.0 + priors.per_subtask * max(features.subtask_count - 1, 0)
    if features.estimated_lines:
        # A stated size is the author's own evidence: meet it halfway (geometric mean).
        raw = math.sqrt(raw * max(features.estimated_lines / priors.lines_per_point, 0.5))
    return raw


def estimate_points(
    task: PointsQuery, index: HistoryIndex, config: PointsConfig | None = None, evidence: int = 5
) -> PointsEstimate:
    """Estimate a task's points from the workspace's history, or from priors when it has none.

    Args:
        task: Title, description, type and labels of the task.
        index: The workspace's completed tasks.
        config: Combination weights and cold-start priors.
        evidence: How many nearest tasks to cite.
    """
    config = config or PointsConfig()
    features = extract_features(task.title, task.description, task.labels, task.task_type)
    if len(index) == 0:
        raw = cold_start_points(features, config.cold_start)
        points = to_fibonacci(raw)
        return PointsEstimate(points, raw, band(points), confidence=0.0, source="prior")
    sims = index.similarities(f"{task.title} {task.description}")
    groups = index.group_members(features, config.min_group_samples)
    raw, confidence, _ = _history_estimate(index, sims, groups, config)
    points = to_fibonacci(raw)
    cited = tuple(n for n in index.cite(sims, evidence) if n.similarity > 0)
    return PointsEstimate(points, raw, band(points), cited, round(confidence, 3))


def estimate_task_points(
    task: PointsQuery,
    index: HistoryIndex,
    config: PointsConfig | None = None,
    subtasks: Sequence[str | SubtaskSpec] | None = None,
) -> TaskPointsEstimate:
    """Points for a task and its subtasks.

    The total is estimated from the whole task, since history records whole tasks. Each
    subtask receives a share of the total in proportion to its own estimate, rounded to
    Fibonacci, so subtask points may sum to a little more than the total.
    """
    total = estimate_points(task, index, config)
    specs = decompose(task.title, task.description, subtasks)
    if len(specs) == 1:
        return TaskPointsEstimate(total, (SubtaskPoints(specs[0], total.points, total.raw),))
    own = [
        estimate_points(
            PointsQuery(s.title, s.description, task.task_type, task.labels), index, config
        ).raw
        for s in specs
    ]
    scale = total.raw / sum(own) if sum(own) > 0 else 1.0 / len(specs)
    parts = tuple(
        SubtaskPoints(s, to_fibonacci(raw * scale), raw * scale)
        for s, raw in zip(specs, own, strict=True)
    )
    return TaskPointsEstimate(total, parts)
