"""A workspace's learned points model: the conditional median of its own point values.

Text (TF-IDF over title and description) feeds a multinomial logistic regression that gives,
for a new task, a probability for every point value the workspace has used (its own scale:
0.5, 4, 40 or 100 included). That distribution is mixed with the history's distribution of
points, and the estimate is the median of the mixture, which is what mean absolute error
rewards. The mixing weight is the shrinkage toward the history median: it is chosen per
workspace by rolling-origin validation inside its history only (each block of the newest
half estimated from the tasks before it), and a weight of 0 *is* the history median, the
baseline: a workspace whose text does not predict its points is estimated by its median,
and says so (:attr:`PointsFit.beats_median`). The nearest past tasks by text are kept as
evidence on every estimate.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import sklearn
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from services.estimator.scoring import PointsConfig


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
    model: str | None = None


@dataclass(frozen=True)
class Neighbour:
    """A past task cited as evidence for an estimate."""

    task_id: str
    title: str
    points: float
    similarity: float


@dataclass(frozen=True)
class PointsFit:
    """How a workspace's points model was chosen, on its own history only.

    Attributes:
        weight: Share of the text model in the mixture (0: the history median).
        validation_tasks: History tasks estimated out of sample to choose ``weight``.
        model_mae: Mean absolute error there at ``weight``.
        median_mae: The same for the history median (weight 0).
    """

    weight: float
    validation_tasks: int
    model_mae: float | None
    median_mae: float | None

    @property
    def beats_median(self) -> bool:
        """Whether the text model earned a share: it beat the median inside history."""
        return self.weight > 0


def task_text(title: str, description: str) -> str:
    """The text the model reads: title and description."""
    return f"{title}\n{description}"


class _TextModel:
    """TF-IDF and a logistic regression over a workspace's point values."""

    def __init__(
        self, texts: Sequence[str], codes: np.ndarray, n_values: int, config: PointsConfig
    ) -> None:
        self.n_values = n_values
        self.vectorizer: TfidfVectorizer | None = None
        self.matrix: sp.csr_matrix | None = None
        #: ``matrix`` transposed once, so a query's similarities are one product.
        self.matrix_t: sp.csr_matrix | None = None
        self.classifier: LogisticRegression | None = None
        for min_df in (min(config.min_df, max(len(texts) - 1, 1)), 1):
            vectorizer = TfidfVectorizer(
                sublinear_tf=True,
                stop_words="english",
                min_df=min_df,
                max_features=config.max_features,
                dtype=np.float32,
            )
            try:
                self.matrix = sp.csr_matrix(vectorizer.fit_transform(texts))
            except ValueError:  # no word survives (empty or stop-word-only texts)
                continue
            self.vectorizer = vectorizer
            self.matrix_t = sp.csr_matrix(self.matrix.T)
            break
        if self.vectorizer is None or len(np.unique(codes)) < 2:
            return
        with warnings.catch_warnings():
            # A few extra iterations change the probabilities in the third decimal.
            warnings.simplefilter("ignore", ConvergenceWarning)
            # Newton-CG reaches the same optimum as the default L-BFGS ~10x sooner here.
            self.classifier = LogisticRegression(
                C=config.regularisation, solver="newton-cg", max_iter=300
            )
            self.classifier.fit(self.matrix, codes)

    def transform(self, texts: Sequence[str]) -> sp.csr_matrix | None:
        if self.vectorizer is None:
            return None
        return sp.csr_matrix(self.vectorizer.transform(texts))

    def probabilities(self, query: sp.csr_matrix | None, rows: int) -> np.ndarray | None:
        """Probability of each point value per row, or None when text says nothing."""
        if self.classifier is None or query is None:
            return None
        out = np.zeros((rows, self.n_values))
        out[:, self.classifier.classes_] = self.classifier.predict_proba(query)
        return out


