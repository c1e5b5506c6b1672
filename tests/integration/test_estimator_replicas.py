"""Two estimator replicas: a history import one of them stores reaches the other's next
answer at once (a ``history.changed`` notice), not after a periodic fingerprint check."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tally.cli import history
from tests.integration.test_estimator_history import HISTORY_CSV, ask, cli_env  # noqa: F401

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration

#: Requests per phase: the queue group hands each to a random replica, so both answer
#: some (the chance that one answers none of 24 is 2⁻²³).
ASKS = 24


async def test_an_import_stored_by_one_replica_is_in_the_next_answer_of_both(
    harness: Harness,
    workspace: str,
    tmp_path: Path,
    cli_env: None,  # noqa: F811
) -> None:
    h = harness
    # Fingerprints are read at most once an hour: only the notice can tell a replica.
    for _ in range(2):
        await h.start("estimator", history_check_interval_s=3600)
    before = [await ask(h, workspace) for _ in range(ASKS)]  # both replicas warm
    assert all(e.evidence == () for e in before)

    path = tmp_path / "history.csv"
    path.write_text(HISTORY_CSV, encoding="utf-8")
    reply = await history._import(history.read_history(path), workspace, timeout=10)
    assert reply.history_size == 7

    after = [await ask(h, workspace) for _ in range(ASKS)]
    assert all(e.story_points == 8 and e.evidence for e in after), [
        (e.story_points, len(e.evidence)) for e in after
    ]
