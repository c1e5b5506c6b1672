"""The live web dashboard: ``GET /live`` (one HTML page) and ``GET /live/events`` (SSE).

Every message on the namespace's ``metrics.>`` subjects is relayed to each open stream as
a Server-Sent Event named for the part after ``metrics.`` (``runs`` for a recorded run),
its data the message's JSON payload. One :class:`LiveHub` per reporter process holds the
only NATS subscription, opened when the first client connects and closed with the
service; each client reads from a bounded queue of its own, so a slow client loses its
oldest messages instead of holding up the others. A client bound to a workspace (a
workspace token's stream, or an operator's ``?workspace=``) gets only the messages whose
JSON names that workspace: the filter runs here, on the server.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Query
from pydantic import Field
from starlette.responses import HTMLResponse, Response, StreamingResponse

from services.reporter.auth import ReportsRead
from services.reporter.params import Params, Workspace
from tally.subjects import Catalog

log = structlog.get_logger(__name__)

#: A metric message: its name (``runs``) and its JSON payload.
Message = tuple[str, bytes]
Deliver = Callable[[str, bytes], None]
#: Opens the feed of metric messages, handing each to ``deliver``; returns its closer.
FeedOpener = Callable[[Deliver], Awaitable[Callable[[], Awaitable[None]]]]

#: Messages a client may fall behind by before its oldest are dropped.
CLIENT_BACKLOG = 256
#: Seconds of silence after which a stream sends a comment, so proxies keep it open.
HEARTBEAT_S = 15.0


def message_workspace(data: bytes) -> str | None:
    """The ``workspace`` a metric message's JSON object names, or None."""
    try:
        body = json.loads(data)
    except ValueError:
        return None
    workspace = body.get("workspace") if isinstance(body, dict) else None
    return workspace if isinstance(workspace, str) else None


def _offer(queue: asyncio.Queue[Message | None], item: Message | None) -> bool:
    """Put ``item`` on ``queue``, dropping its oldest entry if full; True if one was dropped."""
    dropped = False
    if queue.full():
        queue.get_nowait()
        dropped = True
    queue.put_nowait(item)
    return dropped


class LiveHub:
    """Fans metric messages out to every connected client.

    Args:
        open_feed: starts the one upstream subscription (see :func:`nats_feed`).
        backlog: the most messages a client's queue holds.
    """

    def __init__(self, open_feed: FeedOpener, *, backlog: int = CLIENT_BACKLOG) -> None:
        self._open_feed = open_feed
        self._backlog = backlog
        #: Each client's queue and the workspace it is bound to (None: every workspace).
        self._queues: dict[asyncio.Queue[Message | None], str | None] = {}
        self._close_feed: Callable[[], Awaitable[None]] | None = None
        self._lock = asyncio.Lock()
        self._closed = False
        #: Messages dropped from slow clients' queues since the hub started.
        self.dropped = 0

    @property
    def clients(self) -> int:
        """How many clients are connected."""
        return len(self._queues)

    @asynccontextmanager
    async def connect(
        self, workspace: str | None = None
    ) -> AsyncIterator[asyncio.Queue[Message | None]]:
        """A client's queue of messages, ``None`` once the hub closes; opens the feed first.

        Args:
            workspace: only messages naming this workspace reach the client (None: all).
        """
        queue: asyncio.Queue[Message | None] = asyncio.Queue(maxsize=self._backlog)
        async with self._lock:
            if self._closed:
                queue.put_nowait(None)
            else:
                if self._close_feed is None:
                    self._close_feed = await self._open_feed(self.publish)
                self._queues[queue] = workspace
        try:
            yield queue
        finally:
            self._queues.pop(queue, None)

    def publish(self, name: str, data: bytes) -> None:
        """Hand one message to every client it is for, never waiting for any of them."""
        bound = any(w is not None for w in self._queues.values())
        workspace = message_workspace(data) if bound else None
        for queue, only in self._queues.items():
            if only is None or only == workspace:
                self.dropped += _offer(queue, (name, data))

    async def close(self) -> None:
        """End every client's stream and close the feed (the service is stopping)."""
        async with self._lock:
            self._closed = True
            close, self._close_feed = self._close_feed, None
            for queue in self._queues:
                _offer(queue, None)
        if close is not None:
            await close()
            log.info("live_feed_closed", dropped=self.dropped)


def nats_feed(connection: Callable[[], Any], catalog: Catalog) -> FeedOpener:
    """A feed of the namespace's ``metrics.>`` subjects on a NATS connection.

    Args:
        connection: returns the connected ``nats`` client (the broker's, once it started).
        catalog: the namespace's subjects.
    """
    prefix = catalog.metrics("")

    async def open_feed(deliver: Deliver) -> Callable[[], Awaitable[None]]:
        nc = connection()

        async def on_msg(msg: Any) -> None:
            deliver(msg.subject.removeprefix(prefix), msg.data)

        sub = await nc.subscribe(catalog.metrics(">"), cb=on_msg)
        await nc.flush()  # the server knows the subscription before any client is told
        log.info("live_feed_opened", subject=catalog.metrics(">"))
        unsubscribe: Callable[[], Awaitable[None]] = sub.unsubscribe
        return unsubscribe

    return open_feed


def sse_event(name: str, data: bytes) -> bytes:
    """One Server-Sent Event; each line of ``data`` gets its own ``data:`` field."""
    lines = data.decode("utf-8", errors="replace").splitlines() or [""]
    return (f"event: {name}\n" + "".join(f"data: {line}\n" for line in lines) + "\n").encode()