def _medians(mixture: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The median value of each row's distribution over ``values``."""
    cumulative = np.cumsum(mixture, axis=1)
    below = (cumulative < 0.5 * cumulative[:, -1:] - 1e-12).sum(axis=1)
    return np.asarray(values[np.minimum(below, len(values) - 1)])


def _mixture(prior: np.ndarray, text: np.ndarray | None, weight: float, rows: int) -> np.ndarray:
    base = np.broadcast_to(prior, (rows, len(prior)))
    if text is None or weight <= 0:
        return np.array(base)
    return np.asarray(weight * text + (1.0 - weight) * base)


class PointsModel:
    """A workspace's points model, fitted on its completed tasks (oldest first).

    Example:
        >>> tasks = [HistoricalTask(str(i), "fix typo", "", 1.0) for i in range(5)]
        >>> PointsModel(tasks, PointsConfig()).predict(["fix a typo"], [""])[0].points
        1.0
    """

    def __init__(self, tasks: Sequence[HistoricalTask], config: PointsConfig) -> None:
        self.tasks = tuple(tasks)
        self.config = config
        self.points = np.array([t.story_points for t in self.tasks], dtype=float)
        #: The workspace's own scale: every point value its history uses.
        self.values = np.unique(self.points)
        codes = np.searchsorted(self.values, self.points)
        self.prior = np.bincount(codes, minlength=len(self.values)) / max(len(codes), 1)
        texts = [task_text(t.title, t.description) for t in self.tasks]
        self.fit = self._choose_weight(texts, codes)
        self._text = _TextModel(texts, codes, len(self.values), config) if self.tasks else None

    def __len__(self) -> int:
        return len(self.tasks)

    @property
    def median(self) -> float:
        """The history median on the workspace's scale (the baseline)."""
        return float(_medians(self.prior[np.newaxis, :], self.values)[0])

    def _choose_weight(self, texts: list[str], codes: np.ndarray) -> PointsFit:
        """Rolling origin inside history: each block estimated from the tasks before it."""
        n, cfg = len(texts), self.config
        if n < cfg.min_history:
            return PointsFit(0.0, 0, None, None)
        start = n - int(n * cfg.validation_share)
        cuts = np.linspace(start, n, cfg.folds + 1).astype(int)
        weights = np.round(np.arange(0.0, 1.0 + 1e-9, cfg.weight_step), 6)
        errors = np.zeros(len(weights))
        for lo, hi in itertools.pairwise(cuts):
            if hi <= lo:
                continue
            past = codes[:lo]
            prior = np.bincount(past, minlength=len(self.values)) / lo
            text = _TextModel(texts[:lo], past, len(self.values), cfg)
            probs = text.probabilities(text.transform(texts[lo:hi]), hi - lo)
            actual = self.values[codes[lo:hi]]
            for i, w in enumerate(weights):
                guess = _medians(_mixture(prior, probs, float(w), hi - lo), self.values)
                errors[i] += float(np.abs(guess - actual).sum())
        held = int(cuts[-1] - cuts[0])
        best = int(np.argmin(errors))  # the first minimum: the median wins ties
        return PointsFit(
            float(weights[best]), held, float(errors[best] / held), float(errors[0] / held)
        )

    def predict(self, titles: Sequence[str], descriptions: Sequence[str]) -> list[PointsPrediction]:
        """Points and evidence for each task (title and description pairs)."""
        texts = [task_text(t, d) for t, d in zip(titles, descriptions, strict=True)]
        if not self.tasks or self._text is None:
            raise ValueError("a points model needs history; use cold-start priors without it")
        # Inputs are our own fitted objects and strings: skip re-validating them per call.
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
            query = self._text.transform(texts)
            probs = self._text.probabilities(query, len(texts))
        mixture = _mixture(self.prior, probs, self.fit.weight, len(texts))
        medians = _medians(mixture, self.values)
        if query is None or self._text.matrix_t is None:
            return [PointsPrediction(float(medians[i]), (), mixture[i]) for i in range(len(texts))]
        # The index: the history's normalised TF-IDF rows, term by term (``matrix_t``), so
        # the product visits only the past tasks sharing a word with the query; the top k
        # are picked among those, never from a dense row over the whole history.
        sims = query @ self._text.matrix_t
        return [
            PointsPrediction(
                float(medians[i]),
                self._cite(
                    sims.indices[sims.indptr[i] : sims.indptr[i + 1]],
                    sims.data[sims.indptr[i] : sims.indptr[i + 1]],
                ),
                mixture[i],
            )
            for i in range(len(texts))
        ]

    def _cite(self, rows: np.ndarray, sims: np.ndarray) -> tuple[Neighbour, ...]:
        """The most similar of the past tasks ``rows`` (with similarities ``sims``)."""
        k = min(self.config.evidence, len(sims))
        if k == 0:
            return ()
        top = np.argpartition(-sims, k - 1)[:k] if k < len(sims) else np.arange(len(sims))
        top = top[np.lexsort((rows[top], -sims[top]))]  # most similar first, then oldest
        return tuple(
            Neighbour(
                self.tasks[rows[j]].task_id,
                self.tasks[rows[j]].title,
                float(self.points[rows[j]]),
                round(float(sims[j]), 4),
            )
            for j in top
            if sims[j] > 0
        )

    def to_scale(self, raw: float) -> float:
        """The workspace's point value nearest ``raw`` (by ratio; 0 only for 0)."""
        positive = self.values[self.values > 0]
        if raw <= 0 or len(positive) == 0:
            return float(self.values[0])
        return float(positive[np.argmin(np.abs(np.log(positive) - np.log(raw)))])


@dataclass(frozen=True)
class PointsPrediction:
    """One task's points: the median of the mixture, its evidence and distribution."""

    points: float
    evidence: tuple[Neighbour, ...]
    distribution: np.ndarray
