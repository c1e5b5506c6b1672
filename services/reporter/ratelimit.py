"""Per-token rate limits and a request body size limit for the reporter's HTTP API.

The rate limit is a token bucket per API token, in the reporter's memory: ``rate``
requests a second on average with bursts of up to ``burst``. It is this small on purpose:
the per-route decorators of ``slowapi`` key on the request before authentication, while
the limit here is per API token, known only once the token is checked (in
:class:`services.reporter.auth.Require`). One reporter process holds the buckets; several
replicas each allow the rate (documented in docs/security.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.reporter.errors import error_response


class RateLimiter:
    """A token bucket per key: ``rate`` a second, ``burst`` at most at once."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def wait_s(self, key: str) -> float:
        """Spend one request of ``key``: 0 when allowed, else the seconds until one is."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate
        self._buckets[key] = (tokens - 1, now)
        return 0.0


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` is answered 413, unread.

    Paths in ``own_limit`` (the OTLP receiver) keep their own limit and answer shape.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, own_limit: tuple[str, ...] = ()) -> None:
        self.app, self.max_bytes, self.own_limit = app, max_bytes, own_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.own_limit:
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(413, "too_large", f"body: over {self.max_bytes} bytes", "body")
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass
