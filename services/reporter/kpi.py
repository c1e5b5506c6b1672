"""A run's KPI summary, built from its timeline; the content of ``kpi.json``.

The timeline is the tracker's list of events, each ``{"kind", "at", "data"}``. Nothing
here reads a database: the reporter fetches the rows and hands them in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, computed_field

from tally.money import micros_to_usd, usd_text, usd_to_micros
from tally.moneyview import Micros, UsdText, usd_string

UNPHASED = "(no phase)"  #: bucket for worker calls made outside any open phase


class TokenCounts(BaseModel):
    """Tokens by kind, named as in ``token_usage``, ``GET /tokens`` and the CLI's ``--json``."""

    input_tokens: int = 0
    output_tokens: int = 0
    #: cache reads: input served from the provider's prompt cache
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    def add_usage(self, usage: Mapping[str, Any]) -> None:
        for name in TokenCounts.model_fields:
            setattr(self, name, getattr(self, name) + int(usage.get(name) or 0))

    def short(self) -> str:
        return (
            f"{_count(self.input_tokens)} in/{_count(self.output_tokens)} out/"
            f"{_count(self.cache_read_tokens)} cache read/"
            f"{_count(self.cache_write_tokens)} cache write"
        )


class PhaseKpi(BaseModel):
    name: str
    attempts: int
    seconds: float  #: summed over attempts; an attempt never ended runs to the run's end


class RunKpi(BaseModel):
    """Key numbers of one run, in the order of the summary lines."""

    run_id: str | None = None
    started_at: datetime
    finished_at: datetime
    total_seconds: float
    time_to_verified_checkpoint_seconds: float | None
    phases: list[PhaseKpi] = Field(default_factory=list)
    worker_calls: int = 0
    #: the priced calls' cost in integer micro-dollars, summed exactly
    cost_micros: Micros = 0
    #: worker calls whose model had no known price (not in the cost)
    unpriced_calls: int = 0
    tokens: TokenCounts = Field(default_factory=TokenCounts)
    tokens_by_worker: dict[str, TokenCounts] = Field(default_factory=dict)
    tokens_by_phase: dict[str, TokenCounts] = Field(default_factory=dict)
    latency_mean_ms: float | None = None
    latency_p95_ms: float | None = None
    verifications: int = 0
    verifications_passed: int = 0
    verification_retries: int = 0
    subtasks_started: int = 0
    subtasks_completed: int = 0
    files_changed: int = 0
    lines_added: int = 0
    lines_removed: int = 0
    milestones_planned: int = 0
    milestones_completed: int = 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def cost_usd(self) -> UsdText:
        """``cost_micros`` in dollars for display, rounded to 4 places (``"0.0585"``)."""
        return usd_string(self.cost_micros)

    def summary_lines(self) -> list[str]:
        """Exactly ten human-readable lines, one per KPI group."""
        ttv = self.time_to_verified_checkpoint_seconds
        phases = ", ".join(
            f"{p.name} {_duration(p.seconds)} ({_plural(p.attempts, 'attempt')})"
            for p in self.phases
        )
        latency = (
            f"mean {self.latency_mean_ms:,.0f} ms, p95 {self.latency_p95_ms:,.0f} ms"
            if self.latency_mean_ms is not None and self.latency_p95_ms is not None
            else "no worker calls"
        )
        return [
            f"Total time: {_duration(self.total_seconds)}",
            f"Time to first verified checkpoint: {_duration(ttv) if ttv is not None else 'none'}",
            f"Phases: {phases or 'none recorded'}",
            f"Worker calls: {self.worker_calls} ({usd_text(self.cost_micros)}"
            f"{f', {self.unpriced_calls} unpriced' if self.unpriced_calls else ''}; tokens "
            f"{self.tokens.short()})",
            f"Tokens by worker: {_breakdown(self.tokens_by_worker)}",
            f"Tokens by phase: {_breakdown(self.tokens_by_phase)}",
            f"Latency: {latency}",
            f"Verification: {_plural(self.verifications, 'check')}, "
            f"{self.verifications_passed} passed, {_plural(self.verification_retries, 'retry')}",
            f"Changes: {_plural(self.files_changed, 'file')}, "
            f"+{self.lines_added}/-{self.lines_removed} lines",
            f"Milestones: {self.milestones_completed}/{self.milestones_planned} completed",
        ]

    def to_json(self) -> str:
        """The ``kpi.json`` document."""
        return self.model_dump_json(indent=2)


