"""A workspace's learned points model: the conditional median of its own point values.

Three estimates of a task's conditional median, each a value of the workspace's own scale
(0.5, 4, 40 or 100 included), all from TF-IDF of title and description:

- the median of a mixture of three distributions over the point values: the share of the
  ``neighbours`` nearest past tasks (cosine) that had each value, a multinomial logistic
  regression, and the history's distribution of points (the shrinkage toward the median);
- the median of the ``neighbours`` nearest past tasks' points;
- an ordinal model: one logistic regression per point value for "at least this value", whose
  probabilities give the largest value the task reaches with probability one half.

The estimate is the median of the three (so any two that agree decide), which is what mean
absolute error rewards. Everything was chosen on the middle 20% of public story-point
projects, never their test part. A workspace can also check the model against its history
median by rolling-origin validation inside its own history (each block of the newest half
estimated from the tasks before it) and use the median where the model does not beat it
(:attr:`PointsFit.beats_median`); that check is off by default, as it lost on the middle
20%. The nearest past tasks are kept as evidence on every estimate.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import sklearn
from scipy.special import expit
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
        weight: Share of the text (neighbours and classifier) in the mixture; 0 when the
            workspace is estimated by its history median (a history under
            ``min_history`` tasks, or, with ``check_against_median``, a model that did not
            beat the median inside history).
        validation_tasks: History tasks estimated out of sample to check the model (0 when
            it was not checked).
        model_mae: Mean absolute error of the model there.
        median_mae: The same for the history median.
    """

    weight: float
    validation_tasks: int
    model_mae: float | None
    median_mae: float | None

    @property
    def beats_median(self) -> bool:
        """Whether the text model estimates this workspace (not its history median)."""
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
        #: The ordinal model, one column per point value above the smallest: weights and
        #: intercepts of a logistic regression for "at least this value", stacked so that a
        #: query's probabilities are one product; where one side has too few past tasks the
        #: column is the history's share at or above the value (``ordinal_fixed``, else NaN).
        self.ordinal_weights: np.ndarray | None = None
        self.ordinal_intercepts = np.zeros(max(n_values - 1, 0))
        self.ordinal_fixed = np.full(max(n_values - 1, 0), np.nan)
        if self.vectorizer is None or self.matrix is None or len(np.unique(codes)) < 2:
            return
        self.ordinal_weights = np.zeros((self.matrix.shape[1], n_values - 1))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            for code in range(1, n_values):
                above = (codes >= code).astype(int)
                if min(above.sum(), len(above) - above.sum()) < config.ordinal_min_class:
                    self.ordinal_fixed[code - 1] = above.mean()
                    continue
                fitted = LogisticRegression(C=config.ordinal_regularisation, max_iter=300)
                fitted.fit(self.matrix, above)
                self.ordinal_weights[:, code - 1] = fitted.coef_[0]
                self.ordinal_intercepts[code - 1] = fitted.intercept_[0]
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

    def ordinal_medians(self, query: sp.csr_matrix | None, rows: int) -> np.ndarray | None:
        """Per row, the largest value code reached with probability at least one half."""
        if self.ordinal_weights is None or query is None:
            return None
        at_least = np.ones((rows, self.n_values))
        at_least[:, 1:] = expit(query @ self.ordinal_weights + self.ordinal_intercepts)
        fixed = ~np.isnan(self.ordinal_fixed)
        at_least[:, 1:][:, fixed] = self.ordinal_fixed[fixed]
        # "At least a larger value" can never be likelier than "at least a smaller one".
        at_least = np.minimum.accumulate(at_least, axis=1)
        return np.asarray((at_least >= 0.5).sum(axis=1) - 1)

    def similarities(self, query: sp.csr_matrix | None) -> sp.csr_matrix | None:
        """Cosine similarity of each query row to the past tasks sharing a word with it.

        The index is the history's normalised TF-IDF rows, term by term (``matrix_t``), so
        the product visits only those past tasks: a sparse row each, never a dense row over
        the whole history.
        """
        if query is None or self.matrix_t is None:
            return None
        return sp.csr_matrix(query @ self.matrix_t)


