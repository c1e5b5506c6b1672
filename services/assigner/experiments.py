"""A/B experiments: which arm a task falls in, decided by its id alone.

Pure functions. The arm comes from a SHA-256 of the experiment's name and the task id,
so every replica, every retry and every re-run of the same task lands in the same arm,
and arms of different experiments are independent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from tally.events.assign import Experiment, Variant


def bucket(experiment: str, task_id: str) -> float:
    """A number in [0, 1) fixed by the experiment and the task id."""
    digest = hashlib.sha256(f"{experiment}\x00{task_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def pick_arm(experiment: Experiment, task_id: str) -> Variant:
    """The variant a task gets: variants split [0, 1) in proportion to their weights."""
    total = sum(v.weight for v in experiment.variants)
    point = bucket(experiment.name, task_id) * total
    upto = 0.0
    for variant in experiment.variants:
        upto += variant.weight
        if point < upto:
            return variant
    return experiment.variants[-1]  # float rounding at the very top


def experiment_for(experiments: Sequence[Experiment], task_type: str) -> Experiment | None:
    """The active experiment covering ``task_type``: one naming it beats one for all types;
    among equals, the oldest."""
    active = [e for e in experiments if e.active and e.task_type in (None, task_type)]
    active.sort(
        key=lambda e: (e.task_type is None, e.created_at.timestamp() if e.created_at else 0, e.name)
    )
    return active[0] if active else None


def arm_label(experiment: Experiment, variant: Variant) -> str:
    """How an assignment records its arm: ``<experiment>:<variant>``."""
    return f"{experiment.name}:{variant.name}"
