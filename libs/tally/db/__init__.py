"""Postgres: schema, engine, migrations."""

from tally.db.direct import DirectPool
from tally.db.session import autocommit, create_engine, ping
from tally.db.tables import metadata

__all__ = ["DirectPool", "autocommit", "create_engine", "metadata", "ping"]