async def event_stream(
    hub: LiveHub,
    limit: int | None = None,
    heartbeat_s: float = HEARTBEAT_S,
    workspace: str | None = None,
) -> AsyncIterator[bytes]:
    """The SSE body: events (of ``workspace``, if given) until ``limit`` were sent or the
    hub closes."""
    async with hub.connect(workspace) as queue:
        yield b": connected\n\n"
        sent = 0
        while limit is None or sent < limit:
            try:
                item = await asyncio.wait_for(queue.get(), heartbeat_s)
            except TimeoutError:
                yield b": heartbeat\n\n"
                continue
            if item is None:
                return
            yield sse_event(*item)
            sent += 1


class LiveParams(Params):
    workspace: Workspace | None = Field(
        None, description="Only this workspace's events (a workspace token: its own)."
    )
    limit: int | None = Field(None, ge=1, description="End the stream after this many events.")


def live_router(hub: LiveHub, heartbeat_s: float = HEARTBEAT_S) -> APIRouter:
    """The ``/live`` page and its ``/live/events?limit=N`` stream."""
    router = APIRouter(tags=["live"])

    # Errors are JSON like everywhere else: only the 200 answers are HTML or a stream.
    @router.get(
        "/live",
        response_class=Response,
        responses={200: {"content": {"text/html": {"schema": {"type": "string"}}}}},
    )
    async def page(who: ReportsRead) -> HTMLResponse:
        """The live dashboard (one HTML page reading ``/live/events``)."""
        return HTMLResponse(PAGE)

    @router.get(
        "/live/events",
        response_class=Response,
        responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}},
    )
    async def events(q: Annotated[LiveParams, Query()], who: ReportsRead) -> StreamingResponse:
        """Server-Sent Events: one per ``metrics.*`` message (``runs``: a recorded run).

        An operator token streams every workspace (or the one named); a workspace token
        streams only its own workspace's messages."""
        workspace = who.workspace_for(q.workspace)
        return StreamingResponse(
            event_stream(hub, q.limit, heartbeat_s, workspace),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return router


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Tally live</title>
<style>
body{font:14px system-ui,sans-serif;margin:1.5rem;color:#222;background:#fafafa}
h1{font-size:1.3rem;margin:0 0 .5rem}h2{font-size:1rem;margin:1.2rem 0 .4rem}
table{border-collapse:collapse;background:#fff}
td,th{padding:.25rem .6rem;border-bottom:1px solid #ddd;text-align:left}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#1a7f37}.bad{color:#c62828}#status{font-size:.85rem;color:#666}
.cards{display:flex;gap:1rem}.cards div{background:#fff;padding:.5rem 1rem;border:1px solid #ddd}
.cards b{display:block;font-size:1.3rem}
</style></head><body>
<h1>Tally live</h1><div id="status">connecting…</div>
<h2>Since this page opened</h2>
<div class="cards"><div>runs<b id="t-runs">0</b></div><div>success<b id="t-rate">-</b></div>
<div>cost<b id="t-cost">$0.00</b></div><div>tokens<b id="t-tokens">0</b></div></div>
<h2>By model</h2>
<table><thead><tr><th>model</th><th class="n">runs</th><th class="n">success</th>
<th class="n">cost</th><th class="n">tokens</th></tr></thead><tbody id="models"></tbody></table>
<h2>Latest runs</h2>
<table><thead><tr><th>time</th><th>run</th><th>task</th><th>model</th><th>outcome</th>
<th class="n">hours</th><th class="n">cost</th><th class="n">tokens</th></tr></thead>
<tbody id="runs"></tbody></table>
<script>
const MAX_ROWS = 50, total = {runs: 0, ok: 0, cost: 0, tokens: 0}, models = new Map();
const $ = (id) => document.getElementById(id);
const usd = (x) => "$" + (x || 0).toFixed(2), num = (x) => (x || 0).toLocaleString();
const rate = (t) => t.runs ? Math.round(100 * t.ok / t.runs) + "%" : "-";
function row(cells, cls) {
  const tr = document.createElement("tr");
  cells.forEach(([text, c]) => {
    const td = tr.insertCell(); td.textContent = text; if (c) td.className = c;
  });
  if (cls) tr.className = cls;
  return tr;
}
function add(t, r) {
  t.runs += 1; t.ok += r.success ? 1 : 0; t.cost += r.cost_usd || 0; t.tokens += r.tokens || 0;
}
function onRun(r) {
  add(total, r);
  const name = r.model || "(none)";
  if (!models.has(name)) models.set(name, {runs: 0, ok: 0, cost: 0, tokens: 0});
  add(models.get(name), r);
  $("t-runs").textContent = num(total.runs); $("t-rate").textContent = rate(total);
  $("t-cost").textContent = usd(total.cost); $("t-tokens").textContent = num(total.tokens);
  $("models").replaceChildren(...[...models].sort((a, b) => b[1].runs - a[1].runs).map(
    ([m, t]) => row([[m], [num(t.runs), "n"], [rate(t), "n"], [usd(t.cost), "n"],
                     [num(t.tokens), "n"]])));
  const runs = $("runs");
  const at = new Date(r.finished_at || Date.now()).toLocaleTimeString();
  runs.prepend(row([[at], [r.run_id], [r.task_id], [name],
    [r.outcome, r.success ? "ok" : "bad"], [(r.actual_hours ?? 0).toFixed(2), "n"],
    [usd(r.cost_usd), "n"], [num(r.tokens), "n"]]));
  while (runs.rows.length > MAX_ROWS) runs.deleteRow(-1);
}
const source = new EventSource("/live/events");
source.onopen = () => { $("status").textContent = "live"; };
source.onerror = () => { $("status").textContent = "reconnecting…"; };
source.addEventListener("runs", (e) => onRun(JSON.parse(e.data)));
</script></body></html>
"""
