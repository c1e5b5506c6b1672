"""Money as the API shows it: exact micro-dollars and a rounded string, never a long float."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tally.moneyview import micros, usd_string, with_money


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        (0.058499999999999996, 58_500),  # what the reporter used to print as is
        (0.1 + 0.2, 300_000),
        (Decimal("12.3456785"), 12_345_678),  # half to even
        (1, 1_000_000),
        (None, 0),
    ],
)
def test_stored_amounts_become_exact_micro_dollars(stored: object, expected: int) -> None:
    assert micros(stored) == expected  # type: ignore[arg-type]


def test_the_display_string_has_four_places() -> None:
    assert [usd_string(m) for m in (58_500, 0, 1, 1_234_567_890)] == [
        "0.0585",
        "0.0000",
        "0.0000",
        "1234.5679",
    ]


def test_documents_show_every_amount_as_micros_and_text() -> None:
    run = {
        "run_id": "r1",
        "totals": {"cost_usd": 0.058499999999999996, "tokens": {"cost_usd": None}},
        "rows": [{"cost_micros": 7}],
        "success": True,
    }
    assert with_money(run) == {
        "run_id": "r1",
        "totals": {
            "cost_micros": 58_500,
            "cost_usd": "0.0585",
            "tokens": {"cost_micros": None, "cost_usd": None},
        },
        "rows": [{"cost_micros": 7, "cost_usd": "0.0000"}],
        "success": True,
    }
