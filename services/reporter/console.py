"""The web console: ``GET /console`` (one HTML shell) and its assets under ``/console/assets``.

The shell and its scripts hold no data and need no token: the page asks for an API token,
keeps it in the tab's ``sessionStorage`` and reads the same typed endpoints any client
reads, sending it as ``Authorization: Bearer``. Live updates come from ``/live/events``.
The assets are built from ``console/`` (``make console``) and committed, so serving them
needs no Node.js.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

#: The built console: ``index.html`` and the scripts, styles and fonts it loads.
ASSETS = Path(__file__).parent / "static" / "console"
#: The page loads only its own scripts and styles, and talks only to this reporter.
POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


async def shell(request: Request) -> Response:
    """The console's one page (the hash after ``#`` names the view)."""
    return HTMLResponse(
        (ASSETS / "index.html").read_text(encoding="utf-8"),
        headers={
            "Content-Security-Policy": POLICY,
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


async def to_shell(request: Request) -> Response:
    return RedirectResponse("/console", status_code=307)


def console_routes() -> list[BaseRoute]:
    """``/console`` (and ``/`` leading to it) and ``/console/assets/*``."""
    return [
        Route("/console", shell, methods=["GET"]),
        Route("/", to_shell, methods=["GET"]),
        Mount("/console/assets", StaticFiles(directory=ASSETS / "assets"), name="console"),
    ]
