"""``quota.reserve_many``: a batch of reservations in one request, each answered as its
own ``quota.reserve`` would be, every accepted one ledgered before the reply."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml
from sqlalchemy import select

from tally.db.tables import quota_ledger
from tally.events import ReserveManyReply, ReserveManyRequest, ReserveRequest, new_id

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration


@pytest.fixture
def subscriptions(tmp_path: Path) -> Path:
    path = tmp_path / "subscriptions.yaml"
    limits = {"day": {"tokens": 1_000}}
    subs = [{"name": "team", "kind": "payg", "enforcement": "hard", "limits": limits}]
    path.write_text(yaml.safe_dump({"subscriptions": subs}))
    return path


def ask(subscription: str, tokens: int) -> ReserveRequest:
    return ReserveRequest(
        subscription=subscription, tokens=tokens, cost_usd=0.0, reservation_id=f"r-{new_id()}"
    )


async def test_each_reservation_is_answered_in_order_and_the_accepted_are_ledgered(
    harness: Harness, subscriptions: Path
) -> None:
    h = harness
    await h.start("quota", subscriptions_path=subscriptions)
    asks = [ask("team", 400), ask("team", 400), ask("team", 400), ask("nobody", 1)]
    reply = await h.client.request(
        ReserveManyRequest(reservations=asks), ReserveManyReply, step="quota"
    )
    assert [r.reservation_id for r in reply.replies] == [a.reservation_id for a in asks]
    # Two fit in the day's 1,000 tokens, the third does not; an unknown subscription is
    # refused with the reason, not failing the others.
    assert sorted(r.ok for r in reply.replies[:3]) == [False, True, True]
    assert not reply.replies[3].ok and "unknown subscription 'nobody'" in reply.replies[3].reason
    accepted = {r.reservation_id for r in reply.replies if r.ok}
    rows = await h.rows(
        select(quota_ledger.c.reservation_id).where(
            quota_ledger.c.op == "reserve",
            quota_ledger.c.reservation_id.in_([a.reservation_id for a in asks]),
        )
    )
    assert {r.reservation_id for r in rows} == accepted

    # Asked again (a retry after a lost reply): the same answers, nothing reserved twice.
    again = await h.client.request(
        ReserveManyRequest(reservations=asks[:3]), ReserveManyReply, step="quota"
    )
    assert [r.ok for r in again.replies] == [r.ok for r in reply.replies[:3]]
