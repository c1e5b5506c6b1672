"""What every CLI command shares: settings, output in text or JSON, clear errors."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Coroutine, Mapping
from typing import Any, NoReturn, TypeVar

import typer
from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import SettingsConfigDict
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from tally.errors import ConfigError, PermanentError, StepTimeout, TallyError, TransientError
from tally.settings import TallySettings

T = TypeVar("T")


class TallyConsole(Console):
    """A console whose tables never cut a cell (``claud…``): ids and model names are what
    a reader copies. Cells wrap on a narrow terminal; off a terminal (a pipe, a file, CI)
    a table is as wide as its content needs."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        wide = 0
        for obj in objects:
            if isinstance(obj, Table):
                for column in obj.columns:
                    if column.overflow == "ellipsis":
                        column.overflow = "fold"
                if not self.is_terminal:
                    natural = Measurement.get(self, self.options.update_width(10_000), obj)
                    wide = max(wide, natural.maximum)
        if wide <= self.width:
            super().print(*objects, **kwargs)
            return
        narrow = self.width  # rich caps a print's width at the console's: widen it, briefly
        self.width = wide
        try:
            super().print(*objects, **kwargs)
        finally:
            self.width = narrow


console = TallyConsole(soft_wrap=True)
err_console = TallyConsole(stderr=True, soft_wrap=True)

JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON instead of text.")

#: Exit statuses: 1 for a step that failed or timed out, 2 for bad input.
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


class CliSettings(TallySettings):
    """Where the CLI finds Tally (``TALLY_*``)."""

    model_config = SettingsConfigDict(env_prefix="TALLY_", extra="ignore", populate_by_name=True)

    reporter_url: str = Field("http://127.0.0.1:8106")
    #: The reporter API token (``TALLY_API_TOKEN``), sent as ``Authorization: Bearer``.
    api_token: SecretStr | None = None
    timeout_s: float = 10.0


def settings() -> CliSettings:
    return CliSettings()


def fail(message: str, *, code: int = EXIT_FAILED) -> NoReturn:
    """Print an error to stderr and exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine, turning Tally's errors into clear messages and exit codes."""
    try:
        return asyncio.run(coro)
    except StepTimeout as exc:
        fail(
            f"{exc.step} did not answer within {exc.timeout_s:g}s — is it running? "
            "(`make run` starts all services)"
        )
    except (PermanentError, ConfigError) as exc:
        fail(str(exc), code=EXIT_BAD_INPUT)
    except (TransientError, TallyError) as exc:
        fail(str(exc))


def emit_json(data: Any) -> None:
    """Print one JSON document on stdout."""
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def reporter_get(path: str, params: Mapping[str, str | None] | None = None) -> Any:
    """GET a reporter endpoint, turning failures into clear CLI errors.

    Parameters whose value is None (an option not given) are left out.
    """
    import httpx  # on use: it is slow to import, and most commands never need it

    s = settings()
    given = {k: v for k, v in (params or {}).items() if v is not None}
    try:
        resp = httpx.get(
            f"{s.reporter_url}{path}", params=given, headers=auth_headers(s), timeout=s.timeout_s
        )
    except httpx.HTTPError as exc:
        fail(f"reporter did not answer at {s.reporter_url}: {exc}")
    if resp.status_code != 200:
        fail(error_message(resp), code=EXIT_BAD_INPUT if resp.status_code in (400, 422) else 1)
    return resp.json()


def auth_headers(s: CliSettings) -> dict[str, str]:
    """The ``Authorization`` header of ``TALLY_API_TOKEN`` (none when it is unset or empty)."""
    token = s.api_token.get_secret_value().strip() if s.api_token else ""
    return {"Authorization": f"Bearer {token}"} if token else {}


def reporter_call(method: str, path: str, body: Any = None) -> Any:
    """Send ``method path`` (with a JSON ``body``) to the reporter; its JSON answer.

    A failure is a clear CLI error: 401 says to set ``TALLY_API_TOKEN``.
    """
    import httpx

    s = settings()
    try:
        resp = httpx.request(
            method,
            f"{s.reporter_url}{path}",
            json=body,
            headers=auth_headers(s),
            timeout=s.timeout_s,
        )
    except httpx.HTTPError as exc:
        fail(f"reporter did not answer at {s.reporter_url}: {exc}")
    if resp.status_code >= 300:
        fail(error_message(resp), code=EXIT_BAD_INPUT if resp.status_code in (400, 422) else 1)
    return resp.json()


def error_message(resp: Any) -> str:
    """What a reporter's error answer says (``{"error": {"code", "message", "field"}}``)."""
    hint = " (set TALLY_API_TOKEN to an API token)" if resp.status_code == 401 else ""
    try:
        return str(resp.json()["error"]["message"]) + hint
    except (ValueError, KeyError, TypeError):
        return f"reporter answered {resp.status_code}: {resp.text[:200]}"
