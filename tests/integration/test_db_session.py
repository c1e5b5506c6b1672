"""The services' engine: what every connection to Postgres is set up with."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tally.db import create_engine
from tally.settings import TallySettings

pytestmark = pytest.mark.integration


async def test_connections_never_jit_compile_a_query(stack: TallySettings) -> None:
    """Postgres JIT-compiles a statement whose estimated cost passes ``jit_above_cost``:
    the reporter's window queries at 10 million run events spent seconds compiling (the
    30-day ``/lanes`` 3 s, of which the query itself ran under a tenth) to save
    milliseconds. The services' statements are short: no JIT."""
    engine = create_engine(stack.database_url)
    try:
        async with engine.connect() as conn:
            assert await conn.scalar(text("SHOW jit")) == "off"
    finally:
        await engine.dispose()