def _plural(n: int, word: str) -> str:
    if n == 1:
        return f"1 {word}"
    return f"{n} {word[:-1]}ies" if word.endswith("y") else f"{n} {word}s"


def _count(n: int) -> str:
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def _duration(seconds: float) -> str:
    sign, s = ("-" if seconds < 0 else ""), round(abs(seconds))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{sign}{h}h {m:02d}m {sec:02d}s" if h else f"{sign}{m}m {sec:02d}s"


def _breakdown(by: Mapping[str, TokenCounts]) -> str:
    return "; ".join(f"{name} {tokens.short()}" for name, tokens in by.items()) or "none"


def compute_kpi(
    timeline: Iterable[Mapping[str, Any]],
    started_at: datetime | None = None,
    finished_at: datetime | None = None,
    run_id: str | None = None,
) -> RunKpi:
    """Summarise a run's timeline.

    Args:
        timeline: events ``{"kind": str, "at": datetime, "data": dict}`` in any order.
        started_at: run start; defaults to the first event.
        finished_at: run end; defaults to the last event (a run still going).

    Raises:
        ValueError: when neither the run times nor any event give a point in time.
    """
    # At equal times a phase ends before the next begins, so calls land in the new phase.
    events = sorted(timeline, key=lambda e: (e["at"], e["kind"] != "phase_end"))
    start = started_at or (events[0]["at"] if events else finished_at)
    end = finished_at or (events[-1]["at"] if events else started_at)
    if start is None or end is None:
        raise ValueError("a KPI summary needs the run's start or end, or at least one event")
    kpi = RunKpi(
        run_id=run_id,
        started_at=start,
        finished_at=end,
        total_seconds=(end - start).total_seconds(),
        time_to_verified_checkpoint_seconds=None,
    )
    open_phases: dict[tuple[str, int], datetime] = {}  # insertion order = start order
    attempts: dict[str, set[int]] = {}
    seconds: dict[str, float] = {}
    latencies: list[float] = []
    files: set[str] = set()
    file_count = 0
    milestones: dict[str, bool] = {}
    for event in events:
        kind, at, data = event["kind"], event["at"], event.get("data") or {}
        if kind == "phase_start":
            phase = str(data["phase"])
            attempt = int(data.get("attempt") or len(attempts.get(phase, ())) + 1)
            attempts.setdefault(phase, set()).add(attempt)
            seconds.setdefault(phase, 0.0)
            open_phases[(phase, attempt)] = at
        elif kind == "phase_end":
            key = _open_key(open_phases, str(data["phase"]), data.get("attempt"))
            if key is not None:
                seconds[key[0]] += (at - open_phases.pop(key)).total_seconds()
        elif kind == "worker_call":
            kpi.worker_calls += 1
            if data.get("cost_known") is False:
                kpi.unpriced_calls += 1
            elif data.get("cost_micros") is not None:
                kpi.cost_micros += int(data["cost_micros"])
            elif data.get("cost_usd") is not None:  # a timeline not read from token_usage
                kpi.cost_micros += usd_to_micros(data["cost_usd"])
            usage = data.get("usage") or {}
            phase = data.get("phase") or (
                next(reversed(open_phases))[0] if open_phases else UNPHASED
            )
            worker = str(data.get("worker") or data.get("model") or "unknown")
            kpi.tokens.add_usage(usage)
            kpi.tokens_by_worker.setdefault(worker, TokenCounts()).add_usage(usage)
            kpi.tokens_by_phase.setdefault(str(phase), TokenCounts()).add_usage(usage)
            if data.get("latency_ms") is not None:
                latencies.append(float(data["latency_ms"]))
        elif kind == "verification":
            kpi.verifications += 1
            kpi.verifications_passed += bool(data.get("passed"))
            kpi.verification_retries += bool(data.get("retry"))
        elif kind == "checkpoint":
            if data.get("verified") and kpi.time_to_verified_checkpoint_seconds is None:
                kpi.time_to_verified_checkpoint_seconds = (at - start).total_seconds()
        elif kind == "changes":
            changed = data.get("files") or 0
            # Listed paths are de-duplicated: a file edited twice is one file changed.
            if isinstance(changed, int):
                file_count += changed
            else:
                files.update(str(f) for f in changed)
            kpi.lines_added += int(data.get("lines_added") or 0)
            kpi.lines_removed += int(data.get("lines_removed") or 0)
        elif kind == "milestone":
            name = str(data["name"])
            milestones[name] = milestones.get(name, False) or data.get("status") == "completed"
        elif kind == "subtask_started":
            kpi.subtasks_started += 1
        elif kind == "subtask_completed":
            kpi.subtasks_completed += 1
    for (phase, _), began in open_phases.items():
        seconds[phase] += (end - began).total_seconds()
    kpi.phases = [
        PhaseKpi(name=p, attempts=len(attempts[p]), seconds=s) for p, s in seconds.items()
    ]
    if latencies:
        kpi.latency_mean_ms = float(np.mean(latencies))
        kpi.latency_p95_ms = float(np.percentile(latencies, 95))
    kpi.files_changed = len(files) + file_count
    kpi.milestones_planned = len(milestones)
    kpi.milestones_completed = sum(milestones.values())
    return kpi


