"""Which monthly partitions ``tally db partitions`` creates and drops."""

from __future__ import annotations

from datetime import date

from tally.db.partitions import (
    add_months,
    is_partition,
    months_to_create,
    months_to_drop,
    partition_month,
    partition_name,
)


def test_months_roll_over_years_both_ways() -> None:
    assert add_months(date(2026, 11, 1), 3) == date(2027, 2, 1)
    assert add_months(date(2026, 1, 1), -1) == date(2025, 12, 1)
    assert add_months(date(2026, 1, 1), -25) == date(2023, 12, 1)


def test_names_round_trip_and_only_partitions_count_as_partitions() -> None:
    name = partition_name("token_usage", date(2026, 2, 1))
    assert name == "token_usage_p202602" and partition_month(name) == date(2026, 2, 1)
    assert is_partition(name) and is_partition("run_events_default")
    assert not is_partition("run_events") and not is_partition("runs")
    assert not is_partition("run_events_pending")


def test_this_month_and_the_next_ones_are_created_once() -> None:
    today = date(2026, 11, 30)
    assert months_to_create(today, 2, set()) == [
        date(2026, 11, 1),
        date(2026, 12, 1),
        date(2027, 1, 1),
    ]
    assert months_to_create(today, 2, {date(2026, 11, 1), date(2026, 12, 1)}) == [date(2027, 1, 1)]


def test_retention_keeps_whole_months_and_zero_keeps_everything() -> None:
    today = date(2026, 3, 15)
    have = {date(2025, 12, 1), date(2026, 1, 1), date(2026, 2, 1), date(2026, 3, 1)}
    # Two months kept before this one: January and February stay, December goes.
    assert months_to_drop(today, 2, have) == [date(2025, 12, 1)]
    assert months_to_drop(today, 0, have) == []
    assert months_to_drop(today, 1, have) == [date(2025, 12, 1), date(2026, 1, 1)]