def _top(rows: np.ndarray, sims: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` most similar of ``rows`` (most similar first, then oldest)."""
    k = min(k, len(sims))
    if k == 0:
        return np.zeros(0, dtype=int)
    top = np.argpartition(-sims, k - 1)[:k] if k < len(sims) else np.arange(len(sims))
    return np.asarray(top[np.lexsort((rows[top], -sims[top]))])


def _row(sims: sp.csr_matrix, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Row ``i`` of a sparse similarity matrix: (past task indices, similarities)."""
    lo, hi = sims.indptr[i], sims.indptr[i + 1]
    return sims.indices[lo:hi], sims.data[lo:hi]


def _neighbour_votes(
    sims: sp.csr_matrix | None, codes: np.ndarray, prior: np.ndarray, k: int, rows: int
) -> np.ndarray:
    """Each row's share of its ``k`` nearest past tasks that had each point value.

    Each of the ``k`` nearest carries ``1 / k``. Where fewer than ``k`` past tasks share a
    word with the query, the rest of the ``k`` are no nearer than any other past task: their
    share goes to the history's distribution, which is what such tasks vote on average.
    """
    out = np.zeros((rows, len(prior)))
    for i in range(rows):
        found = 0
        if sims is not None:
            past, sim = _row(sims, i)
            positive = sim > 0
            past, sim = past[positive], sim[positive]
            nearest = past[_top(past, sim, k)]
            found = len(nearest)
            np.add.at(out[i], codes[nearest], 1.0 / k)
        out[i] += prior * (k - found) / k
    return out


def _medians(mixture: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The median value of each row's distribution over ``values``."""
    cumulative = np.cumsum(mixture, axis=1)
    below = (cumulative < 0.5 * cumulative[:, -1:] - 1e-12).sum(axis=1)
    return np.asarray(values[np.minimum(below, len(values) - 1)])


@dataclass(frozen=True)
class _TextSignals:
    """What the text says about a batch of tasks, before it is turned into points."""

    votes: np.ndarray
    probs: np.ndarray
    #: Per row, the ordinal model's median as a value code (None: text says nothing).
    ordinal: np.ndarray | None
    sims: sp.csr_matrix | None


def _text_signals(
    text: _TextModel, texts: Sequence[str], codes: np.ndarray, prior: np.ndarray, k: int
) -> _TextSignals:
    """Neighbour votes, classifier probabilities, ordinal medians and similarities."""
    rows = len(texts)
    query = text.transform(texts)
    sims = text.similarities(query)
    votes = _neighbour_votes(sims, codes, prior, k, rows)
    probs = text.probabilities(query, rows)
    if probs is None:  # one point value only, or no words: the classifier says the prior
        probs = np.array(np.broadcast_to(prior, (rows, len(prior))))
    return _TextSignals(votes, probs, text.ordinal_medians(query, rows), sims)


def _points(
    signals: _TextSignals, prior: np.ndarray, values: np.ndarray, config: PointsConfig, on: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(points, mixture) per row: the median of the three estimates, or the history median."""
    mixture = _mixture(prior, signals.votes, signals.probs, config, on)
    medians = _medians(mixture, values)
    if not on:
        return medians, mixture
    base = np.broadcast_to(prior, signals.votes.shape)
    ordinal = signals.ordinal
    if ordinal is None:  # no words or one value: the ordinal model says the history median
        ordinal = np.searchsorted(values, _medians(base, values))
    estimates = np.vstack([medians, _medians(signals.votes, values), values[ordinal]])
    # The median of three values of the scale is one of them: on the scale.
    return np.median(estimates, axis=0), mixture


def _mixture(
    prior: np.ndarray, votes: np.ndarray, probs: np.ndarray, config: PointsConfig, on: bool
) -> np.ndarray:
    base = np.broadcast_to(prior, probs.shape)
    if not on:
        return np.array(base)
    rest = 1.0 - config.neighbour_share - config.classifier_share
    return np.asarray(
        config.neighbour_share * votes + config.classifier_share * probs + rest * base
    )


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
        self.codes = codes
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
        if not cfg.check_against_median:
            return PointsFit(cfg.neighbour_share + cfg.classifier_share, 0, None, None)
        start = n - int(n * cfg.validation_share)
        cuts = np.linspace(start, n, cfg.folds + 1).astype(int)
        model_error = median_error = 0.0
        for lo, hi in itertools.pairwise(cuts):
            if hi <= lo:
                continue
            past = codes[:lo]
            prior = np.bincount(past, minlength=len(self.values)) / lo
            text = _TextModel(texts[:lo], past, len(self.values), cfg)
            signals = _text_signals(text, texts[lo:hi], past, prior, cfg.neighbours)
            actual = self.values[codes[lo:hi]]
            for on in (True, False):
                guess, _ = _points(signals, prior, self.values, cfg, on)
                error = float(np.abs(guess - actual).sum())
                if on:
                    model_error += error
                else:
                    median_error += error
        held = int(cuts[-1] - cuts[0])
        # The median wins ties: text is used only where it beats the median inside history.
        share = cfg.neighbour_share + cfg.classifier_share
        weight = share if model_error < median_error else 0.0
        return PointsFit(weight, held, model_error / held, median_error / held)

    def predict(self, titles: Sequence[str], descriptions: Sequence[str]) -> list[PointsPrediction]:
        """Points and evidence for each task (title and description pairs)."""
        texts = [task_text(t, d) for t, d in zip(titles, descriptions, strict=True)]
        if not self.tasks or self._text is None:
            raise ValueError("a points model needs history; use cold-start priors without it")
        # Inputs are our own fitted objects and strings: skip re-validating them per call.
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
            signals = _text_signals(
                self._text, texts, self.codes, self.prior, self.config.neighbours
            )
        medians, mixture = _points(
            signals, self.prior, self.values, self.config, self.fit.beats_median
        )
        sims = signals.sims
        if sims is None:
            return [PointsPrediction(float(medians[i]), (), mixture[i]) for i in range(len(texts))]
        return [
            PointsPrediction(
                float(medians[i]),
                self._cite(*_row(sims, i)),
                mixture[i],
            )
            for i in range(len(texts))
        ]

    def _cite(self, rows: np.ndarray, sims: np.ndarray) -> tuple[Neighbour, ...]:
        """The most similar of the past tasks ``rows`` (with similarities ``sims``)."""
        return tuple(
            Neighbour(
                self.tasks[rows[j]].task_id,
                self.tasks[rows[j]].title,
                float(self.points[rows[j]]),
                round(float(sims[j]), 4),
            )
            for j in _top(rows, sims, self.config.evidence)
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
