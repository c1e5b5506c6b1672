"""The subject catalogue: namespacing, streams, and subjects no stream may capture."""

from __future__ import annotations

import pytest

from tally import events
from tally.events import Event
from tally.subjects import STREAMS, UNSTREAMED, Catalog


def test_the_default_namespace_keeps_the_documented_names() -> None:
    catalog = Catalog("")
    assert catalog.subject("task.created") == "task.created"
    assert catalog.stream("TASKS") == "TALLY_TASKS"
    assert catalog.dlq("tracker") == "dlq.tracker"
    assert catalog.stream_for("dlq.tracker") == "TALLY_DLQ"


def test_a_namespace_prefixes_subjects_streams_and_dead_letters() -> None:
    catalog = Catalog("t-1a")
    assert catalog.subject("run.event") == "t-1a.run.event"
    assert catalog.stream("RUNS") == "T_1A_RUNS"
    assert catalog.dlq("estimator") == "t-1a.dlq.estimator"
    assert catalog.metrics("runs") == "t-1a.metrics.runs"


def test_every_published_event_has_exactly_one_stream() -> None:
    published = {
        cls.subject
        for name in events.__all__
        if isinstance(cls := getattr(events, name), type)
        and issubclass(cls, Event)
        and cls is not Event
    }
    captured = [s for spec in STREAMS for s in spec.subjects]
    assert len(captured) == len(set(captured)), "a subject is in two streams"
    for subject in published - set(UNSTREAMED):
        assert subject in captured, f"{subject} is published but no stream keeps it"


@pytest.mark.parametrize("subject", UNSTREAMED)
def test_no_stream_captures_a_request_subject(subject: str) -> None:
    # A stream's PubAck would answer the request before the service does.
    with pytest.raises(KeyError):
        Catalog("").stream_for(subject)


def test_durable_names_are_shared_by_replicas_of_a_service() -> None:
    catalog = Catalog("x")
    assert catalog.durable("tracker", "run.event") == "tracker-run-event"
    assert catalog.durable("tracker", "run.event") != catalog.durable("learner", "run.event")
