"""``tally quota``: use and remaining allowance per subscription; freeze, unfreeze, rebuild."""

from __future__ import annotations

from typing import Any, TypeVar

import typer
from pydantic import BaseModel

from tally.cli.common import JsonOpt, console, emit_json, run, settings
from tally.client import TallyClient
from tally.events import Event, UsageReply, UsageRequest
from tally.events.assign import FreezeReply, FreezeRequest, RebuildReply, RebuildRequest

R = TypeVar("R", bound=BaseModel)

app = typer.Typer(
    help="Quota: each subscription's use and remaining allowance, the freeze switch, and "
    "rebuilding Redis from the ledger.",
    invoke_without_command=True,
)

#: Characters of a bar: used, reserved, free.
BAR_WIDTH = 24


def bar(used: float, reserved: float, limit: float | None, width: int = BAR_WIDTH) -> str:
    """A text bar of one limit: ``█`` used, ``▒`` reserved, ``░`` free; over-limit is clipped.

    >>> bar(50, 25, 100, width=8)
    '████▒▒░░'
    """
    if limit is None:
        return ""
    if limit <= 0:
        return "█" * width if used + reserved > 0 else "░" * width
    used_n = min(width, round(width * used / limit))
    reserved_n = min(width - used_n, round(width * (used + reserved) / limit) - used_n)
    return "█" * used_n + "▒" * max(0, reserved_n) + "░" * (width - used_n - max(0, reserved_n))


def _amount(value: float, usd: bool) -> str:
    return f"${value:,.2f}" if usd else f"{value:,.0f}"


def usage_lines(sub: dict[str, Any]) -> list[str]:
    """The lines ``tally quota`` prints for one subscription of a ``quota.usage`` reply."""
    head = f"[bold]{sub['subscription']}[/]" + (" [red](frozen)[/]" if sub.get("frozen") else "")
    lines = [head]
    for period in ("day", "month"):
        w = sub[period]
        shown = False
        for unit, usd in (("tokens", False), ("usd", True)):
            limit = w[f"limit_{unit}"]
            used, reserved = w[f"used_{unit}"], w[f"reserved_{unit}"]
            if limit is None:
                continue
            shown = True
            remaining = max(0.0, limit - used - reserved)
            pct = 100 * (used + reserved) / limit if limit else 0.0
            lines.append(
                f"  {period:<5} {unit:<6} {bar(used, reserved, limit)} {pct:5.1f}%  "
                f"used {_amount(used, usd)}, reserved {_amount(reserved, usd)}, "
                f"remaining {_amount(remaining, usd)} of {_amount(limit, usd)}"
            )
        if not shown:
            lines.append(
                f"  {period:<5} unlimited     used {_amount(w['used_tokens'], False)} tokens / "
                f"{_amount(w['used_usd'], True)}, reserved {_amount(w['reserved_tokens'], False)}"
            )
        lines[-1] += f"  (resets {w['resets_at'][:16]}Z)" if period == "month" else ""
    return lines


async def _ask(event: Event, reply: type[R]) -> R:
    s = settings()
    async with TallyClient.connect(
        s.nats_url, namespace=s.namespace, options=s.nats_options(), source="cli"
    ) as client:
        return await client.request(event, reply, step="quota", timeout=s.timeout_s)


@app.callback()
def show(ctx: typer.Context, as_json: bool = JsonOpt) -> None:
    """Show each subscription's use and remaining allowance, today and this month."""
    if ctx.invoked_subcommand is not None:
        return
    reply = run(_ask(UsageRequest(source="cli"), UsageReply))
    if as_json:
        emit_json(reply)
        return
    console.print("[dim]█ used  ▒ reserved  ░ free[/]")
    for sub in reply.subscriptions:
        for line in usage_lines(sub):
            console.print(line, highlight=False)


def _switch(name: str, frozen: bool, as_json: bool) -> None:
    reply = run(_ask(FreezeRequest(subscription=name, frozen=frozen, source="cli"), FreezeReply))
    if as_json:
        emit_json(reply)
    else:
        state = "frozen: new reservations are refused" if reply.frozen else "accepting reservations"
        console.print(f"{reply.subscription}: {state}")


@app.command("freeze")
def freeze(
    name: str = typer.Argument(..., help="The subscription to freeze."), as_json: bool = JsonOpt
) -> None:
    """Refuse every new reservation of a subscription (running work may still settle)."""
    _switch(name, True, as_json)


@app.command("unfreeze")
def unfreeze(
    name: str = typer.Argument(..., help="The subscription to unfreeze."), as_json: bool = JsonOpt
) -> None:
    """Accept reservations of a subscription again."""
    _switch(name, False, as_json)


@app.command("rebuild")
def rebuild(as_json: bool = JsonOpt) -> None:
    """Restore the Redis counters, live reservations and freeze switches from Postgres."""
    reply = run(_ask(RebuildRequest(source="cli"), RebuildReply))
    if as_json:
        emit_json(reply)
        return
    console.print(
        f"rebuilt {reply.windows} windows and {reply.reservations} live reservations "
        "from the ledger"
    )
    for row in reply.subscriptions:
        frozen = " (frozen)" if row.get("frozen") else ""
        console.print(
            f"  {row['subscription']}: {row['windows']} windows, {row['reservations']} live"
            + frozen,
            highlight=False,
        )
