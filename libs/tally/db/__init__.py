"""Postgres: schema, engine, migrations."""

from tally.db.session import autocommit, create_engine, ping
from tally.db.tables import metadata

__all__ = ["autocommit", "create_engine", "metadata", "ping"]