def _open_key(
    open_phases: dict[tuple[str, int], datetime], phase: str, attempt: Any
) -> tuple[str, int] | None:
    """The open attempt a phase_end closes: the named one, else the latest of that phase."""
    if attempt is not None:
        key = (phase, int(attempt))
        return key if key in open_phases else None
    return next((k for k in reversed(open_phases) if k[0] == phase), None)


def compare(a: RunKpi, b: RunKpi) -> list[tuple[str, str, str, str]]:
    """Side-by-side rows ``(metric, a, b, delta)``; delta is ``b - a``, blank if unknown."""
    rows: list[tuple[str, str, str, str]] = []

    def row(metric: str, x: float | None, y: float | None, fmt: str = "count") -> None:
        def show(v: float | None, signed: bool = False) -> str:
            if v is None:
                return "-"
            if fmt == "time":
                return ("+" if signed and v >= 0 else "") + _duration(v)
            if fmt == "usd":
                return f"{'+' if signed and v >= 0 else ''}${v:,.2f}".replace("$-", "-$")
            return f"{v:+,.0f}" if signed else f"{v:,.0f}"

        delta = show(y - x, signed=True) if x is not None and y is not None else ""
        rows.append((metric, show(x), show(y), delta))

    row("total time", a.total_seconds, b.total_seconds, "time")
    ttv_a, ttv_b = a.time_to_verified_checkpoint_seconds, b.time_to_verified_checkpoint_seconds
    row("time to verified checkpoint", ttv_a, ttv_b, "time")
    phases_a = {p.name: p for p in a.phases}
    phases_b = {p.name: p for p in b.phases}
    for name in dict.fromkeys([*phases_a, *phases_b]):
        pa, pb = phases_a.get(name), phases_b.get(name)
        row(f"phase {name}", pa.seconds if pa else None, pb.seconds if pb else None, "time")
        row(f"phase {name} attempts", pa.attempts if pa else None, pb.attempts if pb else None)
    row("worker calls", a.worker_calls, b.worker_calls)
    row("cost", micros_to_usd(a.cost_micros), micros_to_usd(b.cost_micros), "usd")
    for field in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"):
        row(field.replace("_", " "), getattr(a.tokens, field), getattr(b.tokens, field))
    row("latency mean ms", a.latency_mean_ms, b.latency_mean_ms)
    row("latency p95 ms", a.latency_p95_ms, b.latency_p95_ms)
    row("verification retries", a.verification_retries, b.verification_retries)
    row("files changed", a.files_changed, b.files_changed)
    row("lines added", a.lines_added, b.lines_added)
    row("lines removed", a.lines_removed, b.lines_removed)
    row("milestones completed", a.milestones_completed, b.milestones_completed)
    return rows
